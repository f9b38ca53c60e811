"""A run's per-request summary figures, from its request table fed in chunks.

A run of a day or a week cannot hold its per-request table, so the engine hands it over
in chunks as the run goes (``sim.row_stream``: consecutive request ids in id order from
0, arrivals non-decreasing). :class:`RequestStream` takes each chunk (:meth:`add`, a
``RecordSink``) and keeps only what the summary needs: counts, a running sum and maximum,
the backlog (:mod:`sim.backlog`), every completed latency where the percentiles must be
numpy's exact ones (``exact=True``, 8 bytes a request) or else only a
:class:`~sim.sketch.LatencySketch` (memory independent of the run's length), and
per-interval counters for a plot of the run over time. :func:`sim.metrics.summarize`
feeds a whole table to one as a single chunk, so there is one computation of these
figures, and its exact ones do not depend on how the table was cut.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .backlog import Backlog
from .records import COMPLETED, DROPPED, REJECTED, RequestTable
from .sketch import LatencySketch

PERCENTILES = (25, 50, 90, 95, 99)
MAX_INTERVALS = 2_000_000  # per-interval counters: 40 B an interval, 80 MB at most (23 days at 1 s)


def latency_ms(latency: np.ndarray) -> dict:
    """Mean and :data:`PERCENTILES` of ``latency`` (seconds) in ms, ``None`` without any.

    The percentiles partition ``latency`` in place, all in one pass, so a summary adds no
    copy of a run's latencies: pass a temporary (the mean is taken first, in its order).
    """
    if not latency.size:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}}
    mean = round(float(latency.mean()) * 1e3, 6)
    values = np.percentile(latency, PERCENTILES, overwrite_input=True)
    return {"mean": mean, **{f"p{q}": round(float(v) * 1e3, 6) for q, v in zip(PERCENTILES, values)}}


class RequestStream:
    """The per-request figures of :func:`sim.metrics.summarize` from a table fed in chunks.

    ``count`` requests will come, the last arriving at ``last_arrival`` (s); ``slo`` and
    ``warmup`` (s) as for ``summarize``. ``exact=True`` keeps every completed latency
    (a float64 array of ``count``) so the percentiles are numpy's; ``exact=False`` keeps
    only the sketch, the mean then a running sum's. ``relative_accuracy`` is the sketch's
    (``None``: no sketch, exact only). ``interval_s`` (s of arrival time; ``None``: none)
    is the width of the per-interval counters (:meth:`intervals`, every request,
    warmup included), ``sketch_interval_s`` that of the per-interval sketches
    (:meth:`interval_sketches`; ``None``: one sketch of the whole run). A week at 1 s
    and 60 s keeps 24 MB of counters and 10,080 sketches, each 8 B a bucket between its
    smallest and largest key plus its object: 3.4 kB measured for a minute of lognormal
    latencies (sigma 0.8) at 1,000 req/s, so 35 MB; 1% buckets from 1 us to 1e4 s, the
    widest a sketch could span, would be 10 kB each.
    """

    def __init__(self, count: int, last_arrival: float, slo: Optional[float] = None, warmup: float = 0.0, *,
                 exact: bool = True, relative_accuracy: Optional[float] = 0.01, interval_s: Optional[float] = 1.0,
                 sketch_interval_s: Optional[float] = 60.0):
        if relative_accuracy is None and not exact:
            raise ValueError("request stream: exact=False needs a relative_accuracy (its sketch)")
        self.count, self.last_arrival = int(count), float(last_arrival)
        self.slo, self.warmup, self.exact = slo, warmup, exact
        self.latencies = np.empty(self.count if exact else 0)  # exact: completed latencies, in id order
        self.seen = 0  # requests fed
        self.skipped = 0  # of them, arriving before the warmup ended
        self.completed = self.dropped = self.rejected = self.late = 0
        self.completed_items = 0  # items of every completed request, warmup included
        self.first_arrival: Optional[float] = None  # of the measured requests
        self.last_seen = -math.inf  # the latest arrival fed
        self.last_finish = -math.inf  # the latest finish of a measured completed request
        self.backlog = Backlog(self.last_arrival)
        self.counters = None if interval_s is None else _IntervalCounters(interval_s, self.last_arrival, slo)
        self.sketches = None if relative_accuracy is None else _IntervalSketches(
            sketch_interval_s, self.last_arrival, relative_accuracy)
        self._latency_figures: Optional[dict] = None

    def add(self, table: RequestTable) -> None:
        """The next chunk of the table: the requests after those fed so far (exit columns are ignored)."""
        arrival, finish, status = table.arrival, table.finish, table.status
        n = arrival.size
        if not n:
            return
        self._check(arrival, finish)
        self.seen += n
        self.last_seen = float(arrival[-1])
        done_all = status == COMPLETED
        self.completed_items += int(table.size.sum(where=done_all))
        if self.counters is not None:
            self.counters.add(arrival, finish, status)
        skip = int(np.searchsorted(arrival, self.warmup, side="left")) if self.warmup > 0 else 0
        self.skipped += skip
        if skip == n:
            return
        arrival, finish, status, done = arrival[skip:], finish[skip:], status[skip:], done_all[skip:]
        if self.first_arrival is None:
            self.first_arrival = float(arrival[0])
        completed = int(np.count_nonzero(done))
        tally = np.bincount(status, minlength=3)
        self.dropped += int(tally[DROPPED])
        self.rejected += int(tally[REJECTED])
        latency = finish - arrival
        if completed < arrival.size:  # masking copies: only where some requests got no answer
            latency = latency[done]
        if completed:
            self.last_finish = max(self.last_finish, float(finish.max(where=done, initial=-np.inf)))
            if self.exact:
                self.latencies[self.completed:self.completed + completed] = latency
            if self.sketches is not None:
                self.sketches.add(arrival if completed == arrival.size else arrival[done], latency)
            if self.slo is not None:
                self.late += int(np.count_nonzero(latency > self.slo))
        self.completed += completed
        self.backlog.add(arrival, finish)

    def _check(self, arrival: np.ndarray, finish: np.ndarray) -> None:
        """Refuse a chunk that breaks what the exact figures rest on."""
        if self.seen + arrival.size > self.count:
            raise ValueError(f"request stream: fed more than the {self.count} requests announced")
        if arrival[0] < max(self.last_seen, 0.0) or np.any(arrival[1:] < arrival[:-1]):
            raise ValueError(f"request stream: arrivals out of order (or before 0 s) after request {self.seen}")
        if arrival[-1] > self.last_arrival:
            raise ValueError(f"request stream: arrival {arrival[-1]} after the announced last arrival"
                             f" {self.last_arrival}")
        if np.any(finish < arrival):
            raise ValueError(f"request stream: a request finishes before it arrives, after request {self.seen}")

    def figures(self) -> dict:
        """The per-request figures of :func:`sim.metrics.summarize`, once every request has come."""
        if self.seen != self.count or (self.count and self.last_seen != self.last_arrival):
            raise ValueError(f"request stream: {self.seen} of {self.count} requests fed, the last arriving at"
                             f" {self.last_seen} (announced: {self.last_arrival})")
        n, completed = self.count - self.skipped, self.completed
        span = self.last_finish - self.first_arrival if completed else 0.0
        violations = None
        if self.slo is not None and n:
            violations = round(float((self.late + (n - completed)) / n), 9)
        return {
            "requests": n,
            "completed": completed,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "throughput_rps": round(completed / span, 6) if span > 0 else None,
            "latency_ms": self._latency_ms(),
            "slo_violation_rate": violations,
            "completed_items": self.completed_items,
            **self.backlog.figures(),
            "warmup_requests": self.skipped,
        }

    def _latency_ms(self) -> dict:
        """:func:`latency_ms` of the completed latencies, computed once (the exact
        percentiles reorder the kept latencies, which would change a second mean's bits)."""
        if self._latency_figures is None:
            if self.exact:
                self._latency_figures = latency_ms(self.latencies[:self.completed])
            elif not self.completed:
                self._latency_figures = latency_ms(np.zeros(0))
            else:
                sketch = self.sketch()
                values = sketch.quantiles([q / 100 for q in PERCENTILES])
                self._latency_figures = {"mean": round(sketch.sum / self.completed * 1e3, 6),
                                         **{f"p{q}": round(v * 1e3, 6) for q, v in zip(PERCENTILES, values)}}
        return self._latency_figures

    def intervals(self) -> dict[str, np.ndarray]:
        """Per interval of ``interval_s`` of arrival time, of the requests arriving in it:
        ``start_s``, ``arrivals``, ``completed``, ``dropped``, ``rejected``,
        ``latency_sum_s`` (of the completed) and, with an SLO, ``slo_violations`` (as the
        summary counts them: completed late, dropped or rejected)."""
        if self.counters is None:
            raise ValueError("request stream: built without per-interval counters (interval_s=None)")
        return self.counters.columns()

    def sketch(self) -> LatencySketch:
        """The sketch of every completed measured latency."""
        if self.sketches is None:
            raise ValueError("request stream: built without a sketch (relative_accuracy=None)")
        return self.sketches.merged()

    def interval_sketches(self) -> tuple[np.ndarray, list[LatencySketch]]:
        """The start (s) of each interval of ``sketch_interval_s`` of arrival time with a
        completed measured request, and the sketch of those requests' latencies."""
        if self.sketches is None or self.sketches.width is None:
            raise ValueError("request stream: built without per-interval sketches")
        return np.asarray(self.sketches.index, dtype=np.int64) * self.sketches.width, list(self.sketches.sketches)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the stream keeps (not the backlog's pending finishes, which
        hold the requests still in the system)."""
        return int(self.latencies.nbytes
                   + (self.counters.nbytes if self.counters is not None else 0)
                   + (self.sketches.nbytes if self.sketches is not None else 0))


def _interval_index(arrival: np.ndarray, width: float) -> np.ndarray:
    """The interval of each (non-negative) arrival: its time over the width, rounded down
    (a true division, so 3.0 s is in interval 30 of 0.1 s, unlike Python's ``3.0 // 0.1``)."""
    return (arrival / width).astype(np.int64)


def _interval_count(width: float, last_arrival: float) -> int:
    if not width > 0:
        raise ValueError(f"request stream: an interval must be > 0 s, got {width}")
    count = int(_interval_index(np.array([last_arrival]), width)[0]) + 1
    if count > MAX_INTERVALS:
        raise ValueError(f"request stream: {count} intervals of {width} s up to {last_arrival} s is more than"
                         f" {MAX_INTERVALS}; choose a wider interval")
    return count


class _IntervalCounters:
    """Counts per interval of arrival time, kept in arrays over the run's length."""

    def __init__(self, width: float, last_arrival: float, slo: Optional[float]):
        self.width, self.slo = width, slo
        intervals = _interval_count(width, last_arrival)
        self.by_status = np.zeros((intervals, 3), dtype=np.int64)  # completed, dropped, rejected
        self.latency_sum = np.zeros(intervals)
        self.late = np.zeros(intervals if slo is not None else 0, dtype=np.int64)

    def add(self, arrival: np.ndarray, finish: np.ndarray, status: np.ndarray) -> None:
        index = _interval_index(arrival, self.width)
        lo, hi = int(index[0]), int(index[-1])  # arrivals are in order: the chunk covers lo..hi only
        width = hi - lo + 1
        local = index - lo
        self.by_status[lo:hi + 1] += np.bincount(local * 3 + status, minlength=3 * width).reshape(width, 3)
        done = status == COMPLETED
        latency = (finish - arrival)[done]
        self.latency_sum[lo:hi + 1] += np.bincount(local[done], weights=latency, minlength=width)
        if self.slo is not None:
            late = np.bincount(local[done][latency > self.slo], minlength=width)
            self.late[lo:hi + 1] += late + np.bincount(local[~done], minlength=width)

    def columns(self) -> dict[str, np.ndarray]:
        out = {"start_s": np.arange(self.latency_sum.size) * self.width,
               "arrivals": self.by_status.sum(axis=1),
               "completed": self.by_status[:, COMPLETED].copy(),
               "dropped": self.by_status[:, DROPPED].copy(),
               "rejected": self.by_status[:, REJECTED].copy(),
               "latency_sum_s": self.latency_sum.copy()}
        if self.slo is not None:
            out["slo_violations"] = self.late.copy()
        return out

    @property
    def nbytes(self) -> int:
        return int(self.by_status.nbytes + self.latency_sum.nbytes + self.late.nbytes)


class _IntervalSketches:
    """A latency sketch per interval of arrival time (all one interval without a width);
    intervals without a completed request have none. Arrivals come in order, so only the
    latest interval's sketch can still grow."""

    def __init__(self, width: Optional[float], last_arrival: float, relative_accuracy: float):
        self.width, self.relative_accuracy = width, relative_accuracy
        if width is not None:
            _interval_count(width, last_arrival)
        self.index: list[int] = []
        self.sketches: list[LatencySketch] = []

    def add(self, arrival: np.ndarray, latency: np.ndarray) -> None:
        """The latencies of completed requests and their arrivals (in order)."""
        if self.width is None:
            self._sketch_of(0).add(latency)
            return
        index = _interval_index(arrival, self.width)
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        for start, end in zip(starts, np.r_[starts[1:], index.size]):
            self._sketch_of(int(index[start])).add(latency[start:end])

    def _sketch_of(self, interval: int) -> LatencySketch:
        if not self.index or self.index[-1] != interval:
            self.index.append(interval)
            self.sketches.append(LatencySketch(self.relative_accuracy))
        return self.sketches[-1]

    def merged(self) -> LatencySketch:
        """The sketch of every latency: all the intervals' merged."""
        whole = LatencySketch(self.relative_accuracy)
        for sketch in self.sketches:
            whole.merge(sketch)
        return whole

    @property
    def nbytes(self) -> int:
        return sum(sketch.nbytes for sketch in self.sketches)
