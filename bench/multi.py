"""Multi-replica cases of ``bench/engine.py``: servesim against a heapq loop of the same
rules, on the systems users run.

Twelve cases: 8 replicas behind join-shortest-queue (``jsq``), round robin (``rr``) or
one shared queue (``shared``), at rho 0.3 and 0.9, without batching
(``DynamicBatcher(1, 0)``) and with dynamic batching (``DynamicBatcher(8, 1 ms)``, its
window opening at the oldest queued arrival, Triton's rule). The model is the
quickstart's (``cpu_mlp``'s ``mlp3``, its three stages' medians summed per batch size
1..8) as one stage with ``Exponential()`` noise, so batch *k* (numbered in the order
batches start, over all replicas: servesim draws from one sampler for the deployment)
takes ``latency[size] * f_k``, ``f_k`` the *k*-th exponential variate of the service
seed: per request exponential without batching (M/M/8), and a loop outside servesim can
draw the same times from the batch sizes it forms itself. rho is the arrival rate over
the replicas' capacity at their largest batch: ``8 * max_batch / latency[max_batch]``.

The heapq loop (:func:`heapq_replicas`) is written from the rules, not from the engine:

* routing at each arrival: ``jsq`` the replica with the fewest outstanding requests
  (queued plus in its batch), ties to the lowest index; ``rr`` replicas in turn;
  ``shared`` one FIFO queue for all. An arrival at the instant a batch ends is routed
  first (so JSQ still counts that batch);
* a free replica with nothing queued waits; with ``max_batch`` or more queued it runs
  ``max_batch`` at once; otherwise it runs what is queued once the oldest queued request
  has waited ``max_wait`` (at once without batching), and until then waits for that
  deadline or an arrival, whichever comes first;
* an arrival wakes the replica that has waited longest at its queue; one that wakes
  and does not start waits again at the back of the line, keeping its timer where the
  deadline is the same; timers due at one instant fire in the order they were set.

Events are a heap of ``(time, kind, number, ...)`` tuples (arrivals one at a time, each
pushing the next; batch ends; timers), a deque per queue, lists for the results. It
returns each request's start time and replica, and the check is exact: every start
time and every replica equal to servesim's.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from servesim.policies.batching import DynamicBatcher
from servesim.policies.routing import JoinShortestQueue, RoundRobin
from servesim.sim import engine
from servesim.traces import Trace, poisson
from servesim.workloads import PROFILES_DIR, CostModel, Exponential, Profile, load_profile

from timing import in_turn, median_ratio  # bench/timing.py, next to this file

REPLICAS = 8
ROUTES = ("jsq", "rr", "shared")
LOADS = (0.3, 0.9)
BATCHING = ((1, 0.0), (8, 1e-3))  # (max_batch, max_wait s): none, and the quickstart's dynamic batching
ARRIVAL_SEED, SERVICE_SEED = 20261220, 20261221
METADATA = {"device": "none (synthetic)", "dtype": "n/a", "framework": "bench/multi.py",
            "date": "2026-12-07", "execution_mode": "synthetic"}


@dataclass(frozen=True)
class Case:
    route: str        # one of ROUTES
    rho: float        # arrival rate over the replicas' capacity at max_batch
    max_batch: int
    max_wait: float   # seconds
    replicas: int = REPLICAS

    @property
    def name(self) -> str:
        batching = "nobatch" if self.max_batch == 1 else f"batch{self.max_batch}"
        return f"{self.route}_rho{self.rho:g}_{batching}"

    def router(self):
        """A fresh router for one servesim run (round robin keeps its turn), None for the shared queue."""
        return {"jsq": JoinShortestQueue, "rr": RoundRobin, "shared": lambda: None}[self.route]()


CASES = tuple(Case(route, rho, max_batch, max_wait)
              for max_batch, max_wait in BATCHING for rho in LOADS for route in ROUTES)


@dataclass(frozen=True)
class Inputs:
    """What both sides of every case share: the cost model servesim samples, its median
    latency per batch size (``latency[b]``, seconds) and the exponential factors it
    multiplies them by, in the order batches start (the heapq loop replays them)."""

    cost_model: CostModel
    latency: list
    factors: list


def exponential_model(name: str, medians_ms: dict[int, float]) -> CostModel:
    """A one-stage model whose batch of ``b`` takes ``medians_ms[b]`` times an exponential
    factor of mean 1 (``Exponential`` makes the median the mean): exactly exponential
    service with that mean, one factor per batch."""
    rows = [("bench", name, "serve", b, ms, ms, ms, 1) for b, ms in medians_ms.items()]
    return CostModel(Profile.from_rows(rows, METADATA), name, noise=Exponential())


def quickstart_cost_model() -> CostModel:
    """The quickstart's model as one stage: at each batch size 1..8 the sum of
    ``cpu_mlp``'s ``mlp3`` stage medians, with exponential noise (mean = that sum)."""
    mlp = CostModel(load_profile(PROFILES_DIR / "cpu_mlp.csv"), "mlp3")
    return exponential_model("mlp3_1stage", {b: mlp.batch_latency(b) * 1e3 for b in range(1, 9)})


