"""Load predictors (policies/predictors.py): exact answers on hand-made series, pandas'
EWMA, an AR(1) fit that recovers its coefficient, seasonal replay, margins, input
errors, the LSTM against the reactive baseline, and the real Twitter trace."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from servesim.policies.predictors import (
    EWMA, AutoRegressive, LastValue, LSTMPredictor, Seasonal, WindowMax, fit_autoregressive, training_pairs,
    window_maxima,
)
from servesim.traces import load_twitter_counts

TWITTER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "twitter-trace" / "workload.txt"
DAY = 86_400

# Predictors with no training; each entry builds one with a given margin.
MODEL_FREE = {
    "last second": lambda margin: LastValue(margin=margin),
    "last 10-s peak": lambda margin: LastValue(10, margin=margin),
    "window max": lambda margin: WindowMax(120, margin=margin),
    "ewma": lambda margin: EWMA(10, 60, margin=margin),
    "ar(1)": lambda margin: AutoRegressive(margin=margin),
    "ar(2)": lambda margin: AutoRegressive(2, window_s=5, lookback=20, steps=3, margin=margin),
    "seasonal": lambda margin: Seasonal(300, 60, margin=margin),
}
# Predictions that scale with the counts; the AR fit does not always (lstsq's
# minimum-norm answer on a rank-deficient design depends on the scale).
SCALE_FREE = [name for name in MODEL_FREE if not name.startswith("ar")]


def predictions(predictor, counts, lengths):
    return np.array([predictor.predict(counts[:n]) for n in lengths])


@pytest.mark.parametrize("name", MODEL_FREE)
def test_a_constant_series_predicts_the_constant(name):
    predictor = MODEL_FREE[name](0.0)
    assert predictor.predict([]) == 0.0
    for length in [1, 59, 500, 20_000]:
        # 1e-12: rounding in EWMA's weighted mean and the AR least-squares solve.
        assert predictor.predict(np.full(length, 7)) == pytest.approx(7.0, rel=1e-12)


def test_last_value_sees_a_pulse_at_once_and_window_max_holds_it_for_window_s():
    counts = np.array([2] * 30 + [9] * 5 + [2] * 30)  # 9 req/s in seconds 30-34
    lengths = np.arange(1, counts.size + 1)           # history through second n - 1
    last = predictions(LastValue(), counts, lengths)
    assert np.array_equal(last, np.where((lengths >= 31) & (lengths <= 35), 9, 2))
    held = predictions(WindowMax(10), counts, lengths)
    # Seen from second 30 on, and held while second 34 is among the last 10: through
    # second 43, so for exactly window_s seconds counting the last high one.
    assert np.array_equal(held, np.where((lengths >= 31) & (lengths <= 44), 9, 2))
    assert np.array_equal(predictions(LastValue(10), counts, lengths), held)


def test_window_maxima_end_at_the_latest_second_and_drop_a_partial_window():
    counts = [1, 5, 2, 3, 4, 0, 7]
    assert window_maxima(counts, 3).tolist() == [5, 7]       # [5 2 3] [4 0 7]; the 1 dropped
    assert window_maxima(counts, 3, lookback=1).tolist() == [7]
    assert window_maxima(counts, 8).size == 0
    assert window_maxima(counts, 1).tolist() == counts


@pytest.mark.parametrize("span, window_s, length", [(10, 60, 12_000), (10, 60, 250), (3.5, 7, 100), (1, 5, 40)])
def test_ewma_is_pandas_ewm_mean_of_the_window_peaks(span, window_s, length):
    counts = np.random.default_rng(length).poisson(50, length)
    expected = pd.Series(window_maxima(counts, window_s)).ewm(span=span).mean().iloc[-1]
    # 1e-12: EWMA drops windows whose weight is below double precision (12,000 s has 200
    # windows, more than the 181 it reads at span 10); pandas sums them all.
    assert EWMA(span, window_s).predict(counts) == pytest.approx(expected, rel=1e-12)


def test_ewma_before_its_first_window_says_the_peak_so_far():
    assert EWMA(10, 60).predict([3, 8, 1]) == 8.0


def simulated_ar1(phi, mean, noise, n, seed):
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = mean
    for t in range(1, n):
        x[t] = mean + phi * (x[t - 1] - mean) + noise * rng.standard_normal()
    return x


def test_least_squares_recovers_an_ar1_coefficient_and_mean():
    x = simulated_ar1(phi=0.7, mean=100.0, noise=5.0, n=4000, seed=1)
    intercept, phi = fit_autoregressive(x, 1)
    # The estimate's standard error is sqrt((1 - 0.7**2) / 4000) = 0.011, so 0.05 is 4.4
    # standard errors; the mean's is 5 / 0.3 / sqrt(4000) = 0.26, so 1.0 is 3.8.
    assert phi[0] == pytest.approx(0.7, abs=0.05)
    assert intercept / (1 - phi[0]) == pytest.approx(100.0, abs=1.0)


def test_autoregressive_forecasts_revert_to_the_mean():
    x = simulated_ar1(phi=0.7, mean=100.0, noise=5.0, n=2000, seed=2)
    one_step = AutoRegressive(1, window_s=1, lookback=2000, steps=1)
    high = np.append(x[1:], 130.0)
    intercept, phi = fit_autoregressive(high, 1)
    assert one_step.predict(high) == pytest.approx(intercept + phi[0] * 130.0, rel=1e-12)
    assert 100.0 < one_step.predict(high) < 130.0
    # From below the mean, forecasts rise, so the peak of two steps is the second one.
    low = np.append(x[1:], 70.0)
    intercept, phi = fit_autoregressive(low, 1)
    two_steps = intercept + phi[0] * (intercept + phi[0] * 70.0)
    assert AutoRegressive(1, window_s=1, lookback=2000, steps=2).predict(low) == pytest.approx(two_steps, rel=1e-12)
    assert 70.0 < two_steps < 100.0


def test_autoregressive_uses_the_history_peak_until_lookback_windows_exist():
    counts = np.random.default_rng(3).poisson(40, 119)  # 11 windows of 10 s, 12 needed
    assert AutoRegressive().predict(counts) == counts.max()


def test_seasonal_replays_a_periodic_series_and_falls_back_before_one_period():
    pattern = np.random.default_rng(4).integers(0, 100, 50)
    counts = np.tile(pattern, 4)
    predictor = Seasonal(period_s=50, window_s=7)
    for n in range(1, counts.size - 7):
        expected = counts[n: n + 7].max() if n >= 50 else counts[max(0, n - 7): n].max()
        assert predictor.predict(counts[:n]) == expected


@pytest.mark.parametrize("name", MODEL_FREE)
def test_the_margin_scales_the_prediction(name):
    counts = np.random.default_rng(5).poisson(80, 1000)
    plain = MODEL_FREE[name](0.0).predict(counts)
    assert plain > 0
    assert MODEL_FREE[name](0.1).predict(counts) == pytest.approx(1.1 * plain, rel=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: WindowMax().predict([3, -1, 2]), r"counts must be finite and >= 0, got -1\.0 at second 1"),
    (lambda: LastValue().predict([3, np.nan]), r"counts .* got nan at second 1"),
    (lambda: EWMA().predict([[1, 2], [3, 4]]), r"counts must be 1-D .* shape \(2, 2\)"),
    (lambda: window_maxima([1, np.inf], 1), r"counts .* got inf"),
    (lambda: WindowMax(0), r"window_s must be a whole number >= 1, got 0"),
    (lambda: LastValue(2.5), r"window_s .* got 2\.5"),
    (lambda: EWMA(span=0.5), r"span must be a finite number >= 1, got 0\.5"),
    (lambda: EWMA(window_s=-60), r"window_s .* got -60"),
    (lambda: AutoRegressive(order=0), r"order .* got 0"),
    (lambda: AutoRegressive(order=2, lookback=5), r"lookback must be a whole number >= 6, got 5"),
    (lambda: AutoRegressive(steps=0), r"steps .* got 0"),
    (lambda: Seasonal(period_s=30, window_s=60), r"period_s must be a whole number >= 60, got 30"),
    (lambda: WindowMax(margin=-0.1), r"margin must be a finite number >= 0, got -0\.1"),
    (lambda: EWMA(margin=float("inf")), r"margin .* got inf"),
    (lambda: fit_autoregressive([1.0, 2.0], 1), r"at least 3 values for an AR\(1\) fit, got 2"),
])
def test_bad_inputs_raise_naming_the_parameter_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=100, deadline=None)
@given(counts=arrays(np.float64, st.integers(0, 400), elements=st.floats(0, 1e4)),
       factor=st.sampled_from([0.5, 3.0]))
def test_predictions_are_finite_non_negative_rates_that_scale_with_the_load(counts, factor):
    for name, make in MODEL_FREE.items():
        predicted = make(0.0).predict(counts)
        assert np.isfinite(predicted) and predicted >= 0, name
        if name in SCALE_FREE:
            assert make(0.0).predict(factor * counts) == pytest.approx(factor * predicted, rel=1e-9, abs=1e-9), name
    peaks = window_maxima(counts, 60)
    if peaks.size:
        assert peaks.min() - 1e-9 <= EWMA(10, 60).predict(counts) <= peaks.max() + 1e-9


def test_training_pairs_are_lookback_peaks_and_the_next_horizon_peak():
    counts = np.arange(10)  # windows of 2: peaks 1 3 5 7 9
    inputs, targets = training_pairs(counts, window_s=2, lookback=2, horizon_s=3)
    # Boundaries at 4 s and 6 s have 3 s after them; 8 s has only 2.
    assert inputs.tolist() == [[1, 3], [3, 5]]
    assert targets.tolist() == [6, 8]


def test_lstm_without_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"servesim\[real\]"):
        LSTMPredictor()


def noisy_cycle(seconds, seed):
    """A 10-minute cycle between 50 and 150 req/s with Poisson counts."""
    t = np.arange(seconds)
    return np.random.default_rng(seed).poisson(100 + 50 * np.sin(2 * np.pi * t / 600))


def held_out_errors(predictor, counts, start, horizon_s=20, step_s=10):
    """Predictions at every step_s from ``start`` and the peak of the horizon after each."""
    ends = np.arange(start, counts.size - horizon_s + 1, step_s)
    predicted = np.array([predictor.predict(counts[:end]) for end in ends])
    actual = np.array([counts[end: end + horizon_s].max() for end in ends])
    return predicted - actual


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def test_lstm_learns_a_noisy_cycle_better_than_the_reactive_baseline(torch):
    counts = noisy_cycle(6 * 3600 + 3600, seed=6)
    train = 6 * 3600
    lstm = LSTMPredictor().fit(counts[:train], epochs=30, seed=0)
    lstm_error = np.abs(held_out_errors(lstm, counts, train)).mean()
    reactive_error = np.abs(held_out_errors(LastValue(10), counts, train)).mean()
    # LastValue is late on every slope of the cycle and sees a 10-s peak where a 20-s
    # one is asked; the LSTM can learn both. Measured MAE 5.4 against 8.5 req/s (ratio
    # 0.63; 0.63-0.74 over seeds 0-2 and learning rates 1e-3 to 1e-2), so a 20% gain
    # holds with room for a different torch build's rounding.
    assert lstm_error < 0.8 * reactive_error


def test_lstm_training_is_deterministic_in_its_seed(torch):
    counts = noisy_cycle(2 * 3600, seed=7)
    ends = range(1000, 7200, 370)
    torch.manual_seed(99)
    caller_stream = torch.random.get_rng_state()
    first, again, other = (LSTMPredictor().fit(counts, epochs=3, seed=seed) for seed in (0, 0, 1))
    same = [first.predict(counts[:end]) for end in ends]
    assert same == [again.predict(counts[:end]) for end in ends]
    assert same != [other.predict(counts[:end]) for end in ends]
    # Training draws from its own generator and restores the thread count.
    assert torch.equal(torch.random.get_rng_state(), caller_stream)
    assert torch.get_num_threads() == 1


def test_lstm_falls_back_before_lookback_windows_and_applies_its_margin(torch):
    counts = noisy_cycle(3600, seed=8)
    lstm = LSTMPredictor(margin=0.2).fit(counts, epochs=1, seed=0)
    assert lstm.predict(counts[:119]) == pytest.approx(1.2 * counts[:119].max(), rel=1e-12)
    infadapter = LSTMPredictor(60, 10, 60, fallback=EWMA(10, 60), margin=0.1).fit(counts, epochs=1, seed=0)
    assert infadapter.predict(counts[:599]) == pytest.approx(1.1 * EWMA(10, 60).predict(counts[:599]), rel=1e-12)
    with pytest.raises(RuntimeError, match="fit"):
        LSTMPredictor().predict(counts)


def test_on_the_twitter_trace_reactive_is_late_max_is_safe_and_the_lstm_is_closest(torch):
    if not TWITTER.exists():
        pytest.skip(f"{TWITTER} not present")
    counts = load_twitter_counts(TWITTER)
    start = 14 * DAY                                     # test on the first hour of day 14,
    test_hour = counts[: start + 3600]                   # train on days 0-1 (as IPA, split by day)
    errors = {
        "reactive": held_out_errors(LastValue(10), test_hour, start),
        "max": held_out_errors(WindowMax(120), test_hour, start),
        "lstm": held_out_errors(LSTMPredictor().fit(counts[: 2 * DAY], seed=0), test_hour, start),
    }
    under = {name: (error < 0).mean() for name, error in errors.items()}
    mae = {name: np.abs(error).mean() for name, error in errors.items()}
    # Measured on hours 0, 6, 12 and 18 of day 14: reactive under-predicts the next 20-s
    # peak 60-66% of the time, max 13-14%; MAE (req/s) reactive 5.7-6.5, max 7.5-9.1,
    # LSTM 4.2-5.1 (lower than reactive in every hour; hour 0: 6.34, 9.11, 5.11). The
    # bounds sit well inside those ranges.
    assert under["reactive"] > 0.5 and under["max"] < 0.25
    assert mae["lstm"] < mae["reactive"] < mae["max"]
