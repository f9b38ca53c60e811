"""Synthetic arrival processes: Poisson, gamma renewal, MMPP-2, diurnal, step and spike.

Real traces are few and fixed; these let an experiment sweep the one property that drives
queueing (burstiness, a rate change, a daily cycle) while holding the rest constant.

Each generator takes exactly one of ``duration`` (every arrival in ``[0, duration)``) or
``count`` (exactly that many arrivals), and a ``numpy.random.Generator`` as ``rng``: the
same seed gives the same trace. All of them are built the same way: a *chunk* function
produces the process over one stretch of time, fully vectorised, and :func:`_arrivals`
strings chunks together until the duration is covered or the count reached. Every chunk
ends at a point where the process forgets its past (any time for a Poisson process, an
arrival for a renewal process, the end of a state-1 sojourn for MMPP-2), so the pieces join
exactly. The Poisson-type chunks draw a Poisson count per constant-rate interval and place
the points with :func:`traces.counts.scatter`; a million arrivals take under 0.2 s.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from servesim.traces import _checks
from servesim.traces.counts import scatter
from servesim.traces.streamed import StreamedTrace
from servesim.traces.trace import Trace, TraceError

# chunk(start, stop) -> (sorted arrival times after start, end): the process from `start`
# to `end`. It aims at end >= stop but may stop short (the driver then asks for more) or
# run past it (the driver cuts).
Chunk = Callable[[float, float], tuple[np.ndarray, float]]


def poisson(rate: float, *, duration: Optional[float] = None, count: Optional[int] = None,
            rng: np.random.Generator, lazy: bool = False) -> Trace | StreamedTrace:
    """Homogeneous Poisson arrivals at ``rate`` req/s (exponential inter-arrivals, CV 1)."""
    rate = _checks.number("rate", rate, above=0)
    return _arrivals(_piecewise_chunk(np.array([rate]), np.empty(0), rng), duration, count,
                     rate, rng, f"poisson(rate={rate:g})", lazy=lazy)


def gamma(rate: float, cv: float, *, duration: Optional[float] = None, count: Optional[int] = None,
          rng: np.random.Generator, lazy: bool = False) -> Trace | StreamedTrace:
    """Renewal process with gamma inter-arrivals of mean ``1/rate`` and coefficient of variation ``cv``.

    ``cv > 1`` is burstier than Poisson (clumps and long gaps), ``cv < 1`` more regular,
    ``cv = 1`` is Poisson. The process starts with an arrival at time 0 that is not
    emitted (an ordinary, not a stationary, renewal process): the first arrival is one
    inter-arrival time after 0.
    """
    rate = _checks.number("rate", rate, above=0)
    # beyond these a gamma variate's shape or scale over- or underflows a float
    cv = _checks.number("cv", cv, at_least=1e-6, at_most=1e6)
    shape, scale = 1.0 / cv**2, cv**2 / rate

    def chunk(start: float, stop: float):
        expected = (stop - start) * rate
        n = int(expected + 4 * cv * math.sqrt(expected)) + 1  # count sd ~ cv*sqrt(expected)
        times = start + np.cumsum(rng.gamma(shape, scale, n))
        return times, float(times[-1])

    return _arrivals(chunk, duration, count, rate, rng, f"gamma(rate={rate:g}, cv={cv:g})", lazy=lazy)


def mmpp2(rates, mean_sojourn, *, duration: Optional[float] = None, count: Optional[int] = None,
          rng: np.random.Generator, lazy: bool = False) -> Trace | StreamedTrace:
    """Two-state Markov-modulated Poisson process: bursty traffic with a memory.

    The process stays in state ``s`` for an exponential time of mean ``mean_sojourn[s]``
    seconds, emitting Poisson arrivals at ``rates[s]`` req/s, then switches; it starts in
    state 0. Unlike a gamma renewal process, bursts last (many consecutive short gaps),
    which is what makes queues build up. A rate may be 0 (an on/off source).
    """
    rates = _pair("rates", rates)
    mean_sojourn = _pair("mean_sojourn", mean_sojourn)
    if not rates.any():
        raise TraceError(f"rates must not both be 0, got {tuple(map(float, rates))}")
    for s in (0, 1):
        _checks.number(f"mean_sojourn[{s}]", mean_sojourn[s], above=0)
    cycle = float(mean_sojourn.sum())

    def chunk(start: float, stop: float):
        cycles = int((stop - start) / cycle) + 1
        sojourns = rng.exponential(np.tile(mean_sojourn, cycles))  # state 0, 1, 0, 1, ...
        edges = start + np.concatenate(([0.0], np.cumsum(sojourns)))
        counts = rng.poisson(np.tile(rates, cycles) * sojourns)
        return scatter(counts, edges, rng), float(edges[-1])

    mean_rate = float(rates @ mean_sojourn) / cycle
    return _arrivals(chunk, duration, count, mean_rate, rng,
                     f"mmpp2(rates={tuple(rates.tolist())}, mean_sojourn={tuple(mean_sojourn.tolist())})", lazy=lazy)


def diurnal(mean_rate: float, amplitude: float, period: float, *, phase: float = 0.0,
            duration: Optional[float] = None, count: Optional[int] = None,
            rng: np.random.Generator, lazy: bool = False) -> Trace | StreamedTrace:
    """Poisson arrivals with rate ``mean_rate * (1 + amplitude * sin(2*pi*t/period + phase))``.

    A daily (or any periodic) load cycle. Generated by thinning: candidates at the peak
    rate ``mean_rate * (1 + amplitude)``, each kept with probability rate(t) / peak, which
    is exact for a non-homogeneous Poisson process and needs no inversion of the
    integrated rate. ``amplitude = 1`` lets the rate touch 0 at the trough.
    """
    mean_rate = _checks.number("mean_rate", mean_rate, above=0)
    amplitude = _checks.number("amplitude", amplitude, at_least=0, at_most=1)
    period = _checks.number("period", period, above=0)
    phase = _checks.number("phase", phase)
    peak = mean_rate * (1 + amplitude)
    candidates = _piecewise_chunk(np.array([peak]), np.empty(0), rng)

    def chunk(start: float, stop: float):
        times, end = candidates(start, stop)
        rate = mean_rate * (1 + amplitude * np.sin(2 * np.pi * times / period + phase))
        return times[rng.random(times.size) * peak < rate], end

    return _arrivals(chunk, duration, count, mean_rate, rng,
                     f"diurnal(mean_rate={mean_rate:g}, amplitude={amplitude:g}, "
                     f"period={period:g}, phase={phase:g})", lazy=lazy)


def step(rates, change_times, *, duration: Optional[float] = None, count: Optional[int] = None,
         rng: np.random.Generator, lazy: bool = False) -> Trace | StreamedTrace:
    """Poisson arrivals whose rate jumps: ``rates[k]`` from ``change_times[k-1]`` to ``change_times[k]``.

    ``rates[0]`` applies from time 0 and ``rates[-1]`` after the last change, so
    ``len(rates) == len(change_times) + 1``. Rates may be 0 (a pause), except that with
    ``count`` the last rate must be > 0 or the count might never be reached. This is the
    test load for autoscalers: how fast does a policy react to a sudden change?
    """
    rates = _checks.array("rates", rates)
    change_times = _checks.array("change_times", change_times, allow_empty=True)
    down = np.flatnonzero(np.diff(change_times) <= 0)
    if down.size:
        i = int(down[0]) + 1
        raise TraceError(f"change_times must increase, but change_times[{i}] = "
                         f"{float(change_times[i])!r} follows {float(change_times[i - 1])!r}")
    if rates.size != change_times.size + 1:
        raise TraceError(
            f"step needs len(rates) == len(change_times) + 1, got {rates.size} rates and "
            f"{change_times.size} change times"
        )
    if count is not None and rates[-1] == 0:
        raise TraceError("with count, the last rate (after the last change) must be > 0, got 0")
    return _arrivals(_piecewise_chunk(rates, change_times, rng), duration, count,
                     float(rates.max()), rng,
                     f"step(rates={rates.tolist()}, change_times={change_times.tolist()})", lazy=lazy)


def spike(base_rate: float, spike_rate: float, start: float, length: float, *,
          duration: Optional[float] = None, count: Optional[int] = None,
          rng: np.random.Generator, lazy: bool = False) -> Trace | StreamedTrace:
    """Poisson arrivals at ``base_rate``, and at ``spike_rate`` during ``[start, start + length)``.

    A flash crowd (or, with ``spike_rate < base_rate``, an outage of the load source).
    With ``count``, ``base_rate`` must be > 0.
    """
    base_rate = _checks.number("base_rate", base_rate, at_least=0)
    if count is not None and base_rate == 0:
        raise TraceError("with count, base_rate must be > 0, got 0")
    spike_rate = _checks.number("spike_rate", spike_rate, at_least=0)
    start = _checks.number("start", start, at_least=0)
    length = _checks.number("length", length, above=0)
    rates = np.array([base_rate, spike_rate, base_rate])
    return _arrivals(_piecewise_chunk(rates, np.array([start, start + length]), rng), duration,
                     count, float(rates.max()), rng,
                     f"spike(base_rate={base_rate:g}, spike_rate={spike_rate:g}, "
                     f"start={start:g}, length={length:g})", lazy=lazy)


def _piecewise_chunk(rates: np.ndarray, change_times: np.ndarray, rng: np.random.Generator) -> Chunk:
    """Chunks of a Poisson process with rate ``rates[k]`` between ``change_times[k-1]`` and ``[k]``.

    Cut ``[start, stop)`` at the change times inside it, draw a Poisson count per piece
    and scatter the points uniformly: exact, and a single vectorised call however many
    arrivals. Poisson, step, spike and the diurnal candidates all use this.
    """

    def chunk(start: float, stop: float):
        inside = change_times[(change_times > start) & (change_times < stop)]
        edges = np.concatenate(([start], inside, [stop]))
        piece_rates = rates[np.searchsorted(change_times, edges[:-1], side="right")]
        return scatter(rng.poisson(piece_rates * np.diff(edges)), edges, rng), stop

    return chunk


# The most arrivals (expected, at the rate given) one stretch of a generated trace draws at
# once. A trace with fewer is drawn in one stretch; a longer one stretch by stretch, so that
# it can be drawn again as it is read (traces.streamed) without holding it whole.
STRETCH = 1 << 22


def _arrivals(chunk: Chunk, duration, count, rate: float, rng, label: str,
              lazy: bool = False) -> Trace | StreamedTrace:
    """Run ``chunk`` over successive stretches until ``duration`` is covered or ``count`` reached.

    With ``duration`` the first stretch is the whole of it, or :data:`STRETCH` arrivals'
    worth at ``rate`` where that is shorter. With ``count`` the first stretch is sized
    from ``rate`` (a rough req/s: the largest rate is a safe choice) for a few sd more
    than ``count`` arrivals (at most :data:`STRETCH`), and each further stretch doubles
    (up to the same bound), so a poor guess costs a few extra rounds, never a wrong answer.
    ``lazy``: a :class:`~traces.streamed.StreamedTrace`, drawn again from ``rng``'s
    saved state each time it is read, instead of the array.
    """
    _checks.generator(rng)
    if (duration is None) == (count is None):
        raise TraceError(
            f"give exactly one of duration and count, got duration={duration!r}, count={count!r}"
        )
    if count is None:
        duration = _checks.number("duration", duration, at_least=0)
        source = f"{label}, duration={duration:g}"
    else:
        count = _checks.whole("count", count)
        source = f"{label}, count={count}"
    longest = STRETCH / rate
    if not lazy:
        return Trace(np.concatenate([np.empty(0), *_stretches(chunk, duration, count, rate, longest)]), source=source)
    state = rng.bit_generator.state

    def again():
        rng.bit_generator.state = state
        return _stretches(chunk, duration, count, rate, longest)
    return StreamedTrace.drawn(again, source)


def _stretches(chunk: Chunk, duration, count, rate: float, longest: float):
    """:func:`_arrivals`' stretches, each cut to the duration or the count."""
    end = 0.0
    if count is None:
        while end < duration:
            times, end = chunk(end, min(duration, end + longest))
            yield times[: np.searchsorted(times, duration)]
        return
    span, have = (count + 4 * math.sqrt(count) + 16) / rate, 0
    while have < count:
        times, end = chunk(end, end + min(span, longest))
        times = times[: count - have]
        have += times.size
        span *= 2
        yield times


def _pair(name: str, values) -> np.ndarray:
    array = _checks.array(name, values)
    if array.size != 2:
        raise TraceError(f"{name} must hold 2 values (state 0, state 1), got {array.size}")
    return array
