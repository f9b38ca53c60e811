"""Offline baselines: the decide() contract, the exit rules, budgets met on the fitting
table, savings where exits are good, and the searches against brute force."""

import json

import numpy as np
import pytest

from servesim.policies.exit import ExitObservation
from servesim.policies.offline import BestStatic, BranchyNet, DeeBERT, _Search, first_exits
from servesim.workloads.behaviour import BehaviourTable, synthetic

COSTS = [0.4, 0.2, 0.2, 0.2]
GOOD = synthetic(4000, [0.9, 0.95, 0.98, 0.99], persistence=0.8, n_classes=10, rng=np.random.default_rng(0))
FACTORIES = {
    "branchynet": BranchyNet,
    "branchynet_plus": lambda **kw: BranchyNet(per_ramp=True, **kw),
    "deebert": DeeBERT,
    "best_static": BestStatic,
}


def observe(table, i, rows=slice(None)):
    return ExitObservation(i, table.n_exits, table.confidence[rows, : i + 1],
                           table.prediction[rows, : i + 1], table.entropy[rows, : i + 1])


def run_decisions(policy, table):
    """The exit each row takes when ``decide`` is asked exit by exit, as the engine does."""
    exits = np.full(table.n_samples, -1)
    running = np.arange(table.n_samples)
    for i in range(table.n_exits):
        stop, answer = policy.decide(observe(table, i, running))
        assert (answer == i).all()
        exits[running[stop]] = i
        running = running[~stop]
    return exits


def thresholded_exits(confidence, t):
    """Apparate's rule written out: the first ramp j with 1 - confidence_j < t_j."""
    ramps = (1 - confidence[:, :-1]) < np.asarray(t)
    return np.where(ramps.any(axis=1), ramps.argmax(axis=1), confidence.shape[1] - 1)


def outcome(table, exits, costs=COSTS):
    rows = np.arange(table.n_samples)
    return table.agrees[rows, exits].mean(), 1 - np.cumsum(costs)[exits].mean()


@pytest.fixture(scope="module")
def fitted():
    return {name: make().fit(GOOD, COSTS) for name, make in FACTORIES.items()}


# --- the contract -------------------------------------------------------------------

@pytest.mark.parametrize("name", FACTORIES)
def test_decide_follows_the_contract_and_the_fitted_rule(fitted, name):
    policy = fitted[name]
    for m in (0, 1, 9):
        for i in range(GOOD.n_exits):
            stop, answer = policy.decide(observe(GOOD, i, slice(0, m)))
            assert stop.dtype == np.bool_ and stop.shape == (m,) and answer.dtype == np.int64
            assert stop.all() or i < GOOD.n_exits - 1
    exits = run_decisions(policy, GOOD)
    assert outcome(GOOD, exits) == (policy.fitted.agreement, policy.fitted.saving)


@pytest.mark.parametrize("name", FACTORIES)
def test_params_are_plain_json_and_names_distinct(fitted, name):
    params = json.loads(json.dumps(fitted[name].params()))
    assert params["accuracy_budget"] == 0.01 and len(params["thresholds"]) == GOOD.n_exits - 1
    assert {type(f).name for f in fitted.values()} == {"branchynet", "deebert", "best_static"}


def test_unfitted_and_misfitted_policies_refuse_to_decide():
    with pytest.raises(ValueError, match="fit"):
        BestStatic().decide(observe(GOOD, 0))
    three = synthetic(50, [0.9, 0.95, 0.99], persistence=0.5, n_classes=3, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="fitted for 3 exits"):
        BestStatic().fit(three, [0.4, 0.3, 0.3]).decide(observe(GOOD, 0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(accuracy_budget=1.0), "accuracy_budget"),
    (dict(grid=1), "grid"),
    (dict(grid=[0.5, 1.5]), r"\[0.0, 1.0\]"),
])
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BestStatic(**kwargs)


def test_entropy_rules_need_entropies():
    no_entropy = BehaviourTable(GOOD.confidence, GOOD.correct, GOOD.agrees, GOOD.prediction, None, GOOD.exit_names)
    for policy in (BranchyNet(), DeeBERT()):
        with pytest.raises(ValueError, match="entropies.*entropy is None"):
            policy.fit(no_entropy, COSTS)
    BestStatic().fit(no_entropy, COSTS)


