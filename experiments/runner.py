"""Run an experiment: build each run's objects from its config, simulate, write results.

A sweep's runs execute where its executor says (:mod:`experiments.executors`: this
process, a local process pool, or Ray) and come back as data; this process writes each
to its own folder as it arrives, records it in the manifest and rewrites
``results.csv``, so a failing or killed sweep keeps everything already computed.
``--resume`` reuses every run the manifest lists as finished with an identical config;
without it (or ``--force``) a folder holding finished runs is refused, not overwritten.
"""

from __future__ import annotations

import contextlib
import functools
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
from tqdm import tqdm

from servesim.sim import simulate, summarize
from servesim.sim.client_view import client_view
from servesim.sim.closed_loop import SendsExceeded
from servesim.sim.exits import ExitSetup
from servesim.sim.host import ServingHost
from servesim.sim.summary_stream import RequestStream
from servesim.traces import FORMATS, TraceError
from servesim.workloads import CostModel, ProfileError, ProfileRangeError, load_profile
from servesim.workloads.behaviour import BehaviourError
from servesim.workloads.contention import MEASURED, NoContentionModel
from servesim.workloads.exits import SegmentCosts

from . import cluster_runner, store
from .background import BackgroundSink
from .executors import LOCAL, InProcess, make_executor
from .config import ConfigError, ExperimentConfig, Run, dump, expand, load, point_runs, validate
from .exit_setup import behaviour, exit_setup, segment_costs, table_of, trace_exits
from .files import exists, profile_path
from .load_specs import compute_split
from .host_setup import build_host
from .names import identity
from .overthinking import beats_full_model_warnings
from .perf_table import client_columns, perf_table, write_perf_table
from .prices import as_served_on, check_hardware, priced
from .refine import midpoints
from .seeds import by_point, write_by_point

USER_ERRORS = (ConfigError, TraceError, ProfileError, ProfileRangeError, BehaviourError, FileNotFoundError,
               store.ResultsError)
CONFIG_GIVEN = "<config>"  # what errors name as the source of a config given as a mapping, not a file


def build_cost_model(config: ExperimentConfig, base_dir: Path) -> CostModel | SegmentCosts:
    """The run's costs: a :class:`CostModel`, or per-segment costs for a model with exits."""
    resource = config.serving.resource
    profile = as_served_on(load_profile(profile_path(config.model.profile, base_dir)),
                           None if resource is None else config.resources[resource])
    exits = config.exits
    for key, name in ([("exits.cascade", m) for m in exits.cascade] if exits and exits.cascade
                      else [("model.name", config.model.name)]):
        if name not in profile.models():
            raise ConfigError(f"{key}: {name!r} is not in {profile.source}; it has: {', '.join(profile.models())}")
    options = dict(hardware=config.model.hardware, noise=config.model.noise.build(),
                   out_of_range=config.model.out_of_range)
    costs = (CostModel(profile, config.model.name, **options) if exits is None
             else segment_costs(exits, profile, config.model.name, options))
    if config.serving.instances > 1:  # refused unless the profile measured how instances contend
        if exits is not None:
            raise ConfigError(f"serving.instances: {config.serving.instances} instances sharing a device are "
                              f"modelled for models without exits only")
        try:
            costs.contention(config.serving.instances, "serving.instances")
        except NoContentionModel as exc:
            raise ConfigError(str(exc)) from None
    # the resource is checked once the model's own rows are known to exist
    for name in (exits.cascade if exits and exits.cascade else [config.model.name]) if resource else ():
        measured = (config.model.hardware,) if config.model.hardware else profile.hardware(name)
        check_hardware("serving.resource", resource, config.resources[resource], name, measured)
    return costs


@dataclass
class Prepared:
    """Everything one run is made of before it is served, by the simulator or for real."""

    trace: object
    cost_model: object
    batcher: object
    router: object
    exits: Optional[ExitSetup]
    source_rows: Optional[np.ndarray]
    noise_rng: np.random.Generator
    host: Optional[ServingHost] = None


