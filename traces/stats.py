"""Summary numbers of a trace, for ``servesim trace-stats`` and for sanity checks in experiments.

Mean rate sets the utilisation; the peak 1-s rate and the inter-arrival CV say how bursty
the load is, which is what decides queueing delay at a given utilisation.
"""

from __future__ import annotations

import numpy as np

from servesim.traces.trace import Trace


def describe(trace: Trace) -> dict:
    """Counts, rates and inter-arrival statistics of ``trace`` as plain Python numbers.

    * ``duration_s``: time 0 to the last arrival; ``mean_rate_rps`` is requests over it.
    * ``peak_rate_1s_rps``: most arrivals in one of the 1-s bins ``[k, k+1)`` (fixed bins
      from 0, not a sliding window, so it matches per-second count traces).
    * ``interarrival_*``: over the gaps between consecutive arrivals (the wait from 0 to
      the first one is not a gap); ``interarrival_cv`` is std / mean (1 for Poisson).

    Values that need more arrivals than the trace has (e.g. a CV from one request) are NaN.
    """
    times = trace.times
    gaps = np.diff(times)
    nan = float("nan")
    mean_gap, cv, p50, p99 = nan, nan, nan, nan
    if gaps.size:
        mean_gap = float(gaps.mean())
        cv = float(gaps.std() / mean_gap) if mean_gap > 0 else nan
        p50, p99 = (float(p) for p in np.percentile(gaps, [50, 99]))
    return {
        "source": trace.source,
        "requests": len(trace),
        "duration_s": trace.duration,
        "mean_rate_rps": trace.mean_rate,
        "peak_rate_1s_rps": _peak_per_second(times),
        "interarrival_mean_s": mean_gap,
        "interarrival_cv": cv,
        "interarrival_p50_s": p50,
        "interarrival_p99_s": p99,
    }


def _peak_per_second(times: np.ndarray) -> int:
    """Longest run of sorted arrivals sharing one whole second; O(n) memory, whatever the span."""
    if not times.size:
        return 0
    starts = np.flatnonzero(np.diff(np.floor(times))) + 1
    return int(np.diff(np.concatenate(([0], starts, [times.size]))).max())
