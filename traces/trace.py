"""The one data type of this package: a validated, immutable arrival trace.

Every generator, loader and transform returns a :class:`Trace`, so the engine can trust
its input without re-checking it: times are a sorted, finite, non-negative float64 array
in seconds, and every optional column has one value per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np


class TraceError(ValueError):
    """A trace (file or generated) is malformed; the message names where and what."""


@dataclass(frozen=True)
class Trace:
    """Request arrival times in seconds, plus optional per-request columns.

    ``columns`` may hold e.g. ``size`` (items per request, int >= 1; the engine batches
    items, not requests) or ``ContextTokens``. ``source`` says where the trace came from
    (a file path or a generator description) so errors and summaries can name it.
    """

    times: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        times = np.asarray(self.times, dtype=np.float64)
        if times.ndim != 1:
            raise TraceError(f"{self.source}: arrival times must be 1-D, got shape {times.shape}")
        bad = ~np.isfinite(times)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TraceError(f"{self.source}: arrival {i} is {float(times[i])!r}; times must be finite")
        if times.size and times.min() < 0:
            i = int(np.argmin(times))
            raise TraceError(f"{self.source}: arrival {i} is {float(times[i])!r}; times must be >= 0")
        if times.size > 1:
            down = np.flatnonzero(np.diff(times) < 0)
            if down.size:
                i = int(down[0]) + 1
                raise TraceError(
                    f"{self.source}: arrival {i} at {float(times[i])!r} s comes before arrival {i - 1} "
                    f"at {float(times[i - 1])!r} s; times must be sorted"
                )
        cols = {}
        for name, values in self.columns.items():
            values = np.asarray(values)
            if values.shape != times.shape:
                raise TraceError(
                    f"{self.source}: column {name!r} has {values.size} values for {times.size} arrivals"
                )
            cols[name] = values
        if "size" in cols:
            sizes = cols["size"]
            if not np.issubdtype(sizes.dtype, np.integer) or (sizes.size and sizes.min() < 1):
                raise TraceError(f"{self.source}: column 'size' must hold integers >= 1")
        times.flags.writeable = False
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "columns", cols)

    def __len__(self) -> int:
        return int(self.times.size)

    def chunks(self, size: int, column: str | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """The arrivals in order, ``size`` at a time: ``(times, values)`` slices (views, no
        copy) of the times and of ``column`` (``None`` without one).

        A consumer that needs Python floats (the engine's dispatcher) converts one chunk at
        a time, so its memory does not grow with the length of the trace.
        """
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size!r}")
        values = None if column is None else self.columns.get(column)
        for lo in range(0, self.times.size, size):
            yield self.times[lo:lo + size], None if values is None else values[lo:lo + size]

    @property
    def duration(self) -> float:
        """Seconds from time 0 to the last arrival (0 for an empty trace)."""
        return float(self.times[-1]) if self.times.size else 0.0

    @property
    def mean_rate(self) -> float:
        """Requests per second over [0, last arrival]."""
        return len(self) / self.duration if self.duration > 0 else float("nan")
