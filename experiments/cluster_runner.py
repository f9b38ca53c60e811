"""One cluster run: a ``cluster:`` config → the engine of :mod:`sim.cluster` → its files.

The run's seed is split like a single-model run's (:func:`experiments.runner.prepare`):
the trace has its own stream, so every adapter of a sweep meets the same arrivals, and
each deployment's service times have theirs. Files in the run's folder:
``requests.parquet`` (per request: arrival, finish, status, the task it was dropped at,
the variant each task used), ``timeseries.csv`` (every ``sample_s``: arrivals per second
and cores per task and per variant), ``plans.csv`` (every plan the adapter made), and
``summary.json`` (:func:`sim.metrics.summarize_cluster`), written last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from servesim.policies.autoscaling import Deployment, Plan
from servesim.sim.cluster import ClusterCosts, ClusterResults, TaskColumns, simulate_cluster
from servesim.sim.exits import ExitRun
from servesim.sim.metrics import summarize_cluster
from servesim.workloads import load_profile
from servesim.workloads.exits import SegmentCosts
from servesim.workloads.variant_costs import VariantCosts
from servesim.workloads.variants import FAMILIES, PIPELINES, Pipeline, cpu_hardware

from . import store
from .cluster_specs import Context
from .config import ConfigError, Run
from .exit_setup import behaviour, check_exits, exit_setup, segment_costs, table_of
from .files import profile_path
from .host_setup import build_host
from .names import GROUP_LABEL
from .prices import as_served_on, check_hardware, priced

def resolve_pipeline(name: str) -> Pipeline:
    """A built-in pipeline, or one task's family served alone."""
    if name in PIPELINES:
        return PIPELINES[name]
    if name in FAMILIES:
        return Pipeline(name, (FAMILIES[name],), ())
    raise ConfigError(f"cluster.pipeline: unknown pipeline {name!r}; known: "
                      f"{', '.join(sorted(PIPELINES))} (pipelines), {', '.join(sorted(FAMILIES))} (one task)")


def initial_plan(config, pipeline: Pipeline) -> Plan:
    """The start plan: the adapter's own ``initial``, else ``cluster.initial``."""
    tasks = [t.name for t in pipeline.tasks]
    own = config.cluster.adapter.initial
    key, given = ("cluster.adapter.initial", own) if own is not None else ("cluster.initial", config.cluster.initial)
    if set(given) != set(tasks):
        raise ConfigError(f"{key}: give the start deployments of exactly the tasks {tasks} (got {sorted(given)})")
    for task, deployments in given.items():
        for k, d in enumerate(deployments):
            if d.variant not in [v.name for v in pipeline.task(task).variants]:
                raise ConfigError(f"{key}.{task}.{k}.variant: task {task!r} has no variant {d.variant!r}; "
                                  f"its variants: {', '.join(v.name for v in pipeline.task(task).variants)}")
    try:
        return Plan({task: tuple(Deployment(**d.model_dump()) for d in ds) for task, ds in given.items()})
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def parts(config, base_dir: Path, seed: int):
    """The pipeline, variant costs, start plan, adapter, exits and serving host of one
    cluster config (every problem a ConfigError naming its key): all but the trace, so
    `servesim check` and a run's up-front validation build them without placing arrivals."""
    cluster = config.cluster
    pipeline = resolve_pipeline(cluster.pipeline)
    resource = None if cluster.resource is None else config.resources[cluster.resource]
    profile = as_served_on(load_profile(profile_path(cluster.profile, base_dir, "cluster.profile")), resource)
    device = getattr(accelerator(config), "hardware", None)  # a lane's device; None: a CPU core
    if cluster.resource is not None:
        for task in pipeline.tasks:
            for variant in task.variants:
                measured = profile.hardware(variant.model)
                if measured:  # a variant with no rows at all is VariantCosts' error
                    check_hardware("cluster.resource", cluster.resource, resource, variant.model, measured)
    try:
        costs = VariantCosts(profile, pipeline, noise=cluster.noise.build(), load_times=cluster.load_times_s,
                             device=device)
    except ValueError as exc:
        raise ConfigError(f"cluster.profile: {exc}") from None
    initial = initial_plan(config, pipeline)
    drop_limits(cluster.drop_after_ms, [t.name for t in pipeline.tasks])  # a config error up front
    exits = exit_costs(config, pipeline, profile, cpu_hardware(1) if device is None else device, base_dir, seed)
    try:
        adapter = cluster.adapter.build(Context(pipeline, costs, initial, cluster.core_mode, seed, base_dir, exits))
    except (ValueError, ImportError) as exc:  # ImportError: the LSTM predictor without torch
        raise ConfigError(f"cluster.adapter: {exc}") from None
    return pipeline, costs, initial, adapter, exits, build_host(cluster.host, profile, device, "cluster.host")


