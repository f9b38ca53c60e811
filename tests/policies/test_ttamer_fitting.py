"""Fitting T-Tamer and optimal no-recall from labelled samples (issue 16): on data drawn
from a known Markov chain of error rates, the fitted recall policy's value converges to
the DP's as samples grow, and it is never worse than the fitted no-recall policy beyond
a stated tolerance, on held-out data, over many random chains.

The data: each request walks a chain of hidden difficulty states, one per exit; state s
makes exit i wrong with probability ``p[s]`` and shows confidence ``1 - p[s]`` (a head
that is calibrated up to its resolution). A policy's value is measured on held-out
requests as the mean of ``λ·p[answer] + (1-λ)·cost paid``: the expected 0/1 loss of
each answer, not a coin flip, so that the comparison is not drowned in label noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from servesim.policies.exit import ExitObservation
from servesim.policies.stopping import MarkovChain, OptimalNoRecall, TTamer, solve_recall
from servesim.workloads.behaviour import BehaviourTable

EXITS, STATES = 3, 4
COSTS = np.full(EXITS, 1.0 / EXITS)


def _random_chain(rng: np.random.Generator):
    """Error rates per state, a start distribution and per-exit kernels in which
    difficulty mostly persists (as it does on real networks)."""
    p = np.sort(rng.uniform(0.02, 0.6, STATES))[::-1]  # state 0 the hardest
    start = rng.dirichlet(np.ones(STATES))
    kernels = []
    for _ in range(EXITS - 1):
        k = rng.dirichlet(np.ones(STATES) * 0.5, size=STATES) * 0.5 + 0.5 * np.eye(STATES)
        kernels.append(k / k.sum(axis=1, keepdims=True))
    return p, start, kernels


def _draw(p, start, kernels, n: int, rng: np.random.Generator):
    """n requests' hidden states (n, EXITS) and their behaviour table."""
    states = np.empty((n, EXITS), dtype=np.intp)
    states[:, 0] = rng.choice(STATES, size=n, p=start)
    for i, k in enumerate(kernels):
        cumulative = k[states[:, i]].cumsum(axis=1)
        states[:, i + 1] = (rng.random((n, 1)) > cumulative).sum(axis=1)
    wrong = rng.random((n, EXITS)) < p[states]
    return states, _table(1 - p[states], ~wrong)


def _table(confidence: np.ndarray, correct: np.ndarray) -> BehaviourTable:
    agrees = correct & correct[:, -1:]  # two wrong answers are taken to differ
    agrees[:, -1] = True
    names = tuple(f"ramp{j}" for j in range(1, correct.shape[1])) + ("final",)
    return BehaviourTable(confidence=confidence, correct=correct, agrees=agrees, prediction=None, entropy=None,
                          exit_names=names)


def _value(policy, states, p, lam: float) -> float:
    """The policy's mean ``λ·p[answer] + (1-λ)·cost`` on requests with these hidden states."""
    n = states.shape[0]
    confidence = 1 - p[states]
    running, objective = np.arange(n), np.zeros(n)
    for i in range(EXITS):
        obs = ExitObservation(i, EXITS, confidence[running, : i + 1], None, None)
        stop, answer = policy.decide(obs)
        stop = np.ones(running.size, bool) if i == EXITS - 1 else np.asarray(stop, bool)
        done = running[stop]
        objective[done] = lam * p[states[done, np.asarray(answer)[stop]]] + (1 - lam) * COSTS[: i + 1].sum()
        running = running[~stop]
    return float(objective.mean())


def _true_optimum(p, start, kernels, lam: float) -> float:
    """The DP value of the true chain: losses are the states' error rates."""
    order = np.argsort(p)  # the DP's support must be increasing
    rank = np.empty(STATES, dtype=np.intp)
    rank[order] = np.arange(STATES)
    chain = MarkovChain(values=lam * p[order], initial=start[order],
                        kernels=[k[np.ix_(order, order)] for k in kernels], costs=(1 - lam) * COSTS)
    return solve_recall(chain).value


@pytest.mark.parametrize("seed", range(3))
def test_the_fitted_recall_policy_converges_to_the_dp_value(seed):
    """Held out, the policy fitted on 300 samples is within 0.02 of the optimum at best;
    fitted on 20,000 it is within 0.005, and no worse than the small fit."""
    rng = np.random.default_rng(seed)
    p, start, kernels = _random_chain(rng)
    lam = 0.8
    test_states, _ = _draw(p, start, kernels, 40_000, rng)
    optimum = _true_optimum(p, start, kernels, lam)
    gaps = []
    for n in (300, 20_000):
        _, table = _draw(p, start, kernels, n, rng)
        gaps.append(_value(TTamer(lam).fit(table, COSTS), test_states, p, lam) - optimum)
    # 40,000 held-out requests measure a value to about +-0.002 (objective sd < 0.4)
    assert gaps[1] < 0.005 and gaps[1] <= gaps[0] + 0.004, gaps


