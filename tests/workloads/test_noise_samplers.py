"""Statistical checks of the service-time noise.

Every tolerance is 4 standard errors of the estimate at the sample size used, computed
from the distribution's own moments, so a correct sampler fails with probability below
1e-4 per check (and the seeds are fixed, so the suite is deterministic anyway).
"""

import math

import numpy as np
import pytest

from servesim.workloads import CostModel, Deterministic, Empirical, Exponential, Gamma, LogNormal

N = 200_000
MEDIAN_MS = 2.0


@pytest.fixture
def single(make_profile):
    """One stage measured at 2 and 4: median 2 ms and 4 ms, spread around it."""
    return make_profile({"s": [(2, MEDIAN_MS, 3.0, 5.0), (4, 4.0, 4.4, 6.0)]})


def draw(profile, noise, batch_size, n=N, seed=0):
    sample = CostModel(profile, "m", noise=noise).sampler(seed)
    return np.array([sample(batch_size) for _ in range(n)])


def lognormal_kurtosis(cv):
    w = 1 + cv**2
    return w**4 + 2 * w**3 + 3 * w**2 - 3  # excess w^4+2w^3+3w^2-6, plus 3


@pytest.mark.parametrize(
    "noise, cv, kurtosis",
    [
        (Exponential(), 1.0, 9.0),
        (LogNormal(0.25), 0.25, lognormal_kurtosis(0.25)),
        (LogNormal(1.0), 1.0, lognormal_kurtosis(1.0)),
        (Gamma(0.5), 0.5, 3 + 6 * 0.5**2),
        (Gamma(2.0), 2.0, 3 + 6 * 2.0**2),
    ],
    ids=repr,
)
def test_mean_one_noise_keeps_the_median_as_mean_and_has_its_cv(single, noise, cv, kurtosis):
    x = draw(single, noise, 2) * 1e3  # ms
    mean = MEDIAN_MS
    # SE of the mean: sigma / sqrt(n).
    assert abs(x.mean() - mean) < 4 * cv * mean / math.sqrt(N)
    # SE of the sample sd, relative: sqrt((kurtosis - 1) / n) / 2 (delta method on the
    # variance); the CV also carries the mean's relative error cv / sqrt(n).
    rel_tol = 4 * (math.sqrt((kurtosis - 1) / N) / 2 + cv / math.sqrt(N))
    assert x.std() / x.mean() == pytest.approx(cv, rel=rel_tol)
    assert x.min() > 0


def test_mean_one_noise_on_several_stages_sums_the_medians(make_profile):
    profile = make_profile({"a": [(1, 1.0, 1.0, 1.0)], "b": [(1, 3.0, 3.0, 3.0)]})
    x = draw(profile, Exponential(), 1) * 1e3
    # independent stages: sd = sqrt(1^2 + 3^2) ms
    assert abs(x.mean() - 4.0) < 4 * math.sqrt(10) / math.sqrt(N)


def test_deterministic_is_the_median(single):
    x = draw(single, Deterministic(), 3, n=10)
    assert set(x.tolist()) == {3e-3}


@pytest.mark.parametrize(
    "batch_size, p50, p90, p99",
    [(2, 2.0, 3.0, 5.0), (4, 4.0, 4.4, 6.0), (3, 3.0, 3.7, 5.5)],  # 3: interpolated first
)
def test_empirical_hits_the_measured_percentiles(single, batch_size, p50, p90, p99):
    x = draw(single, Empirical(), batch_size) * 1e3
    for q, value in [(0.5, p50), (0.9, p90), (0.99, p99)]:
        # The fraction of samples below the q-quantile is binomial: SE sqrt(q(1-q)/n).
        assert np.mean(x <= value) == pytest.approx(q, abs=4 * math.sqrt(q * (1 - q) / N))
    low = max(p50 - (p90 - p50), p50 / 2)
    high = p99 + (p99 - p90) / 9
    assert low - 1e-9 <= x.min() and x.max() <= high + 1e-9
    assert x.min() == pytest.approx(low, abs=0.01) and x.max() == pytest.approx(high, abs=0.01)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "0.5", 1e308])
def test_cv_must_be_positive_and_bounded(bad):
    for noise in (LogNormal, Gamma):
        with pytest.raises(ValueError, match=r"cv must be a number > 0 and at most 1e\+06"):
            noise(bad)
