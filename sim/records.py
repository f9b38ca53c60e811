"""Per-request results, stored column by column.

One numpy array per field, indexed by request id (the request's position in the trace),
so a run of millions of requests costs a few bytes per request and no Python object per
request. Summaries and plots are computed from these columns only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


class RequestLog:
    """What the engine writes while it runs: plain Python lists and dicts.

    Storing into a list slot costs a fraction of storing into a numpy array element, and
    the engine does it for every request, so a served request costs one store: the code
    of its batch, ``j * replicas + r`` for the ``j``-th batch of replica ``r``. Each
    replica logs its batches in a flat list of floats, two per batch (start, finish): a
    list of tuples would hand Python's garbage collector a container per batch to track,
    and the replica and the batch's item count follow from the codes. The rarer outcomes
    (drops, rejections) go into dicts keyed by request id. :meth:`RequestTable.build`
    turns all of it into numpy columns once, at the end.
    """

    __slots__ = ("arrival", "size", "batch", "batches", "status", "finish", "replica")

    def __init__(self, arrival: list, size: list | None, replicas: int):
        n = len(arrival) - 1
        self.arrival = arrival    # arrival times, then +inf (the dispatcher's sentinel)
        self.size = size
        self.batch = [-1] * n     # batch code, set when served
        # per replica: start, finish of its batch 0, then 1, ...
        self.batches: list[list[float]] = [[] for _ in range(replicas)]
        self.status = {}          # id -> DROPPED or REJECTED; the others completed
        self.finish = {}          # id -> time it was dropped or rejected
        self.replica = {}         # id -> replica that dropped it

    def clear(self) -> None:
        """Empty every list and dict in place, once the table is built."""
        for name in self.__slots__:
            value = getattr(self, name)
            if value is not None:
                value.clear()


def batch_tables(log: RequestLog) -> list[np.ndarray]:
    """Each replica's batches as an ``(m_r, 2)`` array of start and finish times."""
    return [np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(-1, 2) for flat in log.batches]


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
              tables: list[np.ndarray]) -> "RequestTable":
        """``tables`` is :func:`batch_tables` of ``log``."""
        n = arrival.size
        sizes = np.ones(n, dtype=np.int32) if size is None else np.asarray(size, dtype=np.int32)
        code = np.fromiter(log.batch, dtype=np.int64, count=n)
        start = np.full(n, np.nan)
        finish = np.full(n, np.nan)
        replica = np.full(n, -1, dtype=np.int32)
        batch_size = np.zeros(n, dtype=np.int32)
        served = np.flatnonzero(code >= 0)
        if served.size:
            # batch code j * R + r -> row of the concatenated tables
            counts = np.array([len(t) for t in tables])
            first_row = np.cumsum(counts) - counts
            replicas = len(tables)
            if replicas == 1:
                of, rows = 0, code[served]
            else:
                of = code[served] % replicas
                rows = first_row[of] + code[served] // replicas
            both = np.concatenate(tables)
            start[served] = both[:, 0][rows]
            finish[served] = both[:, 1][rows]
            replica[served] = of
            items = np.bincount(rows, weights=sizes[served], minlength=len(both))
            batch_size[served] = items[rows]
        status = np.full(n, COMPLETED, dtype=np.int8)
        for column, values in ((status, log.status), (finish, log.finish), (replica, log.replica)):
            if values:
                ids = np.fromiter(values.keys(), dtype=np.int64, count=len(values))
                column[ids] = np.fromiter(values.values(), dtype=column.dtype, count=len(ids))
        return cls(
            arrival=np.asarray(arrival, dtype=np.float64),
            size=sizes,
            start=start,
            finish=finish,
            replica=replica,
            batch_size=batch_size,
            status=status,
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
    exit_names: tuple[str, ...] = ()  # a model with exits: their names, in order
