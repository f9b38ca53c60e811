"""Exits in the cluster engine: a variant that is an early-exit model serves its batches
exit by exit, each request goes on from its own exit, and the adapter sees the exit mix.

The model is the hand-costed three-exit network of ``test_exits`` (every segment time
written down there). The checks: a one-deployment cluster under an adapter that is asked
(the general lane) gives ``simulate``'s sample path with exits exactly (finish times and
exit columns, both semantics, with a serving host or without); a request that
leaves a batch early reaches the next task at its exit's time, not the batch's end; the
adapter's exit shares are the shares the run's table shows; one lane serving one request
at a time is the M/G/1 queue of its exit mix (Pollaczek-Khinchine).
"""

from __future__ import annotations

import numpy as np
import pytest

from enginekit import batch_means, pk_wq
from servesim.policies.autoscaling import Deployment, Plan, StaticAdapter
from servesim.policies.batching import DynamicBatcher, FixedBatcher
from servesim.policies.exit import ConfidenceThreshold
from servesim.sim import simulate
from servesim.sim.cluster import ClusterCosts, simulate_cluster
from servesim.sim.exits import ExitRun, ExitSetup
from servesim.sim.host import ServingHost
from servesim.sim.metrics import summarize_cluster
from servesim.sim.records import COMPLETED
from test_cluster import At, plan
from test_exits import RAMPS, profile, seg_ms, table
from test_lanes_agree import Asked
from servesim.traces.trace import Trace
from servesim.workloads.behaviour import BehaviourTable
from servesim.workloads.exits import ExitModel, SegmentCosts


def setup(n: int, semantics: str = "compute_saving", threshold: float = 0.6) -> ExitSetup:
    prof = profile()
    costs = SegmentCosts(prof, ExitModel.early_exit(prof, "ee", RAMPS), out_of_range="error")
    beh = table()
    return ExitSetup(costs, beh, np.arange(n) % beh.n_samples, ConfidenceThreshold(threshold), semantics)


def costs(exits: dict, service_s: float = 0.001) -> ClusterCosts:
    """Variants named in ``exits`` play their batches through a fresh ExitRun of that
    setup (seeded as ``simulate`` seeds its own); the rest take ``service_s`` a batch."""
    return ClusterCosts(service=lambda task, variant, cores: (lambda b: service_s),
                        load_time=lambda task, variant: 1.0,
                        exits=lambda task, variant, cores: (ExitRun(exits[variant], np.random.default_rng(1))
                                                            if variant in exits else None))


def poisson(n: int, rate: float, seed: int = 3) -> Trace:
    return Trace(np.cumsum(np.random.default_rng(seed).exponential(1 / rate, n)), source="test")


@pytest.mark.parametrize("host", [None, ServingHost(2e-4, 0.5)], ids=["no_host", "host"])
@pytest.mark.parametrize("semantics", ["compute_saving", "latency_only"])
def test_one_deployment_under_an_adapter_gives_the_single_model_runs_sample_path(semantics, host):
    trace = poisson(400, 500.0)  # busy: batches of several, requests leaving mid-batch
    single = simulate(trace, None, DynamicBatcher(4), exits=setup(400, semantics), rng=np.random.default_rng(1),
                      host=host)
    cluster = simulate_cluster(trace, ["t"], [], {"t": ("ee",)}, costs({"ee": setup(400, semantics)}),
                               Asked(), plan(t=[Deployment("ee", 1, batch=4)]), host=host)
    assert (cluster.status == COMPLETED).all()
    np.testing.assert_array_equal(cluster.finish, single.requests.finish)
    for name in ("exit_stage", "answered_from", "stages_paid", "correct", "agrees", "sample"):
        np.testing.assert_array_equal(cluster.exits["t"][name], single.requests.exits[name], err_msg=name)
    assert len(np.unique(cluster.exits["t"]["exit_stage"])) == 3  # every exit was used
    assert cluster.exit_names == {"t": (single.exit_names,)} == {"t": (("r1", "r2", "final"),)}
    assert cluster.host_busy_s == single.host_busy_s


def test_a_request_goes_on_from_its_own_exit_not_from_the_end_of_its_batch():
    # Four requests at once, batched together, confident at exits 0, 0, 1 and 2; the next
    # task has a lane for each, so nobody queues there: each answer is its exit's time
    # plus the next task's 1 ms. compute_saving runs segment k at the size still running.
    confidence = np.array([[0.9, 0.9, 1.0], [0.9, 0.9, 1.0], [0.1, 0.9, 1.0], [0.1, 0.1, 1.0]])
    correct = np.ones((4, 3), dtype=bool)
    beh = BehaviourTable(confidence=confidence, correct=correct, agrees=correct, prediction=None, entropy=None,
                         exit_names=("e0", "e1", "e2"))
    prof = profile()
    ee = ExitSetup(SegmentCosts(prof, ExitModel.early_exit(prof, "ee", RAMPS), out_of_range="error"), beh,
                   np.arange(4), ConfidenceThreshold(0.5))
    res = simulate_cluster(Trace(np.zeros(4), source="test"), ["a", "b"], [("a", "b")],
                           {"a": ("ee",), "b": ("post",)}, costs({"ee": ee}), StaticAdapter(),
                           plan(a=[Deployment("ee", 1, batch=4)], b=[Deployment("post", 4)]), batching=lambda batch, latency: FixedBatcher(batch))
    assert res.exits["a"]["exit_stage"].tolist() == [0, 0, 1, 2]
    exit0 = seg_ms(0, 4)
    exit1 = exit0 + seg_ms(1, 2)
    exit2 = exit1 + seg_ms(2, 1)
    np.testing.assert_allclose(res.finish * 1e3, np.array([exit0, exit0, exit1, exit2]) + 1.0, rtol=1e-12)
    assert res.variant["b"].tolist() == [0, 0, 0, 0]


