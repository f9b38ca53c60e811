"""Models that can answer early: early-exit networks (ramps on a backbone) and cascades.

Both are, to the simulator, the same thing: an ordered list of **exits**, and before
each exit a **segment** of work that must run to read it. A segment is some profiled
stages of one model followed, for an early-exit ramp, by the ramp's head:

* early-exit model ``block1, ramp1, block2, ramp2, block3`` with ramps after ``block1``
  and ``block2``: segments ``[block1 + ramp1]``, ``[block2 + ramp2]``, ``[block3]``;
  the last exit is the backbone's own output;
* cascade ``small, large``: segments ``[all stages of small]``, ``[all stages of
  large]``; each exit is a member model's own output.

Under *compute-saving* semantics a batch only pays the segments up to the exit its last
request leaves at, and each segment at the batch size that is still running; under
*latency-only* semantics (Apparate) every segment runs for the whole batch. Either way a
segment's latency comes from the measured profile of its stages (ramp heads are profiled
like any stage), never from a constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from servesim.workloads.cost_model import CostModel
from servesim.workloads.noise import Deterministic, Empirical, Measured, Noise, PerBatch, Sampler
from servesim.workloads.profile import Profile, ProfileError

KINDS = ("early_exit", "cascade")


@dataclass(frozen=True)
class Segment:
    """The work between the previous exit and this one: ``stages`` of ``model`` in
    order, then the ramp ``head`` (``None``: the exit is the last stage's own output)."""

    model: str
    stages: tuple[str, ...]
    head: Optional[str] = None


@dataclass(frozen=True)
class ExitModel:
    """A model with several exits, as segments in execution order (one per exit)."""

    name: str
    kind: str
    segments: tuple[Segment, ...]
    exit_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.segments) < 2:
            raise ValueError(f"{self.name!r}: a model with exits needs at least 2 exits, got {len(self.segments)}")
        if len(self.exit_names) != len(self.segments):
            raise ValueError(f"{self.name!r}: {len(self.exit_names)} exit names for {len(self.segments)} exits")

    @property
    def n_exits(self) -> int:
        return len(self.segments)

    @classmethod
    def early_exit(cls, profile: Profile, model: str, ramps: Mapping[str, str]) -> "ExitModel":
        """``ramps`` maps a backbone stage to the head stage of the ramp placed after it.

        The backbone is every stage of ``model`` in the profile that is not a head, in
        profile order; a ramp after the last backbone stage is not allowed (the backbone's
        own output is the last exit).
        """
        stages = profile.stages(model)
        heads = set(ramps.values())
        for after, head in ramps.items():
            for what, name in (("ramp position", after), ("ramp head", head)):
                if name not in stages:
                    raise ProfileError(f"{profile.source}: model {model!r} has no stage {name!r} "
                                       f"(the {what} of ramp {after!r}: {head!r}); its stages are {stages!r}")
            if after in heads:
                raise ValueError(f"ramp position {after!r} is itself a ramp head")
        if len(heads) != len(ramps):
            raise ValueError(f"two ramps share a head stage: {dict(ramps)!r}")
        backbone = [s for s in stages if s not in heads]
        if backbone[-1] in ramps:
            raise ValueError(f"a ramp after the last backbone stage {backbone[-1]!r} adds nothing: "
                             f"the backbone's output is already the last exit")
        segments, names, run = [], [], []
        for stage in backbone:
            run.append(stage)
            if stage in ramps:
                segments.append(Segment(model, tuple(run), ramps[stage]))
                names.append(ramps[stage])
                run = []
        segments.append(Segment(model, tuple(run)))
        names.append("final")
        return cls(model, "early_exit", tuple(segments), tuple(names))

    @classmethod
    def cascade(cls, profile: Profile, models: Sequence[str]) -> "ExitModel":
        """Member models in the order they are consulted; each is one exit."""
        if len(set(models)) != len(models):
            raise ValueError(f"a cascade lists each model once, got {list(models)!r}")
        segments = tuple(Segment(m, profile.stages(m)) for m in models)
        return cls("+".join(models), "cascade", segments, tuple(models))


HOST_STAGES = ("batch", "exit", "leave", "final")
TOTAL = "total"  # a host model's optional stage: whole never-exiting batches, for PerBatch noise
TURNAROUND = "turnaround"  # optional: a busy server's time from one batch's last answer to the next's first stage
ALL_LEFT = "all_left"  # optional: after a ramp where everyone left (``final`` where absent)
INTAKE = "intake"  # optional: taking a burst of b requests in, read by a serving host (sim.host), not by segments


