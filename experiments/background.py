"""A record sink served on a thread of its own, so that a run's table is summarised and
written on the second core while the engine goes on with the next chunk.

The engine is pure Python and holds the GIL; what a sink does with a chunk of rows
(numpy over its columns, Parquet encoding and compression in pyarrow) mostly runs with
the GIL released. On a day of traffic that is about a tenth of the run's time taken off
its critical path. The chunks are handed over in order through a short queue (at most
:data:`DEPTH` waiting, each a fresh table the engine no longer touches), so the sink sees
exactly what it would have been called with, in the same order: the results are the
same, bit for bit.
"""

from __future__ import annotations

import queue
import threading
from typing import Optional

from servesim.sim.row_stream import RecordSink

DEPTH = 4  # chunks waiting at most (each ~65k rows, a few MB): the engine waits beyond that
_DONE = None


class BackgroundSink:
    """``sink`` called on a thread with the chunks this is called with. :meth:`close`
    waits for the last; an error the sink raised is raised again by the next call or by
    :meth:`close` (the chunks after it are dropped: the run is lost anyway)."""

    def __init__(self, sink: RecordSink):
        self._chunks: queue.Queue = queue.Queue(maxsize=DEPTH)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._serve, args=(sink,), name="servesim-records", daemon=True)
        self._thread.start()

    def __call__(self, table) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put(table)

    def _serve(self, sink: RecordSink) -> None:
        while (table := self._chunks.get()) is not _DONE:
            if self._error is None:
                try:
                    sink(table)
                except BaseException as exc:  # raised on the engine's thread
                    self._error = exc

    def close(self) -> None:
        """Wait until every chunk is through the sink; raise what it raised, if it did."""
        self.stop()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Wait until the thread is done with the chunks it was given (a run that failed:
        nothing is raised)."""
        if self._thread.is_alive():
            self._chunks.put(_DONE)
            self._thread.join()
