"""``servesim fidelity``: one experiment in the simulator and on real hardware, side by side.

Every sweep point is run twice on the same arrivals, the same samples and the same
(freshly built) batching and exit policies: once by :func:`sim.simulate`, costed by the
profile the project's profiler measured for the model, and once by
:func:`sim.real.execute` on the real model. ``fidelity.csv`` has one row per point with
p50/p90/p99 latency and throughput of both and the simulator's relative error
(``(sim - real) / real``); each point's folder holds both request tables and a CDF overlay
(and, with ``real.calibrate``, the served profile measured around its real run, which
then costs its simulation). With ``real.repeats`` each point is served for real several
times and the error is against the median, with the real runs' range beside it.
A simulator is trusted only as far as this table says.

A real run replays its arrivals in wall-clock time and a calibrating profile times
thousands of bursts, so a point takes minutes: a progress bar (stderr, off with
``--quiet``) counts the phases of every point and names the one under way.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from servesim.sim import summarize  # noqa: E402
from servesim.sim.real import RUN, execute, measure_served  # noqa: E402

from . import store  # noqa: E402
from .config import ConfigError, expand, load  # noqa: E402
from .plots import cdf_line, save_figure  # noqa: E402
from .profile_served import pool, served_profile  # noqa: E402
from .real_models import REAL_MODELS, warm_up  # noqa: E402
from .runner import prepare, simulate_config, validate_runs  # noqa: E402

FIGURES = (("p50", ("latency_ms", "p50")), ("p90", ("latency_ms", "p90")), ("p99", ("latency_ms", "p99")),
           ("throughput", ("throughput_rps",)))
FIDELITY = "fidelity.csv"
SERVED_PROFILE = "served_profile.csv"  # a point's calibrating profile (real.calibrate)


def run_fidelity(path: Path | str, out_dir: Path | str, show_progress: bool = True) -> list[dict]:
    path, out_dir = Path(path), Path(out_dir)
    config = load(path)
    runs = expand(config, str(path))
    base_dir = path.resolve().parent
    validate_runs(runs, path, base_dir)
    from .fidelity_closed_loop import check_closed_loop, closed_loop_point  # noqa: PLC0415  (it imports this module)

    for run in runs:
        _check(run.config, path, check_closed_loop)
    rows = []
    phases = sum(_phases(run.config.real, run.config.load is not None) for run in runs)
    with tqdm(total=phases, desc=f"{config.name}: fidelity", unit="phase", disable=not show_progress) as bar:
        for k, run in enumerate(runs, 1):
            cfg = run.config
            phase = Progress(bar, f"point {k}/{len(runs)}")
            if cfg.load is not None:
                rows.append(closed_loop_point(run, base_dir, path, out_dir / run.name, phase))
                continue
            # With calibrate, the served profile is measured under the batch sizes this point's
            # simulation (costed by model.profile) serves: a call's cost depends on them.
            first = None
            if cfg.real.calibrate:
                with phase("simulating, for the batch sizes to calibrate at"):
                    first = simulate_config(cfg, base_dir)[0]
            reals, measured, real_model = _serve_for_real(cfg, base_dir, path, first, phase)
            if measured:
                profile = served_profile(real_model, pool(*measured),
                                         f"{cfg.real.calibrate_rounds} timed rounds of {RUN} bursts per size just "
                                         f"before and as many just after each of the {len(reals)} real run(s) of "
                                         f"{run.name}")
                cfg = costed_by(cfg, profile, out_dir / run.name / SERVED_PROFILE, path)
            with phase("simulating and comparing"):
                simulated, _, _ = simulate_config(cfg, base_dir)  # the same arrivals and samples, fresh policies
                rows.append(_compare(run, simulated, reals, out_dir / run.name))
    store.write_rows(out_dir / FIDELITY, rows)
    return rows


def _check(cfg, path: Path, check_closed_loop) -> None:
    """What the real executors can serve of ``cfg`` (one line naming file, key and value);
    a closed loop's by ``check_closed_loop``."""
    if cfg.real is None:
        raise ConfigError(f"{path}: real: a fidelity run needs a 'real:' section")
    if cfg.serving.replicas != 1:
        raise ConfigError(f"{path}: serving.replicas: the real executor runs one worker (got {cfg.serving.replicas})")
    if cfg.load is not None:
        check_closed_loop(cfg, path)
    elif cfg.exits is None:
        raise ConfigError(f"{path}: exits: a fidelity run of a trace needs an 'exits:' section "
                          f"(use exits.policy: never for a run without exits)")
    elif cfg.real.model not in REAL_MODELS:
        raise ConfigError(f"{path}: real.model: {cfg.real.model!r} is served whole by a closed loop's instances "
                          f"only; a trace's real run needs one of {', '.join(sorted(REAL_MODELS))}")