@dataclass(frozen=True)
class HostSamplers:
    """Samplers of the serving host's own time (see :class:`SegmentCosts`)."""

    batch: Sampler
    exit: Sampler
    leave: Sampler
    final: Sampler
    turnaround: Sampler  # ``batch`` where the host model has no turnaround stage
    all_left: Sampler  # ``final`` where the host model has no all_left stage

    def start(self, busy: bool, size: int) -> float:
        """Host time before a batch's first stage: right after the previous batch
        (``busy``), or on an idle server from the arrival that starts it."""
        return (self.turnaround if busy else self.batch)(size)

    def after(self, last: bool, left: int, size: int) -> float:
        """Host time after an exit's decision for ``size`` running requests of which
        ``left`` left there: after the ``last`` exit, reading the model's own output and
        the batch's last answers; at a ramp, answering everyone (all left), answering
        those that left while the rest go on, or only the decision (nobody left)."""
        if last:
            return self.final(size)
        return (self.all_left if left == size else self.leave if left else self.exit)(size)


def check_assumed_host(ms: Mapping[str, float]) -> None:
    """Assumed host times give every one of :data:`HOST_STAGES` (ValueError if not)."""
    missing = [s for s in HOST_STAGES if s not in ms]
    if missing:
        raise ValueError(f"host_assumed_ms needs every one of {list(HOST_STAGES)} (missing {missing})")


def _assumed_host(ms: Mapping[str, float], largest: int) -> list[CostModel]:
    """Host cost models charging ``ms[stage]`` per call at every batch size up to
    ``largest`` (``turnaround`` defaults to ``batch``, ``all_left`` to ``final``), in the
    order :class:`HostSamplers` takes them."""
    check_assumed_host(ms)
    times = {**ms, TURNAROUND: ms.get(TURNAROUND, ms["batch"]), ALL_LEFT: ms.get(ALL_LEFT, ms["final"])}
    rows = [("assumed", "host", stage, b, t, t, t, 1) for stage, t in times.items() for b in sorted({1, largest})]
    metadata = {"device": "assumed", "dtype": "n/a", "framework": "n/a", "date": "n/a", "execution_mode": "assumed"}
    # a profile holds no zero latency: 1e-9 ms stands for none
    profile = Profile.from_rows([r[:4] + tuple(max(v, 1e-9) for v in r[4:7]) + r[7:] for r in rows], metadata,
                                source="exits.host_assumed_ms")
    return [CostModel(profile, "host", stages=(stage,)) for stage in (*HOST_STAGES, TURNAROUND, ALL_LEFT)]


