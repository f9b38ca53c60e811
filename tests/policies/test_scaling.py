"""The adapters of ``policies.scaling``, one decision at a time on hand-made
observations: what each Kubernetes-like rule and each paper's policy decides, with the
numbers worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.policies import infadapter, ipa
from servesim.policies.autoscaling import ClusterObservation, Deployment, Plan
from servesim.policies.predictors import LastValue
from servesim.policies.scaling import HPA, VPA, ExitAwareInfAdapter, InfAdapterPolicy, IPAPolicy, ModelSwitching


def observe(now, plan, busy=None, ready=None, counts=(0,)):
    return ClusterObservation(now, np.asarray(counts, float), plan, busy or {}, ready or {}, 15.0)


def one(variant="a", replicas=1, cores=1, batch=1):
    return Plan({"t": (Deployment(variant, replicas, cores=cores, batch=batch),)})


def test_hpa_scales_by_the_utilisation_ratio_within_its_tolerance():
    hpa = HPA("t", "a", target=0.7)
    plan = one(replicas=2)
    # 3.5 busy cores on 2 ready 1-core replicas: utilisation 1.75, ratio 2.5 -> ceil(2 * 2.5) = 5
    new = hpa.decide(observe(0.0, plan, {("t", "a", 1): 3.5}, {("t", "a", 1): 2}))
    assert new.tasks["t"][0].replicas == 5 and not new.restart
    # utilisation 0.75: ratio 1.07, inside the 10% tolerance: nothing to do
    assert HPA("t", "a", target=0.7).decide(observe(0.0, plan, {("t", "a", 1): 1.5}, {("t", "a", 1): 2})) is None


def test_hpa_scales_down_only_to_the_highest_recommendation_of_the_last_five_minutes():
    hpa = HPA("t", "a", target=0.5)
    five = one(replicas=5)
    busy, ready = {("t", "a", 1): 2.5}, {("t", "a", 1): 5}  # utilisation 0.5: five is right
    assert hpa.decide(observe(0.0, five, busy, ready)) is None
    idle = {("t", "a", 1): 0.5}  # ratio 0.2 -> one replica, but five was wanted 60 s ago
    assert hpa.decide(observe(60.0, five, idle, ready)) is None
    assert hpa.decide(observe(300.0, five, idle, ready)) is None  # t=0 is still inside the window
    assert hpa.decide(observe(301.0, five, idle, ready)).tasks["t"][0].replicas == 1


def test_vpa_recreates_the_replica_at_the_p90_of_used_cores_plus_a_margin():
    vpa = VPA("t", "a", min_cores=2, max_cores=20)
    plan = one(cores=2)
    new = vpa.decide(observe(30.0, plan, {("t", "a", 2): 2.0}))  # the replica is saturated
    assert new.restart and new.tasks["t"][0].cores == 3  # ceil(2.0 * 1.15)
    # samples 2, 6 (equal weights: the half-life is a day): P90 = 6 -> ceil(6.9) = 7
    new = vpa.decide(observe(60.0, new, {("t", "a", 3): 6.0}))
    assert new.restart and new.tasks["t"][0].cores == 7
    # samples 2, 6, 6: still 7, the replica it has: nothing to do
    assert vpa.decide(observe(90.0, new, {("t", "a", 7): 6.0})) is None


def test_vpa_forgets_old_usage_at_its_half_life():
    vpa = VPA("t", "a", half_life_s=10.0)
    plan = one(cores=10)
    vpa.decide(observe(0.0, plan, {("t", "a", 10): 9.0}))
    # 100 s later the old sample weighs 2^-10 of the new one: the target follows the new usage
    new = vpa.decide(observe(100.0, plan, {("t", "a", 10): 2.5}))
    assert new.tasks["t"][0].cores == 3  # ceil(2.5 * 1.15)


def toy_variants():
    # a: accuracy 0.70, 10 req/s per core; b: accuracy 0.80, 5 req/s per core
    return (infadapter.Variant("a", 0.70, tuple(10 * n for n in range(11)), 1.0),
            infadapter.Variant("b", 0.80, tuple(5 * n for n in range(11)), 1.0))


def test_infadapter_policy_plans_the_programs_optimum_and_stabilises_scale_down():
    policy = InfAdapterPolicy("t", toy_variants(), budget=10, predictor=LastValue())
    start = Plan({"t": (Deployment("a", 1, cores=2),)})  # 20 req/s: too little for 40
    plan = policy.decide(observe(30.0, start, counts=[40]))
    expected = infadapter.solve(infadapter.AllocationProblem(toy_variants(), 40.0, 10, (2, 0)))
    got = {d.variant: (d.total_cores, d.quota) for d in plan.tasks["t"]}
    want = {v.name: (n, q) for v, n, q in zip(toy_variants(), expected.cores, expected.quotas) if n}
    assert got == want == {"b": (8, 40.0)}  # 0.80 - 0.05 * 8/10 - 0.001 beats any mix with a
    assert sum(q for _, q in got.values()) == pytest.approx(40.0)  # the whole predicted load has a quota
    # the predicted load falls: three lower predictions in a row are held back, the fourth goes
    decisions = [policy.decide(observe(60.0 + 30 * k, plan, counts=[10])) for k in range(4)]
    assert decisions[:3] == [None, None, None]
    assert decisions[3].cores() < plan.cores()
    # a prediction that is not lower than the last plan's is followed at once
    assert policy.decide(observe(180.0, decisions[3], counts=[40])).cores() == plan.cores()


def test_the_exit_aware_infadapter_plans_at_the_capacity_the_observed_exit_mix_frees():
    # b with exits: its whole model takes 10 ms, a request leaving at exit 0 4 ms, at exit 1
    # 12 ms (the ramp costs). Half leaving at each: 8 ms a request, capacity x 10/8 = 1.25.
    costs = {"b": (0.010, (0.004, 0.012))}
    aware = ExitAwareInfAdapter("t", toy_variants(), budget=10, predictor=LastValue(), exit_costs=costs)
    plain = InfAdapterPolicy("t", toy_variants(), budget=10, predictor=LastValue())
    start = Plan({"t": (Deployment("b", 1, cores=8),)})
    # no mix seen yet: planned as the whole model, as InfAdapter plans it
    assert aware.decide(observe(30.0, start, counts=[40])) == plain.decide(observe(30.0, start, counts=[40]))
    assert aware.speedup("b") == 1.0
    seen = ClusterObservation(60.0, np.asarray([45.0]), start, {}, {}, 15.0, {("t", "b", 8): (0.5, 0.5)})
    assert aware.speedup("a") == 1.0
    plan = aware.decide(seen)
    assert aware.speedup("b") == pytest.approx(1.25)
    # b now carries 6.25 req/s a core: 45 req/s on 8 cores (50 >= 45), where whole it took 9
    assert {d.variant: d.total_cores for d in plan.tasks["t"]} == {"b": 8}
    assert {d.variant: d.total_cores for d in plain.decide(observe(60.0, start, counts=[45])).tasks["t"]} == {"b": 9}
    # exits that mostly leave late cost more than the whole model: planned below it
    aware.decide(ClusterObservation(90.0, np.asarray([45.0]), plan, {}, {}, 15.0, {("t", "b", 8): (0.0, 1.0)}))
    assert aware.speedup("b") == pytest.approx(10 / 12)


def test_model_switching_runs_one_variant_on_the_least_cores_that_carry_the_load():
    ms = ModelSwitching("t", toy_variants(), budget=10, predictor=LastValue())
    plan = ms.decide(observe(30.0, one("a", cores=2), counts=[30]))
    (d,) = plan.tasks["t"]
    # b carries 30 req/s on 6 cores (AA 0.80 - 0.05 * 6/10 = 0.77 - loading); a on 3 cores
    # (0.70 - 0.015 = 0.685): b wins although it loads anew
    assert (d.variant, d.total_cores) == ("b", 6)


def stage(name, menu):
    return ipa.Stage(name, tuple(ipa.StageVariant(v, acc, 1, (1, 4), lat, thr) for v, acc, lat, thr in menu))


def test_ipa_policy_maps_the_program_and_fa2_rim_pin_what_they_pin():
    stages = (stage("det", [("small", 0.5, (0.05, 0.12), (20.0, 40.0)), ("big", 0.7, (0.2, 0.5), (5.0, 8.0))]),)
    plan = IPAPolicy(stages, sla=1.0, predictor=LastValue()).decide(observe(10.0, one(), counts=[16]))
    # big at batch 4: 2 replicas (2 * 8 >= 16), latency 0.5 + 3/16 <= 1.0, accuracy rank 1: 2 - 2 = 0 beats
    # small's 0 - 1 (one replica at batch 1... 20 >= 16)
    (d,) = plan.tasks["det"]
    assert (d.variant, d.batch, d.replicas) == ("big", 4, 2)
    fa2 = IPAPolicy(stages, sla=1.0, predictor=LastValue(), fix_variant=("small",)).decide(
        observe(10.0, one(), counts=[16]))
    assert fa2.tasks["det"][0].variant == "small"
    rim = IPAPolicy(stages, sla=1.0, predictor=LastValue(), fix_replicas=(1,)).decide(
        observe(10.0, one(), counts=[16]))
    assert rim.tasks["det"][0].replicas == 1 and rim.tasks["det"][0].variant == "small"  # big cannot carry 16 on 1
    assert IPAPolicy(stages, sla=0.01, predictor=LastValue()).decide(observe(10.0, one(), counts=[16])) is None
