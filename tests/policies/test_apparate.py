"""Apparate's controller (policies/apparate.py): the hill climb's guarantee on its window,
the exit rule, the emergency rule on a drift, ramp adjustment within the budget, the
history it writes, and that it learns only from what a deployment observes."""

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import servesim.policies.apparate as apparate_module
from servesim.policies.apparate import (
    Apparate, adjust_ramps, bootstrap_ramps, exit_latencies, ramp_utility, replay, tune_thresholds, within_budget,
)
from servesim.policies.exit import BatchFeedback, ExitObservation

N_EXITS = 5
BODY = np.full(N_EXITS, 1e-3)              # 5 ms vanilla
HEAD = np.array([2e-5] * 4 + [0.0])        # each ramp head adds 0.4% of vanilla
ALL = np.ones(N_EXITS, dtype=bool)
FOREVER = 10**9                            # an adjustment period that never comes


def serve(policy, confidence, agrees, time=0.0):
    """Play one batch as the engine does under latency_only (inactive ramps blanked, the
    policy asked at each active exit for the requests still running); its feedback."""
    active = policy.active_exits()
    m, n_exits = confidence.shape
    seen = np.where(active, confidence, np.nan)
    exit_stage = np.full(m, -1, dtype=np.int64)
    running = np.arange(m)
    for i in np.flatnonzero(active):
        if not running.size:
            break
        stop, answer = policy.decide(ExitObservation(int(i), n_exits, seen[running, : i + 1], None, None))
        assert stop.shape == answer.shape == running.shape and (answer == i).all()
        stop = stop | (i == n_exits - 1)
        exit_stage[running[stop]] = i
        running = running[~stop]
    return BatchFeedback(time=time, active=active, confidence=seen, agrees=agrees,
                         final_ran=np.ones(m, dtype=bool), exit_stage=exit_stage)


def requests(rng, m, sure=(), agree=1.0):
    """m requests: ramps in ``sure`` are confident (0.999) and agree with the final exit
    with probability ``agree``; the other ramps are unsure (0.3-0.6), agreeing half the time."""
    confidence = rng.uniform(0.3, 0.6, size=(m, N_EXITS))
    agrees = rng.random((m, N_EXITS)) < 0.5
    for ramp in sure:
        confidence[:, ramp] = 0.999
        agrees[:, ramp] = rng.random(m) < agree
    confidence[:, -1], agrees[:, -1] = 0.9, True
    return confidence, agrees


def feed(policy, rng, batches, m=64, start=0.0, **behaviour):
    """Serve and feed back ``batches`` batches; their feedback."""
    told = []
    for k in range(batches):
        told.append(serve(policy, *requests(rng, m, **behaviour), time=start + k))
        policy.observe(told[-1])
    return told


def agreement(feedback):
    took = feedback.agrees[np.arange(feedback.exit_stage.size), feedback.exit_stage]
    return float((took | (feedback.exit_stage == N_EXITS - 1)).mean())


# ---- the hill climb -----------------------------------------------------------------

@st.composite
def windows(draw):
    """Random windows: ties and extreme confidences, zero-latency segments, any mask."""
    n_exits = draw(st.integers(1, 5))
    m = draw(st.integers(0, 40))
    confidence = draw(arrays(np.float64, (m, n_exits),
                             elements=st.sampled_from([0.0, 0.5, 0.99, 0.995, 0.999, 1.0]) | st.floats(0, 1)))
    agrees = draw(arrays(np.bool_, (m, n_exits)))
    active = np.array(draw(st.lists(st.booleans(), min_size=n_exits, max_size=n_exits)))
    active[-1] = True
    body = np.array(draw(st.lists(st.sampled_from([0.0, 1e-3]) | st.floats(0, 1e-2),
                                  min_size=n_exits, max_size=n_exits)))
    body[-1] += 1e-3
    head = np.array(draw(st.lists(st.sampled_from([0.0, 1e-4]) | st.floats(0, 1e-3),
                                  min_size=n_exits, max_size=n_exits)))
    head[-1] = 0.0
    budget = draw(st.sampled_from([0.0, 0.01, 0.1]) | st.floats(0, 0.3))
    return confidence, agrees, active, body, head, budget