def test_the_adapter_sees_the_exit_mix_the_run_records():
    trace = poisson(300, 300.0)
    adapter = At(60.0)  # one look, after every request has been answered
    res = simulate_cluster(trace, ["t"], [], {"t": ("ee", "plain")},
                           costs({"ee": setup(300)}), adapter,
                           plan(t=[Deployment("ee", 1, batch=4, quota=2), Deployment("plain", 1, quota=1)]))
    (seen,) = adapter.seen
    stage = res.exits["t"]["exit_stage"]
    served_by_ee = res.variant["t"] == 0
    assert (stage[~served_by_ee] == -1).all() and (stage[served_by_ee] >= 0).all()
    expected = np.bincount(stage[served_by_ee], minlength=3) / served_by_ee.sum()
    assert list(seen.exits) == [("t", "ee", 1)]  # the plain variant has no exit mix
    np.testing.assert_allclose(seen.exits[("t", "ee", 1)], expected)


def test_accuracy_is_each_requests_answer_where_its_variant_has_exits_else_the_menus():
    trace = poisson(300, 300.0)
    res = simulate_cluster(trace, ["t"], [], {"t": ("ee", "plain")}, costs({"ee": setup(300)}), StaticAdapter(),
                           plan(t=[Deployment("ee", 1, batch=4), Deployment("plain", 1)]))
    summary = summarize_cluster(res, {"t": [0.9, 0.5]})
    ee = res.variant["t"] == 0
    correct = res.exits["t"]["correct"]
    expected = (correct[ee].sum() + 0.5 * (~ee).sum()) / res.arrival.size
    assert summary["accuracy"] == pytest.approx(expected)
    shares = np.bincount(res.exits["t"]["exit_stage"][ee], minlength=3) / ee.sum()
    assert summary["exits"]["t"]["ee"]["share"] == pytest.approx(dict(zip(("r1", "r2", "final"), shares)))
    assert summary["agreement"] == pytest.approx((res.exits["t"]["agrees"][ee].sum() + (~ee).sum()) / res.arrival.size)


def test_one_lane_with_exits_is_the_m_g_1_queue_of_its_exit_mix():
    """Batch 1, compute_saving: a request holds the lane until its own exit, so the lane
    is an M/G/1 queue whose service time is the exit's time, drawn with the exit shares.
    Its mean time in system is Pollaczek-Khinchine's wait plus the mean service."""
    shares = (0.5, 0.3, 0.2)
    rows = np.repeat(np.arange(3), [int(1000 * s) for s in shares])  # each row's exit, in those shares
    confidence = (np.arange(3)[None, :] >= rows[:, None]).astype(float)  # confident from its exit on
    correct = np.ones((rows.size, 3), dtype=bool)
    beh = BehaviourTable(confidence=confidence, correct=correct, agrees=correct, prediction=None, entropy=None,
                         exit_names=("e0", "e1", "e2"))
    prof = profile()
    n, rho = 60_000, 0.6
    exit_s = np.cumsum([seg_ms(k, 1) for k in range(3)]) / 1e3  # 1.1, 3.3, 6.3 ms
    mean_s = float(np.dot(shares, exit_s))
    cv = float(np.sqrt(np.dot(shares, exit_s**2) - mean_s**2) / mean_s)
    trace = poisson(n, rho / mean_s, seed=11)
    ee = ExitSetup(SegmentCosts(prof, ExitModel.early_exit(prof, "ee", RAMPS), out_of_range="error"), beh,
                   np.random.default_rng(12).integers(0, rows.size, n), ConfidenceThreshold(0.5))
    res = simulate_cluster(trace, ["t"], [], {"t": ("ee",)}, costs({"ee": ee}), StaticAdapter(),
                           plan(t=[Deployment("ee", 1)]))
    np.testing.assert_allclose(np.bincount(res.exits["t"]["exit_stage"]) / n, shares, atol=0.01)
    mean, se = batch_means((res.finish - res.arrival)[n // 10:])  # a tenth as warm-up
    assert abs(mean - (pk_wq(rho / mean_s, mean_s, cv) + mean_s)) < 4 * se
