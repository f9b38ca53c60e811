"""The cluster engine (``sim.cluster``): pipelines of tasks served by deployments whose
replicas an adapter changes while the run goes on.

Deterministic service times make every time exact; a queueing-theory check (M/M/c
against Erlang C) validates lanes sharing a queue; the plan mechanics — rolling
changes, restarts, quotas, queue hand-over, drops, provisioning cost — are checked on
hand-made traces whose outcome is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servesim.policies.autoscaling import ClusterObservation, Deployment, Plan, StaticAdapter
from servesim.policies.batching import DynamicBatcher, FixedBatcher
from servesim.sim.cluster import ClusterCosts, simulate_cluster
from servesim.sim.errors import SimulationError
from servesim.sim.host import ServingHost
from servesim.policies.routing import JoinShortestQueue
from test_cluster_invariants import window
from servesim.sim.metrics import summarize_cluster
from servesim.sim.records import COMPLETED, DROPPED, REJECTED
from servesim.traces.trace import Trace


def fixed_costs(seconds: dict, load: float = 5.0) -> ClusterCosts:
    """Service time per (task, variant): ``seconds[variant]`` per batch, whatever its size."""
    return ClusterCosts(service=lambda task, variant, cores: (lambda b: seconds[variant]),
                        load_time=lambda task, variant: load)


def fixed(batch: int, latency) -> FixedBatcher:
    """The full-batch policy as the engine builds a deployment's (its latency unused)."""
    return FixedBatcher(batch)


def plan(**deployments) -> Plan:
    return Plan({task: tuple(ds) for task, ds in deployments.items()})


class At:
    """Returns ``plans[k]`` at the k-th call (then nothing)."""

    def __init__(self, interval_s: float, *plans: Plan):
        self.interval_s, self.plans, self.seen = interval_s, list(plans), []

    def decide(self, obs: ClusterObservation):
        self.seen.append(obs)
        return self.plans.pop(0) if self.plans else None


def run(times, tasks=("t",), edges=(), variants=None, costs=None, adapter=None, initial=None, **kw):
    variants = variants or {t: ("a", "b") for t in tasks}
    costs = costs or fixed_costs({"a": 0.1, "b": 0.1})
    initial = initial or Plan({t: (Deployment("a", 1),) for t in tasks})
    return simulate_cluster(Trace(np.asarray(times, float), source="test"), tasks, edges, variants, costs,
                            adapter or StaticAdapter(), initial, **kw)


def test_one_replica_serves_first_come_first_served():
    res = run([0.0, 0.05, 0.3])
    np.testing.assert_allclose(res.finish, [0.1, 0.2, 0.4])
    assert (res.status == COMPLETED).all() and (res.variant["t"] == 0).all()
    assert res.cost_core_seconds() == pytest.approx(0.4)  # one core, up from 0 to the last answer


def test_a_replica_batches_what_is_queued_up_to_its_batch():
    res = run([0.0, 0.01, 0.02, 0.03], initial=plan(t=[Deployment("a", 1, batch=2)]))
    # the first runs alone; the next three wait; two go together, then the last
    np.testing.assert_allclose(res.finish, [0.1, 0.2, 0.2, 0.3])


def test_a_batching_window_waits_for_more_up_to_its_timer():
    """Batch 2 with a 50 ms window (Triton's queue delay): the first request waits for
    the second, 20 ms later, and they run together; a lone request runs when its window
    closes; by default (no window) each runs at once."""
    window = lambda batch, latency: DynamicBatcher(batch, 0.05)  # noqa: E731
    two = plan(t=[Deployment("a", 1, batch=2)])
    res = run([0.0, 0.02, 1.0], initial=two, batching=window)
    np.testing.assert_allclose(res.finish, [0.12, 0.12, 1.15])
    greedy = run([0.0, 0.02, 1.0], initial=two)
    np.testing.assert_allclose(greedy.finish, [0.1, 0.2, 1.1])


