"""Service-time variability around the profiled latency.

A profile gives percentiles, but a simulated server needs one service time per batch.
How that time varies is a modelling choice, so it is a small interchangeable object:

* :class:`Empirical` replays the measured spread (p50/p90/p99) of each stage;
* :class:`Measured` draws each stage from its raw samples, where the profile keeps them;
* :class:`Deterministic` always takes the median;
* :class:`PerBatch` takes the medians and scales a whole batch by one factor from the
  measured spread of whole batches (models with exits and a served profile only);
* :class:`Exponential`, :class:`LogNormal` and :class:`Gamma` multiply the median by a
  random factor of **mean 1**, so the *profiled median becomes the mean* service time.
  They exist to check the engine against queueing theory (M/M/1 needs exponential
  service of mean 1/mu, M/G/1 e.g. lognormal with a given cv). Each stage gets an
  independent factor, so the named distribution is exact only for a one-stage model:
  build a one-stage profile for such checks.

The interface is two methods, split so that the work happens once, not per batch:

* ``prepare(stages)`` turns the per-stage :class:`Percentiles` at one batch size into
  whatever the noise needs (the cost model caches the result per batch size);
* ``make_sampler(params, n_stages, rng)`` returns the closure the engine calls for every
  batch: ``sample(batch_size) -> seconds``, reading ``params[batch_size]``.

The closure sits in the engine's innermost loop, so random variates are drawn from the
numpy Generator in blocks of :data:`BLOCK` per stage, turned into Python lists and read
back through one C iterator: a sample costs a dict lookup plus a multiply (or a short
branch) per stage, never a numpy call. Noise objects hold no state; all state (the
stream of variates) lives in the closure, so two samplers never share random numbers
unless they are handed the same Generator.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import numpy as np

BLOCK = 4096
SPREADS = ("samples", "percentiles")  # what PerBatch draws a whole batch's spread from

Sampler = Callable[[int], float]


def _stream(draw_block: Callable[[], np.ndarray]) -> Callable[[], float]:
    """``next()`` of an endless stream of variates, drawn a block at a time by ``draw_block``.

    The stream is built from C iterators (a callable iterator chained flat), so a variate
    costs one C call; the blocks, and hence the numbers, are those a loop over
    ``draw_block().tolist()`` would give.
    """
    blocks = iter(lambda: draw_block().tolist(), None)  # never None: endless
    return itertools.chain.from_iterable(blocks).__next__


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Service-time percentiles of one stage at one batch size, in seconds; ``shape``,
    where the profile keeps the point's raw samples, is them over their median, sorted:
    the measured distribution, tail included, which :class:`Measured` draws from."""

    p50: float
    p90: float
    p99: float
    shape: Optional[tuple[float, ...]] = None


class Noise(Protocol):
    def prepare(self, stages: Sequence[Percentiles]) -> Any:
        """Derive, once per batch size, what ``make_sampler``'s closure reads."""

    def make_sampler(self, params: Mapping[int, Any], n_stages: int, rng: np.random.Generator) -> Sampler:
        """``params[b]`` is ``prepare(...)`` of batch size ``b``, filled in on first use."""


@dataclass(frozen=True)
class Deterministic:
    """Always the (interpolated) median, summed over stages: no randomness at all."""

    def prepare(self, stages: Sequence[Percentiles]) -> float:
        return math.fsum(s.p50 for s in stages)

    def make_sampler(self, params: Mapping[int, float], n_stages: int, rng: np.random.Generator) -> Sampler:
        return params.__getitem__


@dataclass(frozen=True)
class Measured:
    """Draw each stage's time from its measured samples: the median at that batch size
    times one of the point's raw samples over their median, picked uniformly (a
    bootstrap). Where the batch size was not measured, the shape of the nearest measured
    size below it, scaled to the interpolated median.

    Three percentiles cannot carry the rare stalls that set a real p99 (``Empirical``
    never goes past ``p99 + (p99 - p90) / 9``); the samples can, as often as they were
    measured. Needs a profile with raw samples for every stage (see
    :mod:`workloads.profile`)."""

    needs_samples = True

    def prepare(self, stages: Sequence[Percentiles]) -> tuple[tuple[float, tuple[float, ...]], ...]:
        return tuple((s.p50, s.shape) for s in stages)

    def make_sampler(self, params: Mapping[int, tuple[tuple[float, tuple[float, ...]], ...]], n_stages: int,
                     rng: np.random.Generator) -> Sampler:
        uniform = _stream(lambda: rng.random(BLOCK * n_stages))

        def sample(batch_size: int) -> float:
            total = 0.0
            for p50, shape in params[batch_size]:
                total += p50 * shape[int(uniform() * len(shape))]
            return total

        return sample


