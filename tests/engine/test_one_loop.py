"""The heapq loop that serves a run's one steady deployment (``sim/one_loop.py``) against
the SimPy lanes it replaces (``_Cluster.steady_lane``, run with ``_Cluster.one_loop``
off): the same sample path, request by request, on random small systems (hypothesis).

Replicas 1-8 (with one to three lanes each under ``core_mode="lanes"``), every router and
the shared queue, batching off, dynamic (either window rule), fixed or deadline-driven,
loads from idle to overloaded (rho 0.2-1.2 of the full-batch capacity), arrival times
continuous or on a grid (arrivals at one instant, and at the instant of a batch's end or
a batching timer, where the order of events decides), a one-stage exponential or
deterministic model (whose batches tie) or the quickstart's three-stage measured model,
drops, and a serving host on one replica. Every column of the request table but the
times (replica, batch size, status) and every figure of the run's summary must be equal,
exactly: both apply one rule in one order. Start and finish agree to the bit but where
SimPy's clock rounds: it adds a delay to its own time, and where the delay is longer
than the time run so far (early in a run) the sum can be one ulp off the time the event
was set for, which the loop, keeping the times it was set for, is not (about one tiny
random trace in 4,000, one in 200 on a grid;
:func:`test_simpys_clock_rounds_where_the_loop_is_exact` shows one). So they are held
to 1e-12 s, far below any service time here."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from enginekit import make_cost
from servesim.policies.autoscaling import Deployment, Plan, StaticAdapter
from servesim.policies.batching import DeadlineBatcher, DynamicBatcher, FixedBatcher
from servesim.policies.routing import JoinShortestQueue, PowerOfTwoChoices, RandomRouter, RoundRobin
from servesim.sim import simulate
from servesim.sim.cluster import ClusterCosts, _Cluster, simulate_cluster
from servesim.sim.host import ServingHost
from servesim.sim.metrics import summarize
from servesim.traces.trace import Trace
from servesim.workloads import PROFILES_DIR, CostModel, Exponential, LogNormal, load_profile
from test_cluster_invariants import window

ROUTERS = {"shared": lambda: None, "jsq": JoinShortestQueue, "round_robin": RoundRobin,
           "random": lambda: RandomRouter(np.random.default_rng(5)),
           "power_of_two": lambda: PowerOfTwoChoices(np.random.default_rng(5))}
MS = {1: 2.0, 2: 2.6, 3: 3.1, 4: 3.5, 5: 3.8, 6: 4.1, 7: 4.3, 8: 4.5}  # a batch's median time by its size
ONE_STAGE = make_cost(MS, noise=Exponential())
EXACT = make_cost(MS)  # deterministic: batches that start together end together (ties)
STAGED = CostModel(load_profile(PROFILES_DIR / "cpu_mlp.csv"), "mlp3", noise=LogNormal(0.3))  # three stages


@st.composite
def systems(draw):
    replicas = draw(st.integers(1, 8))
    lanes = draw(st.sampled_from([1, 1, 2, 3]))  # lanes per replica (core_mode="lanes")
    batch = draw(st.sampled_from([1, 2, 4, 8]))
    cost = draw(st.sampled_from([ONE_STAGE, STAGED, EXACT]))
    rho = draw(st.floats(0.2, 1.2))
    rate = rho * replicas * lanes * batch / cost.batch_latency(batch)
    n = draw(st.integers(1, 400))
    times = np.cumsum(np.random.default_rng(draw(st.integers(0, 2**16))).exponential(1 / rate, n))
    if draw(st.booleans()):  # on a 0.5 ms grid: arrivals at one instant, and at a batch's end or a timer
        times = np.round(times / 5e-4) * 5e-4
    return dict(times=times, replicas=replicas, lanes=lanes, batch=batch, cost=cost,
                policy=draw(st.sampled_from(["dynamic", "dynamic", "fixed", "deadline"])),
                wait=draw(st.sampled_from([0.0, 0.0005, 0.001, 0.004])),
                timer=draw(st.sampled_from(["oldest_arrival", "worker_free"])),
                drop=draw(st.sampled_from([None, None, 0.003, 0.02])),
                router=draw(st.sampled_from(sorted(ROUTERS))),
                host=replicas == 1 and lanes == 1 and draw(st.booleans()),
                window=draw(st.sampled_from([None, 8])))


def batcher(case):
    if case["policy"] == "fixed":
        return FixedBatcher(case["batch"])
    if case["policy"] == "deadline":
        return DeadlineBatcher(0.01, case["batch"], case["cost"].batch_latency)
    return DynamicBatcher(case["batch"], case["wait"], case["timer"])


def serve(case, one_loop: bool):
    """The case's run, by the heapq loop or by SimPy's steady lanes; returns (table, summary)."""
    trace = Trace(case["times"], source="test")
    router = ROUTERS[case["router"]]
    _Cluster.one_loop = one_loop
    try:
        with window(case["window"]) if case["window"] else contextlib.nullcontext():
            if case["lanes"] == 1:
                results = simulate(trace, case["cost"], batcher(case), replicas=case["replicas"], router=router(),
                                   shared_queue=router() is None, drop_after=case["drop"],
                                   rng=np.random.default_rng(0),
                                   host=ServingHost(4e-4, 0.5) if case["host"] else None)
                return results.requests, summarize(results)
            sampler = case["cost"].sampler(np.random.default_rng(0))
            costs = ClusterCosts(service=lambda task, variant, cores: sampler, load_time=lambda task, variant: 0.0)
            results = simulate_cluster(trace, ["t"], [], {"t": ("m",)}, costs, StaticAdapter(),
                                       Plan({"t": (Deployment("m", case["replicas"], cores=case["lanes"],
                                                              batch=case["batch"]),)}),
                                       drop_after=None if case["drop"] is None else {"t": case["drop"]},
                                       batching=lambda b, latency: batcher(case), routing=lambda key: router())
            table = results.table("t")
            return table, {"end": results.end_time, "busy": [r.busy_s for r in results.replicas]}
    finally:
        _Cluster.one_loop = True


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(systems())
def test_the_heapq_loop_and_simpys_lanes_give_one_sample_path(case):
    table, summary = serve(case, True)
    expected, expected_summary = serve(case, False)
    for name in ("arrival", "replica", "batch_size", "status"):
        np.testing.assert_array_equal(getattr(table, name), getattr(expected, name), err_msg=name)
    for name in ("start", "finish"):
        np.testing.assert_allclose(getattr(table, name), getattr(expected, name), rtol=0, atol=1e-12, err_msg=name)
    assert summary == expected_summary


def test_simpys_clock_rounds_where_the_loop_is_exact():
    """The one difference: two replicas, 2 ms batches, a request arriving at 11.55 ms when
    both replicas wait. SimPy's timer for it, set with a delay longer than the time run
    until then, fires 1.7e-18 s after its arrival, and its lane starts it then; the loop
    starts it at its arrival, as every other request here."""
    times = np.array([0.00155, 0.00216, 0.01155, 0.01193])
    starts = {}
    for one_loop in (True, False):
        _Cluster.one_loop = one_loop
        try:
            results = simulate(Trace(times, source="test"), EXACT, DynamicBatcher(1, 0), replicas=2,
                               rng=np.random.default_rng(0))
        finally:
            _Cluster.one_loop = True
        starts[one_loop] = results.requests.start
        assert results.requests.replica.tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(starts[True], times)
    assert 0 < starts[False][2] - times[2] <= 2e-18 and np.array_equal(starts[False][[0, 1, 3]], times[[0, 1, 3]])


def test_the_loop_serves_what_it_is_meant_to():
    """Where the plan has one deployment the loop serves (no SimPy process is made), and a
    plan of two deployments of the task is left to SimPy."""
    made = []
    real = _Cluster.steady_lane

    def counted(self, replica, dep):
        made.append(replica)
        return real(self, replica, dep)

    trace = Trace(np.arange(1, 50) * 1e-3, source="test")
    costs = ClusterCosts(service=lambda task, variant, cores: ONE_STAGE.sampler(np.random.default_rng(0)),
                         load_time=lambda task, variant: 0.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Cluster, "steady_lane", counted)
        one = simulate_cluster(trace, ["t"], [], {"t": ("m", "n")}, costs, StaticAdapter(),
                               Plan({"t": (Deployment("m", 3),)}))
        assert made == [] and (one.status == 0).all()
        two = simulate_cluster(trace, ["t"], [], {"t": ("m", "n")}, costs, StaticAdapter(),
                               Plan({"t": (Deployment("m", 2), Deployment("n", 1))}))
        assert len(made) == 3 and (two.status == 0).all()