def test_a_full_batch_policy_flushes_the_tail_at_every_task_and_a_policy_that_stalls_is_named():
    """FixedBatcher waits for a full batch, as a single-model run's does, and flushes what
    is left once no request can come (the trace routed, the tasks before drained); a policy asking to wait until a time that is not
    later would loop forever, and the run says which policy and task did it."""
    res = run([0.0, 0.01, 0.02, 0.5, 0.6], initial=plan(t=[Deployment("a", 1, batch=3)]), batching=fixed)
    np.testing.assert_allclose(res.finish, [0.12, 0.12, 0.12, 0.7, 0.7])  # 3 together; the last two flushed at 0.6
    np.testing.assert_array_equal(res.table("t").batch_size, [3, 3, 3, 2, 2])

    # downstream too: y's batch of 2 holds one request from 0.1 s; the second, the last
    # arrival, is rejected at x (2 items, x's batch 1) at 0.5 s, and y then flushes its one
    two = Plan({"x": (Deployment("a", 1, batch=1),), "y": (Deployment("a", 1, batch=2),)})
    trace = Trace(np.array([0.0, 0.5]), columns={"size": np.array([1, 2])}, source="test")
    pipeline = simulate_cluster(trace, ("x", "y"), [("x", "y")], {"x": ("a",), "y": ("a",)},
                                fixed_costs({"a": 0.1}), StaticAdapter(), two, batching=fixed)
    np.testing.assert_array_equal(pipeline.status, [COMPLETED, REJECTED])
    np.testing.assert_allclose(pipeline.finish, [0.6, 0.5])

    class Stalls:
        max_batch = 2

        def decide(self, now, queued, oldest, draining, free_since):
            return 0, now

    with pytest.raises(SimulationError, match="Stalls of t/a asked a lane at t=0.0 s to wait until t=0.0 s"):
        run([0.0], batching=lambda batch, latency: Stalls())


def test_requests_of_several_items_batch_by_items_and_larger_than_the_batch_are_rejected():
    """A trace's ``size`` column: a batch takes requests from the head while their items
    fit its plan's batch (the head always goes), and a request of more items than the
    batch can never be served, so it is rejected where it arrives."""
    trace = Trace(np.array([0.0, 0.01, 0.02, 0.03]), columns={"size": np.array([2, 3, 1, 5])}, source="test")
    res = simulate_cluster(trace, ("t",), [], {"t": ("a",)}, fixed_costs({"a": 0.1}), StaticAdapter(),
                           plan(t=[Deployment("a", 1, batch=4)]))
    table = res.table("t")
    np.testing.assert_array_equal(table.status, [COMPLETED, COMPLETED, COMPLETED, REJECTED])
    np.testing.assert_allclose(table.finish, [0.1, 0.2, 0.2, 0.03])  # 2 alone; then 3 + 1 items; 5 > 4 rejected
    np.testing.assert_array_equal(table.batch_size, [2, 4, 4, 0])
    assert res.rejections == {"larger than max_batch": 1} and res.dropped_at.tolist() == [-1, -1, -1, 0]


def test_a_pipeline_adds_up_its_tasks_and_a_diamond_waits_for_both_branches():
    costs = fixed_costs({"a": 0.1, "b": 0.3})
    chain = run([0.0], tasks=("x", "y"), edges=[("x", "y")], costs=costs)
    assert chain.finish[0] == pytest.approx(0.2)
    tasks = ("src", "fast", "slow", "join")
    initial = Plan({"src": (Deployment("a", 1),), "fast": (Deployment("a", 1),),
                    "slow": (Deployment("b", 1),), "join": (Deployment("a", 1),)})
    diamond = run([0.0], tasks=tasks, edges=[("src", "fast"), ("src", "slow"), ("fast", "join"), ("slow", "join")],
                  costs=costs, initial=initial)
    assert diamond.finish[0] == pytest.approx(0.1 + 0.3 + 0.1)  # the join starts after the slow branch


def test_the_summary_says_where_a_pipelines_time_goes():
    """Two requests at once through x then y, one replica each, 0.1 s a batch of one: at x
    the second waits for the first (0.1 s); at y each arrives as the other leaves."""
    res = run([0.0, 0.0], tasks=("x", "y"), edges=[("x", "y")])
    tasks = summarize_cluster(res, {"x": [0.5, 0.5], "y": [0.5, 0.5]})["tasks"]
    assert tasks["x"]["latency_ms"]["mean"] == pytest.approx(150) and tasks["x"]["wait_ms"]["mean"] == pytest.approx(50)
    assert tasks["y"]["latency_ms"]["p99"] == pytest.approx(100) and tasks["y"]["wait_ms"]["p99"] == pytest.approx(0)
    assert tasks["x"]["batches"] == tasks["y"]["batches"] == 2 and tasks["y"]["completed"] == 2
    np.testing.assert_allclose(res.reached("y"), [0.1, 0.2])


