"""What a YAML file may name: trace kinds, noise kinds, batching policies, routers,
behaviour sources and exit policies.

Each class is the validated parameter set of one name and knows how to build the object
it stands for. Units follow the YAML's conventions: trace times and rates in seconds,
latencies the user sets (waits, SLOs, drop limits) in milliseconds, with an ``_ms``
suffix so a reader never has to guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from servesim import traces
from servesim.traces import _checks
from servesim.policies import batching, exit as exit_policies, routing, stopping
from servesim.policies import apparate, offline
from servesim.workloads import behaviour, drift, noise

from .registry import BATCHING, BEHAVIOUR, EXIT_POLICIES, NOISE, ROUTERS, TRACES


class Spec(BaseModel):
    # as in experiments.config.Strict: inf and NaN are never a setting
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- traces ----------------------------------------------------------------------------

class TraceSpec(Spec):
    """Transforms every trace kind accepts, applied in this order: ``window`` (seconds,
    ``[t0, t1)``, rebased to 0) or ``windows`` (several, played one after another),
    ``compress_time``, ``scale_rate``, ``max_requests``."""

    window: Optional[tuple[float, float]] = None
    windows: Optional[list[tuple[float, float]]] = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_kind_of_window(self):
        if self.window is not None and self.windows is not None:
            raise ValueError("give 'window' or 'windows', not both")
        return self

    @field_validator("window", "windows")
    @classmethod
    def _ordered(cls, value, info):
        """Checked here, not only when the trace is cut, so `servesim check` finds it."""
        if value is not None:
            for t0, t1 in [value] if info.field_name == "window" else value:
                if not 0 <= t0 < t1:
                    raise ValueError(f"a window needs 0 <= t0 < t1, got [{t0!r}, {t1!r}]")
        return value
    compress_time: Optional[PositiveFloat] = None
    scale_rate: Optional[PositiveFloat] = None
    max_requests: Optional[PositiveInt] = None

    def build(self, rng: np.random.Generator, base_dir: Path, lazy: bool = False) -> traces.Trace:
        """The trace; ``lazy`` asks for one drawn as it is read where the kind can be
        (:class:`Generated`), which a run that streams its rows can serve."""
        trace = self.windowed(rng, base_dir)
        if self.compress_time is not None:
            trace = traces.compress_time(trace, self.compress_time)
        if self.scale_rate is not None:
            trace = traces.scale_rate(trace, self.scale_rate, rng=rng)
        if self.max_requests is not None:
            trace = traces.head(trace, self.max_requests)
        return trace

    def windowed(self, rng: np.random.Generator, base_dir: Path) -> traces.Trace:
        """The arrivals, cut to ``window``, or to each of ``windows`` in turn, when given."""
        if self.windows is None:
            return self.cut(rng, base_dir, self.window)
        return traces.concat([self.cut(rng, base_dir, w) for w in self.windows], [t1 - t0 for t0, t1 in self.windows])

    def cut(self, rng: np.random.Generator, base_dir: Path, window) -> traces.Trace:
        """The arrivals in ``window`` (``None``: all of them)."""
        trace = self.arrivals(rng, base_dir)
        return trace if window is None else traces.window(trace, *window)

    def arrivals(self, rng: np.random.Generator, base_dir: Path) -> traces.Trace:
        raise NotImplementedError


class Generated(TraceSpec):
    """A synthetic trace: exactly one of ``duration`` (s) or ``count`` (requests).

    Its parameters are checked when the config is: by the generator itself, on one
    arrival (so its rules live in one place, and `servesim check` applies them), and for
    the size of the trace, ``scale_rate`` included, which must stay within
    ``traces._checks.MAX_ARRIVALS``.
    """

    duration: Optional[PositiveFloat] = None
    count: Optional[PositiveInt] = Field(default=None, le=_checks.MAX_ARRIVALS)

    @model_validator(mode="after")
    def _generates(self):
        if (self.duration is None) == (self.count is None):
            raise ValueError("give exactly one of 'duration' (seconds) or 'count' (requests)")
        try:
            self.generate(None, 1, np.random.default_rng(0))
        except traces.TraceError:
            raise  # a ValueError, which pydantic reports with the key path
        except (ValueError, ArithmeticError) as exc:  # from numpy or float arithmetic: a value too extreme
            raise ValueError(f"{self.kind} cannot generate arrivals with these values ({exc})") from None
        what, n = ((f"count {self.count}", self.count) if self.duration is None else
                   (f"duration {self.duration:g} s at up to {self.peak_rate():g} requests/s",
                    self.duration * self.peak_rate()))
        if self.scale_rate is not None:
            what, n = f"{what}, scaled by {self.scale_rate:g},", n * self.scale_rate
        _checks.arrivals(what, n)
        return self

    def peak_rate(self) -> float:
        """The largest rate the process reaches, in requests/s (``rate``, for the kinds that have one)."""
        return self.rate

    def params(self) -> dict:
        skip = set(TraceSpec.model_fields) | {"kind", "duration", "count"}
        return {k: v for k, v in self.model_dump().items() if k not in skip}

    def arrivals(self, rng, base_dir):
        return self.generate(self.duration, self.count, rng)

    def build(self, rng: np.random.Generator, base_dir: Path, lazy: bool = False):
        """With ``lazy`` and no transform (each needs the whole trace), a
        :class:`~traces.streamed.StreamedTrace`: drawn again stretch by stretch as the
        engine reads it, so that a week of arrivals is never held."""
        transforms = (self.window, self.windows, self.compress_time, self.scale_rate, self.max_requests)
        if lazy and all(t is None for t in transforms):
            return self.generate(self.duration, self.count, rng, lazy=True)
        return super().build(rng, base_dir)

    def generate(self, duration: Optional[float], count: Optional[int], rng: np.random.Generator,
                 lazy: bool = False) -> traces.Trace:
        return getattr(traces, self.kind)(**self.params(), duration=duration, count=count, rng=rng, lazy=lazy)


@TRACES.register
class PoissonTrace(Generated):
    kind: Literal["poisson"]
    rate: PositiveFloat


@TRACES.register
class GammaTrace(Generated):
    kind: Literal["gamma"]
    rate: PositiveFloat
    cv: PositiveFloat


@TRACES.register
class MMPP2Trace(Generated):
    kind: Literal["mmpp2"]
    rates: tuple[float, float]
    mean_sojourn: tuple[PositiveFloat, PositiveFloat]

    def peak_rate(self) -> float:
        return max(self.rates)


@TRACES.register
class DiurnalTrace(Generated):
    kind: Literal["diurnal"]
    mean_rate: PositiveFloat
    amplitude: float = Field(ge=0, le=1)
    period: PositiveFloat
    phase: float = 0.0

    def peak_rate(self) -> float:
        return self.mean_rate * (1 + self.amplitude)


@TRACES.register
class StepTrace(Generated):
    kind: Literal["step"]
    rates: list[float]
    change_times: list[float]

    def peak_rate(self) -> float:
        return max(self.rates)


@TRACES.register
class SpikeTrace(Generated):
    kind: Literal["spike"]
    base_rate: PositiveFloat
    spike_rate: PositiveFloat
    start: float = Field(ge=0)
    length: PositiveFloat

    def peak_rate(self) -> float:
        return max(self.base_rate, self.spike_rate)


@TRACES.register
class FileTrace(TraceSpec):
    """A trace file; ``path`` is relative to the YAML file. Count formats (``twitter``,
    ``azure-functions``) become arrivals spread ``uniform``-ly or as ``poisson`` order
    statistics inside each bin."""

    kind: Literal["file"]
    path: str
    format: str
    bin_mode: Literal["uniform", "poisson"] = "uniform"
    function: Optional[str] = None

    @model_validator(mode="after")
    def _known_format(self):
        if self.format not in traces.FORMATS:
            raise ValueError(f"unknown trace format {self.format!r}; known: {', '.join(sorted(traces.FORMATS))}")
        return self

    def cut(self, rng, base_dir, window):
        # The loader cuts count formats before placing arrivals: a 20-minute window of the
        # 22-day Twitter trace then costs 72,000 arrivals, not 120 million.
        options = {} if self.function is None else {"function": self.function}
        return traces.load(base_dir / self.path, self.format, rng=rng, mode=self.bin_mode, window=window, **options)


# --- service-time noise ----------------------------------------------------------------

@NOISE.register
class DeterministicNoise(Spec):
    """Always the profiled median."""
    kind: Literal["deterministic"]

    def build(self):
        return noise.Deterministic()


@NOISE.register
class EmpiricalNoise(Spec):
    """Drawn from the measured p50/p90/p99 of the profile (the realistic default)."""
    kind: Literal["empirical"]

    def build(self):
        return noise.Empirical()


@NOISE.register
class MeasuredNoise(Spec):
    """Drawn from each point's raw samples (a profile with a samples sidecar): the
    measured tail, stalls included, not just three percentiles."""
    kind: Literal["measured"]

    def build(self):
        return noise.Measured()


@NOISE.register
class PerBatchNoise(Spec):
    """Stages at their medians, each batch scaled by one factor from the measured spread
    of whole batches: needs exits.host with a ``total`` stage (a served profile). The
    spread is drawn from the raw samples of ``total`` where the profile keeps them
    (``spread: samples``), else, or with ``spread: percentiles``, from its percentiles."""
    kind: Literal["per_batch"]
    spread: Literal[noise.SPREADS] = "samples"

    def build(self):
        return noise.PerBatch(self.spread)


@NOISE.register
class ExponentialNoise(Spec):
    """Exponential with mean = profiled median (for M/M/c checks)."""
    kind: Literal["exponential"]

    def build(self):
        return noise.Exponential()


@NOISE.register
class LogNormalNoise(Spec):
    """Lognormal with mean = profiled median and coefficient of variation ``cv``."""
    kind: Literal["lognormal"]
    cv: PositiveFloat

    def build(self):
        return noise.LogNormal(self.cv)


@NOISE.register
class GammaNoise(Spec):
    """Gamma with mean = profiled median and coefficient of variation ``cv``."""
    kind: Literal["gamma"]
    cv: PositiveFloat

    def build(self):
        return noise.Gamma(self.cv)


# --- batching --------------------------------------------------------------------------

# The most replicas a run may have: each is a SimPy process with its own queue (100,000
# take about 0.5 GB and seconds to start); a larger number is a typo, and simulating it
# would exhaust memory or hang before the first arrival.
MAX_REPLICAS = 100_000
# The largest batch a batching policy may form: no accelerator runs a larger one, and the
# deadline policy tabulates the latency of every size up to it.
MAX_BATCH = 65_536
BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH)]


@BATCHING.register
class FixedBatching(Spec):
    """Wait for exactly ``batch_size`` items."""
    policy: Literal["fixed"]
    batch_size: BatchSize

    def build(self, cost_model, slo_ms):
        return batching.FixedBatcher(self.batch_size)


@BATCHING.register
class DynamicBatching(Spec):
    """Run at ``max_batch`` items, at a ``preferred`` size, or when the batching window
    has lasted ``max_wait_ms``; ``timer`` says when the window opens: ``oldest_arrival``
    (Triton, TF-Serving) or ``worker_free`` (Ray Serve, TorchServe, hand-written
    servers); ``allowed_sizes`` pads batches as TF-Serving does. See
    policies.batching.DynamicBatcher."""
    policy: Literal["dynamic"]
    max_batch: BatchSize
    max_wait_ms: float = Field(default=0.0, ge=0)
    timer: Literal[batching.TIMERS] = "oldest_arrival"
    preferred: list[BatchSize] = []
    allowed_sizes: list[BatchSize] = []

    def build(self, cost_model, slo_ms):
        return batching.DynamicBatcher(self.max_batch, self.max_wait_ms / 1e3, self.timer, self.preferred,
                                       self.allowed_sizes)


@BATCHING.register
class DeadlineBatching(Spec):
    """The largest batch that still meets the SLO (``slo_ms``, default: the experiment's)."""
    policy: Literal["deadline"]
    max_batch: BatchSize
    slo_ms: Optional[PositiveFloat] = None

    def build(self, cost_model, slo_ms):
        slo = self.slo_ms if self.slo_ms is not None else slo_ms
        if slo is None:
            raise ValueError("the deadline policy needs slo_ms (here or at the top level)")
        return batching.DeadlineBatcher(slo / 1e3, self.max_batch, cost_model.batch_latency)


# --- routing ---------------------------------------------------------------------------

@ROUTERS.register
class RoundRobinRouting(Spec):
    """Replicas in turn."""
    name: Literal["round_robin"]

    def build(self, rng):
        return routing.RoundRobin()


@ROUTERS.register
class RandomRouting(Spec):
    """A uniformly random replica."""
    name: Literal["random"]

    def build(self, rng):
        return routing.RandomRouter(rng)


@ROUTERS.register
class JSQRouting(Spec):
    """Join the shortest queue (fewest outstanding requests)."""
    name: Literal["jsq"]

    def build(self, rng):
        return routing.JoinShortestQueue()


@ROUTERS.register
class PowerOfTwoRouting(Spec):
    """The less loaded of two random replicas."""
    name: Literal["power_of_two"]

    def build(self, rng):
        return routing.PowerOfTwoChoices(rng)


@ROUTERS.register
class SharedQueue(Spec):
    """No routing: one queue that every replica pulls from (M/M/c, Triton instance groups)."""
    name: Literal["shared"]

    def build(self, rng):
        return None


# --- per-sample behaviour of a model with exits -----------------------------------------

BEHAVIOUR_DIR = Path(behaviour.__file__).with_name("data")  # tables shipped with the package


@BEHAVIOUR.register
class SyntheticBehaviour(Spec):
    """Markov-correlated correctness across exits with the given per-exit ``accuracy``
    (one per exit, the last the final one); ``persistence`` in [0, 1] sets how much an
    exit's outcome follows the previous one's. The default, 1, keeps the final exit the
    most accurate (workloads.behaviour.DEFAULT_PERSISTENCE); below 1 earlier exits are
    right on some samples the final exit gets wrong, and policies can beat the full model."""
    kind: Literal["synthetic"]
    accuracy: list[float] = Field(min_length=2)
    persistence: float = Field(default=behaviour.DEFAULT_PERSISTENCE, ge=0, le=1)
    n_classes: int = Field(default=10, ge=2)
    samples: PositiveInt = 20_000

    @model_validator(mode="after")
    def _probabilities(self):
        bad = [a for a in self.accuracy if not 0 <= a <= 1]
        if bad:
            raise ValueError(f"accuracy values must lie in [0, 1], got {bad[0]!r}")
        return self

    def build(self, rng: np.random.Generator, base_dir: Path):
        return behaviour.synthetic(self.samples, self.accuracy, persistence=self.persistence,
                                   n_classes=self.n_classes, rng=rng)


@BEHAVIOUR.register
class FixedExitsBehaviour(Spec):
    """Each request's exit fixed in advance with the given ``shares`` (one per exit,
    summing to 1), as in a measured server that replays chosen exit stages: serve it
    with ``policy: {name: confidence, threshold: 0.5}`` and every request leaves at its
    own exit (workloads.behaviour.fixed_exits). For latency, not accuracy: every answer
    is right."""
    kind: Literal["fixed_exits"]
    shares: list[Annotated[float, Field(ge=0, le=1)]] = Field(min_length=2)
    samples: Annotated[int, Field(gt=0, le=10**7)] = 20_000

    @model_validator(mode="after")
    def _sum_to_one(self):
        if abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"shares must sum to 1, got {self.shares} (sum {sum(self.shares):g})")
        return self

    def build(self, rng, base_dir):
        return behaviour.fixed_exits(self.samples, self.shares)


