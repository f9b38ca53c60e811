"""Experiment YAML → validated configuration, and a sweep → the list of its runs.

Loading never executes anything from the file (``yaml.safe_load``; names resolve only
through :mod:`experiments.registry`). Every problem becomes one :class:`ConfigError`
whose lines read ``FILE: key.path: what is wrong (got VALUE)``.
"""

from __future__ import annotations

import difflib
import re
import functools
import itertools
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationError, field_serializer, field_validator, model_validator)

from servesim.policies.batching import DeadlineBatcher, DynamicBatcher, FixedBatcher
from servesim.workloads.contention import MAX_INSTANCES
from servesim.workloads.exits import ALL_LEFT, HOST_STAGES, TURNAROUND, check_assumed_host

from . import cluster_specs, load_specs, specs  # noqa: F401  (registers the names)
from .cluster_specs import DeploymentConfig
from .names import GROUP_LABEL, identity, point_name, point_of, run_name
from .specs import MAX_REPLICAS
from .registry import ADAPTERS, BATCHING, BEHAVIOUR, EXIT_POLICIES, LOADS, NOISE, REGISTRIES, ROUTERS, TRACES, track


class ConfigError(ValueError):
    """A configuration problem, already phrased for the user."""


class Strict(BaseModel):
    # inf and NaN are never a setting: an infinite rate, SLO or limit only fails (or
    # hangs) deep inside a run, so they are refused here with the key that holds them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(Strict):
    """Which measured profile to serve. ``profile`` is a CSV path relative to the YAML
    file, or ``builtin:NAME`` for a profile shipped in ``workloads/profiles``."""

    profile: str
    name: str
    hardware: Optional[str] = None
    noise: NOISE.union() = Field(default_factory=lambda: specs.EmpiricalNoise(kind="empirical"))
    out_of_range: Literal["extrapolate", "clamp", "error"] = "extrapolate"


class HostConfig(Strict):
    """The serving host as a resource shared by launching batches and taking requests in
    (:mod:`sim.host`). Its intake time per request comes from a served profile (``intake``:
    the profile model whose stage ``intake`` was measured by ``servesim profile-served``)
    or, where nothing was measured, from ``intake_assumed_ms``: an assumption, which the
    key's name says. ``launch_share`` is the part of a batch's profiled time the host spends
    launching it: 1 on a CPU and for a launch-bound eager GPU server, near 0 with CUDA graphs."""

    intake: Optional[str] = None
    intake_assumed_ms: Optional[Annotated[float, Field(ge=0, le=1e3)]] = None
    launch_share: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _one_intake(self):
        if (self.intake is None) == (self.intake_assumed_ms is None):
            raise ValueError("give one of 'intake' (a host model of a served profile, with an 'intake' stage) and "
                             "'intake_assumed_ms' (an assumed time per request)")
        return self


class ResourceConfig(Strict):
    """One entry of the price table (``resources:``): what a replica holds. ``kind``:
    CPU ``cores``, a whole ``gpu``, a ``mig`` slice, or a ``share`` of a GPU time-shared
    with others (MPS); ``hardware``: the profile hardware its service times are measured
    on (a model served on it must be costed by that hardware's rows, never another's;
    for ``cores``, the family ``cpu`` of ``cpu-<n>c``; for a ``share``, the whole
    GPU's); ``slowdown`` (a ``share`` only, required): how many times slower the GPU's
    kernels run beside their neighbours, as measured; ``price_per_s``: the price of one
    unit for one second, in the currency the table is written in."""

    kind: Literal["cores", "gpu", "mig", "share"]
    hardware: str
    price_per_s: NonNegativeFloat
    slowdown: Optional[float] = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _slowdown_of_a_share(self):
        if (self.kind == "share") != (self.slowdown is not None):
            raise ValueError(f"slowdown: a 'share' of a GPU needs its measured slowdown (>= 1), and only a share "
                             f"has one (kind {self.kind!r}, got slowdown {self.slowdown!r})")
        return self


