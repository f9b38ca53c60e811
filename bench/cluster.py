"""The general path's price: the cluster engine against the single-model engine on the
same sample path.

The cluster engine (``sim.cluster``) serves everything the single-model engine does on
one static deployment, and gives the same request table there
(``tests/engine/test_engines_agree.py``), but with one SimPy process per lane and an
event per batch, where the single-model engine fast-forwards a lone busy worker. This
measures what that costs, on the two kinds of cases users run:

* ``mm1``: M/M/1 at rho 0.9 (``bench/engine.py``'s case (a)), 100,000 requests;
* ``jsq8``: 8 replicas behind join-shortest-queue at rho 0.3, dynamic batching (max 8,
  wait 1 ms), the ``cpu_mlp`` profile with empirical noise (issue 20's case), 200,000
  requests.

Each case runs both engines in turn, ``--repeats`` times (interleaved, so that a change
in the machine's load hits both), checks that every finish time agrees to 1e-9 s, and
reports each engine's requests per second (median over repeats) and their ratio,
``cluster_vs_single`` (cluster speed / single-model speed). One engine for both is
only as fast as this ratio lets it be: the target of the one-engine work is to bring
it to 1 without lowering the single-model engine's speed. On ``mm1`` it also times
``bench/engine.py``'s bare heapq loop on the same path and reports both engines'
``ratio_vs_heapq`` (best of the repeats, as ``bench/engine.py`` does), whose target,
0.5, the one engine must keep.

    python bench/cluster.py                 # ~1 minute on 2 cores; the last line is JSON
    python bench/cluster.py --scale 0.1     # a tenth of the requests
    python bench/cluster.py --large 3000000 # also memory: bench/engine.py's large case, fresh processes
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from policies.autoscaling import Deployment, Plan, StaticAdapter  # noqa: E402
from policies.batching import DynamicBatcher  # noqa: E402
from policies.routing import JoinShortestQueue  # noqa: E402
from sim import simulate  # noqa: E402
from sim.cluster import ClusterCosts, simulate_cluster  # noqa: E402
from traces import Trace  # noqa: E402
from workloads import PROFILES_DIR, CostModel, Empirical, Exponential, Profile, load_profile  # noqa: E402

import engine as bench_engine  # noqa: E402  (bench/engine.py, beside this file)
from engine import heapq_fifo  # noqa: E402

SEED = 20261206
FINISH_ATOL = 1e-9  # seconds: the two engines' finish times may differ by clock rounding only
METADATA = {"device": "none (synthetic)", "dtype": "n/a", "framework": "bench/cluster.py",
            "date": "2026-12-06", "execution_mode": "synthetic"}


def mm1(n: int):
    """M/M/1 at rho 0.9: exponential service of mean 1 s, one replica, batch 1."""
    profile = Profile.from_rows([("bench", "mm1", "serve", 1, 1000.0, 1000.0, 1000.0, 1)], METADATA)
    cost = CostModel(profile, "mm1", noise=Exponential())
    times = np.cumsum(np.random.default_rng(SEED).exponential(1 / 0.9, n))
    return times, cost, 1, 1, 0.0, None


def jsq8(n: int):
    """8 replicas behind JSQ at rho 0.3 of their full-batch capacity, batches of up to 8
    waiting up to 1 ms, the shipped cpu_mlp profile with empirical noise."""
    cost = CostModel(load_profile(PROFILES_DIR / "cpu_mlp.csv"), "mlp3", noise=Empirical())
    rate = 0.3 * 8 * 8 / cost.batch_latency(8)
    times = np.cumsum(np.random.default_rng(SEED).exponential(1 / rate, n))
    return times, cost, 8, 8, 1e-3, JoinShortestQueue


CASES = {"mm1": (mm1, 100_000), "jsq8": (jsq8, 200_000)}


def run_single(times, cost, replicas, batch, wait, router):
    t0 = time.perf_counter()
    results = simulate(Trace(times, source="bench"), cost, DynamicBatcher(batch, wait), replicas=replicas,
                       router=None if router is None else router(), shared_queue=router is None,
                       rng=np.random.default_rng(SEED + 1))
    return time.perf_counter() - t0, results.requests


def run_cluster(times, cost, replicas, batch, wait, router):
    t0 = time.perf_counter()
    costs = ClusterCosts(service=lambda task, variant, units: cost.sampler(np.random.default_rng(SEED + 1)),
                         load_time=lambda task, variant: 0.0)
    results = simulate_cluster(Trace(times, source="bench"), ["t"], [], {"t": ("m",)}, costs, StaticAdapter(),
                               Plan({"t": (Deployment("m", replicas, batch=batch),)}),
                               batching=lambda b, latency: DynamicBatcher(b, wait),
                               routing=None if router is None else (lambda key: router()))
    return time.perf_counter() - t0, results.finish


def run_heapq(times, single):
    """bench/engine.py's bare heapq loop on the same M/M/1 path, with the service times the
    single-model run drew (finish - start of each request: one server, batches of one)."""
    t0 = time.perf_counter()
    heapq_fifo(times.tolist(), (single.finish - single.start).tolist())
    return time.perf_counter() - t0


def measure(name: str, n: int, repeats: int) -> dict:
    build, _ = CASES[name]
    args = build(n)
    single_s, cluster_s, heapq_s = [], [], []
    for _ in range(repeats):  # interleaved: a change in the machine's load hits both
        seconds, single = run_single(*args)
        single_s.append(seconds)
        seconds, cluster = run_cluster(*args)
        cluster_s.append(seconds)
        gap = float(np.max(np.abs(single.finish - cluster)))
        if gap > FINISH_ATOL:
            raise SystemExit(f"{name}: the engines' sample paths differ (largest finish-time gap {gap:.3g} s)")
        if name == "mm1":
            heapq_s.append(run_heapq(args[0], single))
    single_rps, cluster_rps = n / statistics.median(single_s), n / statistics.median(cluster_s)
    figures = {"requests": n, "single_rps": round(single_rps), "cluster_rps": round(cluster_rps),
               "cluster_vs_single": round(cluster_rps / single_rps, 4), "largest_finish_gap_s": gap}
    if heapq_s:  # bench/engine.py's ratio_vs_heapq (best of the repeats, as there) for both engines
        figures["single_ratio_vs_heapq"] = round(min(heapq_s) / min(single_s), 4)
        figures["cluster_ratio_vs_heapq"] = round(min(heapq_s) / min(cluster_s), 4)
    return figures


def large_child(which: str, n: int) -> None:
    """``bench/engine.py``'s large case (d) through one engine, in this fresh process: one
    JSON line with the wall seconds (Trace + simulation) and the peak RSS over the RSS
    once the case is set up."""
    e = bench_engine
    cost, times, *_ = e.large_setup(n)
    before = e.peak_rss_mb()
    t0 = time.perf_counter()
    trace = Trace(times, source="bench large")
    batching = DynamicBatcher(e.LARGE_MAX_BATCH, e.LARGE_MAX_WAIT)
    if which == "single":
        finish = simulate(trace, cost, batching, replicas=e.LARGE_REPLICAS, router=JoinShortestQueue(),
                          rng=np.random.default_rng(e.SEED + 4)).requests.finish
    else:
        costs = ClusterCosts(service=lambda task, variant, units: cost.sampler(np.random.default_rng(e.SEED + 4)),
                             load_time=lambda task, variant: 0.0)
        finish = simulate_cluster(trace, ["t"], [], {"t": ("m",)}, costs, StaticAdapter(),
                                  Plan({"t": (Deployment("m", e.LARGE_REPLICAS, batch=e.LARGE_MAX_BATCH),)}),
                                  batching=lambda b, latency: DynamicBatcher(b, e.LARGE_MAX_WAIT),
                                  routing=lambda key: JoinShortestQueue()).finish
    wall = time.perf_counter() - t0
    grown = e.peak_rss_mb() - before
    print(json.dumps({"wall_s": wall, "peak_over_setup_mb": grown, "bytes_per_request": grown * 2**20 / n,
                      "mean_latency_s": float(np.mean(finish - times))}))


def large(n: int, repeats: int) -> dict:
    """Both engines on the large case, each run in a fresh process, interleaved; medians."""
    runs = {"single": [], "cluster": []}
    for _ in range(repeats):
        for which in runs:
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--large-child", which, str(n)],
                                  capture_output=True, text=True, check=True)
            runs[which].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if runs["single"][0]["mean_latency_s"] != runs["cluster"][0]["mean_latency_s"]:
        raise SystemExit("large: the engines' sample paths differ")
    return {f"{which}_{key}": round(statistics.median(r[key] for r in rs), 3)
            for which, rs in runs.items() for key in ("wall_s", "peak_over_setup_mb", "bytes_per_request")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each case's requests (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each engine (default 3)")
    parser.add_argument("--large", type=int, metavar="N", help="also run bench/engine.py's large case with N "
                        "requests through both engines, each in a fresh process: wall and peak RSS")
    parser.add_argument("--large-child", nargs=2, metavar=("ENGINE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.large_child:
        large_child(args.large_child[0], int(args.large_child[1]))
        return 0
    figures = {}
    for name, (_, n) in CASES.items():
        figures[name] = measure(name, max(1000, int(n * args.scale)), args.repeats)
        f = figures[name]
        print(f"{name}: {f['requests']:,} requests; single-model {f['single_rps']:,} req/s, cluster "
              f"{f['cluster_rps']:,} req/s; cluster_vs_single {f['cluster_vs_single']}"
              + (f"; ratio_vs_heapq: single {f['single_ratio_vs_heapq']}, cluster {f['cluster_ratio_vs_heapq']}"
                 if "single_ratio_vs_heapq" in f else ""))
    if args.large:
        figures["large"] = large(args.large, args.repeats)
        print(f"large: {args.large:,} requests; " + ", ".join(f"{k} {v}" for k, v in figures["large"].items()))
    print(json.dumps({**{f"{name}_cluster_vs_single": f["cluster_vs_single"] for name, f in figures.items()
                         if name in CASES},
                      "mm1_cluster_ratio_vs_heapq": figures["mm1"]["cluster_ratio_vs_heapq"], "cases": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