@BEHAVIOUR.register
class TraceExitsBehaviour(Spec):
    """Each request leaves at the exit the trace gives it: a timestamps file whose lines
    read ``time,exit`` (exit counted from 1), as a measured server's log has them. The
    table has one row per exit (``exits``: how many the model has); serve it with
    ``policy: {name: confidence, threshold: 0.5}``. For latency, not accuracy."""
    kind: Literal["trace_exits"]
    exits: Annotated[int, Field(ge=2, le=1000)]
    from_trace: ClassVar[bool] = True

    def build(self, rng, base_dir):
        return behaviour.fixed_exits(self.exits, [1 / self.exits] * self.exits)


@BEHAVIOUR.register
class BuiltinBehaviour(Spec):
    """A table shipped in ``workloads/data``, held-out samples of a real early-exit
    network: ``digits_ee`` (the MLP trained on scikit-learn's digits by ``python -m
    servesim.workloads.digits``; 4 exits), ``digits_torch_ee`` (its PyTorch twin, ``python -m
    servesim.workloads.digits_torch``; 4 exits) and ``langid_ee`` (a byte-level transformer
    identifying the language of 1-4 word phrases in 12 languages, ``python -m
    servesim.workloads.langid``; 6 exits: ramp1-5 after blocks 1-5, then final; its profile is
    ``builtin:cpu_langid_ee``)."""
    kind: Literal["builtin"]
    name: str

    def build(self, rng, base_dir):
        return behaviour.load_table(_shipped(self.name, "behaviour table"))


