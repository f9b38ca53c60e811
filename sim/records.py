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

    def __len__(self) -> int:
        return int(self.arrival.size)

    def columns(self, first: int = 0) -> dict[str, np.ndarray]:
        """The table as named columns, ``id`` first, for writing to disk; ``first`` is
        the first row's request id (a chunk of a streamed table, sim.row_stream)."""
        cols = {"id": np.arange(first, first + len(self), dtype=np.int64)}
        cols.update((name, getattr(self, name)) for name in COLUMNS)
        cols["dropped"] = self.status != COMPLETED
        cols.update(self.exits)
        return cols

    def to_frame(self):
        """The table as a pandas DataFrame, one row per request (:meth:`columns`)."""
        import pandas as pd  # only for readers of the table: the engine never needs it
        return pd.DataFrame(self.columns())


@dataclass
class Results:
    """Everything one run produced: the per-request table plus run-level facts."""

    requests: Optional[RequestTable]  # None where the table went to a sink as the run went (sim.simulate's ``sink``)
    replicas: int
    end_time: float
    busy_time: np.ndarray
    batches: int
    rejections: dict[str, int] = field(default_factory=dict)
    out_of_range: dict = field(default_factory=dict)
    interpolated: dict = field(default_factory=dict)  # batch size -> (batches, estimated error), see sim.engine
    exit_names: tuple[str, ...] = ()  # a model with exits: their names, in order
    host_busy_s: Optional[float] = None  # with a serving host (sim.host): its seconds of intake and launches