class ServingConfig(Strict):
    replicas: PositiveInt = Field(1, le=MAX_REPLICAS)
    router: ROUTERS.union() = Field(default_factory=lambda: specs.JSQRouting(name="jsq"))
    batching: BATCHING.union() = Field(default_factory=lambda: specs.DynamicBatching(policy="dynamic", max_batch=1))
    drop_after_ms: Optional[PositiveFloat] = None
    host: Optional[HostConfig] = None
    resource: Optional[str] = None  # a name of the top-level price table; each replica holds one unit
    # model instances sharing each replica's device, contending as the profile's measured
    # contention table says (workloads/contention.py); more than one needs that table
    instances: PositiveInt = Field(1, le=MAX_INSTANCES)

    @model_validator(mode="after")
    def _one_process(self):
        if self.host is not None and (self.replicas != 1 or self.instances != 1):
            raise ValueError(f"host: the serving host models one server process with one worker; "
                             f"replicas is {self.replicas}, instances {self.instances}")
        return self

    @field_validator("router", mode="before")
    @classmethod
    def _router_by_name(cls, value):
        return {"name": value} if isinstance(value, str) else value


class ExitsConfig(Strict):
    """A model with exits: an early-exit network (``ramps``: backbone stage -> the
    profile stage of the ramp head after it) or a cascade (``cascade``: models of the
    profile, consulted in order), the per-sample ``behaviour`` requests draw from, the
    exit ``policy`` and the ``semantics``. ``fit_fraction`` of the behaviour table is held
    out to fit the policy; requests draw from the rest. Policies trade loss against each
    exit's share of the full path's median latency at batch size ``cost_batch``.
    ``host`` names the profile model whose stages ``batch``, ``exit`` and ``final`` are
    the serving host's own time (a profile from ``servesim profile-served`` has it as
    ``<model>_host``; see workloads.exits.SegmentCosts); without it the host costs nothing.
    Where no served profile exists, ``host_assumed_ms`` charges the host constant times
    instead (ms per call, by stage: ``batch``, ``exit``, ``leave``, ``final`` and
    optionally ``turnaround``, ``all_left``): an assumption, which the key's name says."""

    ramps: Optional[dict[str, str]] = None
    cascade: Optional[list[str]] = Field(default=None, min_length=2)
    behaviour: BEHAVIOUR.union()
    policy: EXIT_POLICIES.union()
    semantics: Literal["compute_saving", "latency_only"] = "compute_saving"
    fit_fraction: float = Field(default=0.5, gt=0, lt=1)
    cost_batch: PositiveInt = 1
    host: Optional[str] = None
    host_assumed_ms: Optional[dict[Literal[HOST_STAGES + (TURNAROUND, ALL_LEFT)],
                                   Annotated[float, Field(ge=0, le=1e3)]]] = None

    @model_validator(mode="after")
    def _one_host(self):
        if self.host is not None and self.host_assumed_ms is not None:
            raise ValueError("give one of 'host' (a measured host model) and 'host_assumed_ms' (assumed times)")
        if self.host_assumed_ms is not None:
            check_assumed_host(self.host_assumed_ms)
        return self

    @model_validator(mode="after")
    def _one_shape(self):
        if (self.ramps is None) == (self.cascade is None):
            raise ValueError("give exactly one of 'ramps' (an early-exit model) or 'cascade' (a list of models)")
        if self.ramps is not None and not self.ramps:
            raise ValueError("'ramps' needs at least one ramp")
        return self

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_by_name(cls, value):
        return {"name": value} if isinstance(value, str) else value


class RealConfig(Strict):
    """The real model ``servesim fidelity`` runs beside the simulation (``model``: a name
    of experiments.fidelity.REAL_MODELS) with ``threads`` CPU threads, as its profile was
    measured. With ``calibrate``, each point's simulation is costed not by
    ``model.profile`` but by a served profile measured on the same model object in two
    halves, just before and just after that point's real run (``calibrate_rounds``
    rounds each): a shared machine drifts by several percent over minutes, and
    bracketing the real run cancels that drift to first order. ``repeats`` serves each
    point that many times (fresh policies each time): the spread of the real runs is
    the noise floor the simulator's error is read against. A closed loop (``load:``)
    serves a whole model of experiments.real_models.WHOLE_MODELS on real client and
    instance threads; its ``calibrate`` measures the model, its contention and the
    clients' overhead in isolation just before the point's real runs
    (experiments/fidelity_closed_loop.py)."""

    model: Literal["digits_torch_ee", "digits_torch_ee_json", "resnet18_32"]
    threads: PositiveInt = 1
    calibrate: bool = False
    calibrate_rounds: PositiveInt = 50
    repeats: PositiveInt = 1


