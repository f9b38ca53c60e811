"""The engine with exits: early-exit models and cascades under both semantics.

The cost profile is built so that every expected time can be written down by hand:
segment latencies depend on batch size (``SEG_MS``), noise is deterministic, and the
policies are either the shipped simple ones or tiny scripted ones defined here. The
checks: with no exits the engine reproduces the plain model exactly (both semantics);
``latency_only`` never changes the accelerator's timeline, whatever the policy;
``compute_saving`` costs the rest of a batch at its smaller size and stops paying when
the last request has left; recall answers carry the named exit's correctness; the
oracle alone sees ground truth; a cascade pays only consulted members.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from enginekit import COMPLETED, METADATA, poisson_trace
from servesim.policies.batching import DynamicBatcher, FixedBatcher
from servesim.policies.exit import ConfidenceThreshold, ExitObservation, ExitPolicy, NeverExit, Oracle, OracleObservation
from servesim.sim import simulate, summarize
from servesim.sim.errors import SimulationError
from servesim.sim.exits import ExitSetup
from servesim.traces.trace import Trace
from servesim.workloads import CostModel, Profile
from servesim.workloads.behaviour import BehaviourTable
from servesim.workloads.exits import ExitModel, SegmentCosts

# Stage medians in ms per batch size; the 3-exit model is b1,r1 | b2,r2 | b3.
SEG_MS = {
    "b1": {1: 1.0, 2: 1.5, 4: 2.0},
    "r1": {1: 0.1, 2: 0.1, 4: 0.2},
    "b2": {1: 2.0, 2: 3.0, 4: 4.0},
    "r2": {1: 0.2, 2: 0.2, 4: 0.4},
    "b3": {1: 3.0, 2: 4.5, 4: 6.0},
}
RAMPS = {"b1": "r1", "b2": "r2"}


def profile(extra_models: dict | None = None) -> Profile:
    models = {"ee": SEG_MS, **(extra_models or {})}
    rows = [("hw", model, stage, b, ms, ms, ms, 1)
            for model, stages in models.items() for stage, by_batch in stages.items() for b, ms in by_batch.items()]
    return Profile.from_rows(rows, METADATA)


def seg_ms(segment: int, batch: int) -> float:
    stages = (("b1", "r1"), ("b2", "r2"), ("b3",))[segment]
    return sum(SEG_MS[s][batch] for s in stages)


def table(n: int = 64, seed: int = 0, exits: int = 3) -> BehaviourTable:
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.05, 1.0, (n, exits))
    prediction = rng.integers(0, 3, (n, exits)).astype(np.int32)
    label = rng.integers(0, 3, n)
    return BehaviourTable(confidence=confidence, correct=prediction == label[:, None],
                          agrees=prediction == prediction[:, -1:], prediction=prediction, entropy=None,
                          exit_names=tuple(f"e{i}" for i in range(exits)))


def run(trace: Trace, policy: ExitPolicy, semantics: str, batcher=None, beh: BehaviourTable | None = None,
        samples=None, model: ExitModel | None = None, prof: Profile | None = None):
    prof = prof or profile()
    model = model or ExitModel.early_exit(prof, "ee", RAMPS)
    costs = SegmentCosts(prof, model, out_of_range="error")
    beh = beh or table(exits=model.n_exits)
    n = len(trace.times)
    samples = np.arange(n) % beh.n_samples if samples is None else samples
    setup = ExitSetup(costs, beh, samples, policy.fit(beh, costs.stage_costs()), semantics)
    return simulate(trace, costs, batcher or FixedBatcher(4), exits=setup, rng=np.random.default_rng(1))


class Scripted(ExitPolicy):
    """Stops request positions by a fixed rule on their exit-0 confidence; records what it saw."""

    def __init__(self, cut: float = 0.5, answer_first: bool = False):
        self.cut, self.answer_first, self.seen = cut, answer_first, []

    def decide(self, obs):
        self.seen.append(obs)
        m = obs.confidence.shape[0]
        stop = obs.confidence[:, 0] < self.cut if obs.exit_index == 0 else np.zeros(m, bool)
        answer = np.zeros(m, np.int64) if self.answer_first else np.full(m, obs.exit_index, np.int64)
        return stop, answer


def burst(n: int) -> Trace:
    """``n`` requests at t = 0: batches of 4 back to back, every timing known."""
    return Trace(np.zeros(n), source=f"burst({n})")


def test_vanilla_reproduces_the_model_without_its_ramps_under_both_semantics():
    trace = poisson_trace(300.0, 2000, seed=3)
    blocks = {s: SEG_MS[s] for s in ("b1", "b2", "b3")}
    prof = profile({"plain": blocks})
    plain = simulate(trace, CostModel(prof, "plain", out_of_range="error"), DynamicBatcher(4, 0))
    for semantics in ("latency_only", "compute_saving"):
        res = run(trace, NeverExit(), semantics, batcher=DynamicBatcher(4, 0), prof=prof)
        np.testing.assert_allclose(res.requests.start, plain.requests.start, rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.requests.finish, plain.requests.finish, rtol=0, atol=1e-9)
        assert (res.requests.exits["exit_stage"] == 2).all()
        assert (res.requests.exits["stages_paid"] == 3).all()
        np.testing.assert_allclose(res.busy_time, plain.busy_time, rtol=1e-12)


def test_latency_only_keeps_the_accelerator_timeline_whatever_the_policy():
    trace = poisson_trace(250.0, 3000, seed=4)
    base = run(trace, Scripted(0.0), "latency_only", batcher=DynamicBatcher(4, 0))  # every ramp run, no one leaves
    for policy in (ConfidenceThreshold(0.0), ConfidenceThreshold(0.6), Scripted(0.5)):
        res = run(trace, policy, "latency_only", batcher=DynamicBatcher(4, 0))
        np.testing.assert_array_equal(res.requests.start, base.requests.start)
        np.testing.assert_array_equal(res.busy_time, base.busy_time)
        assert res.batches == base.batches
        assert (res.requests.finish <= base.requests.finish + 1e-12).all()  # exits only move answers earlier
        assert (res.requests.exits["stages_paid"] == 3).all()


def test_latency_only_exit_at_the_first_ramp_answers_after_its_segment():
    res = run(burst(8), ConfidenceThreshold(0.0), "latency_only")  # confidence >= 0: everyone stops at exit 0
    req = res.requests
    full = sum(seg_ms(i, 4) for i in range(3)) / 1e3
    np.testing.assert_allclose(req.start, np.repeat([0.0, full], 4))
    np.testing.assert_allclose(req.finish - req.start, seg_ms(0, 4) / 1e3)
    assert (req.exits["exit_stage"] == 0).all()


def test_compute_saving_costs_the_rest_of_the_batch_at_its_smaller_size():
    beh = table(4)
    conf = beh.confidence.copy()
    conf[:, 0] = [0.1, 0.9, 0.2, 0.8]  # positions 0 and 2 leave at exit 0
    beh = BehaviourTable(conf, beh.correct, beh.agrees, beh.prediction, None, beh.exit_names)
    res = run(burst(4), Scripted(0.5), "compute_saving", beh=beh, samples=np.arange(4))
    req = res.requests
    t0 = seg_ms(0, 4)
    expected = np.array([t0, t0 + seg_ms(1, 2) + seg_ms(2, 2), t0, t0 + seg_ms(1, 2) + seg_ms(2, 2)]) / 1e3
    np.testing.assert_allclose(req.finish, expected, rtol=1e-12)
    np.testing.assert_array_equal(req.exits["stages_paid"], [1, 3, 1, 3])
    np.testing.assert_allclose(res.busy_time.sum(), expected.max(), rtol=1e-12)


def test_compute_saving_stops_paying_when_the_last_request_has_left():
    res = run(burst(8), ConfidenceThreshold(0.0), "compute_saving")
    np.testing.assert_allclose(res.busy_time.sum(), 2 * seg_ms(0, 4) / 1e3, rtol=1e-12)
    np.testing.assert_allclose(res.requests.start, np.repeat([0.0, seg_ms(0, 4) / 1e3], 4))
    assert (res.requests.exits["stages_paid"] == 1).all()


def test_recall_answer_carries_the_named_exits_correctness():
    beh = table(64, seed=5)
    res = run(burst(64), Scripted(cut=-1.0, answer_first=True), "compute_saving", beh=beh)
    ex = res.requests.exits
    assert (ex["exit_stage"] == 2).all() and (ex["answered_from"] == 0).all()
    np.testing.assert_array_equal(ex["correct"], beh.correct[ex["sample"], 0])
    np.testing.assert_array_equal(ex["agrees"], beh.agrees[ex["sample"], 0])
    summary = summarize(res)
    assert summary["accuracy"] == pytest.approx(beh.correct[ex["sample"], 0].mean())
    assert summary["exits"]["recalled"] == 1.0


def test_only_the_oracle_sees_ground_truth():
    plain, oracle = Scripted(), Oracle()
    seen = []
    decide = oracle.decide
    oracle.decide = lambda obs: (seen.append(obs), decide(obs))[1]
    run(burst(16), plain, "compute_saving")
    res = run(burst(16), oracle, "compute_saving")
    assert plain.seen and all(type(o) is ExitObservation for o in plain.seen)
    with pytest.raises(AttributeError):
        plain.seen[0].correct  # noqa: B018  (structurally absent)
    assert seen and all(isinstance(o, OracleObservation) for o in seen)
    assert summarize(res)["accuracy"] == pytest.approx(table().correct[np.arange(16)].any(axis=1).mean())


def test_a_policy_naming_an_exit_not_yet_run_is_an_error():
    class Cheat(ExitPolicy):
        def decide(self, obs):
            m = obs.confidence.shape[0]
            return np.ones(m, bool), np.full(m, obs.exit_index + 1)

    with pytest.raises(SimulationError, match="only exits 0..0 have run"):
        run(burst(4), Cheat(), "compute_saving")


def test_cascade_pays_only_consulted_members():
    small = {"s": {1: 1.0, 2: 1.2, 4: 1.5}}
    large = {"l": {1: 5.0, 2: 6.0, 4: 8.0}}
    prof = profile({"small": small, "large": large})
    model = ExitModel.cascade(prof, ["small", "large"])
    res = run(burst(8), ConfidenceThreshold(0.0), "compute_saving", model=model, prof=prof)
    np.testing.assert_allclose(res.busy_time.sum(), 2 * 1.5e-3)
    res = run(burst(8), NeverExit(), "compute_saving", model=model, prof=prof)
    np.testing.assert_allclose(res.busy_time.sum(), 2 * 9.5e-3)


def test_setup_checks():
    prof = profile()
    costs = SegmentCosts(prof, ExitModel.early_exit(prof, "ee", RAMPS))
    with pytest.raises(ValueError, match="2 exits but the model"):
        ExitSetup(costs, table(exits=2), np.zeros(3, int), NeverExit())
    with pytest.raises(ValueError, match="semantics"):
        ExitSetup(costs, table(), np.zeros(3, int), NeverExit(), "sometimes")
    with pytest.raises(ValueError, match="sample indices"):
        ExitSetup(costs, table(8), np.array([0, 8]), NeverExit())
    with pytest.raises(ValueError, match="last backbone stage"):
        ExitModel.early_exit(prof, "ee", {"b3": "r1"})


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 120), rate=st.floats(50, 2000), cut=st.floats(0, 1),
       semantics=st.sampled_from(["latency_only", "compute_saving"]), seed=st.integers(0, 2**16),
       drop=st.sampled_from([None, 0.02]))
def test_invariants_with_exits(n, rate, cut, semantics, seed, drop):
    """Conservation, causality and the exit columns' ranges, for random loads and cuts."""
    trace = poisson_trace(rate, n, seed)
    prof = profile()
    costs = SegmentCosts(prof, ExitModel.early_exit(prof, "ee", RAMPS), out_of_range="error")
    beh = table(50, seed)
    samples = np.random.default_rng(seed).integers(0, 50, n)
    setup = ExitSetup(costs, beh, samples, Scripted(cut), semantics)
    res = simulate(trace, costs, DynamicBatcher(4, 0.001), replicas=2, drop_after=drop, exits=setup)
    req, ex = res.requests, res.requests.exits
    done = req.status == COMPLETED
    assert not np.isnan(req.finish).any()
    assert (req.arrival[done] <= req.start[done]).all() and (req.start[done] < req.finish[done]).all()
    assert ((ex["exit_stage"] >= 0) == done).all()
    assert (ex["answered_from"][done] <= ex["exit_stage"][done]).all()
    paid = ex["stages_paid"][done]
    assert (paid == 3).all() if semantics == "latency_only" else (paid == ex["exit_stage"][done] + 1).all()
    np.testing.assert_array_equal(ex["sample"], samples)


