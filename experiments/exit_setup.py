"""A model with exits, built from its config block: segment costs, behaviour, samples and
the fitted exit policy.

The single-model runner builds one from ``exits:``; a cluster builds one per variant
with exits from ``cluster.exits.<variant>``. Every error names the block's key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from servesim.sim.exits import ExitSetup
from servesim.traces.loaders import EXIT_STAGE
from servesim.workloads import ProfileError
from servesim.workloads.behaviour import BehaviourTable
from servesim.workloads.drift import DriftingBehaviour, RecordedStream
from servesim.workloads.exits import ExitModel, SegmentCosts

from .config import ConfigError
from .files import exists

STREAMS = (DriftingBehaviour, RecordedStream)


def segment_costs(exits, profile, model: str, options: dict, key: str = "exits") -> SegmentCosts:
    """The segments of ``model`` with ``exits.ramps`` (or of ``exits.cascade``) in
    ``profile``, costed with the cost-model ``options`` (hardware, noise, out_of_range)."""
    try:
        shape = (ExitModel.cascade(profile, exits.cascade) if exits.cascade
                 else ExitModel.early_exit(profile, model, exits.ramps))
    except ValueError as exc:  # ProfileError included: it names the stage
        raise ConfigError(f"{key}.{'cascade' if exits.cascade else 'ramps'}: {exc}") from None
    try:
        return SegmentCosts(profile, shape, host=exits.host, host_assumed_ms=exits.host_assumed_ms, **options)
    except ProfileError as exc:
        raise ConfigError(f"{key}.host: {exc}") from None


def behaviour(exits, base_dir: Path, rng: np.random.Generator, key: str = "exits"):
    """The behaviour source: a :class:`BehaviourTable`, or a stream (one of
    :data:`STREAMS`) whose rows depend on when a request arrives."""
    path = getattr(exits.behaviour, "path", None)
    if path is not None and not exists(base_dir / path, f"{key}.behaviour.path"):
        raise ConfigError(f"{key}.behaviour.path: no such file {str(base_dir / path)!r}")
    try:
        return exits.behaviour.build(rng, base_dir)
    except ValueError as exc:
        raise ConfigError(f"{key}.behaviour: {exc}") from None


def table_of(source) -> BehaviourTable:
    return source.table if isinstance(source, STREAMS) else source


def exit_setup(exits, costs: SegmentCosts, base_dir: Path, trace, behaviour_seed, sample_seed,
               key: str = "exits") -> tuple[ExitSetup, Optional[np.ndarray]]:
    """Split the behaviour into a held-out part that fits the policy and a part that
    requests draw from (by a seeded index: the same request meets the same sample under
    every policy), and fit the policy. Also returns, for a plain table, the row of the
    source table behind each row requests draw from (a real executor feeds that input).

    A stream is fitted on part of its first regime or scene (what a deployment has
    before going live) and requests draw from what is live at their arrival. A
    policy whose spec says ``fit_on = "requests"`` (best static thresholds with
    hindsight) is fitted on exactly the rows the requests will draw. A behaviour that
    takes each request's exit from the trace (``from_trace``) is not split: request k
    meets the row of the exit the trace's ``exit_stage`` column gives it.
    """
    times = trace.times
    behaviour_rng = np.random.default_rng(behaviour_seed)
    source = behaviour(exits, base_dir, behaviour_rng, key)
    table = table_of(source)
    check_exits(table, costs, key)
    sample_rng = np.random.default_rng(sample_seed)
    source_rows = None
    try:
        if getattr(exits.behaviour, "from_trace", False):
            fit = evaluate = table
            samples = trace_exits(trace, table.n_exits, key)
        elif isinstance(source, STREAMS):
            fit, rest = source.split_bootstrap(exits.fit_fraction, behaviour_rng)
            evaluate, samples = rest.table, rest.draw_samples(times, sample_rng)
        else:
            fit_rows, source_rows = table.split_rows(exits.fit_fraction, behaviour_rng)
            fit, evaluate = table.take(fit_rows), table.take(source_rows)
            samples = sample_rng.integers(0, evaluate.n_samples, size=times.size)
        if getattr(exits.policy, "fit_on", "held_out") == "requests":
            fit = evaluate.take(samples)
        policy = exits.policy.build(costs, exits.cost_batch).fit(fit, costs.stage_costs(exits.cost_batch))
    except ValueError as exc:
        raise ConfigError(f"{key}.policy: {exc}") from None
    return ExitSetup(costs, evaluate, samples, policy, exits.semantics), source_rows


def check_exits(table: BehaviourTable, costs: SegmentCosts, key: str = "exits") -> None:
    """The behaviour has one column per exit of the model."""
    if table.n_exits != costs.model.n_exits:
        raise ConfigError(f"{key}.behaviour: the table {table.source} has {table.n_exits} exits "
                          f"({', '.join(table.exit_names)}) but the model has {costs.model.n_exits} "
                          f"({', '.join(costs.model.exit_names)})")


def trace_exits(trace, n_exits: int, key: str = "exits") -> np.ndarray:
    """Row k of a ``trace_exits`` table (one row per exit) for each request k: its
    ``exit_stage`` from the trace, counted from 1."""
    stages = trace.columns.get(EXIT_STAGE)
    if stages is None:
        raise ConfigError(f"{key}.behaviour: trace_exits takes each request's exit from the trace's "
                          f"{EXIT_STAGE!r} column, and {trace.source} has none (a timestamps file with "
                          f"'time,exit' lines has it)")
    if stages.size and stages.max() > n_exits:
        k = int(np.argmax(stages > n_exits))
        raise ConfigError(f"{key}.behaviour: request {k} of {trace.source} left at exit {int(stages[k])}, but the "
                          f"model has {n_exits} exits")
    return stages.astype(np.int64) - 1