def exit_costs(config, pipeline: Pipeline, profile, hardware: str, base_dir: Path, seed: int) -> dict:
    """Per (task, variant) named in ``cluster.exits``: its segments costed on one lane's
    unit (``hardware``: a core's, or the accelerator's) with the cluster's noise, and its
    semantics. Its
    behaviour's final exit must score the menu's accuracy for that variant, or accuracy
    with and without exits would not compare; that is checked here, before any run."""
    cluster = config.cluster
    tasks = {v.name: t for t in pipeline.tasks for v in t.variants}
    out = {}
    for name, exits in cluster.exits.items():
        key = f"cluster.exits.{name}"
        if name not in tasks:
            raise ConfigError(f"{key}: pipeline {pipeline.name!r} has no variant {name!r}; its variants: "
                              f"{', '.join(tasks)}")
        if cluster.core_mode != "lanes":
            raise ConfigError(f"{key}: a variant with exits serves on lanes of one unit each (core_mode: lanes), "
                              f"got core_mode {cluster.core_mode!r}")
        task = tasks[name]
        model = exits.model or task.variant(name).model
        if not exits.cascade and model not in profile.models():
            raise ConfigError(f"{key}.model: {model!r} is not in {profile.source}; it has: "
                              f"{', '.join(profile.models())}")
        options = dict(hardware=hardware, noise=cluster.noise.build())
        segments = segment_costs(exits, profile, model, options, key)
        behaviour_seed, _, _ = variant_seeds(seed, pipeline, task.name, name)
        table = table_of(behaviour(exits, base_dir, np.random.default_rng(behaviour_seed), key))
        check_exits(table, segments, key)
        final = table.correct[:, -1]
        menu = task.variant(name).accuracy
        spread = 3 * np.sqrt(menu * (1 - menu) / final.size) + MENU_TOLERANCE
        if abs(final.mean() - menu) > spread:
            raise ConfigError(f"{key}.behaviour: its final exit scores {final.mean():.4f} on {final.size} samples, "
                              f"but the menu gives {name!r} {menu:.4f} (more than {spread:.4f} apart); the variant "
                              f"with exits must be the menu's model")
        out[(task.name, name)] = segments, exits.semantics
    return out


# The independent random streams a run's seed splits into, in spawn order (a stream's seed
# depends on its place here, so new ones go at the end): every adapter of a sweep meets
# the same arrivals, service times, exit rows and router draws.
STREAMS = ("trace", "service", "exits", "routers")


def stream(seed: int, name: str) -> int:
    """The seed of the run's stream ``name`` (one of :data:`STREAMS`)."""
    child = np.random.SeedSequence(seed).spawn(len(STREAMS))[STREAMS.index(name)]
    return int(child.generate_state(1)[0])


def variant_seeds(seed: int, pipeline: Pipeline, task: str, variant: str) -> list:
    """The behaviour, sample and segment-noise seeds of a variant with exits: from the run's
    seed and the variant's place in the pipeline alone, so every adapter of a sweep meets
    the same table and the same rows."""
    exits_seed = stream(seed, "exits")
    t = [x.name for x in pipeline.tasks].index(task)
    v = [x.name for x in pipeline.task(task).variants].index(variant)
    return np.random.SeedSequence([exits_seed, t, v]).spawn(3)


def exit_runs(config, pipeline: Pipeline, costs: dict, base_dir: Path, trace, seed: int) -> Optional[object]:
    """``ClusterCosts.exits``: each variant with exits as an :class:`~sim.exits.ExitRun`
    (behaviour split, samples drawn, policy fitted: :func:`experiments.exit_setup.exit_setup`).
    Lanes of a variant with exits are all one unit (:func:`exit_costs`), so it has one."""
    setups = {}
    for (task, variant), (segments, _) in costs.items():
        behaviour_seed, sample_seed, noise_seed = variant_seeds(seed, pipeline, task, variant)
        setup, _ = exit_setup(config.cluster.exits[variant], segments, base_dir, trace, behaviour_seed,
                              sample_seed, f"cluster.exits.{variant}")
        setups[(task, variant)] = setup, noise_seed
    if not setups:
        return None

    def exits(task: str, variant: str, units: int):
        if (task, variant) not in setups:
            return None
        setup, noise_seed = setups[(task, variant)]
        return ExitRun(setup, np.random.default_rng(noise_seed))

    return exits