class ClusterBatching(Strict):
    """How every deployment of a cluster forms its batches, up to its plan's ``batch``
    (the adapter chooses that size): a free lane takes what is queued at once
    (``max_wait_ms: 0``) or waits up to ``max_wait_ms`` for more, the window opening at
    the oldest request's enqueueing (``oldest_arrival``: Triton's queue delay,
    TF-Serving's batch timeout) or when the lane is free (``worker_free``: Ray Serve,
    TorchServe), as ``serving.batching``'s dynamic policy does, with its ``preferred``
    sizes and padding to ``allowed_sizes``; or, with ``policy: fixed``, waits for exactly
    ``batch`` items (flushing what is left once no request can come); or, with ``policy:
    deadline`` (Clockwork, Nexus), takes the largest batch, up to ``batch``, whose median
    latency on the deployment's lanes lets the oldest queued request meet ``slo_ms``
    (default: the top-level ``slo_ms``), counted from when it was queued at the task."""

    policy: Literal["dynamic", "fixed", "deadline"] = "dynamic"
    max_wait_ms: NonNegativeFloat = 0.0
    timer: Literal["oldest_arrival", "worker_free"] = "oldest_arrival"
    preferred: list[PositiveInt] = []
    allowed_sizes: list[PositiveInt] = []
    slo_ms: Optional[PositiveFloat] = None

    @model_validator(mode="after")
    def _keys_of_the_policy(self):
        window = [k for k in ("max_wait_ms", "timer", "preferred", "allowed_sizes")
                  if getattr(self, k) != type(self).model_fields[k].default]
        if self.policy != "dynamic" and window:
            raise ValueError(f"{window[0]}: the {self.policy} policy has no batching window; "
                             f"it takes no {window[0]}")
        if self.policy != "deadline" and self.slo_ms is not None:
            raise ValueError(f"slo_ms: only the deadline policy plans by an SLO; the {self.policy} policy takes "
                             f"no slo_ms")
        return self

    def build(self, batch: int, latency: Optional[Callable[[int], float]], slo_ms: Optional[float] = None):
        """The policy of a deployment whose plan says ``batch``: ``preferred`` sizes up to
        it, and ``allowed_sizes`` below it with ``batch`` itself the largest (a batch is
        padded up to the next allowed size, as TF-Serving's ``allowed_batch_sizes``); the
        deadline policy plans by ``latency`` (the deployment's median batch latency) and
        ``slo_ms`` here, else the experiment's ``slo_ms``."""
        if self.policy == "fixed":
            return FixedBatcher(batch)
        if self.policy == "deadline":
            return DeadlineBatcher((self.slo_ms or slo_ms) / 1e3, batch, latency)
        allowed = sorted({a for a in self.allowed_sizes if a < batch} | {batch}) if self.allowed_sizes else ()
        return DynamicBatcher(batch, self.max_wait_ms / 1e3, self.timer, [p for p in self.preferred if p <= batch],
                              allowed)


class ClusterExitsConfig(ExitsConfig):
    """A cluster variant with exits: ``exits``' keys, and ``model``, the profile model
    whose stages and ramp heads they name (default: the variant's own profile model; an
    imported profile keeps the ramps in ``<model>_ee``)."""

    model: Optional[str] = None


