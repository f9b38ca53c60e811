"""Statistical checks of the service-time noise.

Every tolerance is 4 standard errors of the estimate at the sample size used, computed
from the distribution's own moments, so a correct sampler fails with probability below
1e-4 per check (and the seeds are fixed, so the suite is deterministic anyway).
"""

import math

import numpy as np
import pytest

from servesim.workloads import CostModel, Deterministic, Empirical, Exponential, Gamma, LogNormal
from servesim.workloads import noise as noise_module

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


def empirical_reference(profile, seed: int, sizes, model: str = "m") -> list[float]:
    """Empirical's batch times computed a call at a time, as the module documents them:
    the i-th call reads uniforms i*S .. i*S+S-1 of one stream drawn BLOCK*S at a time
    (S stages), and sums each stage's piecewise-linear quantile function at its uniform."""
    cost = CostModel(profile, model, noise=Empirical())
    rng, stages = np.random.default_rng(seed), len(cost.stages)
    uniforms: list[float] = []
    out = []
    for size in sizes:
        if len(uniforms) < stages:
            uniforms += rng.random(noise_module.BLOCK * stages).tolist()
        total = 0.0
        for s in cost.percentiles(size):
            low = max(s.p50 - (s.p90 - s.p50), 0.5 * s.p50)
            u = uniforms.pop(0)
            if u < 0.5:
                total += low + (s.p50 - low) / 0.5 * u
            elif u < 0.9:
                total += s.p50 + (s.p90 - s.p50) / 0.4 * (u - 0.5)
            elif u < 0.99:
                total += s.p90 + (s.p99 - s.p90) / 0.09 * (u - 0.9)
            else:
                total += s.p99 + (s.p99 - s.p90) / 0.09 * (u - 0.99)
        out.append(total)
    return out


def test_empirical_draws_a_block_of_calls_at_once_and_gives_the_numbers_of_one_at_a_time(make_profile):
    """The sampler evaluates a block's calls at once per batch size (workloads.noise._tabled):
    the numbers are those of one call at a time, bit for bit, over several blocks, batch
    sizes that change from call to call, and sizes beyond the measured range (derived, and
    counted, on every call)."""
    profile = make_profile({"a": [(1, 1.0, 1.5, 2.5), (8, 3.0, 3.6, 5.0)], "b": [(1, 0.4, 0.5, 0.9), (8, 1.2, 1.3, 2.0)]})
    sizes = np.random.default_rng(4).integers(1, 12, 3 * noise_module.BLOCK + 17).tolist()  # 9-11: beyond 8
    cost = CostModel(profile, "m", noise=Empirical(), out_of_range="extrapolate")
    sample = cost.sampler(7)
    with pytest.warns(Warning):
        drawn = [sample(size) for size in sizes]
        expected = empirical_reference(profile, 7, sizes)
    assert drawn == expected
    assert sum(cost.out_of_range_requests.values()) == 2 * sum(size > 8 for size in sizes)  # two stages each
