"""A mergeable quantile sketch of latencies with a stated relative error (DDSketch).

A run of a week (605M requests) cannot keep its latencies to sort them, and a sweep
wants one distribution over its seeds. DDSketch (Masson, Rim and Lee, VLDB 2019) counts
each value in the bucket ``key = ceil(log_gamma(x))`` with ``gamma = (1 + a) / (1 - a)``
and answers a quantile with its bucket's representative value, which is within relative
error ``a`` of every value in the bucket. Counts add, so sketches of disjoint samples
merge exactly into the sketch of their union.

The mapping and the meaning of a quantile are the ``ddsketch`` package's
(:class:`ddsketch.mapping.LogarithmicMapping`, ``DDSketch.get_quantile_value``). Its
stores are Python lists filled one value per call, about a microsecond a value: a week
would spend ten minutes there. So the counts live here in one numpy ``int64`` array over
the keys seen, filled a whole array of values at a time (``np.bincount``), with the keys
computed by numpy from the mapping's own formula.

Guarantee: for ``0 <= q <= 1``, :meth:`LatencySketch.quantile` is within relative error
``a`` of the exact lower-rank quantile ``np.quantile(x, q, method="lower")`` (the value
of rank ``floor(q * (n - 1))``), as DDSketch's is, up to a few float roundings. A key is
computed with numpy's ``log``, which may round one ulp apart from the C library's that
the mapping uses; the two keys then differ by one only for a value within a few ulps of
a bucket edge ``gamma**k``, where both buckets' representatives are within ``a`` of it
(``2 gamma**k / (1 + gamma)`` and ``2 gamma**(k+1) / (1 + gamma)`` are ``a`` below and
above), so the bound holds either way. Values at or below ``zero_threshold`` are counted
in a zero bucket and answered as 0 (an absolute error of at most the threshold); the
answer is clamped to the exact ``min`` and ``max``, which only brings it closer.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from ddsketch.mapping import LogarithmicMapping

ZERO_THRESHOLD = 1e-9  # seconds: a nanosecond, far below any latency a profile times
LN2 = math.log(2)


class LatencySketch:
    """Counts of non-negative values (latencies, s) in logarithmic buckets; see the module."""

    def __init__(self, relative_accuracy: float = 0.01, zero_threshold: float = ZERO_THRESHOLD):
        self.mapping = LogarithmicMapping(relative_accuracy)
        self.relative_accuracy = float(relative_accuracy)
        self.zero_threshold = float(zero_threshold)
        # the mapping's log_gamma(x), in its order of operations: log2(x) * (1 / log1p(gamma - 1)) * ln(2)
        self._per_log2 = 1 / math.log1p(2 * relative_accuracy / (1 - relative_accuracy)) * LN2
        self.counts = np.zeros(0, dtype=np.int64)  # counts[i]: values with key offset + i
        self.offset = 0
        self.zero_count = 0
        self.count = 0
        self.sum = 0.0
        self.min: Optional[float] = None
        self.max: Optional[float] = None

    def keys(self, values: np.ndarray) -> np.ndarray:
        """Each value's bucket key (int64), as ``mapping.key`` computes it, for values above
        the zero threshold."""
        return np.ceil(np.log(values) / LN2 * self._per_log2).astype(np.int64)

    def add(self, values: np.ndarray) -> None:
        """Count every value of ``values`` (a float array; empty is fine)."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if not values.size:
            return
        low, high = float(values.min()), float(values.max())
        if not low >= 0 or not math.isfinite(high):
            raise ValueError(f"latency sketch: values must be finite and >= 0, got min {low}, max {high}")
        self.sum += float(values.sum())
        positive = values > self.zero_threshold
        kept = int(np.count_nonzero(positive))
        if kept < values.size:
            values = values[positive]
        if kept:
            keys = self.keys(values)
            lo, hi = int(keys.min()), int(keys.max())
            self._cover(lo, hi)
            self.counts[lo - self.offset:hi - self.offset + 1] += np.bincount(keys - lo, minlength=hi - lo + 1)
        self.zero_count += int(positive.size - kept)
        self.count += int(positive.size)
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)

    def _cover(self, lo: int, hi: int) -> None:
        """Widen :attr:`counts` to hold keys ``lo..hi``."""
        if not self.counts.size:
            self.counts, self.offset = np.zeros(hi - lo + 1, dtype=np.int64), lo
            return
        start, end = min(lo, self.offset), max(hi, self.offset + self.counts.size - 1)
        if start < self.offset or end >= self.offset + self.counts.size:
            wider = np.zeros(end - start + 1, dtype=np.int64)
            wider[self.offset - start:self.offset - start + self.counts.size] = self.counts
            self.counts, self.offset = wider, start

    def merge(self, other: "LatencySketch") -> None:
        """Add ``other``'s counts to this sketch: the sketch of both samples together."""
        if (other.relative_accuracy, other.zero_threshold) != (self.relative_accuracy, self.zero_threshold):
            raise ValueError(f"latency sketch: cannot merge a sketch of relative accuracy {other.relative_accuracy}"
                             f" (zero threshold {other.zero_threshold}) into one of {self.relative_accuracy}"
                             f" ({self.zero_threshold})")
        if other.counts.size:
            self._cover(other.offset, other.offset + other.counts.size - 1)
            start = other.offset - self.offset
            self.counts[start:start + other.counts.size] += other.counts
        self.zero_count += other.zero_count
        self.count += other.count
        self.sum += other.sum
        for name, pick in (("min", min), ("max", max)):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs if mine is None else mine if theirs is None else pick(mine, theirs))

    def quantile(self, q: float) -> Optional[float]:
        """The value of rank ``q * (count - 1)`` within the stated relative error (the
        module's guarantee), ``None`` for an empty sketch."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: Sequence[float]) -> list[Optional[float]]:
        """:meth:`quantile` of each of ``qs``, from one pass over the counts."""
        qs = np.asarray(qs, dtype=np.float64)
        if np.any((qs < 0) | (qs > 1)) or np.any(np.isnan(qs)):
            raise ValueError(f"latency sketch: quantiles must lie in [0, 1], got {qs.tolist()}")
        if not self.count:
            return [None] * qs.size
        rank = qs * (self.count - 1)
        # the first bucket whose running count exceeds the rank holds the value of that rank
        index = np.searchsorted(np.cumsum(self.counts), rank - self.zero_count, side="right")
        out = []
        for r, i in zip(rank, index):
            if r == 0 or r == self.count - 1:  # the extremes are kept exactly
                out.append(self.min if r == 0 else self.max)
                continue
            value = 0.0 if r < self.zero_count else self.mapping.value(int(i) + self.offset)
            out.append(min(max(value, self.min), self.max))
        return out

    def cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """The distribution as points of its CDF: each non-empty bucket's value (as
        :meth:`quantile` answers it: the bucket's representative, within the exact min and
        max) and the fraction of the values in it or below; the zero bucket first."""
        keys = np.flatnonzero(self.counts)
        values = np.array([self.mapping.value(int(k) + self.offset) for k in keys])
        if values.size:
            values = np.clip(values, self.min, self.max)
        counts = self.counts[keys]
        if self.zero_count:
            values, counts = np.r_[0.0, values], np.r_[self.zero_count, counts]
        return values, np.cumsum(counts) / max(self.count, 1)

    @property
    def nbytes(self) -> int:
        """Bytes of the counts array: what a sketch's memory grows with."""
        return int(self.counts.nbytes)

    def to_json(self) -> dict:
        """A small JSON-able dict: the non-empty buckets as two lists, ``keys`` and ``counts``."""
        nonzero = np.flatnonzero(self.counts)
        return {"relative_accuracy": self.relative_accuracy, "zero_threshold": self.zero_threshold,
                "count": self.count, "zero_count": self.zero_count, "sum": self.sum,
                "min": self.min, "max": self.max,
                "keys": (nonzero + self.offset).tolist(), "counts": self.counts[nonzero].tolist()}

    @classmethod
    def pooled(cls, summaries: Sequence[dict]) -> Optional["LatencySketch"]:
        """The ``latency_sketch`` of each run summary merged (their requests pooled: a
        sweep point's seeds), or None where one has none (a run summarised from its whole
        table: exits, clients, a cluster)."""
        sketches = [summary.get("latency_sketch") for summary in summaries]
        if not sketches or any(sketch is None for sketch in sketches):
            return None
        merged = cls.from_json(sketches[0])
        for sketch in sketches[1:]:
            merged.merge(cls.from_json(sketch))
        return merged

    @classmethod
    def from_json(cls, data: dict) -> "LatencySketch":
        """The sketch :meth:`to_json` wrote; a one-line ``ValueError`` naming the field
        that is missing or wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"latency sketch: expected a mapping, got {type(data).__name__}")
        missing = [k for k in ("relative_accuracy", "zero_threshold", "count", "zero_count", "sum", "min", "max",
                               "keys", "counts") if k not in data]
        if missing:
            raise ValueError(f"latency sketch: missing field {missing[0]!r}")
        accuracy, threshold = _number(data, "relative_accuracy"), _number(data, "zero_threshold")
        if not 0 < accuracy < 1:
            raise ValueError(f"latency sketch: field 'relative_accuracy' must lie in (0, 1), got {accuracy!r}")
        if threshold < 0:
            raise ValueError(f"latency sketch: field 'zero_threshold' must be >= 0, got {threshold!r}")
        sketch = cls(accuracy, threshold)
        keys, counts = _integers(data, "keys"), _integers(data, "counts")
        if keys.size != counts.size:
            raise ValueError(f"latency sketch: fields 'keys' and 'counts' differ in length ({keys.size} != {counts.size})")
        if keys.size and np.any(np.diff(keys) <= 0):
            raise ValueError("latency sketch: field 'keys' must be strictly increasing")
        if np.any(counts <= 0):
            raise ValueError("latency sketch: field 'counts' must hold positive counts")
        count, zero_count = _count(data, "count"), _count(data, "zero_count")
        if int(counts.sum()) + zero_count != count:
            raise ValueError(f"latency sketch: field 'count' ({count}) is not the sum of 'counts' and 'zero_count'"
                             f" ({int(counts.sum()) + zero_count})")
        low, high = (None, None) if not count else (_number(data, "min"), _number(data, "max"))
        if count and not 0 <= low <= high:
            raise ValueError(f"latency sketch: fields 'min' and 'max' must satisfy 0 <= min <= max, got {low!r}, {high!r}")
        if keys.size:
            sketch._cover(int(keys[0]), int(keys[-1]))
            sketch.counts[keys - sketch.offset] = counts
        sketch.count, sketch.zero_count, sketch.sum = count, zero_count, _number(data, "sum")
        sketch.min, sketch.max = low, high
        return sketch


def _number(data: dict, field: str) -> float:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"latency sketch: field {field!r} must be a finite number, got {value!r}")
    return float(value)


def _count(data: dict, field: str) -> int:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"latency sketch: field {field!r} must be a non-negative integer, got {value!r}")
    return value


def _integers(data: dict, field: str) -> np.ndarray:
    values = data[field]
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"latency sketch: field {field!r} must be a list of integers")
    return np.asarray(values, dtype=np.int64)
