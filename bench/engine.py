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

Targets: ``ratio_vs_heapq >= 0.5``, ``ratio_vs_ciw >= 8``, large run ``<= 15 s`` and
``<= 1 GB`` peak RSS. The last line printed is one JSON object with the figures.

    python bench/engine.py                      # full size (~1 minute on 2 cores)
    python bench/engine.py --requests 20000 --large-requests 100000 --skip-ciw
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
from servesim.workloads import PROFILES_DIR, CostModel, Empirical, Exponential, Profile, load_profile  # noqa: E402

RHO = 0.9                 # M/M/1 load: arrival rate 0.9/s, mean service 1 s
SEED = 20240601
REPEATS = 5
WAIT_RTOL = 1e-6          # mean waiting times of (a), (b), (c) must agree this closely
TARGETS = {"ratio_vs_heapq": 0.5, "ratio_vs_ciw": 8.0, "large_wall_s": 15.0, "large_peak_rss_mb": 1024.0}

LARGE_REPLICAS = 8
LARGE_MAX_BATCH = 16
LARGE_MAX_WAIT = 0.5e-3   # seconds
LARGE_LOAD = 0.75         # offered load / full-batch capacity of all replicas

METADATA = {"device": "none (synthetic)", "dtype": "n/a", "framework": "bench/engine.py",
            "date": "2026-01-01", "execution_mode": "synthetic"}


# ----------------------------------------------------------------------------- (a)

def mm1_cost_model() -> CostModel:
    """One stage, batch size 1, median 1000 ms; Exponential noise makes the median the
    mean, so service is exactly exponential with mean 1 s."""
    profile = Profile.from_rows([("bench", "mm1", "serve", 1, 1000.0, 1000.0, 1000.0, 1)], METADATA)
    return CostModel(profile, "mm1", noise=Exponential())


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

def in_turn(repeats: int, first, second) -> tuple[list[float], list[float], object, object]:
    """Time ``first()`` and ``second()`` in turn, ``repeats`` times each; returns both
    sides' seconds and their last results."""
    seconds = ([], [])
    results = [None, None]
    for _ in range(repeats):
        for side, fn in enumerate((first, second)):
            took, results[side] = fn()
            seconds[side].append(took)
    return seconds[0], seconds[1], results[0], results[1]


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
    parser.add_argument("--requests", type=int, default=200_000, help="M/M/1 requests for (a)-(c)")
    parser.add_argument("--large-requests", type=int, default=1_000_000, help="requests of the large case (d)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="repeats of (a) and (b); the best counts")
    parser.add_argument("--skip-ciw", action="store_true", help="skip (c)")
    parser.add_argument("--skip-large", action="store_true", help="skip (d)")
    parser.add_argument("--large-child", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.large_child is not None:
        large_child(args.large_child)
        return 0

    n = args.requests
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

    s_all, h_all, again, (h_start, _) = in_turn(args.repeats, lambda: run_servesim(times, cost_model),
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
        large = run_large(args.large_requests)
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
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