@settings(max_examples=150, deadline=None)
@given(windows())
def test_tuned_thresholds_meet_the_budget_on_their_window(window):
    confidence, agrees, active, body, head, budget = window
    t = tune_thresholds(confidence, agrees, active, body, head, budget)
    assert t.shape == active.shape and ((t >= 0) & (t <= 1)).all()
    assert (t[~active] == 0).all() and t[-1] == 0
    tuned = replay(confidence, agrees, active, t, body, head)
    assert tuned.agreeing >= (1 - budget) * confidence.shape[0] - 1e-9
    assert tuned.gain >= replay(confidence, agrees, active, np.zeros_like(t), body, head).gain - 1e-12


def test_zero_thresholds_exit_nobody_and_cost_vanilla_plus_the_heads():
    rng = np.random.default_rng(1)
    confidence, agrees = requests(rng, 50, sure=(0, 2), agree=0.0)
    active = np.array([True, False, True, True, True])
    none = replay(confidence, agrees, active, np.zeros(N_EXITS), BODY, HEAD)
    assert (none.exits == N_EXITS - 1).all() and none.accuracy == 1.0
    assert none.gain == pytest.approx(-HEAD[active].sum() / BODY.sum())
    policy = Apparate(HEAD, BODY, initial_ramps=[0, 2, 3])
    assert (serve(policy, confidence, agrees).exit_stage == N_EXITS - 1).all()


def test_tuning_exits_at_a_ramp_that_is_confident_and_always_right():
    rng = np.random.default_rng(2)
    confidence, agrees = requests(rng, 200, sure=(2,))
    t = tune_thresholds(confidence, agrees, ALL, BODY, HEAD, 0.01)
    assert t[2] > 1 - 0.999
    exits = replay(confidence, agrees, ALL, t, BODY, HEAD).exits
    assert (exits <= 2).all() and (exits == 2).mean() > 0.9  # the unsure ramps agree too rarely to take many


def test_exit_latencies_follow_the_active_heads():
    active = np.array([True, False, True, False, True])
    latency = exit_latencies(active, BODY, HEAD)
    np.testing.assert_allclose(latency[[0, 2, 4]], [1e-3 + 2e-5, 3e-3 + 4e-5, 5e-3 + 4e-5])
    assert np.isnan(latency[[1, 3]]).all()


# ---- the exit rule ------------------------------------------------------------------

def test_decide_skips_blank_columns_and_stops_everyone_at_the_last_exit():
    policy = Apparate(HEAD, BODY, initial_ramps=[1, 3])
    policy.thresholds[[1, 3]] = 0.2
    nan = np.nan
    confidence = np.array([[nan, 0.9, nan, 0.5], [nan, nan, nan, 0.95], [nan, 0.7, nan, 0.85], [nan, 0.85, nan, 0.1]])
    stop, answer = policy.decide(ExitObservation(1, N_EXITS, confidence[:, :2], None, None))
    assert stop.tolist() == [True, False, False, True] and answer.tolist() == [1] * 4
    stop, _ = policy.decide(ExitObservation(3, N_EXITS, confidence, None, None))
    assert stop.tolist() == [False, True, True, False]
    stop, _ = policy.decide(ExitObservation(0, N_EXITS, np.full((4, 1), 0.99), None, None))
    assert not stop.any()  # ramp 0 is inactive: its confidences, if shown, are ignored
    stop, answer = policy.decide(ExitObservation(4, N_EXITS, np.full((3, 5), nan), None, None))
    assert stop.all() and (answer == 4).all()
    stop, answer = policy.decide(ExitObservation(1, N_EXITS, np.zeros((0, 2)), None, None))
    assert stop.shape == answer.shape == (0,) and answer.dtype == np.int64
    with pytest.raises(ValueError, match="exits"):
        policy.decide(ExitObservation(1, 4, confidence[:, :2], None, None))


# ---- the emergency rule -------------------------------------------------------------

@pytest.mark.parametrize("emergency", ["zero", "scale"])
def test_the_emergency_rule_fires_on_a_drift_and_restores_agreement(emergency):
    rng = np.random.default_rng(3)
    policy = Apparate(HEAD, BODY, initial_ramps=[1], adjustment_period=FOREVER, emergency=emergency)
    feed(policy, rng, 4, sure=(1,))
    tuned = policy.thresholds[1]
    assert tuned > 0.001 and policy.history()["event"][-1] == "tune"
    drift = feed(policy, rng, 1, start=4, sure=(1,), agree=0.0)[0]  # ramp 1 still sure, now wrong
    assert agreement(drift) < 0.5
    assert policy.history()["event"][-1] == "emergency"
    assert policy.thresholds[1] == (0.0 if emergency == "zero" else pytest.approx(0.1 * tuned))
    after = feed(policy, rng, 3, start=5, sure=(1,), agree=0.0)
    assert all(agreement(f) >= 0.99 for f in after)