def prepare(config: ExperimentConfig, base_dir: Path, room: Optional[int] = None, lazy: bool = False) -> Prepared:
    """Build the trace, cost model, policies and exits of one config.

    One SeedSequence per run is split into independent streams for the trace, the
    service-time noise, the router, the samples requests draw and the behaviour table,
    so changing the router or the exit policy never changes arrivals or samples.
    ``room``: the sends a closed loop that ends by time is given room for. ``lazy``: a
    generated trace is drawn as the engine reads it (a run that streams its rows).
    """
    trace_seed, noise_seed, router_seed, sample_seed, behaviour_seed = np.random.SeedSequence(config.seed).spawn(5)
    cost_model = build_cost_model(config, base_dir)
    # closed-loop clients (``load``) draw their think times from the arrivals' stream
    trace = (config.trace.build(np.random.default_rng(trace_seed), base_dir, lazy) if config.load is None
             else config.load.build(trace_seed, cost_model.profile, room, base_dir=base_dir))
    exits, source_rows = (None, None) if config.exits is None else exit_setup(
        config.exits, cost_model, base_dir, trace, behaviour_seed, sample_seed)
    serving = config.serving
    return Prepared(trace, cost_model, serving.batching.build(cost_model, config.slo_ms),
                    serving.router.build(np.random.default_rng(router_seed)), exits, source_rows,
                    np.random.default_rng(noise_seed),
                    build_host(serving.host, cost_model.profile, config.model.hardware))


def simulate_config(config: ExperimentConfig, base_dir: Path, progress=None, sink_for=None):
    """Simulate one config; returns the results, the trace and the exit policy (``None``
    without exits). ``sink_for(trace)``, where given, makes the sink the run's table goes
    to as it is made (``simulate``'s ``sink``; the results then hold no table)."""
    serving, room = config.serving, None
    while True:
        run = prepare(config, base_dir, room, sink_for is not None and _streams_whole_run(config))
        try:
            results = simulate(
                run.trace, run.cost_model, run.batcher, replicas=serving.replicas, router=run.router,
                shared_queue=run.router is None,
                drop_after=None if serving.drop_after_ms is None else serving.drop_after_ms / 1e3,
                rng=run.noise_rng, progress=progress, exits=run.exits, host=run.host, instances=serving.instances,
                sink=None if sink_for is None else sink_for(run.trace))
        except SendsExceeded as full:  # a closed loop that ends by time sent more than its room: again, with more
            room = full.room
            continue
        return results, run.trace, None if run.exits is None else run.exits.policy


SKETCH_INTERVAL_S = 60.0  # a streamed run's latency sketches over time: one a minute, at most


class _Records:
    """Where a plain run's table goes as it is made (``records``): to a streaming summary
    (:class:`~sim.summary_stream.RequestStream`, exact percentiles with ``full``, a sketch
    with ``summary``) and, with ``full``, to ``requests.parquet`` (:class:`store.RequestsWriter`)."""

    def __init__(self, run: Run, spool: Optional[Path]):
        config = run.config
        self.keep, self.slo, self.warmup = config.records, _slo_s(config), config.warmup_s
        self.writer = None if self.keep.keep == "summary" else store.RequestsWriter(
            spool, run.name, (lambda columns: {"warmup": columns["arrival"] < self.warmup}) if self.warmup > 0 else None)
        self.stream: Optional[RequestStream] = None
        self.behind: Optional[BackgroundSink] = None

    def sink_for(self, trace):
        times = trace.times
        last = float(times[-1]) if len(times) else 0.0
        # latency percentiles over time: per minute, or per 1/120 of a shorter run (at least an interval)
        sketch_interval = max(self.keep.interval_s, min(SKETCH_INTERVAL_S, last / 120))
        self.stream = RequestStream(len(times), last, self.slo, self.warmup, exact=self.keep.keep == "full",
                                    relative_accuracy=self.keep.relative_accuracy, interval_s=self.keep.interval_s,
                                    sketch_interval_s=sketch_interval)
        add, write = self.stream.add, self.writer

        def sink(table) -> None:
            add(table)
            if write is not None:
                write(table)
        self.behind = BackgroundSink(sink)
        return self.behind

    def finish(self) -> None:
        """Wait until the sink has every chunk the run handed over."""
        self.behind.close()

    def files(self) -> dict[str, bytes | Path]:
        files = {store.INTERVALS: store.requests_bytes(self.stream.intervals()),
                 store.LATENCY_INTERVALS: store.requests_bytes(self.latency_intervals())}
        if self.writer is not None:
            files[store.REQUESTS] = self.writer.close()
        return files

    def latency_intervals(self) -> dict[str, np.ndarray]:
        """Per sketch interval of arrival time (a minute), its completed requests' latency
        percentiles (ms, from its sketch): what the run's timeseries plot draws."""
        starts, sketches = self.stream.interval_sketches()
        width = self.stream.sketches.width
        quantiles = np.array([sketch.quantiles([0.5, 0.9, 0.99]) for sketch in sketches], dtype=float).reshape(-1, 3)
        return {"start_s": starts.astype(float), "end_s": starts + width,
                "completed": np.array([sketch.count for sketch in sketches], dtype=np.int64),
                **{f"p{q}_ms": quantiles[:, k] * 1e3 for k, q in enumerate((50, 90, 99))}}

    def discard(self) -> None:
        if self.behind is not None:
            self.behind.stop()
        if self.writer is not None:
            self.writer.discard()


