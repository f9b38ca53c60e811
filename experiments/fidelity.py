"""``servesim fidelity``: one experiment in the simulator and on real hardware, side by side.

Every sweep point is run twice on the same arrivals, the same samples and the same
(freshly built) batching and exit policies: once by :func:`sim.simulate`, costed by the
profile the project's profiler measured for the model, and once by
:func:`sim.real.execute` on the real model. ``fidelity.csv`` has one row per point with
p50/p90/p99 latency and throughput of both and the simulator's relative error
(``(sim - real) / real``); each point's folder holds both request tables and a CDF overlay.
A simulator is trusted only as far as this table says.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sim import summarize  # noqa: E402
from sim.real import execute  # noqa: E402

from . import store  # noqa: E402
from .config import ConfigError, expand, load  # noqa: E402
from .plots import cdf_line, save_figure  # noqa: E402
from .real_models import REAL_MODELS, warm_up  # noqa: E402
from .runner import prepare, simulate_config, validate_runs  # noqa: E402

FIGURES = (("p50", ("latency_ms", "p50")), ("p90", ("latency_ms", "p90")), ("p99", ("latency_ms", "p99")),
           ("throughput", ("throughput_rps",)))
FIDELITY = "fidelity.csv"


def run_fidelity(path: Path | str, out_dir: Path | str) -> list[dict]:
    path, out_dir = Path(path), Path(out_dir)
    config = load(path)
    runs = expand(config, str(path))
    base_dir = path.resolve().parent
    validate_runs(runs, path, base_dir)
    rows = []
    for run in runs:
        cfg = run.config
        if cfg.real is None or cfg.exits is None:
            raise ConfigError(f"{path}: real: a fidelity run needs a 'real:' section and an 'exits:' section "
                              f"(use exits.policy: never for a run without exits)")
        if cfg.serving.replicas != 1:
            raise ConfigError(f"{path}: serving.replicas: the real executor runs one worker (got {cfg.serving.replicas})")
        simulated, _, _ = simulate_config(cfg, base_dir)
        prepared = prepare(cfg, base_dir)  # the same arrivals and samples, fresh policies
        if prepared.source_rows is None:
            raise ConfigError(f"{path}: exits.behaviour: the real executor needs a plain table (not a drifting one)")
        model = REAL_MODELS[cfg.real.model](prepared.source_rows, cfg.real.threads).staged
        warm_up(model, prepared.exits.samples, prepared.batcher.max_batch)
        real = execute(prepared.trace.times, model, prepared.batcher, table=prepared.exits.table,
                       samples=prepared.exits.samples, policy=prepared.exits.policy, semantics=cfg.exits.semantics,
                       drop_after=None if cfg.serving.drop_after_ms is None else cfg.serving.drop_after_ms / 1e3)
        rows.append(_compare(run, simulated, real, out_dir / run.name))
    store.write_rows(out_dir / FIDELITY, rows)
    return rows


def _figure(summary: dict, keys: tuple) -> float | None:
    value = summary
    for key in keys:
        value = (value or {}).get(key)
    return value


def _compare(run, simulated, real, run_dir: Path) -> dict:
    slo = None if run.config.slo_ms is None else run.config.slo_ms / 1e3
    summaries = {"sim": summarize(simulated, slo), "real": summarize(real, slo)}
    row = {"run": run.name, "seed": run.seed, **run.params}
    for name, keys in FIGURES:
        s, r = _figure(summaries["sim"], keys), _figure(summaries["real"], keys)
        row.update({f"sim_{name}": s, f"real_{name}": r,
                    f"{name}_rel_error": None if s is None or not r else round(s / r - 1, 6)})
    row["sim_accuracy"], row["real_accuracy"] = summaries["sim"]["accuracy"], summaries["real"]["accuracy"]
    for name, results in (("sim", simulated), ("real", real)):
        store.write_requests(run_dir / f"{name}_requests.parquet", results.requests.columns())
    store.write_text(run_dir / "fidelity_summary.json", json.dumps(summaries, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, results in (("simulated", simulated), ("real", real)):
        table = results.requests
        done = table.status == 0
        cdf_line(ax, np.sort((table.finish - table.arrival)[done]) * 1e3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of completed requests")
    ax.set_title(f"{run.name}: p50 error {row['p50_rel_error']}, p99 error {row['p99_rel_error']}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, run_dir / "latency_cdf_sim_vs_real.png")
    return row