class Learner(ExitPolicy):
    """Switches ramp 0 off after its first feedback; records what it was told and when."""

    learns_online = True

    def __init__(self, active=(True, True, True)):
        self.active, self.told, self.decisions = np.array(active), [], []

    def active_exits(self):
        return self.active

    def observe(self, feedback):
        self.told.append(feedback)

    def decide(self, obs):
        self.decisions.append((obs.exit_index, len(self.told), obs.confidence.copy()))
        m = obs.confidence.shape[0]
        return np.zeros(m, bool), np.full(m, obs.exit_index, np.int64)


def test_an_inactive_ramp_is_neither_paid_nor_shown():
    policy = Learner(active=(False, True, True))
    res = run(burst(4), policy, "latency_only")
    without_r1 = (SEG_MS["b1"][4] + seg_ms(1, 4) + seg_ms(2, 4)) / 1e3
    np.testing.assert_allclose(res.requests.finish, without_r1, rtol=1e-12)
    assert [d[0] for d in policy.decisions] == [1, 2]  # never asked at the inactive ramp 0
    assert np.isnan(policy.decisions[0][2][:, 0]).all() and not np.isnan(policy.decisions[0][2][:, 1]).any()


def test_feedback_reaches_an_online_policy_only_after_its_batch_finished():
    policy = Learner()
    run(burst(12), policy, "latency_only")  # three batches of 4, back to back
    batch = sum(seg_ms(i, 4) for i in range(3)) / 1e3
    # batch k is decided having been told of batches 0..k-1, which had finished when it started
    assert [told for _, told, _ in policy.decisions] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    np.testing.assert_allclose([f.time for f in policy.told], [batch, 2 * batch])
    first = policy.told[0]
    assert first.final_ran.all() and (first.exit_stage == 2).all()
    np.testing.assert_array_equal(first.agrees, table().agrees[np.arange(4)])