class SegmentCosts:
    """Latency of each segment at each batch size, from the profile.

    A segment is costed in two parts, each a :class:`CostModel` (so interpolation, noise
    and out-of-range handling are the cost model's own): its backbone stages (the
    *body*) and its ramp *head*, kept apart because a policy may switch a ramp off
    (Apparate), and then its head is neither run nor paid.

    ``host`` names a profile model with the stages of :data:`HOST_STAGES`: the serving
    process's own time per batch (``batch``: noticing the arrivals, forming the batch,
    before the first stage) and after each active exit's decision, at the batch size
    then running: ``exit`` when nobody left there, ``leave`` when some left and the rest
    go on (answering them, selecting the rest's activations), ``final`` when the batch is
    done (the last answers). A profile measured as served (``servesim profile-served``,
    :func:`sim.real.measure_served`) has them; a kernel profile has not, and without
    ``host`` the host is taken to cost nothing. A host model may also have
    ``turnaround``, the host's time when a batch starts the moment the one before it
    ends (returning, the loop, the batching decision), charged then instead of ``batch``,
    and ``all_left``, the host's time after a ramp where everyone left (the decision and
    the answers, without the model's own output that ``final`` reads), charged then
    instead of ``final``.

    ``host_assumed_ms`` instead charges constant host times, ms per call by stage (the
    same names), at every batch size: an assumption, for where no served profile has
    been measured (a GPU model's synchronisation and gather at each ramp, say)."""

    def __init__(self, profile: Profile, model: ExitModel, *, hardware: Optional[str] = None,
                 noise: Noise = Deterministic(), out_of_range: str = "extrapolate", host: Optional[str] = None,
                 host_assumed_ms: Optional[Mapping[str, float]] = None):
        self.profile = profile  # as CostModel.profile: the table the costs come from
        self.model = model

        def cost(model_name: str, stages: tuple[str, ...]) -> CostModel:
            return CostModel(profile, model_name, hardware=hardware, noise=noise, out_of_range=out_of_range,
                             stages=stages)

        self.bodies = [cost(seg.model, seg.stages) for seg in model.segments]
        self.heads = [None if seg.head is None else cost(seg.model, (seg.head,)) for seg in model.segments]
        if host is not None:
            models = profile.models()
            missing = [s for s in HOST_STAGES if s not in profile.stages(host)] if host in models else []
            if host not in models or missing:
                raise ProfileError(f"{profile.source}: host model {host!r} needs the stages {list(HOST_STAGES)}; "
                                   + (f"it lacks {missing}" if missing else f"the profile's models are {list(models)}"))
        self.host = None if host is None else [
            cost(host, (stage if stage in profile.stages(host) else instead,))
            for stage, instead in (*((s, s) for s in HOST_STAGES), (TURNAROUND, "batch"), (ALL_LEFT, "final"))]
        if host_assumed_ms is not None:
            self.host = _assumed_host(host_assumed_ms, min(c.max_profiled_batch for c in self.bodies))
        self._all = [c for c in (*self.bodies, *self.heads, *(self.host or ())) if c is not None]
        self.total = None  # the measured spread of whole batches, for PerBatch noise
        if isinstance(noise, PerBatch):
            if host is None or TOTAL not in profile.stages(host):
                raise ProfileError(f"{profile.source}: per_batch noise scales each batch by the measured spread of "
                                   f"whole batches: it needs a host model with a {TOTAL!r} stage (a served profile)")
            kept = noise.spread == "samples" and all(
                (r.hardware, r.model, r.stage, r.batch_size) in profile.samples
                for r in profile.rows_for(host, TOTAL, hardware))
            self.total = CostModel(profile, host, hardware=hardware, noise=Measured() if kept else Empirical(),
                                   out_of_range=out_of_range, stages=(TOTAL,))
        self.max_profiled_batch = min(c.max_profiled_batch for c in (*self._all, *([self.total] if self.total else [])))

    def samplers(self, rng: np.random.Generator) -> list[tuple[Sampler, Optional[Sampler]]]:
        """Per segment, ``(body, head)`` service-time samplers (``head`` is ``None`` where the
        segment has none), each on its own stream of ``rng``."""
        streams = iter(rng.spawn(len(self.bodies) + sum(h is not None for h in self.heads)))
        return [(body.sampler(next(streams)), None if head is None else head.sampler(next(streams)))
                for body, head in zip(self.bodies, self.heads)]

    def host_samplers(self, rng: np.random.Generator) -> Optional[HostSamplers]:
        """Samplers of the host's time, each on its own stream of ``rng``; ``None`` without ``host``."""
        if self.host is None:
            return None
        return HostSamplers(*(c.sampler(r) for c, r in zip(self.host, rng.spawn(len(self.host)))))

    def batch_scale(self, rng: np.random.Generator) -> Optional[Sampler]:
        """Under :class:`~workloads.noise.PerBatch` noise, ``scale(b)``: the factor a whole
        batch of ``b`` is scaled by (a measured batch time over the sum of the medians);
        otherwise ``None``."""
        if self.total is None:
            return None
        total, median = self.total.sampler(rng), {}

        def scale(batch_size: int) -> float:
            if batch_size not in median:
                median[batch_size] = self.batch_latency(batch_size)
            return total(batch_size) / median[batch_size]

        return scale

    def body_latency(self, batch_size: int) -> list[float]:
        """Median latency of each segment's backbone stages at ``batch_size``, in seconds."""
        return [c.batch_latency(batch_size) for c in self.bodies]

    def head_latency(self, batch_size: int) -> list[float]:
        """Median latency of each segment's ramp head at ``batch_size`` (0 without one), in seconds."""
        return [0.0 if c is None else c.batch_latency(batch_size) for c in self.heads]

    def host_latency(self, batch_size: int) -> list[float]:
        """Median host time each exit adds at ``batch_size`` when nobody leaves early (the
        batch's own in the first), in seconds: all 0 without ``host``."""
        n = self.model.n_exits  # at least 2
        if self.host is None:
            return [0.0] * n
        batch, exit_, final = (self.host[HOST_STAGES.index(s)].batch_latency(batch_size)
                               for s in ("batch", "exit", "final"))  # a batch on an idle server
        return [batch + exit_] + [exit_] * (n - 2) + [final]

    def batch_latency(self, batch_size: int) -> float:
        """Median latency of a batch that runs every segment (no request exits early):
        the bound a deadline-aware batcher must plan for."""
        return math.fsum(self.exit_latency(batch_size))

    def exit_latency(self, batch_size: int) -> list[float]:
        """Median latency of each segment, its head and its host time at ``batch_size``."""
        return [b + h + x for b, h, x in zip(self.body_latency(batch_size), self.head_latency(batch_size),
                                              self.host_latency(batch_size))]

    def stage_costs(self, batch_size: int = 1) -> list[float]:
        """Each segment's share of the full path's median latency at ``batch_size``
        (summing to 1): the per-exit costs the exit policies trade against loss."""
        lat = self.exit_latency(batch_size)
        total = math.fsum(lat)
        return [x / total for x in lat]

    @property
    def out_of_range_requests(self) -> dict:
        counts: dict = {}
        for cost in self._all:
            for key, value in cost.out_of_range_requests.items():
                counts[key] = counts.get(key, 0) + value
        return counts