def _shipped(name: str, what: str, sidecar: str = "") -> Path:
    """``workloads/data/<name>.npz``, or an error listing the shipped ones (those with
    ``sidecar`` beside them, where one is asked for)."""
    path = BEHAVIOUR_DIR / f"{name}.npz"
    if not path.exists():
        known = sorted(p.stem for p in BEHAVIOUR_DIR.glob("*.npz")
                       if not sidecar or p.with_name(p.stem + sidecar).exists())
        raise ValueError(f"no built-in {what} {name!r}; known: {', '.join(known)}")
    return path


@BEHAVIOUR.register
class RecordingBehaviour(Spec):
    """A real recording shipped in ``workloads/data``: rows in capture order, each a real
    network's behaviour on what was live then (``digits_video``: held-out digits filmed
    in clear, dusk and glare scenes at 30 fps, ``python -m servesim.workloads.video``). A request
    meets the row live when it arrives, and the policy is fitted on the rows before the
    live stream (``fit_fraction`` of the first scene)."""
    kind: Literal["recording"]
    name: str

    def build(self, rng, base_dir):
        return drift.load_stream(_shipped(self.name, "recording", drift.STREAM_SUFFIX))


@BEHAVIOUR.register
class FileBehaviour(Spec):
    """A behaviour table file, relative to the YAML file: ``npz`` (servesim's format) or
    ``apparate-pickle`` (Apparate's per-ramp pickles, read by a restricted unpickler
    that refuses any global but plain data and numpy arrays: see docs/SECURITY.md)."""
    kind: Literal["file"]
    path: str
    format: Literal["npz", "apparate-pickle"] = "npz"

    def build(self, rng, base_dir):
        path = base_dir / self.path
        return behaviour.load_table(path) if self.format == "npz" else behaviour.from_apparate_pickle(path)


