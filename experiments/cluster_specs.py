"""What a cluster experiment's YAML may name: load predictors and adapters.

Like :mod:`experiments.specs`, each class is the validated parameter set of one name
and builds the object. Adapters are built from a :class:`Context`: the pipeline, the
variant costs read off the measured profile, and the start plan, so that a policy is
given exactly the numbers its paper's system measured for itself (capacity against
cores for InfAdapter, p99 latency and throughput per batch for IPA), never the profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Mapping, Optional

import numpy as np

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from servesim.policies import autoscaling, ipa, predictors, scaling
from servesim.workloads.exits import SegmentCosts
from servesim.workloads.variant_costs import VariantCosts
from servesim.workloads.variants import Pipeline

from .capacity import infadapter_variant
from .registry import ADAPTERS, PREDICTORS, TRACES
from .specs import MAX_BATCH, MAX_REPLICAS, Spec

# --- load predictors -------------------------------------------------------------------


# Upper bounds where a larger value cannot mean anything and only fails deep inside a
# run (an array that does not fit, a C integer that overflows, a solver that gives up):
MAX_SECONDS = 366 * 86_400  # a window, horizon or period: a year of seconds
Seconds = Annotated[int, Field(gt=0, le=MAX_SECONDS)]
MAX_SPAN = 1e6  # windows: past it 2/(span+1) is lost next to 1 in floating point
MAX_WEIGHT = 1e6  # an objective weight: HiGHS takes coefficients past ~1e9 as infinite
Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT)]
MAX_BUDGET = 1024  # cores of one InfAdapter task: each core count is a column of its program
MAX_LOOKBACK = 10_000  # windows a predictor reads back: an LSTM's sequence length
Lookback = Annotated[int, Field(gt=0, le=MAX_LOOKBACK)]


def _at_most(spec, low: str, high: str):
    """A validator's body: ``spec.low <= spec.high``, else a ValueError naming both."""
    if getattr(spec, low) > getattr(spec, high):
        raise ValueError(f"{low} ({getattr(spec, low)}) must be at most {high} ({getattr(spec, high)})")
    return spec


class PredictorSpec(Spec):
    margin: Weight = 0.0


@PREDICTORS.register
class LastValueSpec(PredictorSpec):
    """The last ``window_s`` seconds' peak (IPA's ``reactive`` with 1 s)."""

    kind: Literal["last"]
    window_s: Seconds = 1

    def build(self, context):
        return predictors.LastValue(self.window_s, self.margin)


@PREDICTORS.register
class WindowMaxSpec(PredictorSpec):
    """The peak of the last ``window_s`` seconds (IPA's ``max``)."""

    kind: Literal["window_max"]
    window_s: Seconds = 120

    def build(self, context):
        return predictors.WindowMax(self.window_s, self.margin)


@PREDICTORS.register
class EWMASpec(PredictorSpec):
    """Exponentially weighted mean of per-window peaks (InfAdapter's EWM, span 10, 1 min)."""

    kind: Literal["ewma"]
    span: float = Field(10.0, ge=1, le=MAX_SPAN)  # in windows, as pandas' ewm(span=...)
    window_s: Seconds = 60

    def build(self, context):
        return predictors.EWMA(self.span, self.window_s, self.margin)


@PREDICTORS.register
class AutoRegressiveSpec(PredictorSpec):
    """ARIMA(p, 0, 0) on per-window peaks, refitted every call (IPA's ``arima``)."""

    kind: Literal["ar"]
    order: PositiveInt = 1
    window_s: Seconds = 10
    lookback: Lookback = 12

    @model_validator(mode="after")
    def _enough_lookback(self):
        if self.lookback < 2 * self.order + 2:
            raise ValueError(f"lookback ({self.lookback}) must be at least 2 * order + 2 = {2 * self.order + 2} "
                             f"windows to fit an AR({self.order})")
        return self

    def build(self, context):
        return predictors.AutoRegressive(self.order, self.window_s, self.lookback, margin=self.margin)


@PREDICTORS.register
class SeasonalSpec(PredictorSpec):
    """The peak one period ago (seasonal naive)."""

    kind: Literal["seasonal"]
    period_s: Seconds = 86_400
    window_s: Seconds = 60

    _period_of_windows = model_validator(mode="after")(lambda self: _at_most(self, "window_s", "period_s"))

    def build(self, context):
        return predictors.Seasonal(self.period_s, self.window_s, self.margin)


