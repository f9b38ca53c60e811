"""Per-bin request counts -> arrival times.

Many public traces (Twitter per second, Azure Functions per minute) give only how many
requests arrived in each bin, while the simulator needs one time per request. This module
places them. :func:`scatter` is also the core of every Poisson-type generator: a Poisson
process whose rate is constant on each of a few intervals is "draw a Poisson count per
interval, then scatter", so generators and count traces share one vectorised routine.
"""

from __future__ import annotations

import numpy as np

from servesim.traces import _checks
from servesim.traces.trace import Trace, TraceError

MODES = ("uniform", "poisson")


def scatter(counts: np.ndarray, edges: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted times with exactly ``counts[i]`` independent uniform points in ``[edges[i], edges[i+1])``.

    Independent uniforms, sorted, are the order statistics of the uniform distribution,
    i.e. a Poisson process conditioned on its count in each interval. Vectorised: one
    ``np.repeat`` per bound, one uniform draw and one global sort (the intervals are
    disjoint and ordered, so sorting everything sorts each interval), no loop per bin.
    """
    lower = edges[:-1]
    times = rng.random(int(counts.sum()))
    times *= np.repeat(np.diff(edges), counts)
    times += np.repeat(lower, counts)
    # Rounding in lower + u*width can land exactly on the upper edge (about one arrival in
    # 1e10 for second-sized bins late in a long trace); that arrival would then count in
    # the next bin. Clip before sorting so every interval keeps exactly its own count.
    np.minimum(times, np.repeat(np.nextafter(edges[1:], -np.inf), counts), out=times)
    times.sort()
    return times


def from_counts(
    counts,
    bin_seconds: float,
    *,
    mode: str = "uniform",
    rng: np.random.Generator,
    source: str = "<counts>",
) -> Trace:
    """Turn ``counts[i]`` requests in bin ``i`` (``[i*bin_seconds, (i+1)*bin_seconds)``) into arrivals.

    ``mode="uniform"`` keeps every count exactly and places bin ``i``'s requests at
    independent uniform times inside it. That is also exactly a Poisson process
    conditioned on the observed counts (its points in an interval, given how many, are
    sorted uniforms), so there is no separate "order statistics" mode: use this one to
    replay the trace as recorded.

    ``mode="poisson"`` reads ``counts[i] / bin_seconds`` as the *rate* of a Poisson
    process in bin ``i``: bin ``i`` gets Poisson(``counts[i]``) requests, so a replay
    varies around the recorded counts (sd ``sqrt(counts[i])`` per bin) and the total is
    only preserved in expectation. Use it to treat the trace as one sample of an
    underlying rate curve, e.g. to get independent replicas.

    Bin edges are ``k * bin_seconds`` as float64, and each arrival is strictly inside
    its bin. A 1,000,000-bin series of ~60 per bin (60M arrivals) takes about a second.
    """
    bin_seconds = _checks.number("bin_seconds", bin_seconds, above=0)
    rng = _checks.generator(rng)
    if mode not in MODES:
        raise TraceError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    counts = _check_counts(counts, source)
    _checks.arrivals(f"{source}: the counts", counts.sum(dtype=np.float64))  # float: an int64 sum can wrap
    if mode == "poisson":
        counts = rng.poisson(counts)
    edges = np.arange(counts.size + 1) * bin_seconds
    return Trace(scatter(counts, edges, rng), source=source)


def _check_counts(counts, source: str) -> np.ndarray:
    """A 1-D int64 array of counts >= 0; integral floats (e.g. from a CSV) are accepted."""
    array = np.asarray(counts)
    if array.ndim != 1:
        raise TraceError(f"{source}: counts must be 1-D, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        try:
            values = array.astype(np.float64)
        except (TypeError, ValueError):
            raise TraceError(f"{source}: counts must be numbers, got dtype {array.dtype}") from None
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TraceError(f"{source}: bin {i} has count {array[i]!r}; counts must be whole numbers")
        array = values
    array = array.astype(np.int64)
    negative = np.flatnonzero(array < 0)
    if negative.size:
        i = int(negative[0])
        raise TraceError(f"{source}: bin {i} has count {int(array[i])}; counts must be >= 0")
    return array