class RegimeSpec(Spec):
    """One regime of a drifting stream: per-exit accuracies (the last the final exit's),
    persistence across exits, and the share of early-exit disagreements that look as
    confident as right answers (``confidently_wrong``: what breaks static thresholds)."""
    name: str
    accuracy: list[float] = Field(min_length=2)
    persistence: float = Field(default=0.6, ge=0, le=1)
    confidently_wrong: float = Field(default=0.0, ge=0, le=1)

    def build(self) -> drift.Regime:
        return drift.Regime(self.name, tuple(self.accuracy), self.persistence, self.confidently_wrong)


class DriftSpec(Spec):
    """Behaviour that changes over time (``workloads/drift.py``): requests draw from the
    regime live at their arrival; the exit policy is fitted on a ``fit_fraction`` of the
    first regime only (the bootstrap a deployment has before going live). ``regimes``
    defaults to the generator's own 4-exit regimes."""
    samples_per_regime: PositiveInt = 5000
    n_classes: int = Field(default=2, ge=2)
    regimes: Optional[list[RegimeSpec]] = Field(default=None, min_length=2)

    def options(self) -> dict:
        options = {"samples_per_regime": self.samples_per_regime, "n_classes": self.n_classes}
        if self.regimes is not None:
            options["regimes"] = tuple(r.build() for r in self.regimes)
        return options


