"""Per-request results, stored column by column.

One numpy array per field, indexed by request id (the request's position in the trace),
so a run of millions of requests costs a few bytes per request and no Python object per
request. Summaries and plots are computed from these columns only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

COMPLETED, DROPPED, REJECTED = 0, 1, 2
STATUS_NAMES = {COMPLETED: "completed", DROPPED: "dropped", REJECTED: "rejected"}

COLUMNS = {
    "arrival": "arrival time, s",
    "size": "items in the request (a batch holds up to max_batch items)",
    "start": "time its batch started, s (NaN if never served)",
    "finish": "time it completed (with exits: its exit's time), or was dropped / rejected, s",
    "replica": "replica that served or dropped it (-1 if rejected)",
    "batch_size": "items in the batch it ran in (0 if never served)",
    "status": "0 completed, 1 dropped (waited past the drop limit), 2 rejected (can never be served)",
}


# Requests the dispatcher takes from the trace at a time. A window of requests costs
# about 45 bytes each as Python objects, so this bounds the run's per-request Python
# memory at a few MB however long the trace; the cost of moving the window on is a list
# conversion per chunk, a few percent of simulating it.
WINDOW = 1 << 16
BUILD_ROWS = 1 << 18  # requests per step when the table is built: bounds its temporaries (~10 MB)


class RequestLog:
    """What the engine writes while it runs: plain Python lists for a window of requests,
    numpy columns for the whole run.

    Storing into a list slot costs a fraction of storing into a numpy array element, and
    the engine does it for every request, so the hot path sees lists indexed by a request's
    *position in the window* (its id minus :attr:`base`): ``arrival`` (its time; then
    +inf, a sentinel that spares a bounds check), ``size`` (items, only when requests
    carry sizes) and ``batch`` (a served request's one store: the code ``j * replicas + r``
    of the ``j``-th batch of replica ``r``). Each replica logs its batches in a flat list of
    numbers, three per batch (start, finish, items): a list of tuples would hand Python's
    garbage collector a container per batch to track, and the replica follows from the
    code. The rarer outcomes (drops, rejections) go into dicts keyed by request id.

    The window holds :data:`WINDOW` requests from the trace (:meth:`Trace.chunks`) and the
    ones still queued; when the dispatcher has routed all of it, :meth:`advance` moves
    what is final into the numpy columns (:attr:`code`, :attr:`table_status`,
    :attr:`table_finish`, :attr:`table_replica`, and per replica :attr:`batch_chunks`) and
    takes the next chunk, so a run keeps per request only those columns (17 bytes) besides
    the trace's own times: the trace never becomes one long Python list.
    """

    __slots__ = ("n", "base", "end", "final", "largest_size", "arrival", "size", "batch", "batches",
                 "status", "finish", "replica", "code", "table_status", "table_finish", "table_replica",
                 "batch_chunks", "_chunks")

    def __init__(self, trace, replicas: int):
        n = self.n = len(trace)
        sizes = trace.columns.get("size")
        self.largest_size = None if sizes is None or not n else int(sizes.max())
        self._chunks = trace.chunks(WINDOW, "size")
        self.base = 0             # id of the request at window position 0
        self.end = 0              # window positions 0 .. end-1 hold requests base .. base+end-1
        self.final = False        # the window reaches the trace's last request
        self.arrival: list[float] = []
        self.size: list[int] | None = None if sizes is None else []
        self.batch: list[int] = []
        # per replica: start, finish, items of its batch 0, then 1, ...
        self.batches: list[list[float]] = [[] for _ in range(replicas)]
        self.status = {}          # id -> DROPPED or REJECTED; the others completed
        self.finish = {}          # id -> time it was dropped or rejected
        self.replica = {}         # id -> replica that dropped it
        # The whole run's columns, by request id; batch codes fit int32 up to 2**31 codes.
        self.code = np.full(n, -1, dtype=np.int32 if n * replicas < 2**31 else np.int64)
        self.table_status = np.full(n, COMPLETED, dtype=np.int8)
        self.table_finish = np.full(n, np.nan)
        self.table_replica = np.full(n, -1, dtype=np.int32)
        self.batch_chunks: list[list[np.ndarray]] = [[] for _ in range(replicas)]
        self._take_chunk()

    def advance(self, keep: int) -> int:
        """The dispatcher has routed the whole window; ``keep`` is the position of the first
        request still queued (or the window's end). Make what is final numpy, take the next
        chunk, and return how many positions the window moved: the caller subtracts that
        from every position it holds.

        Requests before ``keep`` are final (served, dropped or rejected), but the window
        moves only when that frees at least half of it: moving it costs a copy of the rest
        and a renumbering of every queued request, so under a queue that keeps growing the
        window grows with it instead of being copied at every chunk.
        """
        shift = keep if 2 * keep >= self.end else 0
        self._flush(shift)
        self.arrival.pop()  # the sentinel
        if shift:
            for window in (self.arrival, self.batch, self.size):
                if window is not None:
                    del window[:shift]
            self.base += shift
        self._take_chunk()
        return shift

    def close(self) -> None:
        """The run is over: make everything numpy and drop the window."""
        self._flush(self.end)
        for window in (self.arrival, self.batch, self.size):
            if window is not None:
                window.clear()

    def batch_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Every batch as a row (start, finish, items), replica 0's first, and where each
        replica's rows begin (``first[r]``; ``first[-1]`` is the number of batches)."""
        counts = [sum(len(c) for c in chunks) for chunks in self.batch_chunks]
        first = np.concatenate(([0], np.cumsum(counts)))
        table = np.empty((int(first[-1]), 3))
        for r, chunks in enumerate(self.batch_chunks):
            row = int(first[r])
            for chunk in chunks:
                table[row:row + len(chunk)] = chunk
                row += len(chunk)
            chunks.clear()
        return table, first

    def _take_chunk(self) -> None:
        times, sizes = next(self._chunks, (None, None))
        if times is not None:
            self.arrival.extend(times.tolist())
            self.batch.extend([-1] * times.size)
            if self.size is not None:
                self.size.extend(sizes.tolist())
        self.end = len(self.arrival)
        self.final = self.base + self.end == self.n
        self.arrival.append(float("inf"))

    def _flush(self, upto: int) -> None:
        """Move the codes of window positions before ``upto``, and every drop, rejection and
        logged batch so far, into the numpy columns."""
        if upto:
            self.code[self.base:self.base + upto] = self.batch[:upto]
        for column, values in ((self.table_status, self.status), (self.table_finish, self.finish),
                               (self.table_replica, self.replica)):
            if values:
                ids = np.fromiter(values.keys(), dtype=np.int64, count=len(values))
                column[ids] = np.fromiter(values.values(), dtype=column.dtype, count=len(ids))
                values.clear()
        for flat, chunks in zip(self.batches, self.batch_chunks):
            if flat:
                chunks.append(np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(-1, 3))
                flat.clear()


@dataclass
class RequestTable:
    """Columns of the per-request table; see :data:`COLUMNS` for their meaning."""

    arrival: np.ndarray
    size: np.ndarray
    start: np.ndarray
    finish: np.ndarray
    replica: np.ndarray
    batch_size: np.ndarray
    status: np.ndarray
    # a model with exits adds sim.exits.EXIT_COLUMNS (name -> column)
    exits: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(cls, arrival: np.ndarray, size: np.ndarray | None, log: RequestLog,
              batches: np.ndarray, first: np.ndarray) -> "RequestTable":
        """The table of a closed ``log``; ``batches, first`` is its :meth:`~RequestLog.batch_table`.

        The log's outcome columns become the table's. Served requests are expanded from
        their batch codes :data:`BUILD_ROWS` at a time, so building adds only the columns
        themselves to the run's memory, not a temporary per request for every step.
        """
        n = arrival.size
        start = np.full(n, np.nan)
        finish, replica, batch_size = log.table_finish, log.table_replica, np.zeros(n, dtype=np.int32)
        replicas = len(first) - 1
        for lo in range(0, n, BUILD_ROWS):
            code = log.code[lo:lo + BUILD_ROWS]
            served = np.flatnonzero(code >= 0)
            code = code[served]
            served += lo
            # batch code j * R + r -> row first[r] + j of the batch table
            if replicas == 1:
                of, rows = 0, code
            else:
                of = code % replicas
                rows = first[of] + code // replicas
            start[served] = batches[rows, 0]
            finish[served] = batches[rows, 1]
            replica[served] = of
            batch_size[served] = batches[rows, 2]
        return cls(
            arrival=np.asarray(arrival, dtype=np.float64),
            size=np.ones(n, dtype=np.int32) if size is None else np.asarray(size, dtype=np.int32),
            start=start,
            finish=finish,
            replica=replica,
            batch_size=batch_size,
            status=log.table_status,
        )

    def __len__(self) -> int:
        return int(self.arrival.size)

    def columns(self) -> dict[str, np.ndarray]:
        """The table as named columns, ``id`` first, for writing to disk."""
        cols = {"id": np.arange(len(self), dtype=np.int64)}
        cols.update((name, getattr(self, name)) for name in COLUMNS)
        cols["dropped"] = self.status != COMPLETED
        cols.update(self.exits)
        return cols


@dataclass
class Results:
    """Everything one run produced: the per-request table plus run-level facts."""

    requests: RequestTable
    replicas: int
    end_time: float
    busy_time: np.ndarray
    batches: int
    rejections: dict[str, int] = field(default_factory=dict)
    out_of_range: dict = field(default_factory=dict)
    interpolated: dict = field(default_factory=dict)  # batch size -> (batches, estimated error), see sim.engine
    exit_names: tuple[str, ...] = ()  # a model with exits: their names, in order
    host_busy_s: Optional[float] = None  # with a serving host (sim.host): its seconds of intake and launches