class ClusterConfig(Strict):
    """A cluster serving a pipeline under an adapter (``sim.cluster``). ``pipeline`` names
    one of ``workloads.variants.PIPELINES`` or, for one task alone, of ``FAMILIES``;
    ``profile`` (a path relative to the YAML file, or ``builtin:NAME``) has every
    variant's rows at the core counts used, and their ``<model>_load`` cold starts unless
    ``load_times_s`` gives them; ``initial`` is the plan the run starts with, per task,
    already loaded (an adapter may bring its own, ``adapter.initial``: a VPA baseline
    starts on its variant); ``drop_after_ms``: the longest a request waits in a task's
    queue (one value for every task, or per task name);
    ``core_mode``: a replica's cores as parallel ``lanes`` or as ``threads`` of one;
    ``exits``: per variant name, the exits that variant runs with (its replicas serve it as
    an early-exit model or a cascade under the exit policy given; lanes only);
    ``router``: how each deployment splits its requests over its replicas (``shared``:
    one queue they all pull from); ``host``: the serving host (as ``serving.host``) of a
    cluster of one lane under a plan that never changes (one server process)."""

    pipeline: str
    profile: str
    initial: dict[str, list[DeploymentConfig]]
    adapter: ADAPTERS.union()
    core_mode: Literal["lanes", "threads"] = "lanes"
    noise: NOISE.union() = Field(default_factory=lambda: specs.EmpiricalNoise(kind="empirical"))
    drop_after_ms: Union[None, PositiveFloat, dict[str, PositiveFloat]] = None
    load_times_s: dict[str, PositiveFloat] = Field(default_factory=dict)
    sample_s: PositiveFloat = 1.0
    resource: Optional[str] = None  # a name of the top-level price table; a replica holds ``cores`` units of it
    batching: ClusterBatching = Field(default_factory=lambda: ClusterBatching())
    router: ROUTERS.union() = Field(default_factory=lambda: specs.SharedQueue(name="shared"))
    exits: dict[str, ClusterExitsConfig] = Field(default_factory=dict)
    host: Optional[HostConfig] = None

    @field_validator("adapter", "router", mode="before")
    @classmethod
    def _adapter_by_name(cls, value):
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_process(self):
        """A serving host models one server process: one lane, which every request reaches,
        under a plan that never changes."""
        if self.host is None:
            return self
        if self.adapter.name != "static":
            raise ValueError(f"host: the serving host models one server process under a plan that never changes; "
                             f"adapter is {self.adapter.name!r} (use 'static')")
        start = self.adapter.initial or self.initial
        lanes = sum(d.replicas * (d.cores if self.core_mode == "lanes" else 1) for ds in start.values() for d in ds)
        if len(start) != 1 or lanes != 1:
            raise ValueError(f"host: the serving host models one server process with one lane, which every request "
                             f"reaches; the start plan has {len(start)} task(s) and {lanes} lane(s)")
        return self


# A front is drawn, not sampled, where no two neighbours are further apart than this in
# accuracy *and* (relative) latency: what refinement aims at, and what fronts reports.
STEP_ACCURACY = 0.01
STEP_LATENCY = 0.05


class RefineConfig(Strict):
    """Draw fronts instead of sampling them: after the sweep, wherever two neighbouring
    values of ``key`` (a swept key whose values are mappings, such as ``exits.policy``)
    differ only in one of ``fields`` (``lam``, ``threshold``) and their results differ
    by more than ``accuracy_step`` in accuracy *and* by more than ``latency_step``
    (relative) in any of ``latencies``, the midpoint is run too, with every seed;
    ``rounds`` times at most. A step small in either figure leaves no room on the front
    for a point to hide in; one large in both does."""

    key: str
    fields: list[str] = Field(min_length=1)
    accuracy_step: PositiveFloat = STEP_ACCURACY
    latency_step: PositiveFloat = STEP_LATENCY
    latencies: list[Literal["p50", "mean", "p99"]] = Field(default_factory=lambda: ["p50"], min_length=1)
    rounds: int = Field(default=4, ge=1, le=8)


class RecordsConfig(Strict):
    """What a run keeps of its requests (``records: full`` or ``records: summary``, or the
    mapping). ``full``: ``requests.parquet``, one row per request, written as the run
    goes. ``summary``: no per-request file; the summary's latency percentiles come from
    a sketch of stated ``relative_accuracy`` (DDSketch's: every reported quantile within
    that share of the exact one), which merges across seeds. Either way the run writes
    ``intervals.parquet``, its counters per ``interval_s`` of arrival time. A run of plain
    requests (no exits, no closed loop) holds neither its table nor its latencies in
    memory with ``summary``: a week of traffic fits where its table would not."""

    keep: Literal["full", "summary"] = "full"
    relative_accuracy: float = Field(default=0.01, gt=0.0, lt=0.5)
    interval_s: PositiveFloat = 1.0

    @model_validator(mode="before")
    @classmethod
    def _word(cls, value):
        return {"keep": value} if isinstance(value, str) else value