@BEHAVIOUR.register
class VideoDriftBehaviour(DriftSpec):
    """A camera stream: scenes of exponential length (mean ``scene_s``) alternating
    between the first (easy) regime and a hard one, until ``duration_s``."""
    kind: Literal["video_drift"]
    duration_s: PositiveFloat = 600.0
    scene_s: PositiveFloat = 30.0

    def build(self, rng, base_dir):
        return drift.video_drift(rng, duration_s=self.duration_s, scene_s=self.scene_s, **self.options())


@BEHAVIOUR.register
class TopicDriftBehaviour(DriftSpec):
    """A text stream: ``n_segments`` topic segments of ``segment_s`` seconds, in turn."""
    kind: Literal["topic_drift"]
    segment_s: PositiveFloat = 300.0
    n_segments: PositiveInt = 4

    def build(self, rng, base_dir):
        return drift.topic_drift(rng, segment_s=self.segment_s, n_segments=self.n_segments, **self.options())


# --- exit policies -----------------------------------------------------------------------
# ``build(costs, batch)`` gets the run's workloads.exits.SegmentCosts and the reference
# batch size (exits.cost_batch): policies that reason about latency (Apparate's ramp
# budget and utilities) read the measured profile from them.

# Bounds that the policies also check, repeated here so that a bad value is refused with
# its key path by `check`, before any run: confidences are probabilities, entropies nats.
Probability = Annotated[float, Field(ge=0, le=1)]
Entropy = Annotated[float, Field(ge=0)]
# A window or period counted in batches or samples: no run has more than this many requests.
Requests = Annotated[int, Field(gt=0, le=_checks.MAX_ARRIVALS)]
# The most quantile cuts or state bins a fitted policy may use: each is a column of its
# tables, and a behaviour table of 10^5 samples cannot tell finer cuts apart.
MAX_BINS = 100_000
Bins = Annotated[int, Field(gt=0, le=MAX_BINS)]


