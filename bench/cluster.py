"""The general lane's price: the engine's general loop against its lean loop, on the
same sample path.

The engine (``sim.cluster``) serves a lane by a lean loop (``_Cluster.steady_lane``)
where the plan never changes and requests are plain (every single-model run without
exits or padding), and by its general loop (``_Cluster.lane``) everywhere else: under an
adapter, with exits, sizes, padding, or answers that go on to another task. This
measures what the general loop costs, on the two kinds of cases users run:

* ``mm1``: M/M/1 at rho 0.9 (``bench/engine.py``'s case (a)), 100,000 requests;
* ``jsq8``: 8 replicas behind join-shortest-queue at rho 0.3, dynamic batching (max 8,
  wait 1 ms), the ``cpu_mlp`` profile with empirical noise (issue 20's case), 200,000
  requests.

Each case runs ``simulate`` (the lean loop) and the same one-deployment system through
``simulate_cluster`` under an adapter that keeps the plan but is asked every second (the
general loop, the adapter's timer among SimPy's events) in turn, ``--repeats`` times
(interleaved, so that a change in the machine's load hits both), checks that every
finish time agrees to 1e-9 s, and reports each loop's requests per second (median over
repeats) and their ratio, ``general_vs_lean``. The speed of a single-model run against a
bare heapq loop is ``bench/engine.py``'s ``ratio_vs_heapq``.

    python bench/cluster.py                 # ~1 minute on 2 cores; the last line is JSON
    python bench/cluster.py --scale 0.1     # a tenth of the requests
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from servesim.policies.autoscaling import Deployment, Plan, StaticAdapter  # noqa: E402
from servesim.policies.batching import DynamicBatcher  # noqa: E402
from servesim.policies.routing import JoinShortestQueue  # noqa: E402
from servesim.sim import simulate  # noqa: E402
from servesim.sim.cluster import ClusterCosts, simulate_cluster  # noqa: E402
from servesim.traces import Trace  # noqa: E402
from servesim.workloads import PROFILES_DIR, CostModel, Empirical, Exponential, Profile, load_profile  # noqa: E402

SEED = 20261206
FINISH_ATOL = 1e-9  # seconds: the two loops' finish times may differ by clock rounding only
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


class Asked(StaticAdapter):
    """Keeps the plan but is asked every second: the engine cannot take the plan as fixed,
    so every lane runs the general loop."""

    interval_s = 1.0


def run_lean(times, cost, replicas, batch, wait, router):
    t0 = time.perf_counter()
    results = simulate(Trace(times, source="bench"), cost, DynamicBatcher(batch, wait), replicas=replicas,
                       router=None if router is None else router(), shared_queue=router is None,
                       rng=np.random.default_rng(SEED + 1))
    return time.perf_counter() - t0, results.requests.finish


def run_general(times, cost, replicas, batch, wait, router):
    t0 = time.perf_counter()
    costs = ClusterCosts(service=lambda task, variant, units: cost.sampler(np.random.default_rng(SEED + 1)),
                         load_time=lambda task, variant: 0.0)
    results = simulate_cluster(Trace(times, source="bench"), ["t"], [], {"t": ("m",)}, costs, Asked(),
                               Plan({"t": (Deployment("m", replicas, batch=batch),)}),
                               batching=lambda b, latency: DynamicBatcher(b, wait),
                               routing=None if router is None else (lambda key: router()))
    return time.perf_counter() - t0, results.finish


def measure(name: str, n: int, repeats: int) -> dict:
    build, _ = CASES[name]
    args = build(n)
    lean_s, general_s = [], []
    for _ in range(repeats):  # interleaved: a change in the machine's load hits both
        seconds, lean = run_lean(*args)
        lean_s.append(seconds)
        seconds, general = run_general(*args)
        general_s.append(seconds)
        gap = float(np.max(np.abs(lean - general)))
        if gap > FINISH_ATOL:
            raise SystemExit(f"{name}: the loops' sample paths differ (largest finish-time gap {gap:.3g} s)")
    lean_rps, general_rps = n / statistics.median(lean_s), n / statistics.median(general_s)
    return {"requests": n, "lean_rps": round(lean_rps), "general_rps": round(general_rps),
            "general_vs_lean": round(general_rps / lean_rps, 4), "largest_finish_gap_s": gap}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each case's requests (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each loop (default 3)")
    args = parser.parse_args(argv)
    figures = {}
    for name, (_, n) in CASES.items():
        figures[name] = f = measure(name, max(1000, int(n * args.scale)), args.repeats)
        print(f"{name}: {f['requests']:,} requests; lean loop {f['lean_rps']:,} req/s, general loop "
              f"{f['general_rps']:,} req/s; general_vs_lean {f['general_vs_lean']}")
    print(json.dumps({**{f"{name}_general_vs_lean": f["general_vs_lean"] for name, f in figures.items()},
                      "cases": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