def test_quotas_split_a_task_exactly_by_weight():
    initial = plan(t=[Deployment("a", 4, quota=3), Deployment("b", 4, quota=1)])
    res = run(np.arange(400) * 0.1, initial=initial)
    assert np.bincount(res.variant["t"]).tolist() == [300, 100]


def test_a_rolling_change_switches_when_the_new_replicas_have_loaded():
    # at t=10 the adapter asks for variant b; it loads for 5 s; a serves until then
    to_b = plan(t=[Deployment("b", 1)])
    res = run(np.arange(0.0, 30.0, 0.5), adapter=At(10.0, to_b))
    served_by = res.variant["t"]
    assert (served_by[res.arrival < 15.0] == 0).all() and (served_by[res.arrival >= 15.0] == 1).all()
    a, b = sorted(res.replicas, key=lambda r: r.variant)
    assert (a.requested, a.released) == (0.0, 15.0) and (b.requested, b.ready) == (10.0, 15.0)
    assert res.cost_core_seconds() == pytest.approx(15.0 + (res.end_time - 10.0))
    assert res.peak_cores() == 2  # a and b both held from 10 s to 15 s: each plan has 1 core


def test_a_restart_leaves_the_task_without_capacity_until_the_new_replica_loads():
    to_two_cores = Plan({"t": (Deployment("a", 1, cores=2),)}, restart=True)
    res = run(np.arange(0.0, 30.0, 0.5), adapter=At(10.0, to_two_cores), drop_after={"t": 2.0})
    waiting = (res.arrival >= 10.0) & (res.arrival < 15.0)
    # requests of [10, 13) waited past 2 s for the reload and were dropped; the rest were served
    assert (res.status[waiting & (res.arrival < 12.95)] == DROPPED).all()
    assert (res.status[res.arrival >= 13.0] == COMPLETED).all()
    assert res.peak_cores() == 2  # the old replica goes as the new one is requested: never both
    np.testing.assert_allclose(res.finish[res.status == DROPPED], res.arrival[res.status == DROPPED] + 2.0)
    assert (res.dropped_at[res.status == DROPPED] == 0).all()


def test_a_deployment_that_goes_away_hands_its_queue_on():
    # a burst queues at a slow variant; the plan moves the task to b: nothing is lost
    costs = fixed_costs({"a": 1.0, "b": 0.01}, load=0.5)
    res = run(np.r_[np.zeros(20), 5.0], costs=costs, adapter=At(2.0, plan(t=[Deployment("b", 1)])))
    assert (res.status == COMPLETED).all()
    # a served 3 before b was ready at 2.5 (and was busy with the third until 3.0); b served the rest
    assert np.bincount(res.variant["t"]).tolist() == [3, 18]


def test_lanes_of_a_replica_serve_in_parallel_and_threads_use_the_cores_profile():
    seconds = {1: 0.4, 2: 0.25}  # a 2-core lane is faster, not twice as fast
    costs = ClusterCosts(service=lambda task, variant, cores: (lambda b: seconds[cores]), load_time=lambda t, v: 1.0)
    initial = plan(t=[Deployment("a", 1, cores=2)])
    lanes = run([0.0, 0.0], costs=costs, initial=initial, core_mode="lanes")
    threads = run([0.0, 0.0], costs=costs, initial=initial, core_mode="threads")
    np.testing.assert_allclose(lanes.finish, [0.4, 0.4])
    np.testing.assert_allclose(threads.finish, [0.25, 0.5])