# How far a variant's final-exit accuracy may sit from its menu's beyond 3 standard errors:
# half a point, the rounding of a published top-1 figure.
MENU_TOLERANCE = 0.005


def build(config, base_dir: Path, seed: int):
    """:func:`parts`, the trace, and the seed of the service-time streams."""
    trace_seed = np.random.SeedSequence(seed).spawn(len(STREAMS))[STREAMS.index("trace")]
    pipeline, costs, initial, adapter, exits, host = parts(config, base_dir, seed)
    trace = config.trace.build(np.random.default_rng(trace_seed), base_dir)
    runs = exit_runs(config, pipeline, exits, base_dir, trace, seed)
    return trace, pipeline, costs, initial, adapter, stream(seed, "service"), runs, host


def simulate_cluster_config(config, base_dir: Path, seed: int,
                            progress=None) -> tuple[ClusterResults, Pipeline, object]:
    trace, pipeline, costs, initial, adapter, service_seed, exits, host = build(config, base_dir, seed)
    cluster = config.cluster
    tasks = [t.name for t in pipeline.order()]
    drop = drop_limits(cluster.drop_after_ms, tasks)
    try:
        results = simulate_cluster(trace, tasks, pipeline.edges, {t.name: [v.name for v in t.variants]
                                                                  for t in pipeline.tasks},
                                   ClusterCosts(costs.service(service_seed), costs.load_time, exits, costs.latency),
                                   adapter, initial, drop_after=drop, core_mode=cluster.core_mode,
                                   batching=lambda batch, latency: cluster.batching.build(batch, latency, config.slo_ms),
                                   routing=routing(config, pipeline, seed),
                                   progress=progress, host=host)
    except ValueError as exc:  # a profile that lacks a core count a plan asked for, and the like
        raise ConfigError(f"cluster: {exc}") from None
    return results, pipeline, trace


def routing(config, pipeline: Pipeline, seed: int):
    """``simulate_cluster``'s ``routing``: each deployment's own router (``cluster.router``),
    on a random stream of the run's seed and the deployment alone."""
    router_seed = stream(seed, "routers")
    tasks = [t.name for t in pipeline.tasks]

    def build(key: tuple[str, str, int]):
        task, variant, cores = key
        v = [x.name for x in pipeline.task(task).variants].index(variant)
        return config.cluster.router.build(np.random.default_rng([router_seed, tasks.index(task), v, cores]))

    return build


def accelerator(config):
    """The resource (of kind ``gpu``, ``mig`` or ``share``) whose devices a replica's units are, or
    None where they are CPU cores."""
    name = config.cluster.resource
    resource = None if name is None else config.resources[name]
    return None if resource is None or resource.kind == "cores" else resource


def drop_limits(drop_after_ms, tasks: list[str]) -> Optional[dict[str, float]]:
    """``cluster.drop_after_ms`` as seconds per task (one value for all, or per task)."""
    if drop_after_ms is None:
        return None
    if not isinstance(drop_after_ms, dict):
        return {t: drop_after_ms / 1e3 for t in tasks}
    unknown = sorted(set(drop_after_ms) - set(tasks))
    if unknown:
        raise ConfigError(f"cluster.drop_after_ms: no task {unknown[0]!r} in the pipeline; its tasks: {', '.join(tasks)}")
    return {t: ms / 1e3 for t, ms in drop_after_ms.items()}


def run_cluster(run: Run, base_dir: Path, progress=None) -> tuple[dict, dict[str, bytes]]:
    """Simulate one cluster run; returns its summary and its folder's files.
    ``progress(k)``: called now and then with the arrivals routed so far."""
    config = run.config
    results, pipeline, trace = simulate_cluster_config(config, base_dir, run.seed, progress)
    accuracy = {t.name: [v.accuracy for v in t.variants] for t in pipeline.tasks}
    slo = None if config.slo_ms is None else config.slo_ms / 1e3
    summary = {"run": run.name, "seed": run.seed, "params": run.params, "trace": trace.source,
               "adapter": config.cluster.adapter.name, **summarize_cluster(results, accuracy, slo)}
    summary["cost"] = priced(summary["cost"], config.cluster.resource, config.resources, results.cost_core_seconds())
    return summary, {store.REQUESTS: store.requests_bytes(request_columns(results)),
                     store.TIMESERIES: store.columns_bytes(timeseries(results, config.cluster.sample_s)),
                     store.PLANS: store.columns_bytes(plan_rows(results))}