def _streams_whole_run(config: ExperimentConfig) -> bool:
    """Whether a run keeps only summaries (``records: summary``) and is served by the
    engine's steady lanes, which hand its rows over as it goes: then it need not hold its
    trace either (a generated one is drawn as it is read)."""
    return (config.records.keep == "summary" and config.serving.instances == 1
            and not getattr(config.serving.batching, "allowed_sizes", None))


def _slo_s(config: ExperimentConfig) -> Optional[float]:
    return None if config.slo_ms is None else config.slo_ms / 1e3


def run_one(run: Run, base_dir: Path, progress=None, spool: Optional[Path] = None) -> tuple[dict, dict]:
    """Simulate one run; returns its summary and its folder's files (as bytes, or the path
    of the request table written under ``spool`` as the run went: :class:`_Records`)."""
    if run.config.cluster is not None:
        return cluster_runner.run_cluster(run, base_dir, progress)
    config = run.config
    # a plain run's table goes to disk and to its summary as it is made; one with exits or
    # clients is summarised from the whole table (its exit and client figures need it)
    records = _Records(run, spool) if config.exits is None and config.load is None else None
    try:
        return _run_one(run, base_dir, progress, records)
    except BaseException:
        if records is not None:
            records.discard()
        raise


def _run_one(run: Run, base_dir: Path, progress, records: Optional[_Records]) -> tuple[dict, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # out-of-range look-ups are counted in the summary
        results, trace, policy = simulate_config(run.config, base_dir, progress,
                                                 None if records is None else records.sink_for)
    if records is not None:
        records.finish()
    slo = _slo_s(run.config)
    warmup = run.config.warmup_s
    summary = summarize(results, slo, warmup, stream=None if records is None else records.stream)
    summary["cost"] = priced(summary["cost"], run.config.serving.resource, run.config.resources,
                             summary["cost"]["provisioned_accelerator_s"])  # a replica holds one unit
    summary = {"run": run.name, "seed": run.seed, "params": run.params,
               "trace": trace.source, **summary}
    instances = run.config.serving.instances
    if run.config.load is not None or instances > 1:  # the profile's compute split, the instances' contention
        costs = build_cost_model(run.config, base_dir)
    if run.config.load is not None:  # what the clients see, in perf_analyzer's terms
        summary.update(client_view(results.requests, trace, summary, warmup, compute_split(costs.profile)))
    if instances > 1:  # whether their contention was measured or derived (an assumption)
        summary["instances"] = {"count": instances,
                                "contention": costs.contention(instances, "serving.instances").source}
    if policy is not None:
        summary["policy"] = {"name": run.config.exits.policy.name, **policy.params()}
    if records is not None:
        files = records.files()
    else:
        columns = results.requests.columns()
        if warmup > 0:  # kept, and flagged: left out of the summary
            columns["warmup"] = columns["arrival"] < warmup
        files = {store.REQUESTS: store.requests_bytes(columns)}
    history = None if policy is None else policy.history()
    if history:
        files[store.CONTROLLER] = store.columns_bytes(history)
    return summary, files


def attempt(run: Run, base_dir: Path, progress=None, spool: Optional[Path] = None) -> store.RunFiles:
    """One run, wherever an executor runs it: its files, or its error as data (a user
    error by its message, a bug with its traceback), so that one failing run never
    stops the others. ``spool``: a folder on the sweep's disk where the run may write its
    request table as it goes (a run on this machine)."""
    outcome = store.RunFiles(run.name, dump(run.config))
    try:
        outcome.summary, outcome.files = run_one(run, base_dir, progress, spool)
    except USER_ERRORS as exc:
        outcome.error, outcome.detail = str(exc).splitlines()[0], str(exc)
    except Exception as exc:  # a bug: keep the other runs, keep the whole story for the report
        outcome.error, outcome.detail = f"internal error: {type(exc).__name__}: {exc}", traceback.format_exc()
    return outcome


def lost(run: Run, exc: BaseException) -> store.RunFiles:
    """A run whose worker died under it (killed, out of memory, a node gone)."""
    return store.RunFiles(run.name, dump(run.config), error=f"lost: its worker died: {type(exc).__name__}: {exc}")


def result_row(run: Run, summary: Optional[dict], error: Optional[str] = None) -> dict:
    """One row of results.csv: the run, its point, its swept values (as JSON, every
    field in a column of its own: :func:`store.swept_values`), then the flattened summary."""
    row = {"run": run.name, "status": "ok" if error is None else "failed", "seed": run.seed, "point": run.point}
    row.update(store.swept_values(run.params))
    s = summary or {}
    if run.config.exits is not None:  # the exit policy and its parameters, one column each
        policy = s.get("policy") or {"name": run.config.exits.policy.name}
        row.update({"policy": policy["name"], **{f"policy_{k}": v for k, v in policy.items() if k != "name"}})
    cluster = run.config.cluster
    if cluster is not None:  # the adapter, and the figures only a cluster has
        cores = s.get("cost") or {}
        row.update(zip(store.CLUSTER_COLUMNS, (cluster.adapter.name, s.get("pipeline_accuracy"),
                                               cores.get("mean_cores"), cores.get("peak_cores"))))
    lat = s.get("latency_ms") or {}
    cost = s.get("cost") or {}
    values = {
        "requests": s.get("requests"), "completed": s.get("completed"),
        "latency_p25_ms": lat.get("p25"), "latency_p50_ms": lat.get("p50"), "latency_p90_ms": lat.get("p90"),
        "latency_p95_ms": lat.get("p95"), "latency_p99_ms": lat.get("p99"), "latency_mean_ms": lat.get("mean"),
        "throughput_rps": s.get("throughput_rps"), "overloaded": s.get("overloaded"), "dropped": s.get("dropped"),
        "rejected": s.get("rejected"), "slo_violation_rate": s.get("slo_violation_rate"),
        "accuracy": s.get("accuracy"), "agreement": s.get("agreement"),
        "mean_stages_paid": (s.get("exits") or {}).get("mean_stages_paid"),
        "cost": cost.get("core_s") if cluster is not None else cost.get("provisioned_accelerator_s"),
        "cost_busy_s": cost.get("busy_accelerator_s"), "cost_money": cost.get("money"),
        "utilisation": cost.get("utilisation"),
        "mean_batch_items": s.get("mean_batch_items"),
        "out_of_range_lookups": sum((s.get("profile_out_of_range") or {}).values()),
        "interpolated_batches": sum(v["batches"] for v in (s.get("profile_interpolation") or {}).values()),
        "error": error or "",
    }
    row.update((key, values[key]) for key in store.SUMMARY_COLUMNS)
    if run.config.load is not None:  # what the clients see (sim.client_view)
        row.update(client_columns(s.get("closed_loop") or {}))
    return row


def versus_vanilla(runs: list[Run], rows: list[dict]) -> list[dict]:
    """With exits, add ``<figure>_change`` columns: the relative change of each figure in
    :data:`store.VERSUS_VANILLA` against the run of the same sweep point and seed whose exit
    policy is ``never`` with its ramps off (the vanilla model), where the sweep has one.
    Papers report early-exit gains this way (Apparate: "median latency -40.5%")."""
    def point(run: Run) -> tuple:
        return (run.seed, *(repr(v) for k, v in run.params.items() if not k.startswith("exits.policy")))

    vanilla = {point(run): row for run, row in zip(runs, rows)
               if run.config.exits is not None and run.config.exits.policy.name == "never"
               and run.config.exits.policy.ramps == "off" and row["status"] == "ok"}
    if not vanilla:
        return rows
    for run, row in zip(runs, rows):
        base = vanilla.get(point(run)) if run.config.exits is not None else None
        for key in store.VERSUS_VANILLA:
            mine, theirs = row.get(key), None if base is None else base.get(key)
            row[f"{key.removesuffix('_ms')}_change"] = (round(mine / theirs - 1, 9)
                                                        if mine is not None and theirs else None)
    return rows


@dataclass
class SweepOutcome:
    """A finished sweep: results.csv's ``rows``, ``points`` (results_by_point.csv's
    table: :func:`experiments.seeds.by_point`) and how many runs were kept from before."""

    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    points: pd.DataFrame = field(default_factory=pd.DataFrame)
    perf: pd.DataFrame = field(default_factory=pd.DataFrame)  # perf_analyzer.csv's table (a sweep with clients)
    reused: int = 0

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "ok"]


