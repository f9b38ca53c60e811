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

Targets: the sweep <= 15 min on 2 cores; the 10M run's peak RSS <= 2 GB. The last line
printed is one JSON object with the figures.

    python bench/scale.py                      # full size (~2 minutes on 2 cores)
    python bench/scale.py --runs 8 --requests 20000 --large 300000 --small 100000   # a quick check
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

TARGETS = {"sweep_wall_s": 15 * 60.0, "large_peak_rss_mb": 2048.0}
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
    parser.add_argument("--child", nargs=3, metavar=("YAML", "OUT", "JOBS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0

    print(f"servesim scale benchmark; python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    config = sweep_config(args.runs, args.requests)
    runs = len(config["sweep"]["serving"]) * len(config["seeds"])
    sweep = servesim_run(config, args.jobs)
    if sweep["runs_ok"] != runs:
        raise AssertionError(f"the sweep finished {sweep['runs_ok']} of {runs} runs")
    print(f"(a) sweep: {runs} runs x {args.requests:,} requests, --jobs {args.jobs}: wall {sweep['wall_s']:.1f} s "
          f"({sweep['wall_s'] / runs:.2f} s per run), target <= {TARGETS['sweep_wall_s']:.0f} s "
          f"{'met' if sweep['wall_s'] <= TARGETS['sweep_wall_s'] else 'NOT met'}")
    print(f"    peak RSS: driver {sweep['peak_rss_mb']:.0f} MB (after imports {sweep['rss_after_imports_mb']:.0f} MB), "
          f"largest worker {sweep['workers_peak_rss_mb'] or 0:.0f} MB")

    table_bytes, parquet_bytes = column_bytes()
    large = {}
    for n in (args.small, args.large):
        full = servesim_run(large_config(n), 1)
        engine = run_large(n)
        large[n] = {"servesim": full, "engine": engine}
        print(f"(b) {n:,} requests: servesim run wall {full['wall_s']:.1f} s, peak RSS {full['peak_rss_mb']:.0f} MB "
              f"(after imports {full['rss_after_imports_mb']:.0f} MB), {per_request(full, n):.0f} B/request; "
              f"engine alone wall {engine['wall_s']:.1f} s, peak RSS {engine['peak_rss_mb']:.0f} MB "
              f"(after imports {engine['rss_after_imports_mb']:.0f} MB), {per_request(engine, n):.0f} B/request")
    big = large[args.large]["servesim"]
    print(f"    columns: {table_bytes:.0f} B/request (trace times + table), {parquet_bytes:.0f} written; "
          f"{args.large:,}-request peak RSS target <= {TARGETS['large_peak_rss_mb']:.0f} MB "
          f"{'met' if big['peak_rss_mb'] <= TARGETS['large_peak_rss_mb'] else 'NOT met'}")

    figures = {
        "sweep_runs": runs, "sweep_requests": args.requests, "sweep_jobs": args.jobs,
        "sweep_wall_s": round(sweep["wall_s"], 1), "sweep_wall_s_per_run": round(sweep["wall_s"] / runs, 3),
        "sweep_driver_peak_rss_mb": round(sweep["peak_rss_mb"], 1),
        "sweep_worker_peak_rss_mb": round(sweep["workers_peak_rss_mb"] or 0, 1),
        "table_bytes_per_request": round(table_bytes, 1), "parquet_columns_bytes_per_request": round(parquet_bytes, 1),
    }
    for n, both in large.items():
        for path, f in both.items():
            key = f"{path}_{n // 1000}k"
            figures.update({f"{key}_wall_s": round(f["wall_s"], 2), f"{key}_peak_rss_mb": round(f["peak_rss_mb"], 1),
                            f"{key}_bytes_per_request": round(per_request(f, n), 1)})
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
