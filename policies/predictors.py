"""Load predictors: the request rate an autoscaler should provision for next.

An autoscaler that decides now lives with its decision until the next one, so it needs
the *peak* rate of the coming horizon, not the mean. Every predictor reads what a
deployed system can count — ``counts``, the arrivals in each second so far (index i =
second i, the latest last; empty at the start of a run) — and returns requests/s,
times ``1 + margin`` (InfAdapter adds 10%, IPA 0-20%). With no history at all every
predictor says 0.

A predictor reads only its last ``history_s`` seconds, so a call costs the same in the
first hour of a run as on day 20. Models that work on a coarser series see
:func:`window_maxima`: the peak of each ``window_s``-second window, the windows aligned
so the last one ends at the latest second and is always full. (IPA's code aligns them
to the start of its 2-min history and lets the newest window be partial.)

What the papers use:

- IPA: an LSTM over 12 windows of 10 s predicting the peak of the next 20 s, backed by
  ``WindowMax(120)`` until 2 min of history exist; baselines ``reactive`` =
  ``LastValue(10)``, ``max`` = ``WindowMax(120)``, ``arima(1,0,0)`` =
  ``AutoRegressive(1, window_s=10, lookback=12, steps=2)``.
- InfAdapter: an LSTM over the per-minute peaks of the last 10 minutes predicting the
  next minute's peak, ``EWMA(span=10, window_s=60)`` until 10 minutes exist, margin 0.1:
  ``LSTMPredictor(60, 10, 60, fallback=EWMA(10, 60), margin=0.1)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Optional

import numpy as np

TORCH_MISSING = "LSTMPredictor needs torch: pip install 'servesim[real]'"


def _whole_number(name: str, value, minimum: int = 1) -> int:
    try:
        whole = int(value)
    except (TypeError, ValueError, OverflowError):
        whole = None
    if isinstance(value, bool) or whole is None or whole != value or whole < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return whole


def _finite_at_least(name: str, value, minimum: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
    return number


def checked_counts(counts, first_second: int = 0) -> np.ndarray:
    """``counts`` as a float array, or a ValueError saying which second is bad (counted
    from ``first_second``, where ``counts`` is the tail of a longer series)."""
    values = np.asarray(counts, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"counts must be 1-D (one count per second), got shape {values.shape}")
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        place = int(np.argmax(bad))
        raise ValueError(f"counts must be finite and >= 0, got {float(values[place])!r} "
                         f"at second {first_second + place}")
    return values


def window_maxima(counts, window_s: int, lookback: Optional[int] = None) -> np.ndarray:
    """The peak of each full ``window_s``-second window, oldest first, the last window
    ending at the latest second; at most the ``lookback`` latest windows. Seconds before
    the oldest full window are left out, so every value is a peak over the same span."""
    values = checked_counts(counts)
    window_s = _whole_number("window_s", window_s)
    windows = len(values) // window_s
    if lookback is not None:
        windows = min(windows, _whole_number("lookback", lookback))
    if windows == 0:
        return np.empty(0)
    return values[len(values) - windows * window_s:].reshape(windows, window_s).max(axis=1)


class LoadPredictor(ABC):
    """Predicted peak requests/s for the coming horizon: ``predict(counts)``.

    Subclasses say how many of the latest seconds they read (``history_s``) and estimate
    from those (``_estimate``, never given an empty array); the base checks the input,
    clips the estimate at 0 (a rate cannot be negative, a fitted model's forecast can)
    and applies the margin.
    """

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = _finite_at_least("margin", margin, 0.0)

    @property
    @abstractmethod
    def history_s(self) -> int:
        """How many of the latest seconds the estimate reads."""

    @abstractmethod
    def _estimate(self, recent: np.ndarray) -> float:
        """The prediction before the margin, from the last ``history_s`` seconds (fewer
        early in a run)."""

    def predict(self, counts) -> float:
        """Requests/s to provision for; only the seconds read are checked, so that a call
        stays O(history_s)."""
        values = np.asarray(counts)
        if values.ndim != 1:
            raise ValueError(f"counts must be 1-D (one count per second), got shape {values.shape}")
        first = max(0, len(values) - self.history_s)
        recent = checked_counts(values[first:], first)
        if recent.size == 0:
            return 0.0
        return max(0.0, float(self._estimate(recent))) * (1.0 + self.margin)


class WindowMax(LoadPredictor):
    """The peak of the last ``window_s`` seconds (of all seconds while fewer exist):
    IPA's ``max`` predictor and its backup before 2 min of history (``window_s=120``).
    It remembers a burst for ``window_s`` seconds, so it over-provisions after one and
    rarely under-provisions."""

    def __init__(self, window_s: int = 120, margin: float = 0.0) -> None:
        super().__init__(margin)
        self.window_s = _whole_number("window_s", window_s)

    @property
    def history_s(self) -> int:
        return self.window_s

    def _estimate(self, recent: np.ndarray) -> float:
        return float(recent.max())


class LastValue(WindowMax):
    """The latest observation: the last second's count, or with ``window_s`` the last
    window's peak — the purely reactive baseline (IPA's ``reactive`` is ``window_s=10``).

    It is the same number as ``WindowMax`` over that window; a class of its own so that
    configurations and reports name the baseline the papers name."""

    def __init__(self, window_s: int = 1, margin: float = 0.0) -> None:
        super().__init__(window_s, margin)


class EWMA(LoadPredictor):
    """Exponentially weighted mean of the window peaks, pandas'
    ``Series.ewm(span=span).mean()`` (adjust=True: weights ``(1 - alpha)**age`` with
    ``alpha = 2 / (span + 1)``, normalised by their sum): InfAdapter's predictor before
    10 minutes of history (``span=10, window_s=60``). Before the first full window it
    says the peak so far.

    Only the windows whose weight is above double precision relative to the newest are
    read (181 at span 10): the older ones change the mean by less than its rounding, and
    a call stays O(1) in the length of the run.
    """

    def __init__(self, span: float = 10, window_s: int = 60, margin: float = 0.0) -> None:
        super().__init__(margin)
        self.span = _finite_at_least("span", span, 1.0)
        self.window_s = _whole_number("window_s", window_s)
        self.alpha = 2.0 / (self.span + 1.0)
        decay = 1.0 - self.alpha
        self._windows = 1 if decay == 0.0 else math.ceil(math.log(np.finfo(float).eps) / math.log(decay)) + 1

    @property
    def history_s(self) -> int:
        return self._windows * self.window_s

    def _estimate(self, recent: np.ndarray) -> float:
        maxima = window_maxima(recent, self.window_s)
        if maxima.size == 0:
            return float(recent.max())
        weights = (1.0 - self.alpha) ** np.arange(maxima.size - 1, -1, -1)
        return float(weights @ maxima / weights.sum())


def fit_autoregressive(series, order: int) -> tuple[float, np.ndarray]:
    """Least-squares fit of ``x[t] = c + phi[0] x[t-1] + ... + phi[p-1] x[t-p]``:
    ``(c, phi)``. This is the conditional maximum likelihood of an AR(p) (given the first
    p values); statsmodels' exact likelihood, which IPA calls, differs by O(1/n) and
    also forces a stationary fit, which this does not. A rank-deficient design (a
    constant series) gets lstsq's minimum-norm solution, which still reproduces it."""
    x = checked_counts(series)
    order = _whole_number("order", order)
    rows = len(x) - order
    if rows < order + 1:
        raise ValueError(f"series needs at least {2 * order + 1} values for an AR({order}) fit, got {len(x)}")
    lagged = [x[order - lag: len(x) - lag] for lag in range(1, order + 1)]
    design = np.column_stack([np.ones(rows), *lagged])
    coefficients, *_ = np.linalg.lstsq(design, x[order:], rcond=None)
    return float(coefficients[0]), coefficients[1:]


