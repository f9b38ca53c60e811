"""The cost model: how long a batch of a given size takes, for the engine to ask.

It turns one model's rows of a profile into per-stage lookup tables once, at
construction, so every question the engine asks in its hot path is a Python list
index: the median, or the three percentiles, of each stage at every batch size from
the smallest to the largest measured one, **linearly** interpolated between measured
batch sizes. Linear keeps a monotone table monotone and never overshoots the measured
points (log-space blending was found to over-predict by 9-14%).

Batch sizes outside the measured range are answered too, but never silently: below
the smallest measured size the smallest measured latency is used; above the largest,
``out_of_range`` says whether to extrapolate linearly from the last two points (never
below the last measured value), clamp to the last point, or raise. Either way the
first request per (stage, batch size) warns with :class:`ProfileRangeWarning`, and
every request is counted in ``out_of_range_requests`` for the run summary.

A cost model holds no random state: :meth:`CostModel.sampler` takes the Generator, and
each sampler keeps its own pre-drawn variates.
"""

from __future__ import annotations

import bisect
import math
import sys
import warnings
from collections import Counter
from typing import Any, Callable, Optional

import numpy as np

from servesim.workloads.contention import ContentionTable, contention_for
from servesim.workloads.model import ModelSpec
from servesim.workloads.noise import Deterministic, Noise, Percentiles, Sampler
from servesim.workloads.profile import SAMPLES_SUFFIX, Profile, ProfileError, ProfileRow

OUT_OF_RANGE = ("extrapolate", "clamp", "error")
# A run reports the batch sizes it interpolated where the profile's own data put the
# interpolation error at this or more (see CostModel.interpolation_error).
INTERPOLATION_WARN = 0.05


class ProfileRangeWarning(UserWarning):
    """A batch size outside a stage's profiled range was asked for; the answer is a guess."""


class ProfileRangeError(ValueError):
    """A batch size above a stage's profiled range was asked for under out_of_range='error'."""