def test_one_violating_batch_retunes_instead():
    rng = np.random.default_rng(4)
    policy = Apparate(HEAD, BODY, initial_ramps=[1], adjustment_period=FOREVER)
    feed(policy, rng, 200, sure=(1,))
    feed(policy, rng, 1, start=200, m=64, sure=(1,), agree=0.95)  # cumulative agreement stays fine
    assert policy.history()["event"][-1] == "tune"


# ---- ramp adjustment ----------------------------------------------------------------

def test_a_ramp_that_never_exits_is_removed_at_the_next_adjustment():
    rng = np.random.default_rng(5)
    policy = Apparate(HEAD, BODY, initial_ramps=[0, 2], adjustment_period=64)
    feed(policy, rng, 2, m=32, sure=(2,))  # ramp 0 unsure and agreeing half the time: never exits
    history = policy.history()
    assert history["event"][-1] == "adjust"
    assert history["active_ramps"][-1] == "2;3"  # 0 removed; one added midway to the latest feasible ramp
    assert policy.thresholds[3] == policy.new_ramp_threshold and policy.thresholds[2] > 0
    first = feed(policy, rng, 1, m=32, start=2, sure=(3,))[0]  # now only the new ramp is sure
    assert agreement(first) == 1.0  # no violation: what re-tunes is the ramp change
    assert policy.history()["event"][-1] == "tune" and policy.thresholds[3] > 0


def test_ramp_utility():
    active = np.array([True, False, True, False, True])
    rate = np.array([0.0, 0.0, 0.6, 0.0, 0.4])
    u = ramp_utility(rate, active, BODY, HEAD)
    latency = exit_latencies(active, BODY, HEAD)
    assert u[0] == pytest.approx(-1.0 * HEAD[0])          # exits nobody, costs everyone its head
    assert u[2] == pytest.approx(0.6 * (latency[4] - latency[2]) - 0.4 * HEAD[2])
    assert np.isnan(u[[1, 3, 4]]).all()


def test_adjustment_adds_toward_the_input_within_the_budget():
    active = np.array([False, False, False, True, True])
    positive = np.array([[np.nan, np.nan, np.nan, 1e-3, np.nan]])
    rate = np.array([0, 0, 0, 0.5, 0.5])
    grown = adjust_ramps(active, positive, rate, BODY, HEAD, 0.02, None)
    assert grown.tolist() == [False, True, False, True, True]  # (3 - 1) // 2
    assert (adjust_ramps(active, positive, rate, BODY, HEAD, 0.02, 1) == active).all()
    assert (adjust_ramps(active, positive, rate, BODY, HEAD, 0.005, None) == active).all()
    negative = np.array([[-1e-3, np.nan, 1e-3, np.nan, np.nan]])
    two = np.array([True, False, True, False, True])
    mostly = np.array([0, 0, 0.95, 0, 0.05])
    assert adjust_ramps(two, negative, mostly, BODY, HEAD, 0.02, None).tolist() == [False, False, True, False, True]


@pytest.mark.parametrize("ramp_budget, max_ramps", [(0.02, None), (0.05, 2), (0.01, 1), (0.0, None), (0.2, 3)])
def test_active_ramps_never_exceed_the_budget(ramp_budget, max_ramps):
    rng = np.random.default_rng(6)
    head = np.append(rng.uniform(1e-5, 8e-5, N_EXITS - 1), 0.0)
    policy = Apparate(head, BODY, ramp_budget=ramp_budget, max_ramps=max_ramps, adjustment_period=32)
    for k in range(80):
        sure = tuple(rng.choice(N_EXITS - 1, size=rng.integers(0, 3), replace=False))
        policy.observe(serve(policy, *requests(rng, 16, sure=sure, agree=rng.uniform(0.9, 1.0)), time=k))
        assert within_budget(policy.active_exits(), head, BODY, ramp_budget, max_ramps)
    if ramp_budget >= 0.02:
        assert "adjust" in policy.history()["event"]


def test_bootstrap_spaces_ramps_evenly_within_the_budget():
    assert bootstrap_ramps(BODY, HEAD, 0.02, None).tolist() == [True, True, True, False, True]
    assert bootstrap_ramps(BODY, HEAD, 0.02, 1).tolist() == [False, True, False, False, True]
    assert bootstrap_ramps(BODY, HEAD, 0.0, None).tolist() == [False] * 4 + [True]
    deep_head = np.array([2e-5, 2e-5, 2e-5, 5e-3, 0.0])  # ramp 3 alone would cost more than vanilla
    assert not bootstrap_ramps(BODY, deep_head, 1.0, None)[3]