class ExperimentConfig(Strict):
    """One experiment: a ``model`` served by ``serving`` (with ``exits``, and ``real`` for
    fidelity runs), or a ``cluster`` serving a pipeline under an adapter."""

    name: str = "experiment"
    description: str = ""
    seed: NonNegativeInt = 0
    seeds: Optional[list[NonNegativeInt]] = Field(default=None, min_length=1)
    slo_ms: Optional[PositiveFloat] = None
    warmup_s: NonNegativeFloat = 0.0
    # one of the two: arrivals known in advance, or load that answers shape (closed-loop clients)
    trace: TRACES.union() = None
    load: LOADS.union() = None
    model: Optional[ModelConfig] = None
    serving: ServingConfig = Field(default_factory=ServingConfig)
    exits: Optional[ExitsConfig] = None
    real: Optional[RealConfig] = None
    cluster: Optional[ClusterConfig] = None
    resources: dict[str, ResourceConfig] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    refine: Optional[RefineConfig] = None
    records: RecordsConfig = Field(default_factory=RecordsConfig)

    @field_serializer("trace", "load", mode="wrap")
    def _absent(self, value, handler):
        """Either may be left out (``None``, its default; :meth:`_trace_or_load` wants one),
        though typed as their registries' entries, not Optional, so that a name registered
        later retypes them; ``trace: null`` written out is refused as before."""
        return None if value is None else handler(value)

    @model_validator(mode="after")
    def _trace_or_load(self):
        if self.trace is None and self.load is None:
            raise ValueError("trace: required key is missing (or, for clients that wait for their answers, give "
                             "'load')")
        if self.load is None:
            return self
        if self.trace is not None:
            raise ValueError("give one of 'trace' (arrivals known in advance) and 'load' (closed-loop clients), "
                             "not both")
        unserved = [key for key, given in (("cluster", self.cluster is not None), ("exits", self.exits is not None),
                                           ("serving.drop_after_ms", self.serving.drop_after_ms is not None),
                                           ("serving.host", self.serving.host is not None)) if given]
        if unserved:
            raise ValueError(f"load: a closed loop is served by one plain model without drops or a serving host; "
                             f"remove {unserved[0]}")
        return self  # (its size against the batch: experiments.runner.validate_runs, once the batcher is built)

    @model_validator(mode="after")
    def _model_or_cluster(self):
        if self.model is None and self.cluster is None:
            raise ValueError("model: required key is missing (or, for a pipeline under an adapter, give 'cluster')")
        if self.model is not None and self.cluster is not None:
            raise ValueError("give one of 'model' (one model served by 'serving') and 'cluster' (a pipeline under "
                             "an adapter), not both")
        if (self.exits is not None or self.real is not None) and getattr(self.serving.batching, "allowed_sizes", None):
            raise ValueError("serving.batching.allowed_sizes: padded batches are modelled for models without exits, "
                             "and the real executor does not pad; remove allowed_sizes or exits")
        if self.cluster is not None and self.warmup_s:
            raise ValueError(f"warmup_s: cluster runs summarise every request; a warm-up is for one model's "
                             f"runs (got {self.warmup_s!r})")
        for key, name in (("serving.resource", self.serving.resource),
                          ("cluster.resource", getattr(self.cluster, "resource", None))):
            if name is not None and name not in self.resources:
                raise ValueError(f"{key}: no resource {name!r} in the price table 'resources' "
                                 f"(it has: {', '.join(self.resources) or 'none'})")
        if self.cluster is not None and self.cluster.resource is not None \
                and self.resources[self.cluster.resource].kind != "cores" and self.cluster.core_mode != "lanes":
            raise ValueError(f"cluster.core_mode: a replica's {self.resources[self.cluster.resource].kind} devices "
                             f"serve as lanes, one batch per device; set core_mode: lanes (got "
                             f"{self.cluster.core_mode!r})")
        if self.records.keep == "summary":
            table_bound = [k for k in ("cluster", "exits", "load", "real") if getattr(self, k) is not None]
            if table_bound:
                raise ValueError(f"records: summary keeps sketches of plain requests' latencies; {table_bound[0]} "
                                 f"runs need their request table (remove {table_bound[0]} or keep: full)")
        if self.cluster is not None:
            extra = [k for k in ("exits", "real") if getattr(self, k) is not None]
            if extra or self.serving != ServingConfig():
                raise ValueError(f"a 'cluster' experiment takes its serving from cluster: remove "
                                 f"{', '.join(extra + (['serving'] if self.serving != ServingConfig() else []))}")
        return self


@dataclass(frozen=True)
class Run:
    """One point of a sweep: its folder name, swept values, seed and full config."""

    name: str
    params: dict[str, Any]
    seed: int
    config: ExperimentConfig

    @property
    def point(self) -> str:
        """The name of its sweep point: its own, less the seed (the same for every seed)."""
        return point_of(self.name)


_ABSENT = object()  # where an error's location leaves what the user wrote