# --- the rules ----------------------------------------------------------------------

def test_best_static_uses_apparates_strict_rule_and_zero_never_exits():
    """exit iff 1 - confidence < t: a confidence of exactly 1 - t stays, and t = 0 keeps
    even a confidence of 1.0 (so t = 0 is Apparate's always-safe setting)."""
    confidence = np.array([[1.0, 1.0], [0.5, 1.0], [0.7, 1.0]])
    table = BehaviourTable(confidence, np.ones((3, 2), bool), np.ones((3, 2), bool), None, None, ("ramp1", "final"))
    half = BestStatic(grid=[0.0, 0.5]).fit(table, [0.5, 0.5])
    assert half.thresholds() == [0.5]
    assert half.replay(table, [0.5, 0.5]).saving == pytest.approx(0.5 * 2 / 3)
    never = BestStatic(grid=[0.0]).fit(table, [0.5, 0.5])
    assert never.thresholds() == [0.0] and never.replay(table, [0.5, 0.5]).saving == 0.0


def test_branchynet_exits_strictly_below_its_entropy_threshold(fitted):
    policy = fitted["branchynet"]
    t = policy.thresholds()[0]
    assert len(set(policy.thresholds())) == 1  # one shared threshold
    stop, _ = policy.decide(ExitObservation(0, 4, np.full((3, 1), 0.5), None, np.array([[t], [t * 0.99], [t * 1.01]])))
    assert stop.tolist() == [False, True, False]


# --- budgets and savings -----------------------------------------------------------

@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("budget", [0.0, 0.01, 0.05])
def test_the_budget_holds_on_the_fitting_table_and_good_exits_save(name, budget):
    policy = FACTORIES[name](accuracy_budget=budget).fit(GOOD, COSTS)
    assert policy.fitted.agreement >= 1 - budget
    assert policy.fitted.saving > 0.3 or budget == 0  # no budget: exit only where no row disagrees


def test_a_looser_budget_never_saves_less():
    savings = [BestStatic(accuracy_budget=b).fit(GOOD, COSTS).fitted.saving for b in (0.0, 0.005, 0.01, 0.03)]
    assert savings == sorted(savings)


def test_best_static_beats_every_single_threshold_on_its_grid():
    """Brute force over the grid: no shared t meeting the budget saves more, and the
    per-ramp search does find more than the best shared t here."""
    table = synthetic(3000, [0.7, 0.85, 0.95, 0.97], persistence=0.6, n_classes=4, rng=np.random.default_rng(1))
    grid = np.linspace(0, 0.6, 61)
    best = BestStatic(grid=grid.tolist()).fit(table, COSTS).fitted
    shared = [outcome(table, thresholded_exits(table.confidence, [t] * 3)) for t in grid]
    best_shared = max(saving for agreement, saving in shared if agreement >= 0.99)
    assert best.agreement >= 0.99 and best.saving > best_shared + 1e-3


def test_the_per_ramp_variant_saves_at_least_the_shared_one(fitted):
    assert fitted["branchynet_plus"].fitted.saving >= fitted["branchynet"].fitted.saving


def test_a_coordinate_sweep_matches_evaluating_each_cut():
    """The sort-and-suffix-sum shortcut equals evaluating each candidate outright."""
    rng = np.random.default_rng(2)
    search = _Search(GOOD.confidence, GOOD.agrees, np.cumsum(COSTS), 0.01)
    grid = np.quantile(GOOD.confidence, np.linspace(0, 1, 25))
    cut = np.append(rng.choice(grid, 3), -np.inf)
    for j in range(3):
        agree, cost = search.coordinate(cut, j, grid)
        direct = np.array([search.totals(np.where(np.arange(4) == j, g, cut)) for g in grid])
        np.testing.assert_array_equal(agree, direct[:, 0])
        np.testing.assert_allclose(cost, direct[:, 1], rtol=1e-12)


def test_first_exits_takes_the_first_score_above_its_cut_or_the_last():
    score = np.array([[0.2, 0.9, 0.1], [0.95, 0.1, 0.0], [0.1, 0.1, 0.0]])
    assert first_exits(score, np.array([0.9, 0.5, -np.inf])).tolist() == [1, 0, 2]