def _phases(real, closed_loop: bool = False) -> int:
    """How many phases a point of ``real`` settings has: per repeat its real run (and, for
    a trace, the two calibrating halves around it), then its simulation (and, with
    calibration, for a trace the simulation before, that says which batch sizes to
    calibrate at; for a closed loop the measurements in isolation before its real runs)."""
    if closed_loop:
        return real.repeats + 1 + real.calibrate
    return real.repeats * (1 + 2 * real.calibrate) + 1 + real.calibrate


class Progress:
    """``with progress("what"):`` names the phase under way on the bar, and counts it
    done when the block ends; ``progress.show("what")`` names a step no phase counts."""

    def __init__(self, bar: tqdm, point: str):
        self.bar, self.point = bar, point

    def show(self, what: str) -> None:
        self.bar.set_description(f"{self.point}: {what}")

    @contextlib.contextmanager
    def __call__(self, what: str):
        self.show(what)
        yield
        self.bar.update()


def _batch_mix(results, max_batch: int) -> np.ndarray:
    """How many batches of each size 1..max_batch ``results`` served."""
    sizes = results.requests.batch_size[results.requests.status == 0]
    return np.bincount(sizes, minlength=max_batch + 1)[1:max_batch + 1] / np.arange(1, max_batch + 1)


def _serve_for_real(cfg, base_dir: Path, path: Path, first, phase: Progress):
    """``cfg`` served ``real.repeats`` times by the real executor, each time on the same
    arrivals and samples with freshly built policies (an online policy must not carry
    what it learnt into the next repeat): the results of each, with ``real.calibrate``
    the served-profile halves measured just before and just after each (else none),
    under the batch sizes of the ``first`` simulation, and the real model (for its stage
    names). ``phase`` shows each repeat's phases as they run."""
    reals, measured = [], []
    repeats = cfg.real.repeats
    for repeat in range(repeats):
        which = f" {repeat + 1}/{repeats}" if repeats > 1 else ""
        phase.show(f"building and warming up the real model{which}")
        prepared = prepare(cfg, base_dir)
        if prepared.source_rows is None:
            raise ConfigError(f"{path}: exits.behaviour: the real executor needs a plain table (not a drifting one)")
        real_model = REAL_MODELS[cfg.real.model](prepared.source_rows, cfg.real.threads)
        warm_up(real_model.staged, prepared.exits.samples, prepared.batcher.max_batch)
        calibrate = None if first is None else _calibration(
            cfg, real_model, prepared.batcher.max_batch, _batch_mix(first, prepared.batcher.max_batch))
        if calibrate:
            with phase(f"calibrating before real run{which}"):
                measured.append(calibrate(2 * repeat))
        span = prepared.trace.times[-1] if len(prepared.trace.times) else 0.0
        with phase(f"real run{which}, {len(prepared.trace.times)} requests over {span:.0f} s of arrivals"):
            reals.append(execute(prepared.trace.times, real_model.staged, prepared.batcher,
                                 table=prepared.exits.table, samples=prepared.exits.samples,
                                 policy=prepared.exits.policy, semantics=cfg.exits.semantics,
                                 drop_after=None if cfg.serving.drop_after_ms is None
                                 else cfg.serving.drop_after_ms / 1e3))
        if calibrate:
            with phase(f"calibrating after real run{which}"):
                measured.append(calibrate(2 * repeat + 1))
    return reals, measured, real_model