UNITS = {None: "cores", "gpu": "GPUs", "mig": "MIG slices", "share": "GPU shares"}  # by accelerator kind


def ceiling_warnings(runs: list[Run]) -> list[str]:
    """One line per group of compared cluster runs (same seed and swept values but the
    adapter) whose adapters may provision different amounts of their resource: a cheaper
    adapter then wins on a smaller ceiling, not on its decisions."""
    groups: dict[tuple, dict[str, Optional[int]]] = {}
    for run in runs:
        cluster = run.config.cluster
        if cluster is None:
            continue
        adapter = cluster.adapter
        ceiling = adapter.ceiling({task: list(ds) for task, ds in (adapter.initial or cluster.initial).items()})
        unit = UNITS[getattr(accelerator(run.config), "kind", None)]
        shown = f"{adapter.name}: no ceiling of its own" if ceiling is None else \
            f"{adapter.name}: {ceiling[0]} {unit} ({ceiling[1]})"
        point = (run.seed, *(repr(_without_adapter(v)) for k, v in run.params.items()
                             if not k.startswith("cluster.adapter")))
        groups.setdefault(point, {})[shown] = None if ceiling is None else ceiling[0]
    lines = []
    for ceilings in groups.values():
        text = "; ".join(ceilings)
        if len(set(ceilings.values())) > 1 and text not in lines:
            lines.append(text)
    return [f"cluster.adapter: the compared adapters may provision different amounts of their resource ({text}); give "
            f"them one ceiling (budget, max_cores, max_replicas) for a fair comparison" for text in lines]


def _without_adapter(value):
    """A swept value as compared runs share it: a group's keys but its label and adapter."""
    if not isinstance(value, dict) or GROUP_LABEL not in value:
        return value
    return {k: v for k, v in value.items() if k != GROUP_LABEL and not k.startswith("cluster.adapter")}


def request_columns(results: ClusterResults) -> dict[str, np.ndarray]:
    """``requests.parquet``: per request its end-to-end columns, then per task what
    happened there (``TaskColumns.NAMES``, the single-model table's columns, named
    ``<column>_<task>``) and, where a variant of the task has exits, its exit columns."""
    columns = {"arrival": results.arrival, "finish": results.finish, "status": results.status,
               "dropped_at": results.dropped_at}
    if results.size is not None:
        columns["size"] = results.size
    for task in results.tasks:
        stage = results.stages[task]
        columns[f"variant_{task}"] = results.variant[task]
        columns.update({f"{name}_{task}": getattr(stage, name) for name in TaskColumns.NAMES})
    for task, exits in results.exits.items():  # where a variant of the task has exits
        columns.update({f"{name}_{task}": column for name, column in exits.items()})
    return columns



def timeseries(results: ClusterResults, sample_s: float) -> dict[str, np.ndarray]:
    """Every ``sample_s``: the arrival rate over the interval before it, and the cores
    provisioned then, per task and per ``task/variant``."""
    times = np.arange(0.0, results.end_time + sample_s, sample_s)
    arrivals = np.histogram(results.arrival, bins=np.concatenate(([-np.inf], times)))[0]
    columns = {"time_s": times, "load_rps": arrivals / sample_s}
    for name, cores in {**results.cores_over_time(times), **results.cores_over_time(times, by="variant")}.items():
        columns[f"cores:{name}"] = cores
    return columns


def plan_rows(results: ClusterResults) -> dict[str, list]:
    rows = {"time_s": [], "task": [], "variant": [], "replicas": [], "cores": [], "batch": [], "quota": [],
            "restart": []}
    for when, plan in results.plans:
        for task, deployments in plan.tasks.items():
            for d in deployments:
                for key, value in (("time_s", when), ("task", task), ("variant", d.variant), ("replicas", d.replicas),
                                   ("cores", d.cores), ("batch", d.batch), ("quota", d.quota),
                                   ("restart", plan.restart)):
                    rows[key].append(value)
    return rows