class AutoRegressive(LoadPredictor):
    """ARIMA(p, 0, 0) on the last ``lookback`` window peaks, refitted at every call by
    :func:`fit_autoregressive`; the prediction is the largest of the next ``steps``
    forecasts, so it covers ``steps * window_s`` seconds (IPA: ``arima(1,0,0)``, 12
    windows of 10 s, 2 steps). A stationary fit pulls the forecast toward the series'
    mean. With fewer than ``lookback`` windows it falls back to the peak of the history
    (``WindowMax``), as IPA does before 2 minutes."""

    def __init__(self, order: int = 1, window_s: int = 10, lookback: int = 12, steps: int = 2,
                 margin: float = 0.0) -> None:
        super().__init__(margin)
        self.order = _whole_number("order", order)
        self.window_s = _whole_number("window_s", window_s)
        # One equation more than unknowns, so the fit is not just an interpolation.
        self.lookback = _whole_number("lookback", lookback, 2 * self.order + 2)
        self.steps = _whole_number("steps", steps)

    @property
    def history_s(self) -> int:
        return self.lookback * self.window_s

    def _estimate(self, recent: np.ndarray) -> float:
        maxima = window_maxima(recent, self.window_s, self.lookback)
        if maxima.size < self.lookback:
            return float(recent.max())
        intercept, phi = fit_autoregressive(maxima, self.order)
        newest_first = list(maxima[::-1][: self.order])
        forecasts = []
        for _ in range(self.steps):
            forecasts.append(intercept + float(phi @ np.asarray(newest_first)))
            newest_first = [forecasts[-1], *newest_first[:-1]]
        return max(forecasts)