@PREDICTORS.register
class LSTMSpec(PredictorSpec):
    """IPA's LSTM (``hidden`` units) over ``lookback`` window peaks, predicting the next
    ``horizon_s`` seconds' peak, trained on the per-second counts of the ``train`` trace
    (a trace spec, paths relative to the YAML; IPA trained on days 0-13 of the Twitter
    trace and tested on later days). Needs torch (the ``real`` extra)."""

    kind: Literal["lstm"]
    train: TRACES.union()
    window_s: Seconds = 10
    lookback: Lookback = 12
    horizon_s: Seconds = 20
    hidden: Annotated[int, Field(gt=0, le=4096)] = 25  # units: IPA's has 25
    epochs: Annotated[int, Field(gt=0, le=10_000)] = 30  # each a pass over at most 4,096 windows
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0  # torch seeds are 64-bit

    def build(self, context):
        key = (self.model_dump_json(), str(context.base_dir))
        if key not in _trained:  # a sweep builds each adapter more than once: train once
            trace = self.train.build(np.random.default_rng(self.seed), context.base_dir)
            counts = np.bincount(trace.times.astype(np.int64)) if len(trace) else np.zeros(1)
            _trained[key] = predictors.LSTMPredictor(self.window_s, self.lookback, self.horizon_s, self.hidden,
                                                     margin=self.margin).fit(counts, self.epochs, self.seed)
        return _trained[key]


_trained: dict[tuple, predictors.LSTMPredictor] = {}