def _calibration(cfg, real_model, max_batch: int, mix):
    """``measure(k)``: one half of a calibrating served profile (seeded by ``k``) of the
    very model object the real run serves, on the rows it serves, its bursts' sizes in
    the proportions ``mix``."""
    rows = np.arange(real_model.rows)

    def measure(k: int) -> dict:
        return measure_served(real_model.staged, rows, range(1, max_batch + 1), repeats=cfg.real.calibrate_rounds,
                              warmup=max(1, cfg.real.calibrate_rounds // 10), seed=cfg.seed * 2 + k, mix=mix)
    return measure


def costed_by(cfg, profile, file: Path, path: Path):
    """``cfg`` simulated with ``profile`` (saved to ``file``) in place of ``model.profile``."""
    host = cfg.serving.host
    for model in {cfg.model.name, cfg.exits and cfg.exits.host, host and host.intake} - {None}:
        if model not in profile.models():
            raise ConfigError(f"{path}: real.calibrate: the measured served profile has no model {model!r} "
                              f"(it has: {', '.join(profile.models())}); model.name, exits.host and "
                              f"serving.host.intake must name what servesim profile-served measures")
    file.parent.mkdir(parents=True, exist_ok=True)
    profile.save(file)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"profile": str(file.resolve())})})


def _figure(summary: dict, keys: tuple) -> float | None:
    value = summary
    for key in keys:
        value = (value or {}).get(key)
    return value


def _compare(run, simulated, reals: list, run_dir: Path) -> dict:
    """The fidelity row of one point: each figure simulated and real (the median over the
    real repeats, with their min and max when there are several, the noise floor any
    error is read against) and the simulator's relative error."""
    slo = None if run.config.slo_ms is None else run.config.slo_ms / 1e3
    warmup = run.config.warmup_s
    summaries = {"sim": summarize(simulated, slo, warmup), "real": [summarize(real, slo, warmup) for real in reals]}
    row = figures_row(run, summaries, FIGURES)
    # fell behind for good (sim.metrics): the simulator's verdict, and the share of real runs that did
    row["sim_overloaded"] = summaries["sim"]["overloaded"]
    row["real_overloaded_share"] = float(np.mean([bool(summary["overloaded"]) for summary in summaries["real"]]))
    row["sim_accuracy"] = summaries["sim"]["accuracy"]
    row["real_accuracy"] = float(np.median([summary["accuracy"] for summary in summaries["real"]]))
    named = [("sim_requests.parquet", "simulated", simulated.requests.columns(), _served_ms(simulated))] + [
        (f"real_requests{k}.parquet", f"real{k}", real.requests.columns(), _served_ms(real))
        for k, real in numbered(reals)]
    write_point(run, row, summaries, named, run_dir)
    return row


def figures_row(run, summaries: dict, figures) -> dict:
    """A fidelity row's figures: each of ``figures`` (name, keys into a summary) simulated,
    real (the median of the real runs' summaries, with their min and max when there are
    several) and the simulator's relative error."""
    row = {"run": run.name, "seed": run.seed, **run.params}
    for name, keys in figures:
        s = _figure(summaries["sim"], keys)
        measured = [v for v in (_figure(summary, keys) for summary in summaries["real"]) if v is not None]
        r = float(np.median(measured)) if measured else None
        row.update({f"sim_{name}": s, f"real_{name}": r,
                    f"{name}_rel_error": None if s is None or not r else round(s / r - 1, 6)})
        if len(summaries["real"]) > 1:
            row.update({f"real_{name}_min": min(measured, default=None), f"real_{name}_max": max(measured, default=None)})
    return row


def _served_ms(results) -> np.ndarray:
    """The latency (ms) of each completed request of ``results``, as the server saw it."""
    table = results.requests
    done = table.status == 0
    return (table.finish - table.arrival)[done] * 1e3


def write_point(run, row: dict, summaries: dict, named: list, run_dir: Path) -> None:
    """A point's folder: each run's request table (``named``: file, label, columns,
    latencies in ms), both summaries, and the latencies' CDFs overlaid."""
    for file, _, columns, _ in named:
        store.write_requests(run_dir / file, columns)
    store.write_text(run_dir / "fidelity_summary.json", json.dumps(summaries, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, label, _, latency_ms in named:
        cdf_line(ax, np.sort(latency_ms), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of completed requests")
    ax.set_title(f"{run.name}: p50 error {row['p50_rel_error']}, p99 error {row['p99_rel_error']}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, run_dir / "latency_cdf_sim_vs_real.png")


def numbered(reals: list):
    """``("", first), ("_2", second), ...``: the first real run's files keep the plain name."""
    return [("" if k == 0 else f"_{k + 1}", real) for k, real in enumerate(reals)]
