"""A generated trace too long to hold, drawn again stretch by stretch as it is read.

A week at 1,000 req/s is 605M arrivals: 4.8 GB as one float64 array, more while it is
drawn. A generated trace needs no array at all: its generator draws it a stretch at a
time (:func:`traces.generators._arrivals`) from a random stream whose state can be
saved. So a :class:`StreamedTrace` draws it once to count it and to check it (what a
:class:`~traces.trace.Trace` checks: finite, non-negative, sorted), keeping only the
count and the last time, and each reader (:meth:`StreamedTrace.window`) draws it again
from the saved state: the same arrivals, bit for bit, as the array the same generator
and seed make (``tests/traces/test_streamed.py``).

The engine reads it through an :class:`ArrivalWindow`, forward only: the slices it asks
for are drawn on demand and let go once read (``release``), so a run holds a stretch
and a window of arrivals whatever its length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterator, Mapping

import numpy as np

from .trace import TraceError


@dataclass
class StreamedTrace:
    """``count`` arrivals, the last at ``last`` s, drawn by ``stretches()`` (a fresh,
    identical iterator of sorted arrays each call, from one random stream: so one reader
    at a time, :attr:`times`). It has no per-request ``columns``."""

    stretches: Callable[[], Iterator[np.ndarray]]
    count: int
    last: float
    source: str = "<generated>"
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def drawn(cls, stretches: Callable[[], Iterator[np.ndarray]], source: str) -> "StreamedTrace":
        """Draw the trace once to count and check it."""
        count, last = 0, 0.0
        for times in stretches():
            if not times.size:
                continue
            bad = ~np.isfinite(times) | (np.diff(times, prepend=last) < 0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise TraceError(f"{source}: arrival {count + i} is {float(times[i])!r}; times must be finite, "
                                 f"non-negative and sorted")
            count, last = count + times.size, float(times[-1])
        return cls(stretches, count, last, source)

    @cached_property
    def times(self) -> "ArrivalWindow":
        """The arrival times, as a forward-only window: the trace's one reader."""
        return ArrivalWindow(self)

    def array(self) -> np.ndarray:
        """All the arrival times at once (for a trace that fits in memory: tests, plots)."""
        return np.concatenate([np.empty(0), *self.stretches()])


class ArrivalWindow:
    """The arrival times of a :class:`StreamedTrace` as the engine reads them: ``len``,
    the last (``[-1]``) and slices ``[a:b]`` that never go back before what was let go
    (:meth:`release`). A slice is drawn as far as it reaches."""

    def __init__(self, trace: StreamedTrace):
        self.size = trace.count
        self.last = trace.last
        self._stretches = trace.stretches()
        self._held = np.empty(0)  # the times from arrival ``_first`` on
        self._first = 0
        self._lo = 0  # nothing before it is read again: dropped from ``_held`` at the next draw

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)) and key in (-1, self.size - 1):
            return self.last
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"a streamed trace's times are read as slices [a:b] or [-1], not [{key!r}]")
        start, stop, _ = key.indices(self.size)
        if start < self._lo:
            raise IndexError(f"arrival {start} was let go (the window starts at {self._lo})")
        while self._first + self._held.size < stop:  # drawn on, dropping what was let go
            drop = min(self._lo - self._first, self._held.size)
            self._held = np.concatenate([self._held[drop:], next(self._stretches)])
            self._first += drop
        return self._held[start - self._first:max(start, stop) - self._first]

    def release(self, upto: int) -> None:
        """Nothing before arrival ``upto`` will be read again (it is dropped with the next
        stretch drawn: copying what is left at every release would cost a stretch a time)."""
        self._lo = max(self._lo, upto)