class CostModel:
    """Service times of one model on one hardware, from a profile, in seconds.

    ``hardware=None`` picks the only hardware that profiled ``model`` (an error if
    several did). ``stages`` costs only those of the model's stages, in the order
    given (an early-exit model's segment: some backbone stages and a ramp head); by
    default every stage of the model, in profile order. ``noise`` shapes :meth:`sampler`'s random service times; the
    deterministic lookups (:meth:`latency`, :meth:`batch_latency`) always give medians.
    """

    def __init__(
        self,
        profile: Profile,
        model: str,
        *,
        hardware: str | None = None,
        noise: Noise = Deterministic(),
        out_of_range: str = "extrapolate",
        stages: tuple[str, ...] | None = None,
    ):
        if out_of_range not in OUT_OF_RANGE:
            raise ValueError(f"out_of_range must be one of {OUT_OF_RANGE}, got {out_of_range!r}")
        self.profile = profile
        self.model_spec = ModelSpec.from_profile(profile, model) if stages is None else _subset(profile, model, stages)
        self.stages = self.model_spec.stages
        self.hardware = _pick_hardware(profile, model, hardware)
        self.noise = noise
        self.out_of_range = out_of_range
        self.out_of_range_requests: Counter[tuple[str, int]] = Counter()
        self._warned: set[tuple[str, int]] = set()
        # Per stage: measured batch sizes (ascending) and their percentiles in seconds.
        # Raw samples become shapes only for a noise that draws from them
        needs_samples = getattr(noise, "needs_samples", False)
        samples = profile.samples if needs_samples else {}
        self._measured = {
            stage: _measured(profile.rows_for(model, stage, self.hardware), samples) for stage in self.stages
        }
        if needs_samples:
            for stage, (sizes, points) in self._measured.items():
                if any(p.shape is None for p in points):
                    b = sizes[[p.shape is None for p in points].index(True)]
                    raise ProfileError(f"{profile.source}: {type(noise).__name__.lower()} noise draws from raw "
                                       f"samples, and model {model!r} stage {stage!r} on {self.hardware!r} has none "
                                       f"at batch size {b} (a profile keeps them in its sidecar, "
                                       f"<name>{SAMPLES_SUFFIX}, written by servesim's profilers)")
        # Per stage: (lo, hi, table) with table[b] the percentiles for lo <= b <= hi.
        self._tables = {stage: _table(*self._measured[stage]) for stage in self.stages}
        # Batch sizes inside every stage's measured range, and their summed medians.
        self._lo = max(lo for lo, _, _ in self._tables.values())
        self._hi = min(hi for _, hi, _ in self._tables.values())
        self.max_profiled_batch = self._hi
        self._batch_p50: list[Any] = [None] * (self._hi + 1)
        for b in range(self._lo, self._hi + 1):
            self._batch_p50[b] = math.fsum(table[b].p50 for _, _, table in self._tables.values())
        self._measured_sizes, self._gap_errors = _leave_one_out(self._measured)

    def interpolation_error(self, batch_size: int) -> float | None:
        """How far off the median batch latency may be at ``batch_size``, where it is
        interpolated: ``None`` at a measured size, outside the measured range, or where
        the profile has too few sizes to tell.

        Estimated from the profile itself, leaving one measured size out at a time: each
        inner measured size's batch latency is interpolated from its two neighbours and
        compared with what was measured. A size between two measured ones gets the
        smaller relative error of the two held-out points whose spans cover its gap (the
        measured sizes on either side; one at the ends): a bend or jump inside the gap
        shows in both, one in a neighbouring gap (a kernel that changes from batch 1 to
        2, say) in one only, so the smaller one speaks for this gap.
        """
        sizes = self._measured_sizes
        right = bisect.bisect_right(sizes, batch_size)
        if not 0 < right < len(sizes) or sizes[right - 1] == batch_size:  # outside, or measured
            return None
        return self._gap_errors.get((sizes[right - 1], sizes[right]))

    def interpolation_report(self, batch_sizes) -> dict[int, float]:
        """The sizes of ``batch_sizes`` whose :meth:`interpolation_error` is
        :data:`INTERPOLATION_WARN` or more, with that error: what a run warns about."""
        errors = {b: self.interpolation_error(b) for b in batch_sizes}
        return {b: e for b, e in errors.items() if e is not None and e >= INTERPOLATION_WARN}

    def __repr__(self) -> str:
        return (
            f"CostModel(model={self.model_spec.name!r}, hardware={self.hardware!r}, "
            f"stages={self.stages!r}, noise={self.noise!r}, out_of_range={self.out_of_range!r})"
        )

    def contention(self, instances: int, where: str) -> ContentionTable | None:
        """The measured slowdown of ``instances`` instances of this model sharing one
        device (None for one instance); :class:`~workloads.contention.NoContentionModel`,
        naming ``where``, if the profile did not measure that many."""
        return contention_for(self.profile.contention, self.hardware, self.model_spec.name, instances, where,
                              self.profile.source)

    def profiled_range(self, stage: str) -> tuple[int, int]:
        """Smallest and largest batch size measured for ``stage``."""
        lo, hi, _ = self._stage_table(stage)
        return lo, hi

    def latency(self, stage: str, batch_size: int) -> float:
        """Median service time of one stage for a batch of ``batch_size``, in seconds."""
        lo, hi, table = self._stage_table(stage)
        if lo <= batch_size <= hi:
            return table[batch_size].p50
        return self._outside(stage, batch_size).p50

    def batch_latency(self, batch_size: int) -> float:
        """Median service time of a whole batch (all stages, one after another), in seconds."""
        if self._lo <= batch_size <= self._hi:
            return self._batch_p50[batch_size]
        return math.fsum(p.p50 for p in self.percentiles(batch_size))

    def percentiles(self, batch_size: int) -> tuple[Percentiles, ...]:
        """p50/p90/p99 of each stage, in stage order, for a batch of ``batch_size``, in seconds."""
        result = []
        for stage in self.stages:
            lo, hi, table = self._tables[stage]
            result.append(table[batch_size] if lo <= batch_size <= hi else self._outside(stage, batch_size))
        return tuple(result)

    def sampler(self, rng: np.random.Generator | int) -> Sampler:
        """A fast ``sample(batch_size) -> seconds``: one random service time of a whole
        batch, drawn with ``noise``. ``rng`` is a numpy Generator or an int seed; the same
        seed gives the same sequence of samples.

        Whatever the noise derives from a batch size is computed on first use and kept, so
        a call is a dict lookup plus a multiply (or a short branch) per stage.
        """
        rng = np.random.default_rng(rng)
        prepare = self.noise.prepare
        params = _ParamCache(lambda b: prepare(self.percentiles(b)), self._lo, self._hi)
        return self.noise.make_sampler(params, len(self.stages), rng)

    def _stage_table(self, stage: str) -> tuple[int, int, list[Any]]:
        try:
            return self._tables[stage]
        except KeyError:
            raise ValueError(
                f"model {self.model_spec.name!r} has no stage {stage!r}; its stages are {self.stages!r}"
            ) from None

    def _outside(self, stage: str, batch_size: int) -> Percentiles:
        """Percentiles for a batch size outside the stage's measured range: counted,
        warned about once, then clamped, extrapolated or refused."""
        if batch_size < 1 or batch_size != int(batch_size):
            raise ValueError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        sizes, measured = self._measured[stage]
        key = (stage, batch_size)
        self.out_of_range_requests[key] += 1
        what = (
            f"model {self.model_spec.name!r} stage {stage!r} on {self.hardware!r}: batch size "
            f"{batch_size} is outside the profiled range [{sizes[0]}, {sizes[-1]}]"
        )
        if batch_size > sizes[-1] and self.out_of_range == "error":
            raise ProfileRangeError(
                f"{what}; profile larger batches, cap the batch size at {sizes[-1]}, or use "
                f"out_of_range='extrapolate' or 'clamp'"
            )
        if batch_size < sizes[0]:
            result, how = measured[0], f"using the batch-{sizes[0]} latency"
        elif self.out_of_range == "clamp" or len(sizes) == 1:
            result, how = measured[-1], f"using the batch-{sizes[-1]} latency"
        else:
            result = _extrapolate(sizes, measured, batch_size)
            how = f"extrapolating linearly from batch sizes {sizes[-2]} and {sizes[-1]}"
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(ProfileRangeWarning(f"{what}; {how}"), stacklevel=_caller_level())
        return result


