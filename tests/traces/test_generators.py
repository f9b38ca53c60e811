"""Synthetic arrival processes: rates and variability against theory, determinism, errors.

Tolerances are 4 standard deviations of the statistic under the model, computed from the
sample size (a correct generator fails a given check with probability < 1e-4; the seed is
fixed anyway, so a run either always passes or always fails).
"""

import math

import numpy as np
import pytest

from servesim import traces
from servesim.traces import TraceError, diurnal, gamma, mmpp2, poisson, spike, step


def cv_tolerance(cv: float, n: int) -> float:
    """4 sd of the sample CV of n gamma gaps with true CV ``cv``.

    Delta method: Var(s/mean) ~ c^2 ((kurtosis - 1)/4 - skewness*c + c^2) / n, which for a
    gamma distribution (skewness 2c, kurtosis 3 + 6c^2) is c^2 (1 + c^2) / (2n).
    """
    return 4 * cv * math.sqrt((1 + cv**2) / (2 * n))


def sample_cv(times) -> float:
    gaps = np.diff(times)
    return float(gaps.std() / gaps.mean())


def assert_poisson_count(observed: int, expected: float) -> None:
    """A Poisson count has sd sqrt(mean)."""
    assert abs(observed - expected) < 4 * math.sqrt(expected), (observed, expected)


GENERATORS = [
    ("poisson", lambda **kw: poisson(50.0, **kw)),
    ("gamma", lambda **kw: gamma(50.0, 3.0, **kw)),
    ("mmpp2", lambda **kw: mmpp2((100.0, 5.0), (1.0, 2.0), **kw)),
    ("diurnal", lambda **kw: diurnal(50.0, 0.9, 20.0, phase=1.0, **kw)),
    ("step", lambda **kw: step((10.0, 0.0, 80.0), (5.0, 8.0), **kw)),
    ("spike", lambda **kw: spike(20.0, 300.0, 3.0, 2.0, **kw)),
]


@pytest.mark.parametrize("name, make", GENERATORS)
def test_duration_mode_stays_in_range_and_is_sorted(name, make, rng):
    trace = make(duration=60.0, rng=rng)
    assert len(trace) > 100
    assert trace.times.min() >= 0 and trace.times.max() < 60.0
    assert np.all(np.diff(trace.times) >= 0)
    assert name in trace.source and "duration=60" in trace.source


@pytest.mark.parametrize("name, make", GENERATORS)
@pytest.mark.parametrize("count", [0, 1, 2500])
def test_count_mode_gives_exactly_count(name, make, count, rng):
    trace = make(count=count, rng=rng)
    assert len(trace) == count
    assert np.all(np.diff(trace.times) >= 0)


@pytest.mark.parametrize("name, make", GENERATORS)
def test_same_seed_same_trace(name, make):
    for extent in ({"duration": 30.0}, {"count": 1000}):
        a = make(rng=np.random.default_rng(7), **extent)
        b = make(rng=np.random.default_rng(7), **extent)
        c = make(rng=np.random.default_rng(8), **extent)
        np.testing.assert_array_equal(a.times, b.times)
        assert not np.array_equal(a.times, c.times)


def test_poisson_rate_and_cv(rng):
    rate, duration = 200.0, 500.0
    assert_poisson_count(len(poisson(rate, duration=duration, rng=rng)), rate * duration)
    n = 100_000
    trace = poisson(rate, count=n, rng=rng)
    # The n-th arrival time is Gamma(n, 1/rate): mean n/rate, sd sqrt(n)/rate.
    assert abs(trace.duration - n / rate) < 4 * math.sqrt(n) / rate
    assert abs(sample_cv(trace.times) - 1.0) < cv_tolerance(1.0, n)


@pytest.mark.parametrize("cv", [0.25, 1.0, 4.0])
def test_gamma_mean_gap_and_cv(cv, rng):
    rate, n = 40.0, 100_000
    gaps = np.diff(gamma(rate, cv, count=n, rng=rng).times)
    # mean of n gaps: sd = (cv / rate) / sqrt(n)
    assert abs(gaps.mean() - 1 / rate) < 4 * cv / rate / math.sqrt(n)
    assert abs(gaps.std() / gaps.mean() - cv) < cv_tolerance(cv, n)