class Seasonal(LoadPredictor):
    """Seasonal naive: the peak of the ``window_s`` seconds that followed this instant one
    ``period_s`` ago (a daily cycle: ``period_s=86400``). Until a whole period has been
    seen it *falls back* to the peak of the last ``window_s`` seconds rather than blending
    the two: a part period says nothing about the season, and a blend would add a weight
    to tune."""

    def __init__(self, period_s: int = 86_400, window_s: int = 60, margin: float = 0.0) -> None:
        super().__init__(margin)
        self.window_s = _whole_number("window_s", window_s)
        # The window a period ago must have ended by now, or it would read the future.
        self.period_s = _whole_number("period_s", period_s, self.window_s)

    @property
    def history_s(self) -> int:
        return self.period_s

    def _estimate(self, recent: np.ndarray) -> float:
        if recent.size < self.period_s:
            return float(recent[-self.window_s:].max())
        return float(recent[: self.window_s].max())


def _import_torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError(TORCH_MISSING) from error
    return torch


def training_pairs(counts, window_s: int, lookback: int, horizon_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (input, target) a series offers at window boundaries: ``lookback`` window
    peaks ending at a boundary, and the peak of the ``horizon_s`` seconds after it.
    Shapes ``(n, lookback)`` and ``(n,)``; n may be 0."""
    values = checked_counts(counts)
    window_s = _whole_number("window_s", window_s)
    lookback = _whole_number("lookback", lookback)
    horizon_s = _whole_number("horizon_s", horizon_s)
    maxima = window_maxima(values[: len(values) // window_s * window_s], window_s)
    ends = np.arange(lookback, maxima.size + 1)
    ends = ends[ends * window_s + horizon_s <= len(values)]
    inputs = maxima[ends[:, None] - lookback + np.arange(lookback)]
    targets = values[ends[:, None] * window_s + np.arange(horizon_s)].max(axis=1)
    return inputs, targets


class LSTMPredictor(LoadPredictor):
    """IPA's and InfAdapter's learned predictor: ``LSTM(hidden) -> Linear(1)`` over the
    last ``lookback`` window peaks, predicting the peak of the next ``horizon_s`` seconds.
    Until ``lookback`` windows exist it uses ``fallback`` (default: the peak of the
    history so far, IPA's backup); the fallback's own margin is not applied, this one's is.

    Differences from the papers' Keras model: torch's LSTM uses tanh where IPA's layer
    uses relu, there is no L1 penalty (1e-5 in IPA), and training sees a random subset of
    ``samples`` windows, so that a day of 10-s windows trains in seconds on one thread.
    Inputs and targets are divided by the largest training peak, so the network works
    on values near [0, 1] whatever the trace's scale. Needs torch
    (``pip install 'servesim[real]'``).
    """

    def __init__(self, window_s: int = 10, lookback: int = 12, horizon_s: int = 20, hidden: int = 25,
                 fallback: Optional[LoadPredictor] = None, margin: float = 0.0) -> None:
        super().__init__(margin)
        self._torch = _import_torch()
        self.window_s = _whole_number("window_s", window_s)
        self.lookback = _whole_number("lookback", lookback)
        self.horizon_s = _whole_number("horizon_s", horizon_s)
        self.hidden = _whole_number("hidden", hidden)
        self.fallback = WindowMax(self.lookback * self.window_s) if fallback is None else fallback
        self._network = None
        self._scale = 1.0

    @property
    def history_s(self) -> int:
        return max(self.lookback * self.window_s, self.fallback.history_s)

    def fit(self, counts, epochs: int = 30, seed: int = 0, samples: int = 4096, batch: int = 64,
            learning_rate: float = 1e-3) -> LSTMPredictor:
        """Train afresh on a per-second series (Adam, mean squared error, like IPA's
        training script); the same series and seed give the same weights."""
        torch = self._torch
        epochs = _whole_number("epochs", epochs)
        samples = _whole_number("samples", samples)
        batch = _whole_number("batch", batch)
        if _finite_at_least("learning_rate", learning_rate, 0.0) == 0.0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        inputs, targets = training_pairs(counts, self.window_s, self.lookback, self.horizon_s)
        if targets.size == 0:
            needed = self.lookback * self.window_s + self.horizon_s
            raise ValueError(f"counts must span at least {needed} s to train on, got {len(checked_counts(counts))}")
        keep = np.random.default_rng(seed).permutation(targets.size)[:samples]
        self._scale = max(float(inputs.max()), float(targets.max()), 1.0)
        x = torch.tensor(inputs[keep, :, None] / self._scale, dtype=torch.float32)
        y = torch.tensor(targets[keep] / self._scale, dtype=torch.float32)
        # Built uninitialised and filled from a generator of our own, not torch's global
        # stream: the seed alone fixes the weights, and the caller's stream is untouched.
        self._network = torch.nn.ModuleDict({
            "lstm": torch.nn.LSTM(1, self.hidden, batch_first=True, device="meta"),
            "head": torch.nn.Linear(self.hidden, 1, device="meta"),
        }).to_empty(device="cpu")
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(self.hidden)  # torch's default bound for both layers
        for parameter in self._network.parameters():
            torch.nn.init.uniform_(parameter, -bound, bound, generator=generator)
        optimiser = torch.optim.Adam(self._network.parameters(), lr=learning_rate)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the fastest for a network this small, and repeatable
        try:
            for _ in range(epochs):
                for rows in torch.randperm(len(y), generator=generator).split(batch):
                    optimiser.zero_grad()
                    torch.nn.functional.mse_loss(self._forward(x[rows]), y[rows]).backward()
                    optimiser.step()
        finally:
            torch.set_num_threads(threads)
        return self

    def _forward(self, x):
        """Scaled peaks ``(n, lookback, 1)`` -> scaled predictions ``(n,)``."""
        states, _ = self._network["lstm"](x)
        return self._network["head"](states[:, -1]).squeeze(-1)

    def _estimate(self, recent: np.ndarray) -> float:
        if self._network is None:
            raise RuntimeError("LSTMPredictor: call fit() before predict()")
        maxima = window_maxima(recent, self.window_s, self.lookback)
        if maxima.size < self.lookback:
            return self.fallback._estimate(recent[-self.fallback.history_s:])
        torch = self._torch
        x = torch.tensor(maxima[None, :, None] / self._scale, dtype=torch.float32)
        with torch.no_grad():
            return float(self._forward(x)) * self._scale