class _ParamCache(dict):
    """``params[b]``: the noise's parameters for batch size ``b``, derived on first use.

    Only batch sizes inside every stage's measured range are kept; the others are
    derived again on every request so that each request is counted (and, under
    out_of_range='error', refused) by the cost model.
    """

    def __init__(self, derive: Callable[[int], Any], lo: int, hi: int):
        super().__init__()
        self._derive, self._lo, self._hi = derive, lo, hi

    def __missing__(self, batch_size: int) -> Any:
        value = self._derive(batch_size)
        if self._lo <= batch_size <= self._hi:
            self[batch_size] = value
        return value


_PACKAGE = __name__.rpartition(".")[0] + "."  # servesim.workloads.


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package
    (the engine line that asked), whichever lookup or sampler path led here."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def _subset(profile: Profile, model: str, stages: tuple[str, ...]) -> ModelSpec:
    known = profile.stages(model)
    missing = [s for s in stages if s not in known]
    if missing:
        raise ProfileError(f"{profile.source}: model {model!r} has no stage(s) {missing!r}; its stages are {known!r}")
    return ModelSpec(model, tuple(stages))


def _pick_hardware(profile: Profile, model: str, hardware: str | None) -> str:
    found = profile.hardware(model)
    if hardware is None:
        if len(found) > 1:
            raise ProfileError(
                f"{profile.source}: model {model!r} is profiled on {found!r}; pass hardware= to pick one"
            )
        return found[0]
    if hardware not in found:
        raise ProfileError(
            f"{profile.source}: model {model!r} has no rows for hardware {hardware!r}; it is profiled on {found!r}"
        )
    return hardware