def test_compute_saving_feedback_hides_exits_that_never_ran():
    policy = Learner()
    policy.decide = lambda obs: (np.full(obs.confidence.shape[0], obs.exit_index == 0), np.zeros(obs.confidence.shape[0], np.int64))
    run(burst(8), policy, "compute_saving")
    feedback = policy.told[0]
    assert not feedback.final_ran.any() and (feedback.exit_stage == 0).all()
    assert np.isnan(feedback.confidence[:, 1:]).all() and not np.isnan(feedback.confidence[:, 0]).any()


def test_apparate_with_thresholds_held_at_zero_is_vanilla_plus_its_active_heads():
    """Ramps that never agree with the final exit leave Apparate no feasible threshold
    step at a zero budget: nobody exits, agreement is 1, and each request takes the
    vanilla latency plus the heads of the ramps it keeps active (here 0 and 1)."""
    from servesim.policies.apparate import Apparate

    beh = table(64, seed=7)
    agrees = np.zeros_like(beh.agrees)
    agrees[:, -1] = True
    correct = beh.correct.copy()
    correct[:, :-1] = ~correct[:, -1:]  # consistent: a ramp that disagrees is right iff the final is wrong
    beh = BehaviourTable(beh.confidence, correct, agrees, None, None, beh.exit_names)
    prof = profile()
    costs = SegmentCosts(prof, ExitModel.early_exit(prof, "ee", RAMPS))
    policy = Apparate(costs.head_latency(4), costs.body_latency(4), accuracy_budget=0.0, ramp_budget=1.0,
                      initial_ramps=[0, 1], adjustment_period=10**9)
    res = run(burst(64), policy, "latency_only", beh=beh)
    assert summarize(res)["agreement"] == 1.0
    assert (res.requests.exits["exit_stage"] == 2).all()
    np.testing.assert_allclose(res.requests.finish - res.requests.start,
                               sum(seg_ms(i, 4) for i in range(3)) / 1e3, rtol=1e-12)
    assert set(policy.history()["event"]) <= {"start", "tune"}