@EXIT_POLICIES.register
class NeverExitPolicy(Spec):
    """Vanilla: every request runs to the final exit. ``ramps: off`` (default): the
    model without its ramps, the baseline of the ``_change`` columns; ``run``: every
    ramp runs and none is obeyed (the ramps' overhead alone)."""
    name: Literal["never"]
    ramps: Literal["off", "run"] = "off"

    def build(self, costs, batch):
        return exit_policies.NeverExit(run_ramps=self.ramps == "run")


@EXIT_POLICIES.register
class ConfidencePolicy(Spec):
    """Stop at the first exit whose max softmax reaches ``threshold`` (one, or one per exit)."""
    name: Literal["confidence"]
    threshold: Union[Probability, list[Probability]]

    def build(self, costs, batch):
        return exit_policies.ConfidenceThreshold(self.threshold)


@EXIT_POLICIES.register
class EntropyPolicy(Spec):
    """BranchyNet / DeeBERT: stop where the softmax entropy (nats) falls below ``threshold``."""
    name: Literal["entropy"]
    threshold: Union[Entropy, list[Entropy]]

    def build(self, costs, batch):
        return exit_policies.EntropyThreshold(self.threshold)


@EXIT_POLICIES.register
class PatiencePolicy(Spec):
    """PABEE: stop once the prediction stayed unchanged ``k`` times in a row (exits i-k..i agree)."""
    name: Literal["patience"]
    k: PositiveInt

    def build(self, costs, batch):
        return exit_policies.Patience(self.k)


@EXIT_POLICIES.register
class OraclePolicy(Spec):
    """Stop at the first correct exit: a bound that reads the answer key, not deployable."""
    name: Literal["oracle"]

    def build(self, costs, batch):
        return exit_policies.Oracle()


