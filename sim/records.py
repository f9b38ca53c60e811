"""Per-request results, stored column by column.

One numpy array per field, indexed by request id (the request's position in the trace),
so a run of millions of requests costs a few bytes per request and no Python object per
request. Summaries and plots are computed from these columns only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

COMPLETED, DROPPED, REJECTED = 0, 1, 2
STATUS_NAMES = {COMPLETED: "completed", DROPPED: "dropped", REJECTED: "rejected"}

COLUMNS = {
    "arrival": "arrival time, s",
    "size": "items in the request (a batch holds up to max_batch items)",
    "start": "time its batch started, s (NaN if never served)",
    "finish": "time it completed, or was dropped / rejected, s",
    "replica": "replica that served or dropped it (-1 if rejected)",
    "batch_size": "items in the batch it ran in (0 if never served)",
    "status": "0 completed, 1 dropped (waited past the drop limit), 2 rejected (can never be served)",
}


class RequestLog:
    """What the engine writes while it runs: preallocated Python lists.

    Storing into a list slot costs a fraction of storing into a numpy array element, and
    the engine does it for every request; :meth:`RequestTable.build` turns the lists
    and the workers' batch logs into numpy columns once, at the end of the run.
    """

    __slots__ = ("arrival", "size", "replica", "batch", "status", "finish")

    def __init__(self, arrival: list, size: list | None):
        n = len(arrival)
        self.arrival = arrival
        self.size = size
        self.replica = [-1] * n   # set when served or dropped
        self.batch = [-1] * n     # index into its worker's batch log, set when served
        self.status = [COMPLETED] * n  # the engine marks drops and rejections
        self.finish = {}          # finish times of dropped and rejected requests only


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

    @classmethod
    def build(cls, arrival: np.ndarray, size: np.ndarray | None, log: RequestLog,
              batch_logs: list[list[tuple[float, float, int]]]) -> "RequestTable":
        n = arrival.size
        replica = np.array(log.replica, dtype=np.int32)
        batch = np.array(log.batch, dtype=np.int64)
        start = np.full(n, np.nan)
        finish = np.full(n, np.nan)
        batch_size = np.zeros(n, dtype=np.int32)
        for r, batches in enumerate(batch_logs):
            served = np.flatnonzero((replica == r) & (batch >= 0))
            if not batches or not served.size:
                continue
            flat = itertools.chain.from_iterable(batches)
            table = np.fromiter(flat, dtype=np.float64, count=3 * len(batches)).reshape(-1, 3)
            rows = batch[served]
            start[served] = table[rows, 0]
            finish[served] = table[rows, 1]
            batch_size[served] = table[rows, 2].astype(np.int32)
        if log.finish:
            ids = np.fromiter(log.finish.keys(), dtype=np.int64, count=len(log.finish))
            finish[ids] = np.fromiter(log.finish.values(), dtype=np.float64, count=len(ids))
        return cls(
            arrival=np.asarray(arrival, dtype=np.float64),
            size=np.ones(n, dtype=np.int32) if size is None else np.asarray(size, dtype=np.int32),
            start=start,
            finish=finish,
            replica=replica,
            batch_size=batch_size,
            status=np.array(log.status, dtype=np.int8),
        )

    def __len__(self) -> int:
        return int(self.arrival.size)

    def columns(self) -> dict[str, np.ndarray]:
        """The table as named columns, ``id`` first, for writing to disk."""
        cols = {"id": np.arange(len(self), dtype=np.int64)}
        cols.update((name, getattr(self, name)) for name in COLUMNS)
        cols["dropped"] = self.status != COMPLETED
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
