"""The engine's two lane loops on what both serve: one task, one deployment of ``r``
replicas, sharing a queue or each with its own behind a router, a plan that never changes
(hypothesis).

``simulate`` serves a single-model run by the lean loop (``_Cluster.steady_lane``) where
it can; the general loop (``_Cluster.lane``) serves every deployment a cluster can have.
Under an adapter that never changes the plan (but is asked, so the general loop runs,
with the adapter's timer in SimPy's queue) the two must give the same request table,
column for column (start, finish, replica, batch size, status), under every batching
window, timer, padding, deadline and drop limit, with requests of one item or several
(those larger than the batch rejected), with service times that depend on the batch
size, exact or noisy, and with a serving host that takes requests in between launching
batches (one replica); and so must the general loop with one SimPy event per batch
(``fast_forward=False``). Arrival times are continuous, so no arrival falls on a
completion. Exits are compared in ``test_cluster_exits.py``.

Before the two engines became one, this test held the cluster engine to the single-model
engine's sample path (worker, dispatcher) on the same cases; the lean loop is that
engine's worker loop.
"""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import given, settings, strategies as st

from enginekit import make_cost
from servesim.policies.autoscaling import Deployment, Plan, StaticAdapter
from servesim.policies.batching import DeadlineBatcher, DynamicBatcher
from servesim.policies.routing import JoinShortestQueue, PowerOfTwoChoices, RandomRouter, RoundRobin
from servesim.sim import simulate
from servesim.sim.cluster import ClusterCosts, simulate_cluster
from servesim.sim.host import ServingHost
from test_cluster_invariants import window
from servesim.traces.trace import Trace
from servesim.workloads import Deterministic, LogNormal

MS = {1: 2.0, 2: 2.6, 3: 3.1, 4: 3.5}  # a batch's time in ms by its size
# each engine gets its own router, seeded alike: the same choices given the same loads
ROUTERS = {"shared": lambda: None, "jsq": JoinShortestQueue, "round_robin": RoundRobin,
           "random": lambda: RandomRouter(np.random.default_rng(5)),
           "power_of_two": lambda: PowerOfTwoChoices(np.random.default_rng(5))}
# none; a launch-bound host (intake 0.3 ms a request); one that launches a third of each batch
HOSTS = [None, ServingHost(3e-4, 1.0), ServingHost(5e-4, 0.3)]


@st.composite
def cases(draw):
    rate = draw(st.sampled_from([100.0, 400.0, 900.0]))  # requests/s: idle to overloaded for 1-3 replicas
    seed = draw(st.integers(0, 2**16))
    n = draw(st.integers(1, 300))
    times = np.cumsum(np.random.default_rng(seed).exponential(1 / rate, n))
    sizes = draw(st.sampled_from([None, 2, 5]))  # items per request: one, or uniform on 1..k
    columns = {} if sizes is None else {"size": np.random.default_rng(seed + 1).integers(1, sizes + 1, n)}
    batch = draw(st.integers(1, 4))
    replicas = draw(st.integers(1, 3))
    # a serving host (sim.host) models one server process: one replica, which every request reaches
    host = draw(st.sampled_from(HOSTS)) if replicas == 1 else None
    return dict(times=times, columns=columns, replicas=replicas, batch=batch, host=host,
                allowed=draw(st.sampled_from([(), tuple(sorted({(batch + 1) // 2, batch}))])),
                wait=draw(st.sampled_from([0.0, 0.001, 0.004])),
                timer=draw(st.sampled_from(["oldest_arrival", "worker_free"])),
                drop=draw(st.sampled_from([None, 0.005, 0.05])),
                noise=draw(st.sampled_from([Deterministic(), LogNormal(0.3)])),
                router=draw(st.sampled_from(sorted(ROUTERS))),
                window=draw(st.sampled_from([None, 4])),  # the cluster engine's window and table-building step
                deadline=draw(st.sampled_from([None, None, 0.004, 0.01])))  # the deadline policy's SLO, s


def batching(case, batch: int, latency):
    """The case's batching policy for a deployment of ``batch`` whose median batch latency
    is ``latency``: the deadline policy where the case has an SLO, else the dynamic one."""
    if case["deadline"] is not None:
        return DeadlineBatcher(case["deadline"], batch, latency)
    return DynamicBatcher(batch, case["wait"], case["timer"], allowed_sizes=case["allowed"])


class Asked(StaticAdapter):
    """Keeps the plan, but is asked every 10 ms: the engine cannot take the plan as fixed,
    so the general lane serves, with the adapter's timer among SimPy's events."""

    interval_s = 0.01


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(cases(), st.booleans())
def test_the_lean_and_the_general_lane_give_one_sample_path(case, fast_forward):
    trace = Trace(case["times"], columns=case["columns"], source="test")
    cost = make_cost(MS, noise=case["noise"])  # noisy: both draw one time per batch, in start order
    batcher = batching(case, case["batch"], cost.batch_latency)
    router = ROUTERS[case["router"]]
    with window(case["window"]) if case["window"] else contextlib.nullcontext():
        single = simulate(trace, cost, batcher, replicas=case["replicas"], router=router(),
                          shared_queue=router() is None, drop_after=case["drop"], rng=np.random.default_rng(0),
                          host=case["host"])
    costs = ClusterCosts(service=lambda task, variant, cores: cost.sampler(np.random.default_rng(0)),
                         load_time=lambda task, variant: 0.0, latency=lambda task, variant, cores: cost.batch_latency)
    cluster = simulate_cluster(trace, ["t"], [], {"t": ("m",)}, costs, Asked(),
                               Plan({"t": (Deployment("m", case["replicas"], batch=case["batch"]),)}),
                               drop_after=None if case["drop"] is None else {"t": case["drop"]},
                               batching=lambda b, latency: batching(case, b, latency),
                               routing=lambda key: router(), host=case["host"], fast_forward=fast_forward)
    np.testing.assert_array_equal(cluster.status, single.requests.status)
    np.testing.assert_allclose(cluster.finish, single.requests.finish, rtol=0, atol=1e-12)
    table, expected = cluster.table("t"), single.requests
    for name in ("arrival", "size", "replica", "batch_size", "status"):
        np.testing.assert_array_equal(getattr(table, name), getattr(expected, name), err_msg=name)
    for name in ("start", "finish"):
        np.testing.assert_allclose(getattr(table, name), getattr(expected, name), rtol=0, atol=1e-12, err_msg=name)
    assert cluster.rejections == single.rejections
    assert cluster.host_busy_s == single.host_busy_s
