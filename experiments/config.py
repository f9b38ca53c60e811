"""Experiment YAML → validated configuration, and a sweep → the list of its runs.

Loading never executes anything from the file (``yaml.safe_load``; names resolve only
through :mod:`experiments.registry`). Every problem becomes one :class:`ConfigError`
whose lines read ``FILE: key.path: what is wrong (got VALUE)``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import re
import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError,
                      field_validator, model_validator)

from . import cluster_specs, specs  # noqa: F401  (registers the names)
from .cluster_specs import DeploymentConfig
from .registry import ADAPTERS, BATCHING, BEHAVIOUR, EXIT_POLICIES, NOISE, PREDICTORS, ROUTERS, TRACES


class ConfigError(ValueError):
    """A configuration problem, already phrased for the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    """Which measured profile to serve. ``profile`` is a CSV path relative to the YAML
    file, or ``builtin:NAME`` for a profile shipped in ``workloads/profiles``."""

    profile: str
    name: str
    hardware: Optional[str] = None
    noise: NOISE.union() = Field(default_factory=lambda: specs.EmpiricalNoise(kind="empirical"))
    out_of_range: Literal["extrapolate", "clamp", "error"] = "extrapolate"


class ServingConfig(Strict):
    replicas: PositiveInt = 1
    router: ROUTERS.union() = Field(default_factory=lambda: specs.JSQRouting(name="jsq"))
    batching: BATCHING.union() = Field(default_factory=lambda: specs.DynamicBatching(policy="dynamic", max_batch=1))
    drop_after_ms: Optional[PositiveFloat] = None

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
    ``<model>_host``; see workloads.exits.SegmentCosts); without it the host costs nothing."""

    ramps: Optional[dict[str, str]] = None
    cascade: Optional[list[str]] = Field(default=None, min_length=2)
    behaviour: BEHAVIOUR.union()
    policy: EXIT_POLICIES.union()
    semantics: Literal["compute_saving", "latency_only"] = "compute_saving"
    fit_fraction: float = Field(default=0.5, gt=0, lt=1)
    cost_batch: PositiveInt = 1
    host: Optional[str] = None

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
    the noise floor the simulator's error is read against."""

    model: Literal["digits_torch_ee"]
    threads: PositiveInt = 1
    calibrate: bool = False
    calibrate_rounds: PositiveInt = 50
    repeats: PositiveInt = 1


class ClusterConfig(Strict):
    """A cluster serving a pipeline under an adapter (``sim.cluster``). ``pipeline`` names
    one of ``workloads.variants.PIPELINES`` or, for one task alone, of ``FAMILIES``;
    ``profile`` (a path relative to the YAML file, or ``builtin:NAME``) has every
    variant's rows at the core counts used, and their ``<model>_load`` cold starts unless
    ``load_times_s`` gives them; ``initial`` is the plan the run starts with, per task,
    already loaded (an adapter may bring its own, ``adapter.initial``: a VPA baseline
    starts on its variant); ``drop_after_ms``: the longest a request waits in a task's
    queue (one value for every task, or per task name);
    ``core_mode``: a replica's cores as parallel ``lanes`` or as ``threads`` of one."""

    pipeline: str
    profile: str
    initial: dict[str, list[DeploymentConfig]]
    adapter: ADAPTERS.union()
    core_mode: Literal["lanes", "threads"] = "lanes"
    noise: NOISE.union() = Field(default_factory=lambda: specs.EmpiricalNoise(kind="empirical"))
    drop_after_ms: Union[None, PositiveFloat, dict[str, PositiveFloat]] = None
    load_times_s: dict[str, PositiveFloat] = Field(default_factory=dict)
    sample_s: PositiveFloat = 1.0

    @field_validator("adapter", mode="before")
    @classmethod
    def _adapter_by_name(cls, value):
        return {"name": value} if isinstance(value, str) else value


class ExperimentConfig(Strict):
    """One experiment: a ``model`` served by ``serving`` (with ``exits``, and ``real`` for
    fidelity runs), or a ``cluster`` serving a pipeline under an adapter."""

    name: str = "experiment"
    description: str = ""
    seed: NonNegativeInt = 0
    seeds: Optional[list[NonNegativeInt]] = Field(default=None, min_length=1)
    slo_ms: Optional[PositiveFloat] = None
    trace: TRACES.union()
    model: Optional[ModelConfig] = None
    serving: ServingConfig = Field(default_factory=ServingConfig)
    exits: Optional[ExitsConfig] = None
    real: Optional[RealConfig] = None
    cluster: Optional[ClusterConfig] = None
    sweep: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _model_or_cluster(self):
        if self.model is None and self.cluster is None:
            raise ValueError("model: required key is missing (or, for a pipeline under an adapter, give 'cluster')")
        if self.model is not None and self.cluster is not None:
            raise ValueError("give one of 'model' (one model served by 'serving') and 'cluster' (a pipeline under "
                             "an adapter), not both")
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


def _yaml_loc(loc: tuple, data: Any) -> list[str]:
    """The parts of a pydantic error location that are keys of the YAML ``data``.

    Pydantic puts the tag of a discriminated-union member into the location
    (``serving.batching.dynamic.max_wait_ms``); the user wrote no key ``dynamic``, so such
    parts (a value of the mapping they appear in, not one of its keys) are dropped.
    """
    parts, node = [], data
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if isinstance(node, dict):
            if part in node:
                node = node[part]
            elif part in [v for v in node.values() if isinstance(v, str)]:
                continue  # a union tag such as 'dynamic'
            else:
                node = None
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        parts.append(str(part))
    return parts