def _yaml_loc(loc: tuple, data: Any, missing: bool = False) -> tuple[list[str], Optional[str]]:
    """The parts of a pydantic error location that are keys of the YAML ``data``, and
    the key path of the union whose member the error is about (``None``: no union).
    ``missing``: the error is a missing key, so the location's last part names a key
    that is not in ``data``.

    Pydantic puts the tag of a discriminated-union member into the location
    (``serving.batching.dynamic.max_wait_ms``), and the type of a plain union's member
    (``exits.policy.threshold.float``, ``threshold.list[float]``); the user wrote no key
    ``dynamic`` or ``float``, so such parts are dropped.
    """
    parts, node, union = [], data, None
    for i, part in enumerate(loc):
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and part in [v for v in node.values() if isinstance(v, str)]:
            continue  # a union tag such as 'dynamic'
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif node is not _ABSENT and isinstance(part, str) and not (missing and i == len(loc) - 1):
            union = ".".join(parts)  # a union member's type, under the value the user gave
            continue
        else:
            node = _ABSENT  # a missing key, or inside one
        parts.append(str(part))
    return parts, union


def _one_member(found: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """The problems ``(type, path, message, got)`` of one union value: pydantic reports
    one per member it tried, but a member whose type the value does not have at all (a
    ``*_type`` error, or a literal such as ``'auto'`` it is not) says only what else the
    value could have been. Keep the others; where none is left, merge them into one ("a
    valid number or a valid list")."""
    fitting = [f for f in found if not (f[0].endswith("_type") or f[0] == "literal_error")]
    if fitting or len(found) == 1:
        return fitting or found
    kinds = " or ".join(msg.removeprefix("must be ") for _, _, msg, _ in found)
    kind, path, _, got = found[0]
    return [(kind, path, f"must be {kinds}", got)]


class _Shown(reprlib.Repr):
    """A value in an error message: its repr, cut short (a pasted array or a YAML anchor
    bomb must not turn one line into megabytes), a mapping's keys in the file's order."""

    longest = 200  # characters in all

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, 80, 80
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 8

    def repr(self, x):
        text = super().repr(x)
        return text if len(text) <= self.longest else text[:self.longest - 4] + " ..."

    def repr_dict(self, x, level):
        if not x or level <= 0:
            return "{...}" if x else "{}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in itertools.islice(x.items(), self.maxdict)]
        return "{" + ", ".join(items + (["..."] if len(x) > self.maxdict else [])) + "}"


_shown = _Shown().repr

# Characters that would end or break the one line a problem is reported on (str.splitlines
# splits at all of them); user text such as an unknown name can hold any of them.
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    """``text`` with every control character escaped as repr() would, so that it stays one line."""
    return _LINE_BREAKING.sub(lambda m: repr(m.group())[1:-1], text)


def _plain(msg: str) -> str:
    """Pydantic's wording as a key's requirement: "Input should be greater than 0" reads
    "must be greater than 0"."""
    return "must be " + msg.removeprefix("Input should be ") if msg.startswith("Input should be ") else msg


def _tag_key(item: dict) -> str:
    """The key a tagged union is told apart by (``name``, ``policy``, ``kind``)."""
    return str(item.get("ctx", {}).get("discriminator", "name")).strip("'")


def _format_errors(source: str, error: ValidationError, prefix: str = "", data: Any = None) -> str:
    problems: dict[Any, list[tuple[str, str, str, str]]] = {}  # a union's members together
    for n, item in enumerate(error.errors()):
        loc, union = _yaml_loc(item["loc"], data, missing=item["type"] == "missing")
        # no location: a check of the whole file, whose message names the keys it is about
        path = prefix + ".".join(loc) if loc else prefix.rstrip(".")
        msg = _plain(item["msg"].removeprefix("Value error, "))
        if item["type"] == "union_tag_invalid":  # a name no registry entry has
            ctx = item["ctx"]
            choices = [t.strip("'") for t in ctx["expected_tags"].split(", ")]
            close = difflib.get_close_matches(str(ctx["tag"]), choices, n=1)
            msg = (f"{_tag_key(item)} {ctx['tag']!r} is not one of {', '.join(map(repr, choices))}"
                   + (f"; did you mean {close[0]!r}?" if close else ""))
        elif item["type"] == "union_tag_not_found":
            msg = f"needs a {_tag_key(item)!r} key saying which one"
        elif item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]) if loc else "", _known_keys(), n=1)
            msg = f"unknown key; did you mean {close[0]!r}?" if close else "unknown key; check its spelling or remove it"
        elif item["type"] == "missing":
            msg = "required key is missing"
        got = "" if item["type"] == "missing" or not path else f" (got {_shown(item.get('input'))})"
        problems.setdefault(n if union is None else union, []).append((item["type"], path, msg, got))
    lines = [_one_line(f"{source}: {path + ': ' if path else ''}{msg}{got}")
             for found in problems.values() for _, path, msg, got in _one_member(found)]
    return "\n".join(dict.fromkeys(lines))