# --- adapters --------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What adapters are built from: the pipeline, its variant costs, the start plan,
    the serving mode (``lanes`` or ``threads``), the run's seed, the folder paths
    in the YAML are relative to, and per (task, variant) with exits its segments' costs
    and semantics."""

    pipeline: Pipeline
    costs: VariantCosts
    initial: autoscaling.Plan
    core_mode: str
    seed: int
    base_dir: Path
    exits: Mapping[tuple[str, str], tuple[SegmentCosts, str]] = field(default_factory=dict)  # and semantics

    def only_task(self, adapter: str) -> str:
        if len(self.pipeline.tasks) != 1:
            raise ValueError(f"adapter {adapter!r} scales one task; pipeline {self.pipeline.name!r} has "
                             f"{len(self.pipeline.tasks)}")
        return self.pipeline.tasks[0].name

    def variant_of(self, task: str, adapter: str, variant: Optional[str]) -> str:
        """``variant``, or the one variant the start plan runs for ``task``; either way
        one the start plan runs, once (VPA and HPA scale a deployment, not create one)."""
        running = [d.variant for d in self.initial.tasks[task]]
        if variant is None:
            if len(running) != 1:
                raise ValueError(f"adapter {adapter!r}: name its variant; the start plan runs {running} for {task!r}")
            return running[0]
        self.pipeline.task(task).variant(variant)  # a clear error for an unknown name
        if running.count(variant) != 1:
            raise ValueError(f"adapter {adapter!r}: variant {variant!r} must run in the start plan of {task!r} "
                             f"(exactly once; it runs {running}); give the adapter its own 'initial'")
        return variant


class DeploymentConfig(Spec):
    """One deployment of a cluster plan (see :class:`policies.autoscaling.Deployment`)."""

    variant: str
    replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = 1
    cores: Annotated[int, Field(gt=0, le=MAX_BUDGET)] = 1
    batch: Annotated[int, Field(gt=0, le=MAX_BATCH)] = 1
    quota: PositiveFloat = 1.0


class AdapterSpec(Spec):
    """``interval_s``: how often it decides (default: its paper's); ``initial``: the plan
    the run starts with under this adapter, instead of ``cluster.initial``."""

    interval_s: Optional[PositiveFloat] = None  # None: the policy's own default
    initial: Optional[dict[str, list[DeploymentConfig]]] = None

    def _interval(self) -> dict:
        return {} if self.interval_s is None else {"interval_s": self.interval_s}

    def ceiling(self, start: dict[str, list[DeploymentConfig]]) -> Optional[tuple[int, str]]:
        """The most cores this adapter's plans may provision, and the setting that says
        so (``start``: the plan the run starts with); ``None`` where it sets no ceiling
        of its own. Compared adapters should share one (:func:`experiments.cluster_runner.ceiling_warnings`)."""
        return None


@ADAPTERS.register
class StaticSpec(AdapterSpec):
    """Keeps the start plan for the whole run."""

    name: Literal["static"]

    def build(self, context: Context):
        return autoscaling.StaticAdapter(**self._interval())

    def ceiling(self, start):
        return sum(d.replicas * d.cores for ds in start.values() for d in ds), "the start plan's cores"


@ADAPTERS.register
class HPASpec(AdapterSpec):
    """The Kubernetes HPA on one deployment (``variant``: default, the one the start plan runs)."""

    name: Literal["hpa"]
    variant: Optional[str] = None
    target: PositiveFloat = 0.7
    tolerance: NonNegativeFloat = 0.1
    stabilization_s: NonNegativeFloat = 300.0
    min_replicas: PositiveInt = 1
    max_replicas: Annotated[int, Field(gt=0, le=MAX_REPLICAS)] = 20

    _replica_range = model_validator(mode="after")(lambda self: _at_most(self, "min_replicas", "max_replicas"))

    def ceiling(self, start):
        cores = [d.cores for ds in start.values() for d in ds if self.variant in (None, d.variant)]
        return (self.max_replicas * cores[0], "max_replicas x cores") if len(cores) == 1 else None

    def build(self, context: Context):
        task = context.only_task(self.name)
        return scaling.HPA(task, context.variant_of(task, self.name, self.variant), self.target,
                           tolerance=self.tolerance, stabilization_s=self.stabilization_s,
                           min_replicas=self.min_replicas, max_replicas=self.max_replicas, **self._interval())


@ADAPTERS.register
class VPASpec(AdapterSpec):
    """The Kubernetes VPA on one variant's replica (InfAdapter's VPA-<variant> baseline)."""

    name: Literal["vpa"]
    variant: Optional[str] = None
    percentile: float = Field(0.9, gt=0, lt=1)
    margin: Weight = 0.15
    half_life_s: PositiveFloat = 24 * 3600.0
    min_cores: PositiveInt = 2
    max_cores: Annotated[int, Field(gt=0, le=MAX_BUDGET)] = 20

    _core_range = model_validator(mode="after")(lambda self: _at_most(self, "min_cores", "max_cores"))

    def ceiling(self, start):
        return self.max_cores, "max_cores"

    def build(self, context: Context):
        task = context.only_task(self.name)
        return scaling.VPA(task, context.variant_of(task, self.name, self.variant), percentile=self.percentile,
                           margin=self.margin, half_life_s=self.half_life_s, min_cores=self.min_cores,
                           max_cores=self.max_cores, **self._interval())


class VariantSetSpec(AdapterSpec):
    """InfAdapter's program's parameters, shared by InfAdapter and MS+: capacity is load-
    tested in the simulator (p99 ≤ ``capacity_slo_ms`` on ``probe_cores``) and fitted."""

    budget: Annotated[int, Field(gt=0, le=MAX_BUDGET)] = 20
    alpha: Weight = 0.05
    beta: Weight = 0.001
    min_cores: PositiveInt = 2
    capacity_slo_ms: PositiveFloat = 750.0
    probe_cores: list[Annotated[int, Field(gt=0, le=MAX_BUDGET)]] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    predictor: PREDICTORS.union() = Field(default_factory=lambda: EWMASpec(kind="ewma", margin=0.1))

    _cores_within_budget = model_validator(mode="after")(lambda self: _at_most(self, "min_cores", "budget"))

    def ceiling(self, start):
        return self.budget, "budget"

    def variants(self, context: Context, task: str):
        if context.core_mode != "lanes":
            raise ValueError(f"adapter {self.name!r} plans cores as parallel lanes (TF-Serving batch threads, as "
                             f"InfAdapter ran): set cluster.core_mode: lanes")
        variants = tuple(infadapter_variant(v.name, v.accuracy, context.costs.cost_model(task, v.name, 1),
                                            context.costs.load_time(task, v.name), self.budget,
                                            self.capacity_slo_ms / 1e3, self.probe_cores, context.seed)
                         for v in context.pipeline.task(task).variants)
        if not any(v.capacity[-1] > 0 for v in variants):  # else every plan serves nothing, and the run fails late
            raise ValueError(f"capacity_slo_ms: no variant of {task!r} keeps its p99 within {self.capacity_slo_ms:g} ms "
                             f"on up to {self.budget} cores (budget), so no plan serves any load (got "
                             f"{self.capacity_slo_ms!r})")
        return variants


@ADAPTERS.register
class InfAdapterSpec(VariantSetSpec):
    """InfAdapter: a set of variants and their cores, every 30 s (scale-down stabilised)."""

    name: Literal["infadapter"]
    stabilization: PositiveInt = 4

    def build(self, context: Context):
        task = context.only_task(self.name)
        return scaling.InfAdapterPolicy(task, self.variants(context, task), self.budget, self.predictor.build(context),
                                        alpha=self.alpha, beta=self.beta, min_cores=self.min_cores,
                                        stabilization=self.stabilization, **self._interval())


@ADAPTERS.register
class ExitAwareInfAdapterSpec(InfAdapterSpec):
    """InfAdapter sizing each variant served with exits (``cluster.exits``) for the
    capacity its observed exit mix frees (:class:`policies.scaling.ExitAwareInfAdapter`)."""

    name: Literal["infadapter_exits"]

    def build(self, context: Context):
        task = context.only_task(self.name)
        exit_costs = {}
        for (t, variant), (segments, semantics) in context.exits.items():
            if t == task:  # under latency_only every request pays the whole path, ramps included
                plain = context.costs.cost_model(task, variant, 1).batch_latency(1)
                to_exit = np.cumsum(segments.exit_latency(1))
                if semantics == "latency_only":
                    to_exit = np.full(to_exit.size, to_exit[-1])
                exit_costs[variant] = (plain, tuple(to_exit.tolist()))
        if not exit_costs:
            raise ValueError(f"adapter {self.name!r} plans for exits, and no variant of {task!r} has any "
                             f"(cluster.exits); use 'infadapter'")
        return scaling.ExitAwareInfAdapter(task, self.variants(context, task), self.budget,
                                           self.predictor.build(context), alpha=self.alpha, beta=self.beta,
                                           min_cores=self.min_cores, stabilization=self.stabilization,
                                           exit_costs=exit_costs, **self._interval())


@ADAPTERS.register
class ModelSwitchingSpec(VariantSetSpec):
    """MS+: the one best variant on the least cores that carry the predicted load."""

    name: Literal["ms"]

    def build(self, context: Context):
        task = context.only_task(self.name)
        return scaling.ModelSwitching(task, self.variants(context, task), self.budget, self.predictor.build(context),
                                      alpha=self.alpha, beta=self.beta, min_cores=self.min_cores,
                                      **self._interval())


class PipelineSpec(AdapterSpec):
    """IPA's program's parameters, shared by IPA, FA2 and RIM: the menus are each
    variant's p99 latency and throughput at ``batches`` on ``cores`` per replica."""

    sla_ms: PositiveFloat
    alpha: Weight = 2.0
    beta: Weight = 1.0
    gamma: Weight = 1e-6
    accuracy_method: Literal["sum", "multiply"] = "sum"
    batches: list[Annotated[int, Field(gt=0, le=MAX_BATCH)]] = Field(default_factory=lambda: [1, 2, 4, 8])
    cores: Annotated[int, Field(gt=0, le=MAX_BUDGET)] = 1
    predictor: PREDICTORS.union() = Field(default_factory=lambda: WindowMaxSpec(kind="window_max"))

    def stages(self, context: Context) -> tuple[ipa.Stage, ...]:
        lanes = self.cores if context.core_mode == "lanes" else 1
        per_lane = 1 if context.core_mode == "lanes" else self.cores
        costs = context.costs
        return tuple(ipa.Stage(task.name, tuple(
            ipa.StageVariant(v.name, v.accuracy, self.cores, tuple(self.batches),
                             tuple(costs.p99(task.name, v.name, per_lane, b) for b in self.batches),
                             tuple(costs.throughput(task.name, v.name, per_lane, b, lanes) for b in self.batches))
            for v in task.variants)) for task in context.pipeline.order())

    def policy(self, context: Context, **pins):
        return scaling.IPAPolicy(self.stages(context), self.sla_ms / 1e3, self.predictor.build(context), alpha=self.alpha,
                                 beta=self.beta, gamma=self.gamma, accuracy_method=self.accuracy_method,
                                 **pins, **self._interval())


