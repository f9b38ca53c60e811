"""The request table of a steady run, handed to a sink in chunks while the run goes.

A run of a day of traffic (86.4M requests at 1,000 req/s) cannot hold its table: the
table is ~40 bytes a request, and building it at the end from the lanes' batch logs
(24 bytes a batch) needs both at once. Where a run is *steady* (one task, a plan that
never changes, plain requests: the lanes of :meth:`sim.cluster._Cluster.steady_lane`
or :mod:`sim.one_loop`), a request's row is final as soon as it leaves its queue: its
batch is logged (start, finish, items) when the batch starts, and a drop or a rejection
is noted when it happens. So each time the engine moves its window of arrival times on
(every :data:`sim.cluster.WINDOW` arrivals), every request older than the oldest still
queued can be written out, and the batches no later request can be in let go.

A lane takes its batches from the head of a FIFO queue of request ids, so each lane's
batches hold increasing ids: once the requests up to ``upto`` are out, a lane's batches
before the last one that held any of them are referenced by no later request.

The rows are those :meth:`sim.cluster.ClusterResults.table` builds at the end, chunk by
chunk; the run-level figures read off the batch logs (batches, their items, each
replica's busy seconds, the last batch's end) are summed as the logs are let go, so a
replica's busy seconds may differ from the whole-log sum in the last bits (the order of
a float sum), nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from servesim.traces.streamed import ArrivalWindow

from .errors import SimulationError
from .records import COMPLETED, RequestTable

if TYPE_CHECKING:
    from .cluster import _Cluster

# A run's table as it goes: called with consecutive chunks of its rows, in request order
# (the first chunk starts at request 0).
RecordSink = Callable[[RequestTable], None]


class RowStream:
    """Hands ``cluster``'s one task's rows to ``sink`` as they become final (:meth:`emit`),
    keeping only the batches later requests may still be in."""

    def __init__(self, cluster: "_Cluster", task: str, sink: RecordSink):
        self.cluster, self.task, self.sink = cluster, task, sink
        self.next = 0  # the first request not yet handed over
        self.held: list[np.ndarray] = []  # per lane, its batches from base[lane] on (start, finish, items)
        self.base: list[int] = []
        self.busy_s = np.zeros(0)  # per replica, seconds running batches (of the batches let go so far)
        self.batch_items = np.zeros(1, dtype=np.int64)  # batches by their items
        self.batches = 0
        self.last_batch_end = 0.0
        self.last_finish = -np.inf  # the latest finish handed over

    def emit(self, upto: int, final: bool = False) -> None:
        """Hand over the rows of the requests before ``upto``, all of which have left their
        queues (served, dropped or rejected). ``final``: the run is over; a run without a
        request hands over one empty chunk, so that the sink still sees the columns."""
        lo = self.next
        self._take_logs()
        if upto <= lo and not (final and lo == 0):
            return
        cluster = self.cluster
        codes_of = cluster.batch_of[self.task]
        code = np.frombuffer(codes_of, dtype=np.int32 if codes_of.itemsize == 4 else np.int64)[
            lo - cluster.base:upto - cluster.base]
        bits = cluster.lane_bits[self.task]
        n = upto - lo
        start, finish = np.full(n, np.nan), np.full(n, np.nan)
        replica, batch_size = np.full(n, -1, dtype=np.int32), np.zeros(n, dtype=np.int32)
        status = np.full(n, COMPLETED, dtype=np.int8)
        served = np.flatnonzero(code >= 0)
        if served.size:
            codes = code[served]
            slot, number = codes & ((1 << bits) - 1), codes >> bits
            counts = [len(h) for h in self.held]
            first = np.cumsum([0] + counts[:-1])
            table = np.concatenate(self.held) if len(self.held) > 1 else self.held[0]
            rows = first[slot] + number - np.asarray(self.base)[slot]
            start[served], finish[served] = table[rows, 0], table[rows, 1]
            batch_size[served] = table[rows, 2]
            replica[served] = np.array([log.replica for log in cluster.batches[self.task]], dtype=np.int32)[slot]
            last = np.full(len(self.held), -1, dtype=np.int64)
            np.maximum.at(last, slot, number)  # each lane's last batch with a request handed over
            for lane in np.flatnonzero(last >= 0).tolist():
                self.held[lane] = self.held[lane][int(last[lane]) - self.base[lane]:]
                self.base[lane] = int(last[lane])
        ended = [rid for rid in cluster.ended if lo <= rid < upto]
        if ended:
            dropped_by = cluster.dropped_by[self.task]
            for rid in ended:
                status[rid - lo], finish[rid - lo], _ = cluster.ended.pop(rid)
                replica[rid - lo] = dropped_by.pop(rid, -1)
        unfinished = np.isnan(finish)
        if unfinished.any():
            raise SimulationError(f"{int(unfinished.sum())} request(s) were neither served nor dropped "
                                  f"(the first: {lo + int(np.flatnonzero(unfinished)[0])})")
        self.last_finish = max(self.last_finish, float(finish.max(initial=-np.inf)))
        size = np.ones(n, dtype=np.int32) if cluster.size is None else cluster.size[lo:upto].astype(np.int32)
        self.next = upto
        arrival = np.array(cluster.arrival[lo:upto], dtype=np.float64)
        if isinstance(cluster.arrival, ArrivalWindow):  # a streamed trace: nothing reads these again
            cluster.arrival.release(upto)
        self.sink(RequestTable(arrival=arrival, size=size, start=start, finish=finish, replica=replica,
                               batch_size=batch_size, status=status))

    def _take_logs(self) -> None:
        """Move the lanes' new batches (flushed into numpy by the engine) into :attr:`held`,
        counting them into the run-level figures on the way."""
        logs = self.cluster.batches[self.task]
        while len(self.held) < len(logs):
            self.held.append(np.empty((0, 3)))
            self.base.append(0)
        if self.busy_s.size < len(self.cluster.records):
            self.busy_s = np.concatenate([self.busy_s, np.zeros(len(self.cluster.records) - self.busy_s.size)])
        for lane, log in enumerate(logs):
            log.flush()
            if not log.chunks:
                continue
            new = np.concatenate(log.chunks) if len(log.chunks) > 1 else log.chunks[0]
            log.chunks = []
            self.held[lane] = np.concatenate([self.held[lane], new]) if len(self.held[lane]) else new
            self.batches += len(new)
            self.busy_s[log.replica] += float((new[:, 1] - new[:, 0]).sum())
            used = np.bincount(new[:, 2].astype(np.int64))
            if used.size > self.batch_items.size:
                self.batch_items, used = used, self.batch_items
            self.batch_items[:used.size] += used
            self.last_batch_end = max(self.last_batch_end, float(new[:, 1].max()))