def test_the_adapter_sees_the_past_load_and_how_busy_each_deployment_was():
    adapter = At(10.0)
    run(np.arange(0.0, 25.0, 0.5), adapter=adapter)
    first = adapter.seen[0]
    assert first.now == 10.0 and first.counts.tolist() == [2] * 10  # two arrivals a second, never ahead
    assert first.busy_cores[("t", "a", 1)] == pytest.approx(0.2, rel=0.06)  # 0.1 s of work every 0.5 s
    assert first.ready[("t", "a", 1)] == 1


def test_lanes_sharing_a_queue_match_erlang_c():
    rng = np.random.default_rng(3)
    lam, mean_s, c = 8.0, 0.2, 2  # rho = 0.8
    times = np.cumsum(rng.exponential(1 / lam, 40_000))
    draws = iter(rng.exponential(mean_s, 60_000))
    costs = ClusterCosts(service=lambda task, variant, cores: (lambda b: next(draws)), load_time=lambda t, v: 0.0)
    res = run(times, costs=costs, initial=plan(t=[Deployment("a", 1, cores=c)]))
    a = lam * mean_s
    rho = a / c
    tail = a ** c / math.factorial(c) / (1 - rho)
    erlang_c = tail / (sum(a ** k / math.factorial(k) for k in range(c)) + tail)
    expected = erlang_c * mean_s / (c - a) + mean_s  # mean sojourn of M/M/c
    # 40k requests at rho 0.8: the sojourn mean's standard error is about 2% (batch means)
    assert np.mean(res.finish - res.arrival) == pytest.approx(expected, rel=0.06)


def test_same_inputs_same_results_and_bad_plans_are_refused():
    one, two = run(np.arange(50) * 0.07), run(np.arange(50) * 0.07)
    assert np.array_equal(one.finish, two.finish)
    with pytest.raises(SimulationError, match="task 't' has no variant 'zz'"):
        run([0.0], initial=plan(t=[Deployment("zz", 1)]))
    with pytest.raises(ValueError, match="no deployment with replicas and a quota > 0"):
        plan(t=[Deployment("a", 0)])
    with pytest.raises(ValueError, match="replicas must be a whole number >= 0"):
        Deployment("a", -1)


def test_a_serving_host_stretches_one_lanes_batches_and_serves_only_one_lane():
    # Launch-bound (launch_share 1): a batch of 0.1 s starting at t ends at t + 0.1 plus
    # 0.02 for each arrival the host takes in meanwhile, its own request's included (its
    # intake does not delay its own admission to the queue, sim.host).
    res = run([0.0, 0.05, 0.3], host=ServingHost(0.02, 1.0))
    # the first batch takes in the arrivals at 0 and 0.05 (0.14); the second starts then
    # and ends before the arrival at 0.3 (0.24); the third takes in its own (0.42)
    np.testing.assert_allclose(res.finish, [0.14, 0.24, 0.42])
    assert res.host_busy_s == pytest.approx(3 * 0.02 + 3 * 0.1)  # three intakes, three launches
    with pytest.raises(SimulationError, match="one task served by one lane.*got tasks \\['t'\\] and a plan of 2"):
        run([0.0], initial=plan(t=[Deployment("a", 2)]), host=ServingHost(0.02))
    with pytest.raises(SimulationError, match="a plan that never changes.*at t=10.0 s"):
        run(np.arange(0.0, 30.0, 0.5), adapter=At(10.0, plan(t=[Deployment("b", 1)])), host=ServingHost(0.02))


def test_requests_queued_again_keep_their_arrival_times_however_small_the_window():
    # Two replicas with queues of their own; at t=2 a restart leaves one, and the other's
    # queue is queued again behind it, out of arrival order. Those requests must still be
    # dropped on their own arrival times when the engine holds only 2 arrival times as floats.
    times = np.arange(0.0, 6.0, 0.1)

    def restarted():
        return run(times, costs=fixed_costs({"a": 0.25, "b": 0.25}), initial=plan(t=[Deployment("a", 2)]),
                   adapter=At(2.0, Plan({"t": (Deployment("a", 1),)}, restart=True)),
                   routing=lambda key: JoinShortestQueue(), drop_after={"t": 0.7})
    default = restarted()
    with window(2):
        small = restarted()
    assert (default.status == DROPPED).sum() > 10
    np.testing.assert_array_equal(small.status, default.status)
    np.testing.assert_array_equal(small.finish, default.finish)