@ADAPTERS.register
class IPASpec(PipelineSpec):
    """IPA: per stage a variant, batch and replicas, every 10 s."""

    name: Literal["ipa"]

    def build(self, context: Context):
        return self.policy(context)


@ADAPTERS.register
class FA2Spec(PipelineSpec):
    """FA2: IPA's program with each stage's variant pinned (scale and batch only)."""

    name: Literal["fa2"]
    variants: dict[str, str]

    def build(self, context: Context):
        order = [t.name for t in context.pipeline.order()]
        missing = sorted(set(order) - set(self.variants))
        if missing or set(self.variants) - set(order):
            raise ValueError(f"adapter 'fa2': variants must name one variant for each task {order}, got "
                             f"{sorted(self.variants)}")
        for task, variant in self.variants.items():
            context.pipeline.task(task).variant(variant)
        return self.policy(context, fix_variant=tuple(self.variants[t] for t in order))


@ADAPTERS.register
class RIMSpec(PipelineSpec):
    """RIM: IPA's program with every stage's replicas pinned (variant switching only)."""

    name: Literal["rim"]
    replicas: Annotated[int, Field(gt=0, le=ipa.MAX_REPLICAS)] = 3

    def build(self, context: Context):
        return self.policy(context, fix_replicas=(self.replicas,) * len(context.pipeline.tasks))
