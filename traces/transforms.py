"""Pure Trace -> Trace reshaping: cut a window, change the load, change the speed, truncate.

Experiments replay real traces at the scale of the simulated cluster (InfAdapter and IPA
replay 20-minute Twitter windows rescaled to their capacity); these functions do that
without touching the input, and keep every per-request column aligned with its arrival.
"""

from __future__ import annotations

import math

import numpy as np

from servesim.traces import _checks
from servesim.traces.trace import Trace, TraceError


def window(trace: Trace, t0: float, t1: float) -> Trace:
    """Arrivals in ``[t0, t1)``, shifted so that ``t0`` becomes time 0."""
    t0 = _checks.number("t0", t0, at_least=0)
    t1 = _checks.number("t1", t1)
    if t1 <= t0:
        raise TraceError(f"window needs t0 < t1, got t0={t0!r}, t1={t1!r}")
    lo, hi = np.searchsorted(trace.times, [t0, t1])
    part = slice(int(lo), int(hi))
    return _take(trace, part, trace.times[part] - t0, f"window({trace.source}, {t0:g}, {t1:g})")


def concat(pieces: list[Trace], lengths: list[float]) -> Trace:
    """``pieces`` played one after another: piece k starts when the ``lengths`` (seconds)
    of the pieces before it have passed (IPA replays a slice twice, or two slices in a
    row). Every piece must carry the same columns."""
    if len(pieces) != len(lengths) or not pieces:
        raise TraceError(f"concat needs one length per piece, got {len(pieces)} pieces and {len(lengths)} lengths")
    names = set(pieces[0].columns)
    for k, (piece, length) in enumerate(zip(pieces, lengths)):
        _checks.number(f"lengths[{k}]", length, above=0)
        if set(piece.columns) != names:
            raise TraceError(f"concat: piece {k} has columns {sorted(piece.columns)}, piece 0 {sorted(names)}")
        if len(piece) and piece.times[-1] >= length:
            raise TraceError(f"concat: piece {k} has an arrival at {float(piece.times[-1])!r} s, past its length {length!r}")
    offsets = np.concatenate(([0.0], np.cumsum(lengths[:-1])))
    times = np.concatenate([piece.times + offset for piece, offset in zip(pieces, offsets)])
    columns = {name: np.concatenate([piece.columns[name] for piece in pieces]) for name in names}
    return Trace(times, columns, f"concat({', '.join(piece.source for piece in pieces)})")


def scale_rate(trace: Trace, factor: float, *, rng: np.random.Generator) -> Trace:
    """About ``factor`` times the requests over the same time span, following the same rate curve.

    ``factor <= 1``: keep each arrival independently with probability ``factor``
    (thinning keeps the shape of the rate curve and a Poisson process stays Poisson).

    ``factor > 1``: superpose ``k = ceil(factor)`` copies, each arrival of each copy kept
    with probability ``factor / k``. Copy 0 is the trace itself; in every other copy each
    arrival moves by an independent uniform fraction of its gap to the next arrival. Plain
    copies would stack exact duplicates, i.e. synchronized batches that a real load
    never has and that distort batching and queueing; moving each point only within its
    own gap keeps every copy's count in any interval within one of the original's (before
    thinning), so the local rate shape (bursts, daily cycle) survives. The last arrival has
    no successor, so its copies move back into the gap before it: the span does not grow.

    Columns follow their arrivals (a copy carries the columns of the request it copies).
    """
    factor = _checks.number("factor", factor, above=0)
    rng = _checks.generator(rng)
    source = f"scale_rate({trace.source}, {factor:g})"
    n = len(trace)
    _checks.arrivals(source, n * factor)
    if factor <= 1:
        keep = rng.random(n) < factor
        return _take(trace, keep, trace.times[keep], source)
    k = math.ceil(factor)
    origin = np.tile(np.arange(n), k)
    # gap to the next arrival; the last arrival has none and moves back into the gap before it
    gaps = np.diff(trace.times, append=trace.times[-2:-1] if n > 1 else trace.times[-1:])
    shift = rng.random(n * k) * gaps[origin]
    shift[:n] = 0.0  # copy 0 is the original
    keep = rng.random(n * k) < factor / k
    origin = origin[keep]
    times = trace.times[origin] + shift[keep]
    order = np.argsort(times, kind="stable")
    return _take(trace, origin[order], times[order], source)


def compress_time(trace: Trace, factor: float) -> Trace:
    """Divide every time by ``factor``: ``factor > 1`` plays the trace faster (higher rate, same requests)."""
    factor = _checks.number("factor", factor, above=0)
    return Trace(trace.times / factor, dict(trace.columns), f"compress_time({trace.source}, {factor:g})")


def head(trace: Trace, max_requests: int) -> Trace:
    """The first ``max_requests`` arrivals (all of them if the trace is shorter)."""
    n = _checks.whole("max_requests", max_requests)
    part = slice(0, n)
    return _take(trace, part, trace.times[part], f"head({trace.source}, {n})")


def _take(trace: Trace, index, times: np.ndarray, source: str) -> Trace:
    """A new Trace with ``times`` and every column indexed the same way, so they stay aligned."""
    return Trace(times, {name: values[index] for name, values in trace.columns.items()}, source)