@functools.cache
def _known_keys() -> list[str]:
    """Every key a config may hold, at any depth (for "did you mean" hints)."""
    models = [ExperimentConfig, ModelConfig, ServingConfig, ExitsConfig, RealConfig, ClusterConfig, DeploymentConfig,
              ResourceConfig, RefineConfig, ClusterBatching]
    for registry in REGISTRIES:
        models += [registry.get(name) for name in registry.names()]
    return sorted({key for model in models for key in model.model_fields})


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error:
    PyYAML would keep the last one silently, so of two ``replicas:`` lines the one a
    reader sees first would quietly lose."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merge keys ('<<') may repeat; non-scalar keys are refused by PyYAML itself
            key = self.construct_object(key_node)
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_shown(key)} (first given on line {first[key]})", key_node.start_mark)
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """A PyYAML error as ``line L column C: invalid YAML: PROBLEM``, on one line.

    A character YAML forbids (NUL, most control characters) raises a ReaderError that
    knows only its offset in the text, not its line; the others carry a mark.
    """
    if isinstance(exc, yaml.reader.ReaderError):
        start = text.rfind("\n", 0, exc.position) + 1
        line, column = text.count("\n", 0, start) + 1, exc.position - start + 1
        problem = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    else:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {line} column {column}: " if line else ""
    return _one_line(f"{where}invalid YAML: {' '.join(problem.split())}")


