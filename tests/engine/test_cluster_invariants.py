"""Invariants of the cluster engine under random plans, batching windows, drops, exits
and routers over replicas (hypothesis): every request is served or dropped, never lost across rolling changes and
restarts; a served request leaves no earlier than its arrival plus the service of every
task on its path; a dropped one leaves when its wait ran out; the same inputs give
the same results; fast-forward changes nothing but clock rounding, and the window of
arrival times the engine holds as floats (and the step its tables are built in) nothing
at all."""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import given, settings, strategies as st

from servesim.policies.autoscaling import ClusterObservation, Deployment, Plan
from servesim.policies.batching import DynamicBatcher
from servesim.policies.exit import ConfidenceThreshold
from servesim.policies.routing import JoinShortestQueue, RandomRouter, RoundRobin
import servesim.sim.cluster as engine
from servesim.sim.cluster import ClusterCosts, simulate_cluster
from servesim.sim.exits import ExitRun, ExitSetup
from servesim.sim.records import COMPLETED, DROPPED
from test_exits import RAMPS, profile, seg_ms, table
from servesim.traces.trace import Trace
from servesim.workloads.exits import ExitModel, SegmentCosts

ROUTERS = {"shared": lambda: None, "jsq": JoinShortestQueue, "round_robin": RoundRobin,
           "random": lambda: RandomRouter(np.random.default_rng(3))}
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
                drop=draw(st.sampled_from([None, 0.4])),
                router=draw(st.sampled_from(["shared", "jsq", "round_robin", "random"])))


def _exits(n: int):
    """Variant "a" as the three-exit network of test_exits, confident at 0.5 (compute_saving)."""
    prof = profile()
    segments = SegmentCosts(prof, ExitModel.early_exit(prof, "ee", RAMPS))
    setup = ExitSetup(segments, table(), np.arange(n) % 64, ConfidenceThreshold(0.5))
    return lambda task, variant, cores: ExitRun(setup, np.random.default_rng(7)) if variant == "a" else None


def _simulate(case, exits: bool = False, fast_forward: bool = True):
    costs = _costs() if not exits else ClusterCosts(_costs().service, _costs().load_time, _exits(case["times"].size))
    return simulate_cluster(Trace(case["times"], source="test"), case["tasks"], case["edges"],
                            {t: ("a", "b") for t in case["tasks"]}, costs, Scripted(case["changes"]),
                            case["initial"], drop_after=None if case["drop"] is None else
                            {t: case["drop"] for t in case["tasks"]},
                            batching=lambda batch, latency: DynamicBatcher(batch, case["wait"], case["timer"]),
                            routing=lambda key: ROUTERS[case["router"]](), fast_forward=fast_forward)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(clusters(), st.booleans())
def test_no_request_is_lost_late_or_early_and_runs_repeat(case, exits):
    res = _simulate(case, exits)
    assert set(np.unique(res.status)) <= {COMPLETED, DROPPED}
    assert not np.isnan(res.finish).any()
    served = res.status == COMPLETED
    # one item, the fastest variant, at every task (with exits, "a" may answer at its first exit)
    fastest = min(SECONDS["b"], seg_ms(0, 1) / 1e3 if exits else SECONDS["a"]) * len(case["tasks"])
    assert (res.finish[served] >= res.arrival[served] + fastest - 1e-9).all()
    for task in case["tasks"]:
        assert (res.variant[task][served] >= 0).all()  # every task on a served request's path served it
    dropped = res.status == DROPPED
    if case["drop"] is None:
        assert not dropped.any()
    else:  # it left when its wait at some task ran out: no earlier than arrival + the limit
        assert (res.finish[dropped] >= res.arrival[dropped] + case["drop"] - 1e-9).all()
    assert res.cost_core_seconds() > 0 and res.peak_cores() >= 1
    _per_task_columns_are_causal(res, case, exits)
    if exits:  # a request a served at some task left it at one of its exits
        for task in case["tasks"]:
            by_a = served & (res.variant[task] == 0)
            if task not in res.exits:  # "a" never ran at this task
                assert not (res.variant[task] == 0).any()
                continue
            assert (res.exits[task]["exit_stage"][by_a] >= 0).all()
            assert (res.exits[task]["exit_stage"][res.variant[task] == 1] == -1).all()
    again = _simulate(case, exits)
    np.testing.assert_array_equal(again.finish, res.finish)
    np.testing.assert_array_equal(again.status, res.status)
    for task in case["tasks"]:
        np.testing.assert_array_equal(again.stages[task].start, res.stages[task].start)
        np.testing.assert_array_equal(again.stages[task].replica, res.stages[task].replica)
    # the window of arrival times held as floats, and the step the tables are built in, change
    # nothing, however small
    with window(3):
        small = _simulate(case, exits)
    np.testing.assert_array_equal(small.finish, res.finish)
    for task in case["tasks"]:
        np.testing.assert_array_equal(small.stages[task].start, res.stages[task].start)
    # a batch that ends before SimPy's next event ends without one: the same run, up to clock rounding
    stepped = _simulate(case, exits, fast_forward=False)
    np.testing.assert_array_equal(stepped.status, res.status)
    np.testing.assert_allclose(stepped.finish, res.finish, rtol=0, atol=1e-9)
    for task in case["tasks"]:
        np.testing.assert_array_equal(stepped.stages[task].replica, res.stages[task].replica)
        np.testing.assert_allclose(stepped.stages[task].start, res.stages[task].start, rtol=0, atol=1e-9)


@contextlib.contextmanager
def window(size: int):
    """Run with a window of ``size`` arrival times held as floats (sim.cluster.WINDOW), and
    the tables built ``size`` requests at a time (BUILD_ROWS)."""
    defaults = engine.WINDOW, engine.BUILD_ROWS
    engine.WINDOW = engine.BUILD_ROWS = size
    try:
        yield
    finally:
        engine.WINDOW, engine.BUILD_ROWS = defaults


def _per_task_columns_are_causal(res, case, exits: bool) -> None:
    """Each task's columns: a request starts there no earlier than it reached the task (its
    arrival, or its answer upstream), on a replica of the variant recorded that had
    loaded and was not yet released, in a batch of 1 to 4 items, and is answered no
    earlier than the fastest service after; the end-to-end finish is the sink's answer."""
    served = res.status == COMPLETED
    ready = np.array([r.ready for r in res.replicas])
    released = np.array([r.released for r in res.replicas])
    names = np.array([r.variant for r in res.replicas])
    reached = res.arrival
    for task in case["tasks"]:
        stage = res.stages[task]
        here = served | ~np.isnan(stage.finish)
        assert (stage.start[here] >= reached[here] - 1e-12).all()
        replica = stage.replica[here]
        assert (replica >= 0).all()
        assert (ready[replica] <= stage.start[here] + 1e-12).all()
        assert (stage.start[here] <= released[replica] + 1e-12).all()
        assert (names[replica] == np.array(["a", "b"])[res.variant[task][here]]).all()
        assert ((stage.batch_size[here] >= 1) & (stage.batch_size[here] <= 4)).all()
        fastest = min(SECONDS["b"], seg_ms(0, 1) / 1e3 if exits else SECONDS["a"])
        assert (stage.finish[here] >= stage.start[here] + fastest - 1e-9).all()
        table = res.table(task)  # the single-model format: served here, or the request's own fate
        np.testing.assert_array_equal(table.status[here], COMPLETED)
        np.testing.assert_array_equal(table.finish[~here], res.finish[~here])
        reached = np.where(here, stage.finish, reached)
    np.testing.assert_allclose(res.finish[served], reached[served], rtol=0, atol=1e-12)