def test_gamma_duration_count(rng):
    # A renewal count N(T) has mean ~ rate*T + (cv^2 - 1)/2 and sd ~ cv*sqrt(rate*T).
    rate, cv, duration = 100.0, 2.0, 1000.0
    n = len(gamma(rate, cv, duration=duration, rng=rng))
    assert abs(n - rate * duration - (cv**2 - 1) / 2) < 4 * cv * math.sqrt(rate * duration) + 1


def test_mmpp2_mean_rate_and_burstiness(rng):
    rates, sojourn, duration = np.array([50.0, 5.0]), np.array([2.0, 2.0]), 4000.0
    trace = mmpp2(rates, sojourn, duration=duration, rng=rng)
    switch = 1 / sojourn[0] + 1 / sojourn[1]  # a + b, the rate at which the chain mixes
    pi = sojourn / sojourn.sum()
    mean_rate = float(rates @ pi)
    # Starting in state 0 adds (r0 - r1) * pi1 / (a + b) arrivals in expectation; the count
    # has index of dispersion 1 + 2 pi0 pi1 (r0 - r1)^2 / (mean_rate (a + b)) for long T.
    expected = mean_rate * duration + (rates[0] - rates[1]) * pi[1] / switch
    dispersion = 1 + 2 * pi[0] * pi[1] * (rates[0] - rates[1]) ** 2 / (mean_rate * switch)
    assert abs(len(trace) - expected) < 4 * math.sqrt(expected * dispersion)
    # Per-second counts of an MMPP are overdispersed (theory: variance/mean ~ 14.5 here),
    # a Poisson process's are not (1 +- 0.03 over 4000 bins).
    per_second = np.bincount(trace.times.astype(int), minlength=int(duration))
    assert per_second.var() / per_second.mean() > 5


def test_mmpp2_with_equal_rates_is_poisson(rng):
    n = 50_000
    trace = mmpp2((30.0, 30.0), (0.5, 3.0), count=n, rng=rng)
    assert abs(sample_cv(trace.times) - 1.0) < cv_tolerance(1.0, n)
    assert abs(trace.duration - n / 30.0) < 4 * math.sqrt(n) / 30.0


def test_mmpp2_on_off_source_is_silent_in_off_state(rng):
    trace = mmpp2((100.0, 0.0), (1.0, 1.0), duration=200.0, rng=rng)
    gaps = np.diff(trace.times)
    # Off periods are exponential with mean 1 s: ~100 of them, many far longer than the
    # 0.01 s typical gap while on (a gap > 0.5 s while on has probability e^-50).
    assert (gaps > 0.5).sum() > 30


def test_diurnal_rate_follows_the_sine(rng):
    mean_rate, amplitude, period, periods = 100.0, 0.8, 10.0, 40
    trace = diurnal(mean_rate, amplitude, period, duration=period * periods, rng=rng)
    assert_poisson_count(len(trace), mean_rate * period * periods)  # whole periods: sin averages 0
    # With phase 0 the first half of each period has mean rate m(1 + 2a/pi), the second m(1 - 2a/pi).
    first_half = (trace.times % period) < period / 2
    half = mean_rate * period / 2 * periods
    assert_poisson_count(int(first_half.sum()), half * (1 + 2 * amplitude / math.pi))
    assert_poisson_count(int((~first_half).sum()), half * (1 - 2 * amplitude / math.pi))


def test_diurnal_phase_shifts_the_peak(rng):
    # phase = pi puts the trough first.
    trace = diurnal(100.0, 1.0, 10.0, phase=math.pi, duration=400.0, rng=rng)
    first_half = (trace.times % 10.0) < 5.0
    assert first_half.sum() < (~first_half).sum() / 3


def test_step_rates_per_segment(rng):
    trace = step((20.0, 0.0, 200.0), (100.0, 150.0), duration=300.0, rng=rng)
    t = trace.times
    assert_poisson_count(int((t < 100).sum()), 20.0 * 100)
    assert int(((t >= 100) & (t < 150)).sum()) == 0
    assert_poisson_count(int((t >= 150).sum()), 200.0 * 150)


def test_step_count_mode_waits_through_a_pause(rng):
    trace = step((0.0, 100.0), (50.0,), count=1000, rng=rng)
    assert len(trace) == 1000 and trace.times[0] >= 50.0
    # The last arrival is 1000 Poisson(100) gaps after 50 s: mean 10 s, sd ~0.32 s.
    assert abs(trace.duration - 60.0) < 4 * math.sqrt(1000) / 100