def test_the_fitted_recall_policy_is_never_worse_than_no_recall():
    """Over 20 random chains, 5,000 labelled samples each, λ in {0.6, 0.9}: held out, the
    fitted T-Tamer's value exceeds the fitted optimal no-recall rule's by at most 0.01,
    and on average it is lower. The tolerance is what the fit's out-of-fold check can
    resolve on 5,000 samples: it falls back to no recall where recall is worse by more
    than two standard errors of the paired difference, measured at 0 to 0.005 on these
    chains (0 where both rules decide alike)."""
    rng = np.random.default_rng(7)
    differences = []
    for _ in range(20):
        p, start, kernels = _random_chain(rng)
        _, table = _draw(p, start, kernels, 5_000, rng)
        test_states, _ = _draw(p, start, kernels, 20_000, rng)
        for lam in (0.6, 0.9):
            recall = _value(TTamer(lam).fit(table, COSTS), test_states, p, lam)
            no_recall = _value(OptimalNoRecall(lam).fit(table, COSTS), test_states, p, lam)
            differences.append(recall - no_recall)
    assert max(differences) <= 0.01, max(differences)
    assert np.mean(differences) <= 0.0


def test_recall_needs_a_difference_beyond_the_noise():
    """An earlier exit whose calibrated loss is lower only within its standard errors is
    not recalled: the answer stays with the exit just run."""
    rng = np.random.default_rng(0)
    n = 400
    confidence = np.column_stack([rng.uniform(0.5, 1, n), rng.uniform(0.5, 1, n)])
    correct = rng.random((n, 2)) < 0.8  # both exits 80% right whatever their confidence
    table = _table(confidence, correct)
    policy = TTamer(0.9).fit(table, [0.5, 0.5])
    _, answer = policy.decide(ExitObservation(1, 2, confidence, None, None))
    assert (answer == 1).mean() > 0.95


def _exits_taken(policy, confidence: np.ndarray):
    """(exit stopped at, exit answered from) of every request."""
    n = confidence.shape[0]
    stopped, answered = np.full(n, EXITS - 1), np.full(n, EXITS - 1)
    running = np.arange(n)
    for i in range(EXITS):
        stop, answer = policy.decide(ExitObservation(i, EXITS, confidence[running, : i + 1], None, None))
        stop = np.ones(running.size, bool) if i == EXITS - 1 else np.asarray(stop, bool)
        stopped[running[stop]], answered[running[stop]] = i, np.asarray(answer)[stop]
        running = running[~stop]
    return stopped, answered


class _TrueIndex:
    """The true chain's recall index, deciding on the true error rates (confidence 1 - p)."""

    def __init__(self, p, start, kernels, lam):
        self.order = np.argsort(p)
        self.rank = np.empty(STATES, dtype=np.intp)
        self.rank[self.order] = np.arange(STATES)
        self.p = p
        chain = MarkovChain(values=lam * p[self.order], initial=start[self.order],
                            kernels=[k[np.ix_(self.order, self.order)] for k in kernels], costs=(1 - lam) * COSTS)
        self.index = solve_recall(chain)

    def decide(self, obs):
        state = np.abs((1 - obs.confidence)[..., None] - self.p).argmin(axis=-1)
        return self.index.decide(self.rank[state])


@pytest.mark.parametrize("seed", range(3))
def test_given_the_true_model_the_fit_changes_nothing(seed):
    """Where the data is the true model (confidence = 1 - error rate, 20,000 samples), the
    fitted policy stops and answers where the true chain's index does, request by
    request (all but ties and calibration blur at state boundaries: >= 97%). The error
    rates are drawn at least 0.05 apart, so that the coarsest grid validation may choose
    (25 bins of 0.04) tells every state apart: two states 0.001 apart (seen with
    unrestricted draws) are one state to any grid coarser than 1/1000, and no fit on such
    a grid can follow their different futures."""
    rng = np.random.default_rng(seed)
    p, start, kernels = _random_chain(rng)
    while np.diff(np.sort(p)).min() < 0.05:
        p, start, kernels = _random_chain(rng)
    _, table = _draw(p, start, kernels, 20_000, rng)
    test_states, _ = _draw(p, start, kernels, 10_000, rng)
    confidence = 1 - p[test_states]
    fitted = _exits_taken(TTamer(0.8).fit(table, COSTS), confidence)
    true = _exits_taken(_TrueIndex(p, start, kernels, 0.8), confidence)
    assert (fitted[0] == true[0]).mean() >= 0.97 and (fitted[1] == true[1]).mean() >= 0.97


def test_auto_bins_keeps_the_grid_that_validates_best():
    from servesim.policies.stopping import BIN_CHOICES

    rng = np.random.default_rng(3)
    p, start, kernels = _random_chain(rng)
    _, table = _draw(p, start, kernels, 3_000, rng)
    for policy in (TTamer(0.9), OptimalNoRecall(0.9)):
        policy.fit(table, COSTS)
        assert set(policy.validation) == set(BIN_CHOICES)
        means = {b: policy._score(s).mean() for b, s in policy.validation.items()}
        assert policy.bins == min(means, key=means.get)
        assert policy.params()["bins"] == policy.bins
        again = type(policy)(0.9).fit(table, COSTS)
        assert again.bins == policy.bins  # the folds are fixed: the same table, the same choice
    fixed = TTamer(0.9, bins=50).fit(table, COSTS)
    assert fixed.bins == 50 and fixed.validation == {}