def run_experiment(path: Path | str | dict, out_dir: Path | str, *, jobs: Optional[int] = None,
                   seed: Optional[int] = None, force: bool = False, resume: bool = False, executor: str = LOCAL,
                   address: Optional[str] = None, show_progress: bool = True, warn=None,
                   base_dir: Path | str = ".") -> SweepOutcome:
    """Run every point of the experiment in ``path`` into ``out_dir`` on ``executor``
    (``jobs`` at a time; see :func:`experiments.executors.make_executor`). ``warn(line)``
    is told, before anything runs, what makes the sweep's comparison unfair
    (:func:`experiments.cluster_runner.ceiling_warnings`). ``path`` may also be the
    config itself, as a mapping (the Python API's), whose relative paths are read from
    ``base_dir`` (a file's are read from its folder)."""
    if isinstance(path, dict):
        config, base_dir = validate(path, CONFIG_GIVEN), Path(base_dir).resolve()
        path = Path(CONFIG_GIVEN)
    else:
        path = Path(path)
        config, base_dir = load(path), path.resolve().parent
    out_dir = Path(out_dir)
    runs = expand(config, str(path), None if seed is None else [seed])
    validate_runs(runs, path, base_dir)
    for line in cluster_runner.ceiling_warnings(runs):
        (warn or (lambda _line: None))(line)
    pool = make_executor(executor, jobs, address)
    if resume and force:
        raise ConfigError("--resume and --force contradict each other: keep finished runs, or recompute them")
    manifest = store.Manifest.read(out_dir, config.name)
    if manifest.finished() and not (resume or force):
        raise ConfigError(f"{out_dir}: holds {len(manifest.finished())} finished run(s) of an earlier sweep "
                          f"({store.MANIFEST}); --resume keeps them and runs the rest, --force recomputes all")
    if force:
        manifest.runs.clear()
    store.remove_temporaries(out_dir)

    outcome = SweepOutcome(out_dir)
    summaries: dict[str, dict] = {}
    errors: dict[str, str] = {}
    swept: list[Run] = []  # the runs served or kept so far, in order: the sweep, then each refinement
    kept: set[str] = set()  # with resume: the finished runs kept
    finished_before = manifest.finished()

    def rows() -> list[dict]:
        finished = [run for run in swept if run.name in summaries or run.name in errors]
        return versus_vanilla(finished, [result_row(run, summaries.get(run.name), errors.get(run.name))
                                         for run in finished])

    def serve(batch: list[Run], desc: str) -> None:
        """Run ``batch`` (or keep its finished runs, with ``resume``), results.csv growing."""
        todo = []
        for run in batch:
            done = manifest.summary(run.name, dump(run.config)) if resume else None
            if done is not None and not _summary_reads(run, done):
                done = None  # a summary of another shape than this version writes: recompute it
            if done is not None:
                summaries[run.name] = done
                outcome.reused += 1
                kept.add(run.name)
            else:
                todo.append(run)
        swept.extend(batch)
        # runs on this machine write their request tables beside the run folders as they go
        task = functools.partial(attempt, base_dir=base_dir, spool=out_dir.resolve() if executor == LOCAL else None)
        alone = isinstance(pool, InProcess) and len(todo) == 1 and show_progress
        if todo:
            with tqdm(total=len(todo), desc=desc, unit="run", disable=not show_progress) as bar:
                for result in pool.map(_with_progress(task) if alone else task, todo, lost):
                    _record(result, out_dir, manifest, summaries, errors)
                    _write_results(out_dir, rows())  # results.csv grows as runs finish
                    bar.update()

    with pool:
        serve(runs, f"{config.name}: runs")
        if config.refine is not None:
            names = {run.point.lower(): identity(run.params) for run in runs}
            seeds = list(dict.fromkeys(run.seed for run in runs))
            for round_ in range(1, config.refine.rounds + 1):
                wanted = midpoints(config.refine, swept, summaries)
                if not wanted:
                    break
                serve([run for params in wanted for run in point_runs(config, str(path), params, seeds, names)],
                      f"{config.name}: refining ({round_}/{config.refine.rounds})")
    outcome.rows = rows()
    _write_results(out_dir, outcome.rows)
    results = pd.DataFrame(outcome.rows, columns=store.results_columns(outcome.rows), dtype=object)
    outcome.points, outcome.perf = by_point(results, summaries), perf_table(results)
    write_by_point(out_dir / store.RESULTS_BY_POINT, outcome.points)
    if outcome.perf.empty:  # no clients: no perf_analyzer table (nor one an earlier sweep here left)
        (out_dir / store.PERF_ANALYZER).unlink(missing_ok=True)
    else:  # the sweep as perf_analyzer writes it
        write_perf_table(out_dir / store.PERF_ANALYZER, outcome.perf)
    for line in [*beats_full_model_warnings(swept, summaries), *derived_contention_warnings(summaries.values())]:
        (warn or (lambda _line: None))(line)
    stale = [name for name in finished_before if name not in kept]
    if resume and stale and warn is not None:
        warn(f"--resume kept {len(kept)} finished run(s) of {out_dir}, not {len(stale)} other(s) there, whose config "
             f"is not this file's as it is now (was it changed since?) or whose files do not read as this version "
             f"writes them; those were computed anew or, not being runs of this file, left out: "
             + ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else ""))
    return outcome


