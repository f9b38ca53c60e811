"""Invariants of the cluster engine under random plans, batching windows and drops
(hypothesis): every request is served or dropped, never lost across rolling changes and
restarts; a served request leaves no earlier than its arrival plus the service of every
task on its path; a dropped one leaves when its wait ran out; and the same inputs give
the same results."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from policies.autoscaling import ClusterObservation, Deployment, Plan
from policies.batching import DynamicBatcher
from sim.cluster import ClusterCosts, simulate_cluster
from sim.records import COMPLETED, DROPPED
from traces.trace import Trace

SECONDS = {"a": 0.02, "b": 0.05}  # per batch of one; a batch of b items takes (1 + b) / 2 times that


def _costs() -> ClusterCosts:
    return ClusterCosts(service=lambda task, variant, cores: (lambda b: SECONDS[variant] * (1 + b) / 2),
                        load_time=lambda task, variant: 0.3)


class Scripted:
    """Returns its k-th plan at its k-th call, then nothing."""

    interval_s = 0.5

    def __init__(self, plans):
        self.plans = list(plans)

    def decide(self, observation: ClusterObservation):
        return self.plans.pop(0) if self.plans else None


deployments = st.builds(Deployment, variant=st.sampled_from(["a", "b"]), replicas=st.integers(1, 3),
                        cores=st.integers(1, 2), batch=st.integers(1, 4), quota=st.sampled_from([1.0, 2.0]))


@st.composite
def plans(draw, tasks):
    chosen = {}
    for task in tasks:
        ds = draw(st.lists(deployments, min_size=1, max_size=2, unique_by=lambda d: (d.variant, d.cores)))
        chosen[task] = tuple(ds)
    return Plan(chosen, restart=draw(st.booleans()))


@st.composite
def clusters(draw):
    tasks = draw(st.sampled_from([("t",), ("x", "y")]))
    gaps = draw(st.lists(st.floats(0.0, 0.05), min_size=1, max_size=120))
    return dict(times=np.cumsum(gaps), tasks=tasks, edges=[("x", "y")] if len(tasks) == 2 else [],
                initial=draw(plans(tasks)), changes=draw(st.lists(plans(tasks), max_size=3)),
                wait=draw(st.sampled_from([0.0, 0.01, 0.05])),
                timer=draw(st.sampled_from(["oldest_arrival", "worker_free"])),
                drop=draw(st.sampled_from([None, 0.4])))


def _simulate(case):
    return simulate_cluster(Trace(case["times"], source="test"), case["tasks"], case["edges"],
                            {t: ("a", "b") for t in case["tasks"]}, _costs(), Scripted(case["changes"]),
                            case["initial"], drop_after=None if case["drop"] is None else
                            {t: case["drop"] for t in case["tasks"]},
                            batching=lambda batch: DynamicBatcher(batch, case["wait"], case["timer"]))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(clusters())
def test_no_request_is_lost_late_or_early_and_runs_repeat(case):
    res = _simulate(case)
    assert set(np.unique(res.status)) <= {COMPLETED, DROPPED}
    assert not np.isnan(res.finish).any()
    served = res.status == COMPLETED
    fastest = min(SECONDS.values()) * len(case["tasks"])  # one item, the fastest variant, at every task
    assert (res.finish[served] >= res.arrival[served] + fastest - 1e-9).all()
    for task in case["tasks"]:
        assert (res.variant[task][served] >= 0).all()  # every task on a served request's path served it
    dropped = res.status == DROPPED
    if case["drop"] is None:
        assert not dropped.any()
    else:  # it left when its wait at some task ran out: no earlier than arrival + the limit
        assert (res.finish[dropped] >= res.arrival[dropped] + case["drop"] - 1e-9).all()
    assert res.cost_core_seconds() > 0 and res.peak_cores() >= 1
    again = _simulate(case)
    np.testing.assert_array_equal(again.finish, res.finish)
    np.testing.assert_array_equal(again.status, res.status)
