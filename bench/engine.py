"""Engine benchmark: how fast servesim simulates, against a bare event loop and against Ciw.

Three simulators run the *same* M/M/1 sample path at rho = 0.9 (Poisson arrivals at
0.9/s, exponential service of mean 1 s, FIFO, one server; 200,000 requests by default):

(a) **servesim** -- ``sim.simulate`` with a one-stage profile, ``Exponential()`` noise,
    ``DynamicBatcher(1, 0)`` (one request per batch, FIFO) and one replica. It is the
    engine's speed on the case that matters most for validation runs.
(b) **a minimal heapq event loop**, written below: a heap of ``(time, kind, id)``
    events, a deque for the queue, lists for start and finish times; arrivals and
    departures are both events. Nothing in it is specific to M/M/1 that a general loop
    could not also do, and it does no bookkeeping beyond what the result needs, so it is
    the practical ceiling for a discrete-event simulator written in pure Python.
    ``ratio_vs_heapq`` (servesim requests/s over heapq requests/s) says how close the
    engine, with all its generality (SimPy, policies, routing, drops, multi-replica
    logging), comes to that ceiling.
(c) **Ciw** -- a validated, general-purpose Python queueing-network simulator: a
    one-server network with ``ciw.dists.Sequential`` inter-arrival gaps and service
    times. ``ratio_vs_ciw`` says how servesim compares to a peer of the same language.

The service times of (b) and (c) are servesim's own (``finish - start`` of each request,
batch size 1), so all three simulate identical sample paths; the benchmark checks that
their mean waiting times agree to 1e-6 relative and stops with an error if not.

Timing: ``time.perf_counter`` around the simulation call, including the conversion of
inputs each simulator needs (servesim: building the ``Trace`` and ``simulate``, which
also builds its numpy result table; heapq: the lists; Ciw: the network and the
``Simulation``), not building the profile or drawing the arrival times. (a) and (b) run
in turn, 5 times each (interleaved, so that changes in the machine's load meet both
sides alike), and the best of each counts; Ciw once (it runs ~17k customers/s). One servesim run before them, untimed,
draws the service times (b) replays.

(d) **a large run**: 1,000,000 requests, Poisson arrivals, the measured three-stage
    ``cpu_mlp`` profile with ``Empirical()`` noise, ``DynamicBatcher(16, 0.5 ms)``, 8
    replicas behind join-shortest-queue, at an offered load of 0.75 of the replicas'
    full-batch capacity. It runs in a fresh child process (this file with
    ``--large-child``) so that (a)-(c) do not pollute its peak RSS; it reports wall
    seconds (Trace + simulate), the child's peak RSS (``VmHWM``) and the increase
    over its RSS right after imports.

(e) **the multi-replica cases users run** (``bench/multi.py``): 8 replicas behind
    join-shortest-queue, round robin or one shared queue, at rho 0.3 and 0.9, without
    batching and with dynamic batching (max 8, wait 1 ms), 100,000 requests each; servesim
    against a heapq loop written from the same rules, which must give the same sample
    path (every request's start time and replica equal to servesim's). The sides run in
    turn ``--repeats`` times per case and the median ratio counts;
    ``ratio_vs_heapq_multi`` is the smallest over the twelve cases.

Targets: ``ratio_vs_heapq >= 0.5``, ``ratio_vs_ciw >= 8``, large run ``<= 15 s`` and
``<= 1 GB`` peak RSS, ``ratio_vs_heapq_multi >= 0.5``. The last line printed is one JSON
object with the figures.

    python bench/engine.py                      # full size (~1 minute on 2 cores)
    python bench/engine.py --quick              # every case, smaller (20k requests, 3 runs a side)
    python bench/engine.py --requests 20000 --large-requests 100000 --skip-ciw --skip-multi
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import resource
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from servesim.policies.batching import DynamicBatcher  # noqa: E402
from servesim.policies.routing import JoinShortestQueue  # noqa: E402
from servesim.sim import engine  # noqa: E402
from servesim.traces import Trace, poisson  # noqa: E402
from servesim.workloads import PROFILES_DIR, CostModel, Empirical, load_profile  # noqa: E402

import multi  # noqa: E402  (bench/multi.py and bench/timing.py, next to this file)
from timing import in_turn  # noqa: E402

RHO = 0.9                 # M/M/1 load: arrival rate 0.9/s, mean service 1 s
SEED = 20240601
WAIT_RTOL = 1e-6          # mean waiting times of (a), (b), (c) must agree this closely
TARGETS = {"ratio_vs_heapq": 0.5, "ratio_vs_ciw": 8.0, "large_wall_s": 15.0, "large_peak_rss_mb": 1024.0,
           "ratio_vs_heapq_multi": 0.5}
# Sizes: (M/M/1 requests, large-case requests, requests per multi-replica case, repeats)
FULL = (200_000, 1_000_000, 100_000, 5)
QUICK = (20_000, 100_000, 20_000, 3)

LARGE_REPLICAS = 8
LARGE_MAX_BATCH = 16
LARGE_MAX_WAIT = 0.5e-3   # seconds
LARGE_LOAD = 0.75         # offered load / full-batch capacity of all replicas


# ----------------------------------------------------------------------------- (a)

def mm1_cost_model() -> CostModel:
    """One stage, batch size 1: service exactly exponential with mean 1 s."""
    return multi.exponential_model("mm1", {1: 1000.0})


def run_servesim(times: np.ndarray, cost_model: CostModel):
    """Time Trace + simulate; returns (seconds, Results)."""
    t0 = time.perf_counter()
    trace = Trace(times, source="bench mm1")
    results = engine.simulate(trace, cost_model, DynamicBatcher(1, 0), replicas=1,
                              rng=np.random.default_rng(SEED + 1))
    return time.perf_counter() - t0, results


# ----------------------------------------------------------------------------- (b)

ARRIVAL, DEPARTURE = 0, 1  # an arrival at the instant of a departure is handled first, as in servesim


def heapq_fifo(arrivals: list, services: list):
    """A single-server FIFO queue as a plain event loop: returns (start, finish) lists."""
    n = len(arrivals)
    start = [0.0] * n
    finish = [0.0] * n
    queue = deque()
    heap = [(arrivals[0], ARRIVAL, 0)] if n else []
    push, pop = heapq.heappush, heapq.heappop
    busy = False
    while heap:
        t, kind, i = pop(heap)
        if kind == ARRIVAL:
            if i + 1 < n:
                push(heap, (arrivals[i + 1], ARRIVAL, i + 1))
            if busy:
                queue.append(i)
                continue
            busy = True
        elif queue:
            i = queue.popleft()
        else:
            busy = False
            continue
        start[i] = t
        done = t + services[i]
        finish[i] = done
        push(heap, (done, DEPARTURE, i))
    return start, finish


def run_heapq(times: np.ndarray, services: np.ndarray):
    t0 = time.perf_counter()
    start, finish = heapq_fifo(times.tolist(), services.tolist())
    return time.perf_counter() - t0, (start, finish)


# ----------------------------------------------------------------------------- (c)

def run_ciw(times: np.ndarray, services: np.ndarray):
    """One Ciw run; returns (seconds, Simulation).

    Ciw's arrival node samples the first gap at time 0 (first arrival at gaps[0]) and one
    more gap after each arrival, adding it to the previous arrival date, so gaps are
    ``diff(times, prepend=0)``. ``Sequential`` cycles; a final gap of 1e18 s keeps the
    (n+1)-th arrival out of the run. Service times are sampled at service start, which
    in a one-server FIFO queue is in arrival order, so the i-th service time goes to
    the i-th customer.
    """
    import ciw

    n = len(times)
    t0 = time.perf_counter()
    gaps = np.diff(times, prepend=0.0).tolist()
    gaps.append(1e18)
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Sequential(gaps)],
        service_distributions=[ciw.dists.Sequential(services.tolist())],
        number_of_servers=[1],
    )
    simulation = ciw.Simulation(network)
    simulation.simulate_until_max_customers(n, method="Complete")
    return time.perf_counter() - t0, simulation


def ciw_waits(simulation, n: int) -> np.ndarray:
    records = [r for r in simulation.get_all_records() if r.record_type == "service"]
    if len(records) != n:
        raise AssertionError(f"Ciw completed {len(records)} customers, expected {n}")
    records.sort(key=lambda r: r.id_number)
    return np.array([r.waiting_time for r in records])


# ----------------------------------------------------------------------------- (d)

def large_setup(n: int):
    profile = load_profile(PROFILES_DIR / "cpu_mlp.csv")
    cost_model = CostModel(profile, "mlp3", noise=Empirical())
    # Mean service time of a full batch under Empirical noise (not the median), estimated
    # from the sampler itself with its own generator.
    sample = cost_model.sampler(np.random.default_rng(SEED + 2))
    mean_full = float(np.mean([sample(LARGE_MAX_BATCH) for _ in range(50_000)]))
    capacity = LARGE_REPLICAS * LARGE_MAX_BATCH / mean_full  # req/s with every batch full
    rate = LARGE_LOAD * capacity
    trace = poisson(rate, count=n, rng=np.random.default_rng(SEED + 3))
    return cost_model, trace.times, rate, capacity, mean_full


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    Linux's ``VmHWM`` belongs to the process image, so a child started with exec reports
    its own peak; ``ru_maxrss`` (the fallback elsewhere) can carry the parent's peak over
    the fork and would report the benchmark parent's memory instead.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (2**20 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB elsewhere


def large_child(n: int) -> None:
    """Run (d) in this (fresh) process and print one JSON line."""
    rss_after_imports = peak_rss_mb()
    cost_model, times, rate, capacity, mean_full = large_setup(n)
    t0 = time.perf_counter()
    trace = Trace(times, source="bench large")
    results = engine.simulate(trace, cost_model, DynamicBatcher(LARGE_MAX_BATCH, LARGE_MAX_WAIT),
                              replicas=LARGE_REPLICAS, router=JoinShortestQueue(),
                              rng=np.random.default_rng(SEED + 4))
    wall = time.perf_counter() - t0
    peak = peak_rss_mb()
    req = results.requests
    latency = req.finish - req.arrival
    print(json.dumps({
        "requests": n, "wall_s": wall, "peak_rss_mb": peak, "rss_after_imports_mb": rss_after_imports,
        "rate": rate, "capacity": capacity, "mean_full_batch_ms": mean_full * 1e3,
        "busy_fraction": float(results.busy_time.sum() / (results.replicas * results.end_time)),
        "mean_batch": float(n / results.batches), "batches": results.batches,
        "completed": int((req.status == 0).sum()),
        "latency_p50_ms": float(np.percentile(latency, 50) * 1e3),
        "latency_p99_ms": float(np.percentile(latency, 99) * 1e3),
    }))


def run_large(n: int) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--large-child", str(n)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"large-case child failed with exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main

def check_agree(name: str, value: float, reference: float) -> None:
    rel = abs(value - reference) / abs(reference)
    status = "ok" if rel <= WAIT_RTOL else "MISMATCH"
    print(f"  mean wait {name:<9} {value:.12f} s   rel. diff vs servesim {rel:.2e}  {status}")
    if rel > WAIT_RTOL:
        raise AssertionError(f"{name} mean waiting time {value!r} differs from servesim's {reference!r} "
                             f"by {rel:.3e} relative (> {WAIT_RTOL:g})")


def verdict(key: str, value, higher_is_better: bool) -> str:
    if value is None:
        return "skipped"
    ok = value >= TARGETS[key] if higher_is_better else value <= TARGETS[key]
    return f"{'met' if ok else 'NOT met'} (target {'>=' if higher_is_better else '<='} {TARGETS[key]:g})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, help=f"M/M/1 requests for (a)-(c) (default {FULL[0]:,})")
    parser.add_argument("--large-requests", type=int, help=f"requests of the large case (d) (default {FULL[1]:,})")
    parser.add_argument("--multi-requests", type=int,
                        help=f"requests of each multi-replica case (e) (default {FULL[2]:,})")
    parser.add_argument("--repeats", type=int, help=f"runs of each side, in turn: for (a)-(b) the best counts, "
                        f"for (e) the median ratio (default {FULL[3]})")
    parser.add_argument("--quick", action="store_true",
                        help="smaller defaults for a quick run: {:,} / {:,} / {:,} requests, {} repeats".format(*QUICK))
    parser.add_argument("--skip-ciw", action="store_true", help="skip (c)")
    parser.add_argument("--skip-large", action="store_true", help="skip (d)")
    parser.add_argument("--skip-multi", action="store_true", help="skip (e)")
    parser.add_argument("--large-child", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.large_child is not None:
        large_child(args.large_child)
        return 0
    sizes = QUICK if args.quick else FULL  # a size given explicitly wins
    n, large_n, multi_n, repeats = (given if given is not None else default for given, default in
                                    zip((args.requests, args.large_requests, args.multi_requests, args.repeats), sizes))

    print(f"servesim engine benchmark: M/M/1 rho={RHO}, {n:,} requests; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    times = poisson(RHO, count=n, rng=np.random.default_rng(SEED)).times
    cost_model = mm1_cost_model()

    _, results = run_servesim(times, cost_model)  # untimed: the service times the heapq loop replays
    req = results.requests
    if not ((req.status == 0).all() and (req.batch_size == 1).all()):
        raise AssertionError("servesim M/M/1 run did not complete every request in a batch of 1")
    services = req.finish - req.start
    s_wait = float(np.mean(req.start - req.arrival))

    s_all, h_all, again, (h_start, _) = in_turn(repeats, lambda: run_servesim(times, cost_model),
                                                lambda: run_heapq(times, services))
    if not np.array_equal(again.requests.finish, req.finish):
        raise AssertionError("servesim gave another sample path on the same inputs")
    s_best, h_best = min(s_all), min(h_all)
    h_wait = float(np.mean(np.asarray(h_start) - times))

    fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)  # noqa: E731
    servesim_rps, heapq_rps = n / s_best, n / h_best
    print(f"(a) servesim     best {s_best:7.3f} s  {servesim_rps:12,.0f} req/s   runs: {fmt(s_all)} s")
    print(f"(b) heapq loop   best {h_best:7.3f} s  {heapq_rps:12,.0f} req/s   runs: {fmt(h_all)} s")
    ciw_rps = None
    if not args.skip_ciw:
        c_time, simulation = run_ciw(times, services)
        ciw_rps = n / c_time
        c_wait = float(np.mean(ciw_waits(simulation, n)))
        print(f"(c) Ciw          once {c_time:7.3f} s  {ciw_rps:12,.0f} req/s")
    print(f"  same sample path: M/M/1 theory W = rho/(mu-lambda) = {RHO / (1 - RHO):.3f} s "
          f"(this sample path, n={n:,}, need not hit it)")
    print(f"  mean wait servesim  {s_wait:.12f} s")
    check_agree("heapq", h_wait, s_wait)
    print(f"  max |start_heapq - start_servesim| = {np.max(np.abs(np.asarray(h_start) - req.start)):.3e} s")
    if ciw_rps is not None:
        check_agree("Ciw", c_wait, s_wait)

    ratio_vs_heapq = servesim_rps / heapq_rps
    ratio_vs_ciw = None if ciw_rps is None else servesim_rps / ciw_rps
    print(f"ratio_vs_heapq = {ratio_vs_heapq:.3f}  {verdict('ratio_vs_heapq', ratio_vs_heapq, True)}")
    print(f"ratio_vs_ciw   = " + ("skipped" if ratio_vs_ciw is None else
                                  f"{ratio_vs_ciw:.2f}  {verdict('ratio_vs_ciw', ratio_vs_ciw, True)}"))

    large = {}
    if not args.skip_large:
        large = run_large(large_n)
        print(f"(d) large: {large['requests']:,} requests, {LARGE_REPLICAS} replicas, JSQ, "
              f"DynamicBatcher({LARGE_MAX_BATCH}, {LARGE_MAX_WAIT * 1e3:g} ms), cpu_mlp Empirical; "
              f"rate {large['rate']:,.0f} req/s = {LARGE_LOAD} x full-batch capacity "
              f"{large['capacity']:,.0f} req/s")
        print(f"    busy fraction {large['busy_fraction']:.3f}, mean batch {large['mean_batch']:.2f}, "
              f"latency p50 {large['latency_p50_ms']:.2f} ms, p99 {large['latency_p99_ms']:.2f} ms, "
              f"{large['completed']:,} completed")
        print(f"    wall {large['wall_s']:.2f} s ({large['requests'] / large['wall_s']:,.0f} req/s)  "
              f"{verdict('large_wall_s', large['wall_s'], False)}")
        print(f"    peak RSS {large['peak_rss_mb']:.0f} MB (after imports {large['rss_after_imports_mb']:.0f} MB, "
              f"increase {large['peak_rss_mb'] - large['rss_after_imports_mb']:.0f} MB)  "
              f"{verdict('large_peak_rss_mb', large['peak_rss_mb'], False)}")

    cases = [] if args.skip_multi else multi.run_cases(multi_n, repeats)
    worst = min(cases, key=lambda c: c.ratio, default=None)
    ratio_multi = None if worst is None else worst.ratio
    if worst is not None:
        print(f"ratio_vs_heapq_multi = {ratio_multi:.3f} ({worst.case.name})  "
              f"{verdict('ratio_vs_heapq_multi', ratio_multi, True)}")

    rnd = lambda x, d: None if x is None else round(x, d)  # noqa: E731
    print(json.dumps({
        "servesim_rps": rnd(servesim_rps, 1),
        "heapq_rps": rnd(heapq_rps, 1),
        "ciw_rps": rnd(ciw_rps, 1),
        "ratio_vs_heapq": rnd(ratio_vs_heapq, 4),
        "ratio_vs_ciw": rnd(ratio_vs_ciw, 3),
        "large_wall_s": rnd(large.get("wall_s"), 3),
        "large_peak_rss_mb": rnd(large.get("peak_rss_mb"), 1),
        "large_rss_increase_mb": rnd(large["peak_rss_mb"] - large["rss_after_imports_mb"], 1) if large else None,
        "ratio_vs_heapq_multi": rnd(ratio_multi, 4),
        "ratio_vs_heapq_cases": {c.case.name: round(c.ratio, 4) for c in cases} or None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