@dataclass(frozen=True)
class PerBatch(Deterministic):
    """Each stage at its median, and the whole batch scaled by one random factor.

    On a real server the calls of one batch are slow or fast *together* (the machine's
    state, its caches, an interrupt), so drawing every stage's time independently from
    its own spread gets the batch's spread wrong: each stage's right tail pulls the sum's
    median up, while a real batch's median is close to the sum of its stages' medians.
    With this noise the cost model costs stages at their medians, and the model with
    exits (:class:`workloads.exits.SegmentCosts`) scales each batch by a factor drawn from
    the measured spread of whole batches (the ``total`` stage of a served profile's host
    rows, relative to the sum of medians at that batch size): from their raw samples
    (:class:`Measured`) where the profile keeps them and ``spread`` is ``samples``, else
    from their percentiles (:class:`Empirical`)."""

    spread: str = "samples"

    def __post_init__(self) -> None:
        if self.spread not in SPREADS:
            raise ValueError(f"spread must be one of {SPREADS}, got {self.spread!r}")


class _MeanOne:
    """Each stage's median times an independent random factor of mean 1."""

    def factors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent factors with mean 1."""
        raise NotImplementedError

    def prepare(self, stages: Sequence[Percentiles]) -> tuple[float, ...]:
        return tuple(s.p50 for s in stages)

    def make_sampler(self, params: Mapping[int, tuple[float, ...]], n_stages: int,
                     rng: np.random.Generator) -> Sampler:
        factor = _stream(lambda: self.factors(rng, BLOCK * n_stages))

        if n_stages == 1:  # the same draws without the loop over stages
            def sample_one_stage(batch_size: int) -> float:
                return params[batch_size][0] * factor()

            return sample_one_stage

        def sample(batch_size: int) -> float:
            total = 0.0
            for median in params[batch_size]:
                total += median * factor()
            return total

        return sample


@dataclass(frozen=True)
class Exponential(_MeanOne):
    """Exponential service time with mean = profiled median (cv 1): the M in M/M/1."""

    def factors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(1.0, n)


MAX_CV = 1e6  # far past any measured service time; cv**2 of a larger one overflows a float


def _check_cv(cv: float) -> None:
    if not (isinstance(cv, (int, float)) and math.isfinite(cv) and 0 < cv <= MAX_CV):
        raise ValueError(f"cv must be a number > 0 and at most {MAX_CV:g}, got {cv!r}; "
                         f"use Deterministic() for no noise")


@dataclass(frozen=True)
class LogNormal(_MeanOne):
    """Lognormal service time with mean = profiled median and coefficient of variation ``cv``.

    The factor is exp(N(mu, sigma^2)) with sigma^2 = ln(1 + cv^2) and mu = -sigma^2 / 2,
    which gives mean 1 and standard deviation cv.
    """

    cv: float

    def __post_init__(self) -> None:
        _check_cv(self.cv)

    def factors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        sigma2 = math.log1p(self.cv**2)
        return rng.lognormal(-sigma2 / 2, math.sqrt(sigma2), n)


@dataclass(frozen=True)
class Gamma(_MeanOne):
    """Gamma service time with mean = profiled median and coefficient of variation ``cv``
    (shape 1/cv^2, scale cv^2; cv = 1 is exponential)."""

    cv: float

    def __post_init__(self) -> None:
        _check_cv(self.cv)

    def factors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, 1.0 / shape, n)


@dataclass(frozen=True)
class Empirical:
    """Draw each stage's time from its measured percentiles at that batch size.

    The quantile function is piecewise linear through (0.5, p50), (0.9, p90) and
    (0.99, p99); the cost model has already interpolated the three percentiles linearly
    between measured batch sizes. The tails are not measured, so they are chosen:

    * lower tail: from q = 0 at ``max(p50 - (p90 - p50), p50 / 2)`` up to p50 -- the
      spread below the median mirrors the one above it, but a run never takes less than
      half the median (service times are skewed right and bounded below);
    * upper tail: q = 0.99 -> 1 continues the 0.9 -> 0.99 slope, so the maximum is
      ``p99 + (p99 - p90) / 9``. The tail beyond p99 is not extrapolated further because
      a few hundred repeats say nothing reliable about it.

    The mean is therefore not the median; it is whatever these percentiles imply.
    """

    def prepare(self, stages: Sequence[Percentiles]) -> tuple[tuple[float, ...], ...]:
        # Per stage: (value at q=0, slope below p50, p50, slope p50->p90, p90,
        # slope above p90, p99); the sampler evaluates the segment its uniform falls in.
        segments = []
        for s in stages:
            low = max(s.p50 - (s.p90 - s.p50), 0.5 * s.p50)
            segments.append((low, (s.p50 - low) / 0.5, s.p50, (s.p90 - s.p50) / 0.4,
                             s.p90, (s.p99 - s.p90) / 0.09, s.p99))
        return tuple(segments)

    def mean(self, p: Percentiles) -> float:
        """The mean of one stage's draws: the integral of the quantile function above
        (the load it puts on a resource over many draws, which the median understates)."""
        (low, s0, p50, s1, p90, s2, p99), = self.prepare([p])
        return (0.5 * (low + p50) / 2 + 0.4 * (p50 + p90) / 2 + 0.09 * (p90 + p99) / 2
                + 0.01 * (p99 + s2 * 0.01 / 2))

    def make_sampler(self, params: Mapping[int, tuple[tuple[float, ...], ...]], n_stages: int,
                     rng: np.random.Generator) -> Sampler:
        return _tabled(params, lambda: rng.random(BLOCK * n_stages).reshape(BLOCK, n_stages), _empirical_values)


def _empirical_values(segments: tuple[tuple[float, ...], ...], uniforms: np.ndarray) -> np.ndarray:
    """:class:`Empirical`'s batch times, one per row of ``uniforms`` (one uniform per
    stage): each stage's quantile function at its uniform, summed over the stages in
    order (the arithmetic of a loop over the stages, element by element)."""
    total = np.zeros(len(uniforms))
    for stage, (low, s0, p50, s1, p90, s2, p99) in enumerate(segments):
        u = uniforms[:, stage]
        total += np.where(u < 0.5, low + s0 * u,
                          np.where(u < 0.9, p50 + s1 * (u - 0.5),
                                   np.where(u < 0.99, p90 + s2 * (u - 0.9), p99 + s2 * (u - 0.99))))
    return total


def _tabled(params: Mapping[int, Any], draw_block: Callable[[], np.ndarray],
            values: Callable[[Any, np.ndarray], np.ndarray]) -> Sampler:
    """A sampler whose ``i``-th call reads row ``i`` of a block of draws (``draw_block()``:
    :data:`BLOCK` rows, one per call, drawn when the last block is used up) and returns
    ``values(params[batch_size], rows)`` at that row. A block's values are computed for
    all its rows at once, the first time a batch size is asked for in it: a call then
    costs a list look-up, not a loop over stages in Python (a run of days makes 10^8
    calls). The numbers are those of one row at a time, bit for bit. A batch size the
    cost model does not keep (out of its measured range: derived, and counted, per
    request) is computed for its one row."""
    rows, index, tables = np.empty((0, 0)), BLOCK, {}

    def sample(batch_size: int) -> float:
        nonlocal rows, index
        if index == BLOCK:
            rows, index = draw_block(), 0
            tables.clear()
        try:
            table = tables[batch_size]
        except KeyError:  # its first call in this block
            segments = params[batch_size]
            if batch_size not in params:  # not kept: one row
                index += 1
                return float(values(segments, rows[index - 1:index])[0])
            table = tables[batch_size] = values(segments, rows).tolist()
        index += 1
        return table[index - 1]

    return sample