def inputs(n: int) -> Inputs:
    """The shared inputs for runs of up to ``n`` requests (hence batches). The factors are
    drawn by servesim's own sampler on a profile of median 1 s (``1.0 * f == f``), seeded
    as the runs' sampler is, so they are the variates the runs use, bit for bit."""
    cost_model = quickstart_cost_model()
    draw = exponential_model("unit", {1: 1000.0}).sampler(np.random.default_rng(SERVICE_SEED))
    return Inputs(cost_model, [0.0] + [cost_model.latency("serve", b) for b in range(1, 9)],
                  [draw(1) for _ in range(n)])


def arrival_times(case: Case, n: int, latency: list, seed: int = ARRIVAL_SEED) -> np.ndarray:
    """``n`` Poisson arrival times at the case's rho."""
    rate = case.rho * case.replicas * case.max_batch / latency[case.max_batch]
    return poisson(rate, count=n, rng=np.random.default_rng(seed)).times


# ----------------------------------------------------------------------------- servesim

def run_servesim(case: Case, times: np.ndarray, cost_model: CostModel):
    """Time Trace + simulate; returns (seconds, Results)."""
    t0 = time.perf_counter()
    trace = Trace(times, source=f"bench {case.name}")
    results = engine.simulate(trace, cost_model, DynamicBatcher(case.max_batch, case.max_wait), replicas=case.replicas,
                              router=case.router(), shared_queue=case.route == "shared",
                              rng=np.random.default_rng(SERVICE_SEED))
    return time.perf_counter() - t0, results


# ----------------------------------------------------------------------------- heapq

ARRIVAL, REPLICA = 0, 1  # an arrival at the instant of a replica's event is handled first


def heapq_replicas(arrivals: list, replicas: int, route: str, max_batch: int, max_wait: float,
                   latency: list, factors: list) -> tuple[list, list]:
    """Serve ``arrivals`` on ``replicas`` replicas by the rules of the module docstring;
    batch k takes ``latency[size] * factors[k]``. Returns (start, replica) per request.

    A replica event is ``(time, REPLICA, number, replica, deadline)``: its batch ends
    (``deadline`` None) or its timer for ``deadline`` fires; ``number`` counts the events
    set, so ties fire in the order they were set."""
    n = len(arrivals)
    start = [0.0] * n
    served_by = [0] * n
    shared, jsq = route == "shared", route == "jsq"
    queues = [deque() for _ in range(1 if shared else replicas)]
    line_of = [0] * replicas if shared else list(range(replicas))  # replica -> its queue
    idle = [deque(range(replicas))] if shared else [deque([r]) for r in range(replicas)]  # waiting, longest first
    loads = [0] * replicas      # JSQ: outstanding requests per replica
    in_batch = [0] * replicas   # requests in its batch now
    deadline = [None] * replicas  # the timer a waiting replica waits for (None: none, or not waiting)
    timer_at = [None] * replicas  # its latest timer's deadline while that timer is still to fire
    heap = [(arrivals[0], ARRIVAL, 0)] if n else []
    push, pop = heapq.heappush, heapq.heappop
    number = batches = turn = 0
    while heap:
        event = pop(heap)
        now = event[0]
        if event[1] == ARRIVAL:
            k = event[2]
            if k + 1 < n:
                push(heap, (arrivals[k + 1], ARRIVAL, k + 1))
            if shared:
                line = 0
            elif jsq:
                line = loads.index(0) if 0 in loads else loads.index(min(loads))  # (as servesim: the first idle one)
                loads[line] += 1
            else:
                line = turn
                turn = 0 if turn + 1 == replicas else turn + 1
            queues[line].append(k)
            if not idle[line]:
                continue
            r = idle[line].popleft()
        else:
            r, at = event[3], event[4]
            if at is None:  # its batch ends
                if jsq:
                    loads[r] -= in_batch[r]
            else:  # its timer fires: it wakes if it still waits for this deadline
                if at == timer_at[r]:
                    timer_at[r] = None
                if at != deadline[r]:
                    continue
                idle[line_of[r]].remove(r)
        # replica r is free at `now` and looks at its queue
        queue = queues[line_of[r]]
        size = len(queue)
        if size >= max_batch:
            size = max_batch
        elif not size:
            idle[line_of[r]].append(r)
            deadline[r] = None
            continue
        else:
            due = arrivals[queue[0]] + max_wait
            if now < due:
                idle[line_of[r]].append(r)
                deadline[r] = due
                if timer_at[r] != due:
                    timer_at[r] = due
                    push(heap, (due, REPLICA, number, r, due))
                    number += 1
                continue
        deadline[r] = None
        for _ in range(size):
            i = queue.popleft()
            start[i] = now
            served_by[i] = r
        in_batch[r] = size
        push(heap, (now + latency[size] * factors[batches], REPLICA, number, r, None))
        number += 1
        batches += 1
    return start, served_by


