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

from policies.autoscaling import Deployment, Plan
from sim.cluster import ClusterCosts, ClusterResults, simulate_cluster
from sim.metrics import summarize_cluster
from workloads import load_profile
from workloads.variant_costs import VariantCosts
from workloads.variants import FAMILIES, PIPELINES, Pipeline

from . import store
from .cluster_specs import Context
from .config import ConfigError, Run
from .files import profile_path
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
    """The pipeline, variant costs, start plan and adapter of one cluster config (every
    problem a ConfigError naming its key): all but the trace, so `servesim check` and a
    run's up-front validation build them without placing arrivals."""
    cluster = config.cluster
    pipeline = resolve_pipeline(cluster.pipeline)
    resource = None if cluster.resource is None else config.resources[cluster.resource]
    profile = as_served_on(load_profile(profile_path(cluster.profile, base_dir, "cluster.profile")), resource)
    if cluster.resource is not None:
        for task in pipeline.tasks:
            for variant in task.variants:
                measured = profile.hardware(variant.model)
                if measured:  # a variant with no rows at all is VariantCosts' error
                    check_hardware("cluster.resource", cluster.resource, resource, variant.model, measured)
    try:
        costs = VariantCosts(profile, pipeline, noise=cluster.noise.build(), load_times=cluster.load_times_s,
                             device=getattr(accelerator(config), "hardware", None))
    except ValueError as exc:
        raise ConfigError(f"cluster.profile: {exc}") from None
    initial = initial_plan(config, pipeline)
    drop_limits(cluster.drop_after_ms, [t.name for t in pipeline.tasks])  # a config error up front
    try:
        adapter = cluster.adapter.build(Context(pipeline, costs, initial, cluster.core_mode, seed, base_dir))
    except (ValueError, ImportError) as exc:  # ImportError: the LSTM predictor without torch
        raise ConfigError(f"cluster.adapter: {exc}") from None
    return pipeline, costs, initial, adapter


def build(config, base_dir: Path, seed: int):
    """:func:`parts`, the trace, and the seed of the service-time streams."""
    trace_seed, noise_seed = np.random.SeedSequence(seed).spawn(2)
    pipeline, costs, initial, adapter = parts(config, base_dir, seed)
    trace = config.trace.build(np.random.default_rng(trace_seed), base_dir)
    return trace, pipeline, costs, initial, adapter, int(noise_seed.generate_state(1)[0])


def simulate_cluster_config(config, base_dir: Path, seed: int) -> tuple[ClusterResults, Pipeline, object]:
    trace, pipeline, costs, initial, adapter, service_seed = build(config, base_dir, seed)
    cluster = config.cluster
    tasks = [t.name for t in pipeline.order()]
    drop = drop_limits(cluster.drop_after_ms, tasks)
    try:
        results = simulate_cluster(trace, tasks, pipeline.edges, {t.name: [v.name for v in t.variants]
                                                                  for t in pipeline.tasks},
                                   ClusterCosts(costs.service(service_seed), costs.load_time), adapter, initial,
                                   drop_after=drop, core_mode=cluster.core_mode, batching=cluster.batching.build)
    except ValueError as exc:  # a profile that lacks a core count a plan asked for, and the like
        raise ConfigError(f"cluster: {exc}") from None
    return results, pipeline, trace


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


def run_cluster(run: Run, base_dir: Path) -> tuple[dict, dict[str, bytes]]:
    """Simulate one cluster run; returns its summary and its folder's files."""
    config = run.config
    results, pipeline, trace = simulate_cluster_config(config, base_dir, run.seed)
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
        point = (run.seed, *(repr(v) for k, v in run.params.items() if not k.startswith("cluster.adapter")))
        groups.setdefault(point, {})[shown] = None if ceiling is None else ceiling[0]
    lines = []
    for ceilings in groups.values():
        text = "; ".join(ceilings)
        if len(set(ceilings.values())) > 1 and text not in lines:
            lines.append(text)
    return [f"cluster.adapter: the compared adapters may provision different amounts of their resource ({text}); give "
            f"them one ceiling (budget, max_cores, max_replicas) for a fair comparison" for text in lines]


def request_columns(results: ClusterResults) -> dict[str, np.ndarray]:
    columns = {"arrival": results.arrival, "finish": results.finish, "status": results.status,
               "dropped_at": results.dropped_at}
    columns.update({f"variant_{task}": results.variant[task] for task in results.tasks})
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