class FittedPolicy(Spec):
    """Policies fitted on the held-out split: objective ``lam`` * loss + (1 - lam) * cost."""
    lam: float = Field(gt=0, le=1)
    bins: Union[Literal["auto"], Bins] = "auto"
    loss: Optional[Literal[stopping.LOSSES]] = None

    def options(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if k != "name" and v is not None}


@EXIT_POLICIES.register
class OptimalNoRecallPolicy(FittedPolicy):
    """Markov optimal stopping (backward DP): the best policy that answers from where it stops."""
    name: Literal["optimal_no_recall"]

    def build(self, costs, batch):
        return stopping.OptimalNoRecall(**self.options())


@EXIT_POLICIES.register
class TTamerPolicy(FittedPolicy):
    """T-Tamer's recall index; ``aggregate`` = q meta-states of soft state aggregation;
    ``check_recall``: check out of fold that recall does not lose, else decide without it."""
    name: Literal["ttamer"]
    aggregate: Optional[PositiveInt] = None
    check_recall: bool = True

    def build(self, costs, batch):
        return stopping.TTamer(**self.options())


class OfflineThresholdPolicy(Spec):
    """Thresholds grid-searched once, offline, for the largest saving whose agreement with
    the final exit stays within ``accuracy_budget`` on the table they are fitted on.
    ``grid``: how many quantile cuts of the scores to try, or the thresholds themselves
    (entropies in nats; confidences for ``best_static``)."""
    accuracy_budget: float = Field(default=0.01, ge=0, lt=1)
    grid: Union[Annotated[int, Field(ge=2, le=MAX_BINS)], list[Entropy]] = 200

    def options(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if k != "name"}


@EXIT_POLICIES.register
class BranchyNetPolicy(OfflineThresholdPolicy):
    """BranchyNet: ramps everywhere, one shared entropy threshold (``per_ramp``: one each)."""
    name: Literal["branchynet"]
    per_ramp: bool = False

    def build(self, costs, batch):
        return offline.BranchyNet(**self.options())


@EXIT_POLICIES.register
class DeeBERTPolicy(BranchyNetPolicy):
    """DeeBERT: one global entropy threshold, searched like BranchyNet's."""
    name: Literal["deebert"]

    def build(self, costs, batch):
        return offline.DeeBERT(**self.options())


@EXIT_POLICIES.register
class BestStaticPolicy(OfflineThresholdPolicy):
    """Per-ramp confidence thresholds (Apparate's exit rule) chosen with hindsight: fitted
    on the very samples the run's requests draw, so no static choice does better."""
    name: Literal["best_static"]
    grid: Union[Annotated[int, Field(ge=2, le=MAX_BINS)], list[Probability]] = 200  # confidence thresholds
    fit_on: ClassVar[str] = "requests"

    def build(self, costs, batch):
        return offline.BestStatic(**self.options())


@EXIT_POLICIES.register
class ApparatePolicy(Spec):
    """Apparate's controller: exit thresholds re-tuned online from the final exit's
    agreement, and ramps moved by their utility, inside a budget on the latency ramps
    add. Defaults are the paper's (see policies/apparate.py for where it and the
    authors' code differ). Needs ``latency_only`` semantics: it learns from every
    request's final output."""
    name: Literal["apparate"]
    accuracy_budget: float = Field(default=0.01, ge=0, lt=1)
    ramp_budget: float = Field(default=0.02, ge=0)
    max_ramps: Optional[PositiveInt] = None
    tuning_window: Requests = 4
    adjustment_window: Requests = 20
    adjustment_period: Requests = 128
    initial_step: float = Field(default=0.01, gt=0, le=1)  # a step of a confidence threshold
    min_step: float = Field(default=0.001, gt=0, le=1)
    emergency: Literal["zero", "scale"] = "zero"
    new_ramp_threshold: float = Field(default=0.0, ge=0, le=1)
    initial_ramps: Optional[list[int]] = None

    def build(self, costs, batch):
        options = {k: v for k, v in self.model_dump().items() if k != "name"}
        return apparate.Apparate(costs.head_latency(batch), costs.body_latency(batch), **options)