def _write_results(out_dir: Path, rows: list[dict]) -> None:
    store.write_rows(out_dir / store.RESULTS, rows, store.results_columns(rows))


def derived_contention_warnings(summaries: Iterable[dict]) -> list[str]:
    """One line per derived contention table the runs' instances were stretched by: a
    figure resting on an assumption must never read as measured."""
    sources = Counter(s["instances"]["contention"] for s in summaries
                      if s.get("instances") and s["instances"]["contention"] != MEASURED)
    return [f"serving.instances: {n} run(s) stretched concurrent batches by a contention table {source!r}: an "
            f"assumption from the profile's batch curve, not a measurement (docs/PROFILES.md, 'Contention')"
            for source, n in sources.items()]


def _summary_reads(run: Run, summary: dict) -> bool:
    """Whether a kept summary makes a results.csv row (a kept folder is from disk, and
    disk may hold what an older version wrote)."""
    try:
        result_row(run, summary)
    except (AttributeError, TypeError, ValueError, KeyError):
        return False
    return True


def _with_progress(task):
    """``task`` with a progress bar over its run's arrivals (for a run alone in this process)."""
    def run(r: Run) -> store.RunFiles:
        with tqdm(desc=r.name, unit="req", unit_scale=True, leave=False) as bar:
            return task(r, progress=lambda routed: bar.update(routed - bar.n))
    return run