def test_spike_counts_inside_and_outside(rng):
    trace = spike(10.0, 500.0, 40.0, 5.0, duration=100.0, rng=rng)
    inside = (trace.times >= 40.0) & (trace.times < 45.0)
    assert_poisson_count(int(inside.sum()), 500.0 * 5)
    assert_poisson_count(int((~inside).sum()), 10.0 * 95)


def test_zero_duration_is_empty(rng):
    assert len(poisson(10.0, duration=0.0, rng=rng)) == 0


def test_million_arrivals(rng):
    # Sizing check rather than a timing assertion (timings are reported, not tested).
    trace = poisson(10_000.0, count=1_000_000, rng=rng)
    assert len(trace) == 1_000_000 and trace.times.dtype == np.float64


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda r: poisson(0.0, duration=1, rng=r), ["rate", "0.0"]),
        (lambda r: poisson(float("nan"), duration=1, rng=r), ["rate", "nan"]),
        (lambda r: poisson("fast", duration=1, rng=r), ["rate", "fast"]),
        (lambda r: poisson(1.0, rng=r), ["exactly one", "duration", "count"]),
        (lambda r: poisson(1.0, duration=1, count=5, rng=r), ["exactly one"]),
        (lambda r: poisson(1.0, duration=-1, rng=r), ["duration", "-1"]),
        (lambda r: poisson(1.0, count=-3, rng=r), ["count", "-3"]),
        (lambda r: poisson(1.0, count=2.5, rng=r), ["count", "2.5"]),
        (lambda r: poisson(1.0, count=10, rng=42), ["rng", "Generator", "42"]),
        (lambda r: gamma(1.0, 0.0, count=5, rng=r), ["cv", "0.0"]),
        (lambda r: gamma(-2.0, 1.0, count=5, rng=r), ["rate", "-2.0"]),
        (lambda r: mmpp2((1.0,), (1.0, 1.0), count=5, rng=r), ["rates", "2 values"]),
        (lambda r: mmpp2((1.0, -1.0), (1.0, 1.0), count=5, rng=r), ["rates[1]", "-1.0"]),
        (lambda r: mmpp2((0.0, 0.0), (1.0, 1.0), count=5, rng=r), ["rates", "both be 0"]),
        (lambda r: mmpp2((1.0, 1.0), (0.0, 1.0), count=5, rng=r), ["mean_sojourn[0]", "0.0"]),
        (lambda r: diurnal(10.0, 1.5, 60.0, count=5, rng=r), ["amplitude", "1.5"]),
        (lambda r: diurnal(10.0, -0.1, 60.0, count=5, rng=r), ["amplitude", "-0.1"]),
        (lambda r: diurnal(10.0, 0.5, 0.0, count=5, rng=r), ["period", "0.0"]),
        (lambda r: diurnal(0.0, 0.5, 1.0, count=5, rng=r), ["mean_rate", "0.0"]),
        (lambda r: step((1.0, 2.0), (), count=5, rng=r), ["len(rates)", "2 rates", "0 change"]),
        (lambda r: step((1.0, 2.0, 3.0), (5.0, 5.0), count=5, rng=r), ["change_times[1]", "5.0"]),
        (lambda r: step((1.0, 2.0), (-1.0,), count=5, rng=r), ["change_times[0]", "-1.0"]),
        (lambda r: step((1.0, 0.0), (5.0,), count=5, rng=r), ["last rate", "0"]),
        (lambda r: step((), (), count=5, rng=r), ["rates", "non-empty"]),
        (lambda r: spike(1.0, 5.0, 1.0, 0.0, count=5, rng=r), ["length", "0.0"]),
        (lambda r: spike(1.0, 5.0, -1.0, 1.0, count=5, rng=r), ["start", "-1.0"]),
        (lambda r: spike(0.0, 5.0, 1.0, 1.0, count=5, rng=r), ["base_rate", "0"]),
        (lambda r: spike(1.0, -5.0, 1.0, 1.0, duration=5, rng=r), ["spike_rate", "-5.0"]),
    ],
)
def test_parameter_errors_name_the_parameter_and_value(call, words, rng):
    with pytest.raises(TraceError) as info:
        call(rng)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


def test_generators_are_exported():
    for name in ("poisson", "gamma", "mmpp2", "diurnal", "step", "spike"):
        assert callable(getattr(traces, name))