def _format_errors(source: str, error: ValidationError, prefix: str = "", data: Any = None) -> str:
    lines = []
    for item in error.errors():
        loc = _yaml_loc(item["loc"], data)
        path = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]) if loc else "", _known_keys(), n=1)
            msg = f"unknown key; did you mean {close[0]!r}?" if close else "unknown key; check its spelling or remove it"
        elif item["type"] == "missing":
            msg = "required key is missing"
        got = "" if item["type"] in ("missing",) else f" (got {item.get('input')!r})"
        lines.append(f"{source}: {path}: {msg}{got}")
    return "\n".join(dict.fromkeys(lines))


@functools.cache
def _known_keys() -> list[str]:
    """Every key a config may hold, at any depth (for "did you mean" hints)."""
    models = [ExperimentConfig, ModelConfig, ServingConfig, ExitsConfig, RealConfig, ClusterConfig, DeploymentConfig]
    for registry in (TRACES, NOISE, BATCHING, ROUTERS, BEHAVIOUR, EXIT_POLICIES, PREDICTORS, ADAPTERS):
        models += [registry.get(name) for name in registry.names()]
    return sorted({key for model in models for key in model.model_fields})


def read_yaml(path: Path) -> dict:
    """The YAML file as a plain mapping, or a ConfigError naming file, line and problem."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name, trace, model, ...)")
    return data


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


def _short_names(keys: list[str]) -> dict[str, str]:
    """The last part of each swept key, or the whole key where two would clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def expand(config: ExperimentConfig, source: str, seeds: Optional[list[int]] = None) -> list[Run]:
    """Every run of the sweep: the cartesian product of ``sweep`` values × seeds.

    Each point is re-validated as a whole config, so a bad swept value is reported with
    its key path. Runs with the same seed share arrival and noise streams (common random
    numbers), so policies are compared on the same requests.
    """
    seeds = seeds or config.seeds or [config.seed]
    base = config.model_dump(mode="json", exclude={"sweep", "seeds"})
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"{source}: seeds: seed {repeated[0]} is listed twice (got {seeds!r})")
    keys = list(config.sweep)
    for key, values in config.sweep.items():
        if not values:
            raise ConfigError(f"{source}: sweep.{key}: needs at least one value")
        if key in ("seed", "seeds", "sweep"):
            raise ConfigError(f"{source}: sweep.{key}: cannot be swept; list the seeds under 'seeds:' instead")
    short = _short_names(keys)
    runs, names = [], {}
    for combo in itertools.product(*(config.sweep[k] for k in keys)):
        data = copy.deepcopy(base)
        for key, value in zip(keys, combo):
            _set(data, key, value, source)
        swept = ", ".join(f"{k}={v!r}" for k, v in zip(keys, combo))
        where = f"\n{source}: (in the sweep point {swept})" if keys else ""
        for seed in seeds:
            data["seed"] = seed
            try:
                point = ExperimentConfig.model_validate(data)
            except ValidationError as exc:
                raise ConfigError(f"{_format_errors(source, exc, data=data)}{where}") from None
            problem = _check_point(point, source)
            if problem:
                raise ConfigError(f"{problem}{where}")
            params = dict(zip(keys, combo))
            parts = [f"{short[k]}={label(v)}" for k, v in params.items()] + [f"seed={seed}"]
            name = ",".join(parts)
            if name in names:
                raise ConfigError(f"{source}: sweep: two runs would share the folder {name!r} "
                                  f"({names[name]} and {swept}); make the swept values distinct")
            names[name] = swept
            runs.append(Run(name=name, params=params, seed=seed, config=point))
    return runs


def _check_point(config: ExperimentConfig, source: str) -> Optional[str]:
    """Problems that involve more than one key (so pydantic cannot place them)."""
    exits = config.exits
    if exits is not None and exits.policy.name == "apparate" and exits.semantics != "latency_only":
        return (f"{source}: exits.semantics: the apparate policy learns from every request's final "
                f"output, which only latency_only semantics computes; set exits.semantics: latency_only "
                f"(got {exits.semantics!r})")
    batching = config.serving.batching
    if batching.policy == "deadline" and batching.slo_ms is None and config.slo_ms is None:
        return (f"{source}: serving.batching.slo_ms: the deadline policy needs an SLO; "
                f"set serving.batching.slo_ms or the top-level slo_ms (got neither)")
    return None


MAX_LABEL = 40  # characters of one swept value in a run's folder name


def label(value: Any) -> str:
    """A swept value as part of a folder name: its values joined by '-', other
    punctuation as '_'; a long one (a list of regimes, say) is cut and ends in a hash of
    the whole, so names stay unique and within the file system's limit."""
    text = "-".join(map(str, value.values())) if isinstance(value, dict) else str(value)
    # only characters a shell and every file system take as they are
    text = re.sub(r"[^\w.+-]+", "_", text).strip("_")
    if len(text) <= MAX_LABEL:
        return text
    digest = hashlib.sha1(repr(value).encode()).hexdigest()[:8]
    return f"{text[:MAX_LABEL - 9]}~{digest}"


def dump(config: ExperimentConfig) -> str:
    """The resolved config as YAML (every default filled in), for the run's folder."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude={"sweep", "seeds"}), sort_keys=False)