def _record(result: store.RunFiles, out_dir: Path, manifest: store.Manifest, summaries: dict, errors: dict) -> None:
    """Write one run's folder, then list it in the manifest. A write that fails (a full
    disk) fails that run only; its folder is then left reading as unfinished."""
    try:
        store.write_run(out_dir / result.name, result)
    except OSError as exc:
        (out_dir / result.name / store.SUMMARY).unlink(missing_ok=True)
        for data in result.files.values():  # a table written as the run went, not moved into place
            if isinstance(data, Path):
                data.unlink(missing_ok=True)
        result.summary, result.error = None, f"cannot write its results: {exc}"
    manifest.record(result)
    if result.error is None:
        summaries[result.name] = result.summary
    else:
        errors[result.name] = result.error


def validate_runs(runs: list[Run], path: Path, base_dir: Path) -> None:
    """Build each run's cost model and batcher (cheap, no simulation), so that an unknown
    profile or model, or a policy that cannot be built, is a config error up front."""
    tables: dict[str, int] = {}  # behaviour spec -> exits of its table, built once each
    exits_from_trace: dict[str, int] = {}  # run -> its model's exits, where the trace says each request's exit
    for run in runs:
        try:
            if run.config.cluster is not None:
                cluster_runner.parts(run.config, base_dir, run.seed)
                continue
            cost_model = build_cost_model(run.config, base_dir)
            with _at("serving.batching"):
                batcher = run.config.serving.batching.build(cost_model, run.config.slo_ms)
            load = run.config.load
            if load is not None and load.size > batcher.max_batch:
                raise ConfigError(f"load.size: requests of {load.size} items could never be served in batches of "
                                  f"at most {batcher.max_batch} items")
            if load is not None and run.config.serving.batching.policy == "fixed" \
                    and load.clients * load.size < batcher.max_batch:  # it would wait for a batch forever
                raise ConfigError(f"serving.batching.batch_size: {load.clients} clients of {load.size} item(s) can "
                                  f"never fill a fixed batch of {batcher.max_batch} items")
            if load is not None:
                with _at("load.client"):  # from_profile: the profile must have them; samples: a readable file
                    load.client.build(cost_model.profile, load.size, base_dir)
            build_host(run.config.serving.host, cost_model.profile, run.config.model.hardware)
            exits = run.config.exits
            if exits is not None:
                key = exits.behaviour.model_dump_json()
                if key not in tables:
                    tables[key] = table_of(behaviour(run.config.exits, base_dir, np.random.default_rng(0))).n_exits
                if tables[key] != cost_model.model.n_exits:
                    raise ConfigError(f"exits.behaviour: the table has {tables[key]} exits but the model has "
                                      f"{cost_model.model.n_exits} ({', '.join(cost_model.model.exit_names)})")
                with _at("exits.policy"):
                    exits.policy.build(cost_model, exits.cost_batch).check_exits(tables[key])
                if getattr(exits.behaviour, "from_trace", False):
                    if getattr(run.config.trace, "format", None) != "timestamps":
                        raise ConfigError("exits.behaviour: trace_exits takes each request's exit from a timestamps "
                                          "trace file with 'time,exit' lines (trace: {kind: file, format: "
                                          "timestamps}); this trace is not one")
                    exits_from_trace[run.name] = tables[key]
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"{path}: run {run.name}: {exc}") from None
    # Fix: this check used to live in check() only, so `servesim run` with a missing
    # trace file failed every run at run time (exit 1) instead of being a config error
    # (exit 2, as the CLI promises for a missing file).
    # Fix: a trace file with a bad line passed validation and then failed every run.
    # Each distinct trace file is parsed once with its format's reader (no arrivals are
    # placed, so this stays cheap next to the runs that read it again).
    parsed = {}
    for run in runs:
        trace = run.config.trace
        if getattr(trace, "path", None) is None:
            continue
        if not exists(base_dir / trace.path, f"{path}: trace.path"):
            raise ConfigError(f"{path}: trace.path: no such file {str(base_dir / trace.path)!r}")
        options = {} if trace.function is None else {"function": trace.function}
        key = (trace.path, trace.format, trace.function)
        if key not in parsed:
            try:
                parsed[key] = FORMATS[trace.format].read(base_dir / trace.path, **options)
            except TraceError as exc:
                raise ConfigError(f"{path}: trace.path: {exc}") from None
        if run.name in exits_from_trace:
            try:
                trace_exits(parsed[key], exits_from_trace[run.name])
            except ConfigError as exc:
                raise ConfigError(f"{path}: run {run.name}: {exc}") from None


@contextlib.contextmanager
def _at(key: str):
    """Name the config key whose object failed to build (a policy's own ValueError)."""
    try:
        yield
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def check(path: Path | str) -> list[Run]:
    """Validate an experiment without simulating: config, sweep points, profiles, files."""
    path = Path(path)
    config = load(path)
    runs = expand(config, str(path))
    validate_runs(runs, path, path.resolve().parent)
    return runs
