"""Scale benchmark: a sweep of 200 runs x 100k requests on 2 cores, and the memory of one
run as its trace grows to 10M requests.

(a) **The sweep**: one experiment YAML, written to a temporary folder: Poisson arrivals
    (``count`` requests at 3,200 req/s), the shipped ``cpu_mlp`` profile with empirical
    noise, 4 batching settings (the quickstart's) x 5 replica counts (1, 2, 3, 4, 6, JSQ,
    drops after 200 ms) x 10 seeds = 200 runs, run by ``servesim run --jobs 2 --quiet``
    in a child process. Reported: wall seconds of the sweep (plots included) and per run,
    the peak RSS of the driver (the ``servesim`` process: it gathers every run's files and
    draws the plots) and of the largest pool worker (``RUSAGE_CHILDREN`` of the driver:
    Linux keeps the largest waited-for child's peak; workers are forked from the driver,
    so their RSS counts the pages they share with it).
(b) **One large run**, 10M requests (and 1M beside it), 8 replicas behind JSQ,
    ``dynamic`` batching (16, 0.5 ms) at ~0.67 of full-batch capacity, two ways, each in
    a fresh child process:

    * through ``servesim run --jobs 1`` (simulation, summary, ``requests.parquet``,
      ``results.csv`` and plots, all in the driver): peak RSS (``VmHWM``), RSS after
      imports (the CLI's, pyarrow's included) and *bytes per request* = (peak - after
      imports) / requests;
    * the engine alone (trace + ``simulate``, ``bench/engine.py``'s large case at that
      size), the same figures.

    Memory is bounded when bytes per request stay flat from 1M to 10M and near what the
    columns themselves take (reported as ``table_bytes_per_request``: the trace's times
    and the table's columns; and ``parquet_columns_bytes_per_request``: what is written,
    ``id`` and ``dropped`` included).

(c) **Traffic of a day and of a week** (issue 20), each ``servesim run --jobs 1`` in a
    fresh child process: Poisson arrivals at 1,000 req/s, the same model, 8 replicas
    behind JSQ, ``dynamic`` batching (8, 1 ms). The day (86.4M requests) keeps full
    records (``requests.parquet``, written as the run goes); the week (605M) keeps
    ``records: summary`` (a latency sketch and per-second counters). Reported: wall
    seconds (simulation, files and plots) and peak RSS. ``--traffic-hours`` shortens both
    spans for a quick look (figures then are not the targets').

Targets: the sweep <= 15 min on 2 cores; the 10M run's peak RSS <= 2 GB; the day <= 5 min
and <= 4 GB; the week <= 40 min and <= 1 GB. The last line printed is one JSON object
with the figures.

    python bench/scale.py                      # (a) and (b), full size (~2 minutes on 2 cores)
    python bench/scale.py --runs 8 --requests 20000 --large 300000 --small 100000   # a quick check
    python bench/scale.py --parts traffic      # (c): the day, then the week (about 35 minutes on 2 cores)
    python bench/scale.py --parts traffic --traffic-hours 1 6   # (c) over 1 and 6 hours instead
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout (and bench/engine.py) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import peak_rss_mb, run_large  # noqa: E402  (bench/engine.py, next to this file)

TARGETS = {"sweep_wall_s": 15 * 60.0, "large_peak_rss_mb": 2048.0,
           "day_wall_s": 5 * 60.0, "day_peak_rss_mb": 4096.0, "week_wall_s": 40 * 60.0, "week_peak_rss_mb": 1024.0}
TRAFFIC_RATE = 1000  # req/s
TRAFFIC = (("day", 24, "full"), ("week", 7 * 24, "summary"))  # name, hours, records
BATCHING = [  # the quickstart's four settings
    {"policy": "dynamic", "max_batch": 1},
    {"policy": "dynamic", "max_batch": 8, "max_wait_ms": 1},
    {"policy": "dynamic", "max_batch": 32, "max_wait_ms": 2},
    {"policy": "deadline", "max_batch": 32},
]
REPLICAS = [1, 2, 3, 4, 6]
LARGE_RATE = 30_000  # req/s, against 8 replicas' ~45,000 at full batches of 16
MODEL = {"profile": "builtin:cpu_mlp", "name": "mlp3", "noise": {"kind": "empirical"}}


def sweep_config(runs: int, requests: int) -> dict:
    """The first ``min(runs, 20)`` points of batching x replicas, ``max(1, runs // 20)`` seeds each."""
    points = [{"replicas": r, "router": "jsq", "batching": b, "drop_after_ms": 200}
              for b in BATCHING for r in REPLICAS][:max(1, min(runs, len(BATCHING) * len(REPLICAS)))]
    return {"name": "scale_sweep", "seeds": list(range(1, max(1, runs // len(points)) + 1)), "slo_ms": 10,
            "trace": {"kind": "poisson", "rate": 3200, "count": requests}, "model": MODEL,
            "serving": points[0], "sweep": {"serving": points}}


def large_config(requests: int) -> dict:
    return {"name": "scale_large", "seeds": [1], "trace": {"kind": "poisson", "rate": LARGE_RATE, "count": requests},
            "model": MODEL, "serving": {"replicas": 8, "router": "jsq",
                                        "batching": {"policy": "dynamic", "max_batch": 16, "max_wait_ms": 0.5}}}


def traffic_config(name: str, hours: float, records: str) -> dict:
    return {"name": f"scale_{name}", "seeds": [1],
            "trace": {"kind": "poisson", "rate": TRAFFIC_RATE, "duration": hours * 3600}, "model": MODEL,
            "serving": {"replicas": 8, "router": "jsq",
                        "batching": {"policy": "dynamic", "max_batch": 8, "max_wait_ms": 1}},
            "records": records}


def traffic(hours: list[float]) -> dict:
    """(c): the day and the week (or ``hours`` of each), one after the other."""
    figures = {}
    for (name, full_hours, records), span in zip(TRAFFIC, hours or [h for _, h, _ in TRAFFIC]):
        run = servesim_run(traffic_config(name, span, records), 1)
        if run["runs_ok"] != 1:
            raise AssertionError(f"the {name}'s run failed")
        requests = int(TRAFFIC_RATE * span * 3600)
        at_size = span == full_hours
        verdicts = ", ".join(f"{what} target {'met' if run[key] <= TARGETS[f'{name}_{key}'] else 'NOT met'}"
                             for what, key in (("time", "wall_s"), ("memory", "peak_rss_mb"))) if at_size else \
            f"not the target's {full_hours} h"
        print(f"(c) {name}: {span:g} h at {TRAFFIC_RATE} req/s ({requests:,} requests), records {records}: "
              f"wall {run['wall_s']:.1f} s ({run['wall_s'] / requests * 1e6:.2f} us/request), "
              f"peak RSS {run['peak_rss_mb']:.0f} MB (after imports {run['rss_after_imports_mb']:.0f} MB, "
              f"{per_request(run, requests):.1f} B/request); {verdicts}")
        figures.update({f"{name}_hours": span, f"{name}_wall_s": round(run["wall_s"], 1),
                        f"{name}_peak_rss_mb": round(run["peak_rss_mb"], 1),
                        f"{name}_bytes_per_request": round(per_request(run, requests), 1)})
    return figures


def servesim_run(config: dict, jobs: int) -> dict:
    """``servesim run`` of ``config`` in a fresh child process (this file with --child);
    returns its figures and the number of runs it finished."""
    with tempfile.TemporaryDirectory(prefix="servesim-scale-") as tmp:
        path = Path(tmp) / f"{config['name']}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(path),
                               str(Path(tmp) / "out"), str(jobs)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise RuntimeError(f"servesim run failed with exit status {proc.returncode}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def child(path: str, out: str, jobs: int) -> None:
    """The ``servesim`` entry point in this process, between two memory readings."""
    import pyarrow.parquet  # noqa: F401  (loaded by the parquet write anyway: part of the baseline)

    from servesim.experiments import cli

    after_imports = peak_rss_mb()
    t0 = time.perf_counter()
    status = cli.main(["run", path, "--out", out, "--jobs", str(jobs), "--quiet"])
    wall = time.perf_counter() - t0
    with open(Path(out) / "results.csv", newline="") as f:
        ok = sum(row["status"] == "ok" for row in csv.DictReader(f))
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB (Linux)
    print(json.dumps({"status": status, "runs_ok": ok, "wall_s": wall, "peak_rss_mb": peak_rss_mb(),
                      "rss_after_imports_mb": after_imports, "workers_peak_rss_mb": workers or None}))


def column_bytes() -> tuple[float, float]:
    """Bytes per request of the trace's times plus the table's columns, and of what
    ``requests.parquet`` holds, read off a small run."""
    import numpy as np

    from servesim.policies.batching import DynamicBatcher
    from servesim.sim import simulate
    from servesim.traces import poisson
    from servesim.workloads import PROFILES_DIR, CostModel, load_profile

    cost = CostModel(load_profile(PROFILES_DIR / "cpu_mlp.csv"), "mlp3")
    table = simulate(poisson(1000, count=1000, rng=np.random.default_rng(0)), cost, DynamicBatcher(8, 0.001)).requests
    columns = table.columns()
    return (sum(columns[name].nbytes for name in vars(table) if name in columns) / len(table),
            sum(c.nbytes for c in columns.values()) / len(table))


def per_request(figures: dict, requests: int) -> float:
    return (figures["peak_rss_mb"] - figures["rss_after_imports_mb"]) * 2**20 / requests


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs of the sweep (a multiple of 20 above 20)")
    parser.add_argument("--requests", type=int, default=100_000, help="requests per run of the sweep")
    parser.add_argument("--jobs", type=int, default=2, help="servesim run --jobs for the sweep")
    parser.add_argument("--large", type=int, default=10_000_000, help="requests of the large run")
    parser.add_argument("--small", type=int, default=1_000_000, help="requests of the run beside it")
    parser.add_argument("--parts", default="sweep,large", help="which of sweep, large, traffic to run "
                        "(comma-separated)")
    parser.add_argument("--traffic-hours", type=float, nargs=2, metavar=("DAY", "WEEK"),
                        help="(c) over these spans instead of 24 h and 168 h")
    parser.add_argument("--child", nargs=3, metavar=("YAML", "OUT", "JOBS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0

    parts = set(args.parts.split(","))
    unknown = parts - {"sweep", "large", "traffic"}
    if unknown:
        parser.error(f"--parts: unknown part(s) {', '.join(sorted(unknown))}")
    print(f"servesim scale benchmark; python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    figures: dict = {}
    if "sweep" in parts:
        figures.update(sweep(args))
    if "large" in parts:
        figures.update(large(args))
    if "traffic" in parts:
        figures.update(traffic(args.traffic_hours))
    print(json.dumps(figures))
    return 0


def sweep(args) -> dict:
    """(a)."""
    config = sweep_config(args.runs, args.requests)
    runs = len(config["sweep"]["serving"]) * len(config["seeds"])
    result = servesim_run(config, args.jobs)
    if result["runs_ok"] != runs:
        raise AssertionError(f"the sweep finished {result['runs_ok']} of {runs} runs")
    print(f"(a) sweep: {runs} runs x {args.requests:,} requests, --jobs {args.jobs}: wall {result['wall_s']:.1f} s "
          f"({result['wall_s'] / runs:.2f} s per run), target <= {TARGETS['sweep_wall_s']:.0f} s "
          f"{'met' if result['wall_s'] <= TARGETS['sweep_wall_s'] else 'NOT met'}")
    print(f"    peak RSS: driver {result['peak_rss_mb']:.0f} MB (after imports {result['rss_after_imports_mb']:.0f} MB), "
          f"largest worker {result['workers_peak_rss_mb'] or 0:.0f} MB")
    return {"sweep_runs": runs, "sweep_requests": args.requests, "sweep_jobs": args.jobs,
            "sweep_wall_s": round(result["wall_s"], 1), "sweep_wall_s_per_run": round(result["wall_s"] / runs, 3),
            "sweep_driver_peak_rss_mb": round(result["peak_rss_mb"], 1),
            "sweep_worker_peak_rss_mb": round(result["workers_peak_rss_mb"] or 0, 1)}


def large(args) -> dict:
    """(b)."""
    table_bytes, parquet_bytes = column_bytes()
    runs = {}
    for n in (args.small, args.large):
        full = servesim_run(large_config(n), 1)
        engine = run_large(n)
        runs[n] = {"servesim": full, "engine": engine}
        print(f"(b) {n:,} requests: servesim run wall {full['wall_s']:.1f} s, peak RSS {full['peak_rss_mb']:.0f} MB "
              f"(after imports {full['rss_after_imports_mb']:.0f} MB), {per_request(full, n):.0f} B/request; "
              f"engine alone wall {engine['wall_s']:.1f} s, peak RSS {engine['peak_rss_mb']:.0f} MB "
              f"(after imports {engine['rss_after_imports_mb']:.0f} MB), {per_request(engine, n):.0f} B/request")
    big = runs[args.large]["servesim"]
    print(f"    columns: {table_bytes:.0f} B/request (trace times + table), {parquet_bytes:.0f} written; "
          f"{args.large:,}-request peak RSS target <= {TARGETS['large_peak_rss_mb']:.0f} MB "
          f"{'met' if big['peak_rss_mb'] <= TARGETS['large_peak_rss_mb'] else 'NOT met'}")
    figures = {"table_bytes_per_request": round(table_bytes, 1),
               "parquet_columns_bytes_per_request": round(parquet_bytes, 1)}
    for n, both in runs.items():
        for path, f in both.items():
            key = f"{path}_{n // 1000}k"
            figures.update({f"{key}_wall_s": round(f["wall_s"], 2), f"{key}_peak_rss_mb": round(f["peak_rss_mb"], 1),
                            f"{key}_bytes_per_request": round(per_request(f, n), 1)})
    return figures


if __name__ == "__main__":
    sys.exit(main())