def _measured(rows: tuple[ProfileRow, ...], samples) -> tuple[tuple[int, ...], tuple[Percentiles, ...]]:
    """Measured batch sizes and their percentiles, milliseconds converted to seconds,
    with each point's shape (its raw samples over their median, sorted) where kept."""
    def shape(r: ProfileRow) -> Optional[tuple[float, ...]]:
        values = samples.get((r.hardware, r.model, r.stage, r.batch_size))
        return None if values is None else tuple(np.sort(values / np.median(values)).tolist())

    return (
        tuple(r.batch_size for r in rows),
        tuple(Percentiles(r.latency_p50_ms / 1e3, r.latency_p90_ms / 1e3, r.latency_p99_ms / 1e3, shape(r))
              for r in rows),
    )


def _leave_one_out(measured: dict) -> tuple[tuple[int, ...], dict]:
    """The batch sizes every stage measured, and for each gap between two of them the
    leave-one-out relative error of the summed median there (see
    :meth:`CostModel.interpolation_error`)."""
    common = sorted(set.intersection(*(set(sizes) for sizes, _ in measured.values())))
    total = [math.fsum(points[sizes.index(b)].p50 for sizes, points in measured.values()) for b in common]
    held_out = {}
    for i in range(1, len(common) - 1):
        (a, y0), (b, y), (c, y1) = zip(common[i - 1:i + 2], total[i - 1:i + 2])
        held_out[i] = abs(y0 + (y1 - y0) * (b - a) / (c - a) - y) / y
    gaps = {}
    for j in range(len(common) - 1):
        covering = [held_out[i] for i in (j, j + 1) if i in held_out]
        if covering:
            gaps[(common[j], common[j + 1])] = min(covering)
    return tuple(common), gaps


def _table(sizes: tuple[int, ...], measured: tuple[Percentiles, ...]) -> tuple[int, int, list[Any]]:
    """Percentiles for every batch size from the smallest to the largest measured one,
    linearly interpolated (exact at measured sizes); ``table[b]`` is batch size ``b``.
    Each percentile is interpolated on its own, and rounding can then put a p99 one ulp
    below its p90 (hypothesis found one), so the order p50 <= p90 <= p99 is restored."""
    lo, hi = sizes[0], sizes[-1]
    b = np.arange(lo, hi + 1)
    p50, p90, p99 = (np.interp(b, sizes, [getattr(m, q) for m in measured]) for q in ("p50", "p90", "p99"))
    p90 = np.maximum(p90, p50)
    p99 = np.maximum(p99, p90)
    shapes = [measured[i].shape for i in np.searchsorted(sizes, b, side="right") - 1]  # the measured size at or below
    return lo, hi, [None] * lo + [Percentiles(*p) for p in zip(p50.tolist(), p90.tolist(), p99.tolist(), shapes)]


def _extrapolate(sizes: tuple[int, ...], measured: tuple[Percentiles, ...], batch_size: int) -> Percentiles:
    """Continue the line through the last two measured points, never below the last
    measured value. Each percentile has its own slope, so the order p50 <= p90 <= p99 is
    restored afterwards."""
    before, last = measured[-2], measured[-1]
    steps = (batch_size - sizes[-1]) / (sizes[-1] - sizes[-2])

    def grow(q: str) -> float:
        x0, x1 = getattr(before, q), getattr(last, q)
        return max(x1, x1 + (x1 - x0) * steps)

    p50 = grow("p50")
    p90 = max(grow("p90"), p50)
    return Percentiles(p50, p90, max(grow("p99"), p90), last.shape)