def run_heapq(case: Case, times: np.ndarray, data: Inputs):
    """Time the conversion to lists + the loop; returns (seconds, (start, replica))."""
    t0 = time.perf_counter()
    result = heapq_replicas(times.tolist(), case.replicas, case.route, case.max_batch, case.max_wait,
                            data.latency, data.factors)
    return time.perf_counter() - t0, result


# ----------------------------------------------------------------------------- check and time

@dataclass(frozen=True)
class CaseFigures:
    case: Case
    rate: float                # arrivals per second
    servesim_rps: float        # medians over the repeats
    heapq_rps: float
    ratio: float               # median over the repeats of heapq seconds / servesim seconds
    mean_batch: float


def compare(results, start: list, served_by: list) -> tuple[float, int]:
    """Largest |start difference| (s) and the number of requests on another replica."""
    req = results.requests
    return (float(np.max(np.abs(np.asarray(start) - req.start))),
            int(np.count_nonzero(np.asarray(served_by) != req.replica)))


def measure(case: Case, n: int, data: Inputs, repeats: int) -> CaseFigures:
    """Both sides in turn ``repeats`` times; the sample paths must agree exactly (every
    start time and replica), or it stops with an error."""
    times = arrival_times(case, n, data.latency)
    s_all, h_all, results, (start, served_by) = in_turn(
        repeats, lambda: run_servesim(case, times, data.cost_model), lambda: run_heapq(case, times, data))
    req = results.requests
    if not (req.status == 0).all():
        raise AssertionError(f"{case.name}: servesim did not complete every request")
    diff, moved = compare(results, start, served_by)
    if diff > 0 or moved:
        raise AssertionError(f"{case.name}: the heapq loop's sample path differs from servesim's: "
                             f"max |start difference| {diff:.3e} s, {moved} request(s) on another replica")
    return CaseFigures(case, rate=n / float(times[-1]), servesim_rps=n / float(np.median(s_all)),
                       heapq_rps=n / float(np.median(h_all)), ratio=median_ratio(s_all, h_all),
                       mean_batch=n / results.batches)


def run_cases(n: int, repeats: int, report=print) -> list[CaseFigures]:
    """Every case at ``n`` requests; ``report`` gets one line per case as it is done."""
    data = inputs(n)
    figures = []
    report(f"multi-replica cases: {REPLICAS} replicas, quickstart model (cpu_mlp mlp3 medians, exponential), "
           f"{n:,} requests each, {repeats} runs a side in turn; ratio = median of heapq s / servesim s; "
           f"same path = every start time and replica equal")
    for case in CASES:
        f = measure(case, n, data, repeats)
        report(f"  {case.name:<24} {f.rate:9,.0f} req/s offered, mean batch {f.mean_batch:4.2f}   "
               f"servesim {f.servesim_rps:10,.0f} req/s   heapq {f.heapq_rps:10,.0f} req/s   "
               f"ratio {f.ratio:.3f}   same path")
        figures.append(f)
    return figures
