"""Adapters driving the cluster engine end to end, on a load step: the qualitative
claims the papers make, checked on a model whose every number is known."""

from __future__ import annotations

import numpy as np

from servesim.policies import infadapter
from servesim.policies.autoscaling import Deployment, Plan
from servesim.policies.predictors import WindowMax
from servesim.policies.scaling import HPA, VPA, InfAdapterPolicy
from servesim.sim.cluster import ClusterCosts, simulate_cluster
from servesim.sim.records import COMPLETED
from servesim.traces.trace import Trace

SERVICE = {"small": 0.05, "big": 0.2}  # s per request on one lane: 20 and 5 req/s per core


def costs() -> ClusterCosts:
    return ClusterCosts(service=lambda task, variant, cores: (lambda b: SERVICE[variant]),
                        load_time=lambda task, variant: 8.0)


def step_trace() -> Trace:
    """5 req/s for 120 s, then 30 req/s for 240 s (Poisson, seeded)."""
    rng = np.random.default_rng(7)
    low = np.cumsum(rng.exponential(1 / 5, 2000))
    low = low[low < 120]
    high = 120 + np.cumsum(rng.exponential(1 / 30, 20000))
    return Trace(np.concatenate([low, high[high < 360]]), source="step")


def violations(res, slo=1.0) -> float:
    return violations_of(res, np.ones(res.arrival.size, bool), slo)


def violations_of(res, which: np.ndarray, slo=1.0) -> float:
    late = (res.status != COMPLETED) | (res.finish - res.arrival > slo)
    return float(late[which].mean())


def run(adapter, initial):
    return simulate_cluster(step_trace(), ["t"], [], {"t": ("small", "big")}, costs(), adapter, initial,
                            drop_after={"t": 2.0})


def test_infadapter_rolls_to_a_variant_mix_and_beats_a_vpa_that_restarts():
    variants = tuple(infadapter.Variant(v, acc, tuple(int(0.8 * n / SERVICE[v]) for n in range(21)), 8.0)
                     for v, acc in (("small", 0.70), ("big", 0.78)))
    start = Plan({"t": (Deployment("big", 1, cores=2),)})
    ours = run(InfAdapterPolicy("t", variants, 20, WindowMax(30)), start)
    vpa = run(VPA("t", "big"), start)
    # the step needs 6 cores of big (30 / 5); VPA only learns it from saturated usage, 15%
    # at a time, and every change recreates the replica (8 s without capacity)
    assert violations(ours) < 0.5 * violations(vpa)
    assert ours.cost_core_seconds() < 20 * 360  # never all of the budget the whole time
    # the step is seen at the 150 s decision and its replicas load until 158 s; once up,
    # every request is served in time
    settled = ours.arrival >= 200
    assert violations_of(ours, settled) < 0.01
    # rolling: a replaced replica retires when its replacement is ready, never before,
    # and is released once its lanes finish the batch in hand (at most 0.2 s)
    (old,) = [r for r in ours.replicas if r.cores == 3]
    (new,) = [r for r in ours.replicas if r.requested == 150.0]
    assert new.ready == 158.0 <= old.released <= 158.0 + SERVICE["big"]


def test_hpa_adds_replicas_for_the_step_and_keeps_them_through_its_stabilisation():
    res = run(HPA("t", "small", target=0.6, max_replicas=10), Plan({"t": (Deployment("small", 1),)}))
    # 30 req/s at 0.05 s is 1.5 busy cores: at a 0.6 target, 3 replicas
    replicas_at_end = sum(1 for r in res.replicas if r.released >= res.end_time)
    assert replicas_at_end >= 3
    # late only while one replica faced the step (a 15 s sync, then 8 s of loading)
    assert violations_of(res, res.arrival >= 200) < 0.01 < violations_of(res, (res.arrival >= 120) & (res.arrival < 150))
