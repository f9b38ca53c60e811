"""describe(): the numbers ``servesim trace-stats`` prints."""

import math

import numpy as np
import pytest

from servesim.traces import Trace, describe, gamma


def test_describe_small_trace():
    stats = describe(Trace(np.array([0.5, 1.0, 1.2, 3.0]), source="t"))
    gaps = np.array([0.5, 0.2, 1.8])
    assert stats["source"] == "t"
    assert stats["requests"] == 4
    assert stats["duration_s"] == 3.0
    assert stats["mean_rate_rps"] == pytest.approx(4 / 3)
    assert stats["peak_rate_1s_rps"] == 2  # 1.0 and 1.2 share the bin [1, 2)
    assert stats["interarrival_mean_s"] == pytest.approx(gaps.mean())
    assert stats["interarrival_cv"] == pytest.approx(gaps.std() / gaps.mean())
    assert stats["interarrival_p50_s"] == pytest.approx(0.5)
    assert stats["interarrival_p99_s"] == pytest.approx(np.percentile(gaps, 99))


def test_describe_bursty_trace(rng):
    n, cv = 50_000, 2.5
    stats = describe(gamma(20.0, cv, count=n, rng=rng))
    # sample CV of gamma gaps: sd cv * sqrt((1 + cv^2) / (2n)) (see test_generators)
    assert abs(stats["interarrival_cv"] - cv) < 4 * cv * math.sqrt((1 + cv**2) / (2 * n))
    assert stats["peak_rate_1s_rps"] > 2 * stats["mean_rate_rps"]


def test_describe_far_from_zero_uses_little_memory():
    # epoch-second timestamps: a bincount from 0 would need ~13 GB
    stats = describe(Trace(np.array([1.7e9, 1.7e9 + 0.5, 1.7e9 + 2])))
    assert stats["peak_rate_1s_rps"] == 2


@pytest.mark.parametrize("times", [[], [2.0]])
def test_describe_degenerate(times):
    stats = describe(Trace(np.array(times, dtype=float)))
    assert stats["requests"] == len(times)
    assert stats["peak_rate_1s_rps"] == len(times)
    for key in ("interarrival_mean_s", "interarrival_cv", "interarrival_p50_s", "interarrival_p99_s"):
        assert math.isnan(stats[key])