# ---- history, params, fit -----------------------------------------------------------

def test_history_has_one_row_per_change():
    rng = np.random.default_rng(7)
    policy = Apparate(HEAD, BODY, initial_ramps=[1, 3], adjustment_period=FOREVER)
    history = policy.history()
    assert list(history) == ["time"] + [f"threshold_{i}" for i in range(N_EXITS)] + ["active_ramps", "event"]
    assert history["event"] == ["start"] and history["active_ramps"] == ["1;3"] and history["time"] == [0.0]
    feed(policy, rng, 3, start=10.0, sure=(1,))
    history = policy.history()
    assert history["event"] == ["start", "tune"] and history["time"][1] == 10.0  # later batches: no change
    assert len({len(column) for column in history.values()}) == 1
    assert np.isnan([history[f"threshold_{i}"][1] for i in (0, 2, 4)]).all()
    assert history["threshold_1"][1] == policy.thresholds[1] > 0


def test_params_are_the_plain_constructor_arguments():
    policy = Apparate(HEAD, BODY, max_ramps=2, initial_ramps=(1,), emergency="scale")
    params = policy.params()
    json.dumps(params)
    expected = [p for p in inspect.signature(Apparate).parameters if p not in ("head_latency", "body_latency")]
    assert list(params) == expected
    assert params["initial_ramps"] == [1] and params["emergency"] == "scale" and params["max_ramps"] == 2


def test_fit_only_checks_shapes():
    table = type("Table", (), {"n_exits": N_EXITS})()
    policy = Apparate(HEAD, BODY)
    assert policy.fit(table, [0.2] * N_EXITS) is policy
    with pytest.raises(ValueError, match="exits"):
        Apparate(HEAD[1:], BODY[1:]).fit(table, [0.2] * N_EXITS)


@pytest.mark.parametrize("kwargs, match", [
    (dict(head_latency=[1e-5, 1e-5], body_latency=[1e-3, 1e-3]), "no head"),
    (dict(head_latency=[1e-5, 0.0], body_latency=[1e-3]), "one entry per exit"),
    (dict(body_latency=[1e-3, -1e-3, 1e-3, 1e-3, 1e-3]), ">= 0"),
    (dict(accuracy_budget=1.0), "accuracy_budget"),
    (dict(emergency="panic"), "emergency"),
    (dict(initial_step=0.001, min_step=0.01), "min_step"),
    (dict(tuning_window=0), "tuning_window"),
    (dict(max_ramps=-1), "max_ramps"),
    (dict(initial_ramps=[4]), "initial_ramps"),
    (dict(initial_ramps=[0, 1, 2], max_ramps=2), "ramp budget"),
])
def test_bad_arguments_are_refused(kwargs, match):
    arguments = dict(head_latency=HEAD, body_latency=BODY) | kwargs
    with pytest.raises(ValueError, match=match):
        Apparate(**arguments)


# ---- what it may see ----------------------------------------------------------------

class Recording:
    """Forwards attribute reads to a feedback or observation and remembers their names."""

    def __init__(self, wrapped):
        self._wrapped, self.read = wrapped, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._wrapped, name)


def test_it_reads_only_the_observation_and_feedback_fields():
    rng = np.random.default_rng(8)
    policy = Apparate(HEAD, BODY, initial_ramps=[1], adjustment_period=64)
    obs_read, feedback_read = set(), set()
    for k in range(4):
        confidence, agrees = requests(rng, 32, sure=(1,))
        seen = np.where(policy.active_exits(), confidence, np.nan)
        for i in np.flatnonzero(policy.active_exits()):
            obs = Recording(ExitObservation(int(i), N_EXITS, seen[:, : i + 1], None, None))
            policy.decide(obs)
            obs_read |= obs.read
        feedback = Recording(serve(policy, confidence, agrees, time=k))
        policy.observe(feedback)
        feedback_read |= feedback.read
    assert obs_read <= {f.name for f in dataclasses.fields(ExitObservation)}
    assert feedback_read <= {f.name for f in dataclasses.fields(BatchFeedback)}


def test_it_imports_neither_the_engine_nor_the_experiments():
    tree = ast.parse(Path(apparate_module.__file__).read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in modules if m.removeprefix("servesim.").split(".")[0] in ("sim", "experiments", "simpy")}