def read_yaml(path: Path) -> dict:
    """The YAML file as a plain mapping, or a ConfigError naming file, line and problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                          f"is it an experiment YAML?") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc, text)}") from None
    except RecursionError:  # PyYAML parses nested collections recursively
        raise ConfigError(f"{path}: invalid YAML: collections nested too deeply to read") from None
    if not isinstance(data, dict):
        found = "the file is empty" if data is None else f"it is a {type(data).__name__}"
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name, trace, model, ...); {found}")
    return data


track(ExperimentConfig)  # a name registered later (from a notebook, say) is valid in a config too


def validate(data: dict, source: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc, data=data)) from None


def load(path: Path | str) -> ExperimentConfig:
    path = Path(path)
    return validate(read_yaml(path), str(path))


def _set(data: dict, dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: sweep.{dotted}: {'.'.join(keys[:i + 1])} is not a mapping")
        node = child
    node[keys[-1]] = value


def _is_group(key: str) -> bool:
    """A swept key that names no config field (``workload``, say) is a group: each of
    its values is a mapping of key paths set together (a model, its ramps and its
    behaviour), so that axes that belong together are not crossed."""
    return "." not in key and key not in ExperimentConfig.model_fields


def _check_swept_key(key: str, where: str, group: bool = False) -> None:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{where}: a swept key must be a key path such as 'exits.policy' (got {key!r})")
    if key in ("seed", "seeds", "sweep"):
        raise ConfigError(f"{where}: sweep.{key}: cannot be swept; list the seeds under 'seeds:' instead")
    if group and _is_group(key):
        raise ConfigError(f"{where}: {key!r} is not a config key (a group sets config keys such as "
                          f"'model.profile' or 'trace', and may name itself with '{GROUP_LABEL}')")


def expand(config: ExperimentConfig, source: str, seeds: Optional[list[int]] = None) -> list[Run]:
    """Every run of the sweep: the cartesian product of ``sweep`` values × seeds.

    Each point is re-validated as a whole config, so a bad swept value is reported with
    its key path. Runs with the same seed share arrival and noise streams (common random
    numbers), so policies are compared on the same requests.
    """
    seeds = seeds or config.seeds or [config.seed]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"{source}: seeds: seed {repeated[0]} is listed twice (got {seeds!r})")
    keys = list(config.sweep)
    for key, values in config.sweep.items():
        if not values:
            raise ConfigError(f"{source}: sweep.{key}: needs at least one value")
        _check_swept_key(key, source)
        if _is_group(key):
            for value in values:
                if not isinstance(value, dict) or not value:
                    raise ConfigError(f"{source}: sweep.{key}: {key!r} is no config key, so it is a group: each "
                                      f"value sets several keys together, as a mapping 'key.path: value' "
                                      f"(got {_shown(value)})")
                for inner in value:
                    if inner != GROUP_LABEL:
                        _check_swept_key(inner, f"{source}: sweep.{key}", group=True)
    _check_refine(config, source)
    names: dict[str, str] = {}
    return [run for combo in itertools.product(*(config.sweep[k] for k in keys))
            for run in point_runs(config, source, dict(zip(keys, combo)), seeds, names)]


def point_runs(config: ExperimentConfig, source: str, params: dict[str, Any], seeds: list[int],
               names: dict[str, str]) -> list[Run]:
    """The runs of one sweep point (``params``: a value for every swept key), one per
    seed, named by :mod:`experiments.names`; ``names`` (point name, lower case -> the
    point's identity) holds the points already named and gains this one."""
    data = dumped(config)
    for key, value in params.items():
        settings = value.items() if _is_group(key) else [(key, value)]
        for path, setting in settings:
            if path != GROUP_LABEL:
                _set(data, path, setting, source)
    swept = _one_line(", ".join(f"{k}={_shown(v)}" for k, v in params.items()))
    where = f"\n{source}: (in the sweep point {swept})" if params else ""
    point_label = point_name(params, config.sweep, names)
    if point_label.lower() in names:
        raise ConfigError(f"{source}: sweep: the point {swept} is listed twice (its runs would share the folders "
                          f"{run_name(point_label, seeds[0])!r}, ...); make the swept values distinct")
    names[point_label.lower()] = identity(params)
    runs = []
    for seed in seeds:
        data["seed"] = seed
        try:
            point = ExperimentConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{_format_errors(source, exc, data=data)}{where}") from None
        problem = _check_point(point, source)
        if problem:
            raise ConfigError(f"{problem}{where}")
        runs.append(Run(name=run_name(point_label, seed), params=dict(params), seed=seed, config=point))
    return runs


def _check_refine(config: ExperimentConfig, source: str) -> None:
    """``refine.key`` is swept, and some of its values are mappings with a number in
    one of ``refine.fields`` (what refinement bisects)."""
    refine = config.refine
    if refine is None:
        return
    if refine.key not in config.sweep:
        raise ConfigError(f"{source}: refine.key: {refine.key!r} is not swept; refinement bisects the values of a "
                          f"swept key (swept: {', '.join(config.sweep) or 'none'})")
    if not any(isinstance(value, dict) and any(is_number(value.get(f)) for f in refine.fields)
               for value in config.sweep[refine.key]):
        raise ConfigError(f"{source}: refine.fields: no value of sweep.{refine.key} is a mapping with a number "
                          f"in {refine.fields} (got {_shown(config.sweep[refine.key][0])} first)")


def is_number(value: Any) -> bool:
    """A YAML number (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_point(config: ExperimentConfig, source: str) -> Optional[str]:
    """Problems that involve more than one key (so pydantic cannot place them)."""
    exits = config.exits
    if exits is not None and exits.policy.name == "apparate" and exits.semantics != "latency_only":
        return (f"{source}: exits.semantics: the apparate policy learns from every request's final "
                f"output, which only latency_only semantics computes; set exits.semantics: latency_only "
                f"(got {exits.semantics!r})")
    for key, batching in (("serving", config.serving.batching),
                          ("cluster", None if config.cluster is None else config.cluster.batching)):
        if batching is not None and batching.policy == "deadline" and batching.slo_ms is None and config.slo_ms is None:
            return (f"{source}: {key}.batching.slo_ms: the deadline policy needs an SLO; "
                    f"set {key}.batching.slo_ms or the top-level slo_ms (got neither)")
    return None


def dump(config: ExperimentConfig) -> str:
    """The resolved config as YAML (every default filled in), for the run's folder."""
    return yaml.safe_dump(dumped(config), sort_keys=False)


def dumped(config: ExperimentConfig) -> dict:
    """The config as plain data, less the sweep's own keys, and less whichever of ``trace``
    and ``load`` it leaves out (so a trace's config reads as it did before ``load`` was one)."""
    absent = {key for key in ("trace", "load") if getattr(config, key) is None}
    return config.model_dump(mode="json", exclude={"sweep", "seeds", "refine"} | absent)
