"""Exit policies: the decide() contract, each rule on hand-built observations, the
ground-truth boundary, and fitting the DP-based policies on a small behaviour table."""

import dataclasses
import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

from servesim.policies.exit import (
    ConfidenceThreshold, EntropyThreshold, ExitObservation, NeverExit, Oracle, OracleObservation, Patience,
)
from servesim.policies.stopping import OptimalNoRecall, TTamer, evaluate


@dataclass(frozen=True)
class Table:
    """Stand-in for workloads.behaviour.BehaviourTable (the same attribute names)."""

    confidence: np.ndarray
    correct: np.ndarray
    agrees: np.ndarray
    prediction: Optional[np.ndarray]
    entropy: Optional[np.ndarray]
    exit_names: tuple

    @property
    def n_samples(self):
        return self.confidence.shape[0]

    @property
    def n_exits(self):
        return self.confidence.shape[1]

    def take(self, index):
        pick = (lambda a: None if a is None else a[index])
        return Table(self.confidence[index], self.correct[index], self.agrees[index], pick(self.prediction),
                     pick(self.entropy), self.exit_names)


def make_table(n=600, n_exits=4, classes=5, seed=0):
    """Each input has a difficulty; exit j gets it right with a probability that grows
    with depth and falls with difficulty, and is confident accordingly (with noise)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(classes, size=n)
    difficulty = rng.random(n)[:, None]
    skill = np.arange(1, n_exits + 1)[None, :] / n_exits
    p_right = 1 / (1 + np.exp(-6 * (skill - difficulty)))
    correct = rng.random((n, n_exits)) < p_right
    wrong = (label[:, None] + rng.integers(1, classes, size=(n, n_exits))) % classes
    prediction = np.where(correct, label[:, None], wrong)
    confidence = np.clip(p_right + rng.normal(0, 0.1, size=(n, n_exits)), 1 / classes, 1.0)
    rest = (1 - confidence) / (classes - 1)
    entropy = -(confidence * np.log(confidence) + (classes - 1) * rest * np.log(np.maximum(rest, 1e-300)))
    return Table(confidence, correct, prediction == prediction[:, -1:], prediction, entropy,
                 tuple(f"exit{j}" for j in range(n_exits)))


TABLE = make_table()
COSTS = [0.4, 0.2, 0.2, 0.2]


def observe(table, i, rows=slice(None), oracle=False, **override):
    fields = dict(exit_index=i, n_exits=table.n_exits, confidence=table.confidence[rows, : i + 1],
                  prediction=table.prediction[rows, : i + 1], entropy=table.entropy[rows, : i + 1])
    fields.update(override)
    if oracle:
        return OracleObservation(**fields, correct=table.correct[rows, : i + 1])
    return ExitObservation(**fields)


def hand(i, confidence=None, prediction=None, entropy=None, n_exits=3):
    """An observation from literal per-exit columns (m rows, i+1 columns)."""
    columns = next(np.asarray(a) for a in (confidence, prediction, entropy) if a is not None)
    if confidence is None:
        confidence = np.full(columns.shape, 0.5)
    return ExitObservation(i, n_exits, np.asarray(confidence, dtype=np.float64),
                           None if prediction is None else np.asarray(prediction),
                           None if entropy is None else np.asarray(entropy, dtype=np.float64))


FACTORIES = {
    "never": NeverExit,
    "confidence": lambda: ConfidenceThreshold(0.8),
    "confidence_per_exit": lambda: ConfidenceThreshold([0.9, 0.8, 0.7, 0.0]),
    "entropy": lambda: EntropyThreshold(0.5),
    "patience": lambda: Patience(1),
    "oracle": Oracle,
    "no_recall": lambda: OptimalNoRecall(0.5, bins=50),
    "ttamer": lambda: TTamer(0.5, bins=50),
    "ttamer_confidence": lambda: TTamer(0.5, bins=50, loss="confidence"),
    "ttamer_ssa": lambda: TTamer(0.5, bins=50, aggregate=10),
}


@pytest.fixture(scope="module")
def fitted():
    return {name: make().fit(TABLE, COSTS) for name, make in FACTORIES.items()}


# ---- the contract

@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("m", [0, 1, 7])
def test_decide_returns_bool_stops_and_int64_answers_within_bounds(fitted, name, m):
    policy = fitted[name]
    for i in range(TABLE.n_exits):
        stop, answer = policy.decide(observe(TABLE, i, slice(0, m), oracle=policy.needs_ground_truth))
        assert stop.dtype == np.bool_ and stop.shape == (m,)
        assert answer.dtype == np.int64 and answer.shape == (m,)
        assert ((answer >= 0) & (answer <= i)).all()
        if i == TABLE.n_exits - 1:
            assert stop.all()


@pytest.mark.parametrize("name", FACTORIES)
def test_params_are_plain_json(fitted, name):
    json.dumps(fitted[name].params())
    assert isinstance(fitted[name].name, str) and fitted[name].name


def test_policy_names_are_unique():
    classes = {type(make()) for make in FACTORIES.values()}
    assert len({c.name for c in classes}) == len(classes)


# ---- the simple rules

def test_never_exit_runs_to_the_last_exit():
    policy = NeverExit()
    assert policy.decide(hand(1, [[0.99, 0.99]]))[0].tolist() == [False]
    stop, answer = policy.decide(hand(2, [[0.1, 0.2, 0.3]]))
    assert stop.tolist() == [True] and answer.tolist() == [2]


def test_confidence_threshold_stops_at_or_above_the_threshold_without_recall():
    stop, answer = ConfidenceThreshold(0.8).decide(hand(1, [[0.9, 0.79], [0.1, 0.8], [0.2, 0.95]]))
    assert stop.tolist() == [False, True, True] and answer.tolist() == [1, 1, 1]
    per_exit = ConfidenceThreshold([0.9, 0.5, 1.0])
    assert per_exit.decide(hand(0, [[0.6]]))[0].tolist() == [False]
    assert per_exit.decide(hand(1, [[0.6, 0.6]]))[0].tolist() == [True]
    assert per_exit.decide(hand(2, [[0.6, 0.6, 0.0]]))[0].tolist() == [True]  # the last always stops
    with pytest.raises(ValueError, match="one per exit"):
        per_exit.decide(hand(0, [[0.6]], n_exits=4))


def test_entropy_threshold_stops_strictly_below_and_needs_entropies():
    stop, answer = EntropyThreshold(0.3).decide(hand(1, entropy=[[0.0, 0.3], [1.0, 0.29]]))
    assert stop.tolist() == [False, True] and answer.tolist() == [1, 1]
    with pytest.raises(ValueError, match="entropy"):
        EntropyThreshold(0.3).decide(hand(1, [[0.5, 0.5]]))
    no_entropy = dataclasses.replace(TABLE, entropy=None)
    with pytest.raises(ValueError, match="entropy"):
        EntropyThreshold(0.3).fit(no_entropy, COSTS)


def test_patience_counts_unchanged_predictions_like_pabee():
    one, two = Patience(1), Patience(2)
    assert one.decide(hand(0, prediction=[[3]]))[0].tolist() == [False]
    assert one.decide(hand(1, prediction=[[3, 3], [3, 4]]))[0].tolist() == [True, False]
    assert two.decide(hand(1, prediction=[[3, 3]]))[0].tolist() == [False]
    stop, answer = two.decide(hand(2, prediction=[[3, 3, 3], [4, 3, 3]], n_exits=5))
    assert stop.tolist() == [True, False] and answer.tolist() == [2, 2]
    with pytest.raises(ValueError, match="prediction"):
        one.decide(hand(1, [[0.5, 0.5]]))


def test_oracle_stops_at_the_first_correct_exit():
    correct = np.array([[False, True, True], [False, False, False], [True, False, True]])
    table = dataclasses.replace(TABLE, confidence=np.full((3, 3), 0.5), correct=correct,
                                prediction=np.zeros((3, 3), int), entropy=np.zeros((3, 3)))
    running = np.arange(3)
    for i in range(3):
        stop, answer = Oracle().decide(observe(table, i, running, oracle=True))
        assert (answer == i).all()
        assert stop.tolist() == ([True] * running.size if i == 2 else correct[running, i].tolist())
        running = running[~stop]
    with pytest.raises(TypeError, match="OracleObservation"):
        Oracle().decide(observe(table, 0))


def test_an_exit_observation_has_no_ground_truth_at_all():
    obs = observe(TABLE, 1, slice(0, 3))
    with pytest.raises(AttributeError):
        obs.correct
    with pytest.raises(AttributeError):
        object.__setattr__(obs, "correct", TABLE.correct[:3, :2])  # slots: no room for it
    assert "correct" not in {f.name for f in dataclasses.fields(ExitObservation)}


@pytest.mark.parametrize("name", [n for n, make in FACTORIES.items() if not make().needs_ground_truth])
def test_deployable_policies_ignore_ground_truth(fitted, name):
    """They run on a plain ExitObservation, and flipping the truth changes nothing."""
    policy = fitted[name]
    for i in range(TABLE.n_exits):
        plain = policy.decide(observe(TABLE, i))
        told = policy.decide(observe(TABLE, i, oracle=True))
        lied = policy.decide(dataclasses.replace(observe(TABLE, i, oracle=True), correct=~TABLE.correct[:, : i + 1]))
        for other in (told, lied):
            np.testing.assert_array_equal(plain[0], other[0])
            np.testing.assert_array_equal(plain[1], other[1])


# ---- validation

@pytest.mark.parametrize("make", [
    lambda: ConfidenceThreshold(1.5), lambda: ConfidenceThreshold([]), lambda: ConfidenceThreshold(float("nan")),
    lambda: EntropyThreshold(-0.1), lambda: Patience(0), lambda: Patience(1.5),
    lambda: TTamer(0.0), lambda: TTamer(1.5), lambda: TTamer(0.5, bins=1), lambda: TTamer(0.5, loss="nll"),
    lambda: TTamer(0.5, bins=10, aggregate=11), lambda: TTamer(0.5, aggregate=0),
    lambda: OptimalNoRecall(0.5, smoothing=0.0),
])
def test_bad_parameters_are_value_errors(make):
    with pytest.raises(ValueError):
        make()


def test_fit_checks_stage_costs_and_decide_needs_fit():
    with pytest.raises(ValueError, match="one entry per exit"):
        TTamer(0.5, bins=20).fit(TABLE, [0.5, 0.5])
    with pytest.raises(ValueError, match=">= 0"):
        ConfidenceThreshold(0.5).fit(TABLE, [0.5, -0.1, 0.3, 0.3])
    with pytest.raises(RuntimeError, match="fit"):
        TTamer(0.5).decide(observe(TABLE, 0))
    with pytest.raises(ValueError, match="exits"):
        TTamer(0.5, bins=20).fit(TABLE, COSTS).decide(observe(TABLE, 0, n_exits=5))


# ---- the DP-based policies on a table

@pytest.mark.parametrize("loss", ["calibrated", "agreement", "confidence"])
@pytest.mark.parametrize("lam", [0.2, 0.6, 0.95])
def test_ttamer_beats_or_ties_optimal_no_recall_on_a_fitted_chain(loss, lam):
    recall = TTamer(lam, bins=100, loss=loss, check_recall=False).fit(TABLE, COSTS)  # the DP on the fitted chain
    no_recall = OptimalNoRecall(lam, bins=100, loss=loss).fit(TABLE, COSTS)
    assert recall.value <= no_recall.value + 1e-12
    assert recall.sigma.shape == (TABLE.n_exits, 100)
    assert evaluate(recall.chain, recall.solution.stop_table()) == pytest.approx(recall.value, abs=1e-12)
    assert evaluate(no_recall.chain, no_recall.solution.stop_table(), recall=False) == pytest.approx(
        no_recall.value, abs=1e-12)


def test_ttamer_decide_follows_the_sigma_table_and_recalls_the_best_exit():
    """Online, a request continues iff λ·(best calibrated loss so far) exceeds σ read at
    the current exit's loss, interpolated between the states that exit's samples occupy;
    a request sitting at an occupied state's mean loss is decided by that state's σ."""
    policy = TTamer(0.9, bins=100, loss="confidence").fit(TABLE, COSTS)
    losses = policy.grid.losses(TABLE.confidence)
    for i in range(TABLE.n_exits - 1):
        stop, answer = policy.decide(observe(TABLE, i))
        best = losses[:, : i + 1].min(axis=1)
        at, states = policy.support.anchors[i]
        sigma = np.interp(0.9 * losses[:, i], 0.9 * at, policy.sigma[i + 1, states])
        np.testing.assert_array_equal(stop, ~(0.9 * best > sigma))
        np.testing.assert_array_equal(losses[np.arange(TABLE.n_samples), answer], best)
        # the anchors: the states exit i's samples occupy, at their mean loss
        state = policy.grid.states(TABLE.confidence)[:, i]
        np.testing.assert_array_equal(states, np.unique(state))
        np.testing.assert_allclose(at, [losses[state == s, i].mean() for s in states])
    _, answer = policy.decide(observe(TABLE, TABLE.n_exits - 1))
    assert (answer < TABLE.n_exits - 1).any()  # the noisy confidences make recall pay somewhere


def test_soft_aggregation_at_full_rank_matches_the_exact_fit():
    exact = TTamer(0.5, bins=60).fit(TABLE, COSTS)
    full = TTamer(0.5, bins=60, aggregate=60).fit(TABLE, COSTS)
    assert full.value == pytest.approx(exact.value, abs=1e-12)
    coarse = TTamer(0.5, bins=60, aggregate=5).fit(TABLE, COSTS)
    # the coarse policy, played on the estimated chain, is no better than the optimum
    assert evaluate(exact.chain, coarse.solution.stop_table()) >= exact.value - 1e-12


def test_higher_lambda_buys_accuracy_with_cost():
    """Played on the table itself, a larger λ runs deeper on average."""
    depth = []
    for lam in (0.05, 0.5, 0.99):
        policy = TTamer(lam, bins=100).fit(TABLE, COSTS)
        running, last = np.arange(TABLE.n_samples), np.zeros(TABLE.n_samples, int)
        for i in range(TABLE.n_exits):
            stop, _ = policy.decide(observe(TABLE, i, running))
            last[running[stop]] = i
            running = running[~stop]
        depth.append(last.mean())
    assert depth[0] < depth[1] < depth[2]
