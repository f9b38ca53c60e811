"""Parameter checks shared by the generators, converters and transforms.

A bad parameter should fail at the call that passed it, with a message naming the
parameter and the value, rather than as a NaN or an empty trace deep inside a simulation.
"""

from __future__ import annotations

import math

import numpy as np

from servesim.traces.trace import TraceError

# The most arrivals one trace may hold: 8 GB of arrival times alone, before the engine's
# per-request table. A request for more is a slip (a rate in the wrong unit, a count
# with extra digits), and refusing it here names it, instead of a MemoryError or a
# numpy "lam value too large" from deep inside a generator.
MAX_ARRIVALS = 10**9


def number(name: str, value, *, at_least=None, above=None, at_most=None) -> float:
    """``value`` as a finite float within the given bounds, else a TraceError naming it."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TraceError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(x):
        raise TraceError(f"{name} must be a finite number, got {value!r}")
    if at_least is not None and x < at_least:
        raise TraceError(f"{name} must be >= {at_least}, got {value!r}")
    if above is not None and x <= above:
        raise TraceError(f"{name} must be > {above}, got {value!r}")
    if at_most is not None and x > at_most:
        raise TraceError(f"{name} must be <= {at_most}, got {value!r}")
    return x


def whole(name: str, value) -> int:
    """``value`` as an int >= 0; integral floats such as ``1e6`` are accepted."""
    x = number(name, value, at_least=0)
    if x != int(x):
        raise TraceError(f"{name} must be a whole number, got {value!r}")
    return int(x)


def array(name: str, values, *, allow_empty: bool = False) -> np.ndarray:
    """A 1-D float array of finite values >= 0 (rates, where 0 is a quiet period; times)."""
    try:
        result = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TraceError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if result.ndim != 1 or (result.size == 0 and not allow_empty):
        raise TraceError(f"{name} must be a {'' if allow_empty else 'non-empty '}1-D sequence, got {values!r}")
    bad = ~np.isfinite(result) | (result < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TraceError(f"{name}[{i}] must be a finite number >= 0, got {float(result[i])!r}")
    return result


def arrivals(what: str, n: float) -> None:
    """Refuse to make more than :data:`MAX_ARRIVALS` arrivals (``n``: how many ``what`` asks for)."""
    if n > MAX_ARRIVALS:
        raise TraceError(f"{what} would make {n:.3g} arrivals, more than the {MAX_ARRIVALS:,} a trace may hold")


def generator(rng) -> np.random.Generator:
    """Randomness comes only from an explicit Generator, so a seed reproduces a trace."""
    if not isinstance(rng, np.random.Generator):
        raise TraceError(
            f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(0)), got {rng!r}"
        )
    return rng
