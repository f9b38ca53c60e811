"""T-Tamer's guarantees, checked on abstract Markov-chain instances (shared/research/
ee_cascades.md §1.5): the DP against an independent brute force over decision trees,
the σ table against the DP, the lower-bound family, the prophet and Weitzman limits, and
Monte Carlo. Losses and costs in a chain are already λ- and (1-λ)-weighted."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from servesim.policies.stopping import (
    MarkovChain, aggregate, evaluate, solve_no_recall, solve_recall,
)

TOL = 1e-9


def _distribution(weights):
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum() if w.sum() > 0 else np.full(w.size, 1.0 / w.size)


@st.composite
def chains(draw, max_exits=4, max_states=3, min_exits=1):
    """Random instances: distinct positive losses, sparse-ish kernels (zeros allowed),
    costs that include 0."""
    n = draw(st.integers(min_exits, max_exits))
    k = draw(st.integers(1, max_states))
    values = sorted(draw(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k, unique=True)))
    weight = st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 3.0]) | st.floats(0.0, 1.0), min_size=k, max_size=k)
    initial = _distribution(draw(weight))
    kernels = [np.array([_distribution(draw(weight)) for _ in range(k)]) for _ in range(n - 1)]
    costs = draw(st.lists(st.sampled_from([0.0, 0.01, 0.1]) | st.floats(0.0, 0.5), min_size=n, max_size=n))
    return MarkovChain(values, initial, kernels, costs)


# ---- brute force, written independently of policies.stopping: histories, not (X, r) states

def _histories(chain):
    """Non-terminal decision nodes: every loss-state history after exits 0..n-2."""
    k = chain.values.size
    return [h for length in range(1, chain.n_exits) for h in itertools.product(range(k), repeat=length)]


def _tree_value(chain, recall, decide, history=None):
    """Expected objective of the decision tree ``decide(history) -> stop?`` (or, with
    ``decide=None``, of the best subtree at every node: the principle of optimality)."""
    if history is None:
        return chain.costs[0] + sum(p * _tree_value(chain, recall, decide, (r,))
                                    for r, p in enumerate(chain.initial) if p > 0)
    i = len(history) - 1
    stop = min(chain.values[list(history)]) if recall else chain.values[history[-1]]
    if i == chain.n_exits - 1 or (decide is not None and decide(history)):
        return stop
    row = chain.kernels[i].matrix[history[-1]]
    cont = chain.costs[i + 1] + sum(p * _tree_value(chain, recall, decide, history + (r,))
                                    for r, p in enumerate(row) if p > 0)
    return cont if decide is not None else min(stop, cont)


def _exhaustive(chain, recall):
    """Minimum over ALL deterministic adaptive policies, enumerated one by one."""
    nodes = _histories(chain)
    return min(_tree_value(chain, recall, dict(zip(nodes, choice)).__getitem__)
               for choice in itertools.product((False, True), repeat=len(nodes)))


def _paths(chain):
    """(probability, loss-state path) of every full path."""
    k = chain.values.size
    for path in itertools.product(range(k), repeat=chain.n_exits):
        p = chain.initial[path[0]]
        for i in range(chain.n_exits - 1):
            p *= chain.kernels[i].matrix[path[i], path[i + 1]]
        if p > 0:
            yield p, path


# ---- 1. recall dominates

@given(chains(max_exits=5, max_states=5))
def test_recall_optimum_is_never_worse_than_no_recall(chain):
    assert solve_recall(chain).value <= solve_no_recall(chain).value + TOL


# ---- 2. the σ table reproduces the DP

@given(chains())
def test_sigma_policy_reproduces_the_dp_value_and_decisions(chain):
    index = solve_recall(chain)
    assert evaluate(chain, index.stop_table()) == pytest.approx(index.value, abs=TOL)
    for history in _histories(chain):
        i = len(history) - 1
        stop = min(chain.values[list(history)])
        row = chain.kernels[i].matrix[history[-1]]
        cont = chain.costs[i + 1] + sum(p * _tree_value(chain, True, None, history + (r,))
                                        for r, p in enumerate(row) if p > 0)
        if abs(stop - cont) > TOL:  # ties may go either way
            sigma_stops = not stop > index.sigma[i + 1, history[-1]]
            assert sigma_stops == (stop < cont), (history, stop, cont)
            states = np.array([history])
            assert index.decide(states)[0][0] == (stop < cont)


@given(chains(max_exits=4, max_states=4), st.data())
def test_no_policy_beats_the_dp(chain, data):
    """Any Markov rule (random stop tables) evaluated exactly is >= the DP optimum."""
    k, n = chain.values.size, chain.n_exits
    stop = np.array(data.draw(st.lists(st.booleans(), min_size=(n - 1) * k * k, max_size=(n - 1) * k * k)),
                    dtype=bool).reshape(n - 1, k, k)
    assert evaluate(chain, stop) >= solve_recall(chain).value - TOL
    assert evaluate(chain, stop[:, :1, :], recall=False) >= solve_no_recall(chain).value - TOL


# ---- 3. DP == exhaustive search over adaptive policies

@given(chains(max_exits=4, max_states=3))
def test_dp_equals_the_best_decision_tree(chain):
    assert solve_recall(chain).value == pytest.approx(_tree_value(chain, True, None), abs=TOL)
    assert solve_no_recall(chain).value == pytest.approx(_tree_value(chain, False, None), abs=TOL)


@settings(max_examples=40)
@given(chains(max_exits=3, max_states=2) | chains(max_exits=2, max_states=3))
def test_dp_equals_enumeration_of_every_policy(chain):
    assert solve_recall(chain).value == pytest.approx(_exhaustive(chain, True), abs=TOL)
    assert solve_no_recall(chain).value == pytest.approx(_exhaustive(chain, False), abs=TOL)


# ---- 4. the lower-bound family: no-recall / recall = α

@pytest.mark.parametrize("alpha", [2.0, 10.0, 100.0])
@pytest.mark.parametrize("eps", [0.0, 1e-12])
def test_no_recall_over_recall_is_alpha(alpha, eps):
    """R_1 = 1/α² surely; R_2 = 0 w.p. 1-1/α else 1/α; c = 0. Taken exactly (eps = 0:
    a zero loss is fine for the DP; the ratio needs only the recall optimum 1/α³ > 0) and
    with the zero raised to eps (ratio α within 1e-6)."""
    chain = MarkovChain([eps, alpha ** -2, 1 / alpha], [0.0, 1.0, 0.0],
                        [np.tile([1 - 1 / alpha, 0.0, 1 / alpha], (3, 1))], [0.0, 0.0])
    recall, no_recall = solve_recall(chain).value, solve_no_recall(chain).value
    assert no_recall == pytest.approx(alpha ** -2, rel=1e-6)
    assert recall == pytest.approx(alpha ** -3, rel=1e-6)
    assert no_recall / recall == pytest.approx(alpha, rel=1e-6)


# ---- 5. zero costs: the prophet

@given(chains(max_exits=4, max_states=3))
def test_zero_costs_value_is_expected_min_loss(chain):
    free = MarkovChain(chain.values, chain.initial, chain.kernels, np.zeros(chain.n_exits))
    prophet = sum(p * chain.values[min(path)] for p, path in _paths(chain))
    assert solve_recall(free).value == pytest.approx(prophet, abs=TOL)


# ---- 6. monotone in every stage cost

@given(chains(max_exits=5, max_states=5), st.data())
def test_value_is_non_decreasing_in_every_stage_cost(chain, data):
    j = data.draw(st.integers(0, chain.n_exits - 1))
    costs = chain.costs.copy()
    costs[j] += data.draw(st.floats(0.0, 0.5))
    dearer = MarkovChain(chain.values, chain.initial, chain.kernels, costs)
    assert solve_recall(dearer).value >= solve_recall(chain).value - TOL
    assert solve_no_recall(dearer).value >= solve_no_recall(chain).value - TOL


# ---- 7. last stage: Weitzman's reservation value

@given(chains(max_exits=4, max_states=6, min_exits=2))
def test_last_index_is_weitzmans_reservation_value(chain):
    """E[(σ - R_n)_+ | R_{n-1} = r] = c_n for every r (exact: interpolation between the grid
    points is exact at the last stage)."""
    sigma = solve_recall(chain).sigma[-1]
    kernel = chain.kernels[-1].matrix
    surplus = (kernel * np.maximum(sigma[:, None] - chain.values[None, :], 0.0)).sum(axis=1)
    np.testing.assert_allclose(surplus, chain.costs[-1], atol=TOL)


# ---- 8. Monte Carlo: the online rule, run on sampled requests

def _simulate(chain, index, rng, n_requests):
    """Sample loss paths from the chain, follow the online σ rule exit by exit, and return
    each request's objective (answer's loss + costs paid)."""
    k = chain.values.size
    states = np.empty((n_requests, chain.n_exits), dtype=np.intp)
    states[:, 0] = rng.choice(k, size=n_requests, p=chain.initial)
    for i, kernel in enumerate(chain.kernels):
        cdf = np.cumsum(kernel.matrix[states[:, i]], axis=1)
        states[:, i + 1] = np.minimum((rng.random((n_requests, 1)) > cdf).sum(axis=1), k - 1)
    objective = np.full(n_requests, np.nan)
    paid = np.full(n_requests, chain.costs[0])
    running = np.arange(n_requests)
    for i in range(chain.n_exits):
        stop, answer = index.decide(states[running, : i + 1])
        done = running[stop]
        objective[done] = paid[done] + chain.values[states[done, answer[stop]]]
        running = running[~stop]
        if i + 1 < chain.n_exits:
            paid[running] += chain.costs[i + 1]
    assert running.size == 0
    return objective


@settings(max_examples=25, derandomize=True, deadline=None)
@given(chains(max_exits=6, max_states=8))
def test_simulated_mean_objective_converges_to_the_dp_value(chain):
    """A fixed set of instances (derandomized) and a fixed sampling seed: if hypothesis
    drew the seed it would search seeds for a 3-SE deviation, which 0.27% of them show."""
    index = solve_recall(chain)
    objective = _simulate(chain, index, np.random.default_rng(2025), 20_000)
    se = objective.std(ddof=1) / np.sqrt(objective.size)
    assert abs(objective.mean() - index.value) <= 3 * se + TOL


# ---- soft state aggregation

@given(chains(max_exits=5, max_states=6, min_exits=2))
def test_aggregation_with_q_equal_to_the_support_is_exact(chain):
    """Same value, and the aggregated σ policy is optimal on the true chain. (σ itself is
    not compared: where X - C is nearly flat, a 1e-16 rounding moves the crossing far.)"""
    exact, full = solve_recall(chain), solve_recall(aggregate(chain, chain.values.size))
    assert full.value == pytest.approx(exact.value, abs=1e-12)
    assert evaluate(chain, full.stop_table()) == pytest.approx(exact.value, abs=TOL)


def _smooth_chain(k=65, n=5):
    """Losses on [0.01, 1]; each exit's loss is a noisy, smooth function of the last one."""
    values = np.linspace(0.01, 1.0, k)
    kernels = []
    for i in range(n - 1):
        centre = 0.8 * values + 0.1 * np.sin(3 * values + i)
        logits = -((values[None, :] - centre[:, None]) ** 2) / (2 * 0.08 ** 2)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        kernels.append(p / p.sum(axis=1, keepdims=True))
    initial = _distribution(np.exp(-3 * values))
    return MarkovChain(values, initial, kernels, np.full(n, 0.02))


def test_aggregation_error_shrinks_as_q_grows():
    chain = _smooth_chain()
    exact = solve_recall(chain)
    qs = [3, 5, 9, 17, 33, 65]
    value_error = [abs(solve_recall(aggregate(chain, q)).value - exact.value) for q in qs]
    # the aggregated policy, played on the true chain, loses this much against the optimum
    regret = [evaluate(chain, solve_recall(aggregate(chain, q)).stop_table()) - exact.value for q in qs]
    assert all(b <= a + 1e-12 for a, b in zip(value_error, value_error[1:])), value_error
    assert value_error[0] > 1e-4 and value_error[-1] < 1e-12
    assert min(regret) >= -TOL and regret[-1] < 1e-12 and regret[-2] <= regret[0]


def test_chain_validation_names_the_problem():
    with pytest.raises(ValueError, match="strictly increasing"):
        MarkovChain([0.2, 0.1], [0.5, 0.5], [], [0.0])
    with pytest.raises(ValueError, match="sum to 1"):
        MarkovChain([0.1, 0.2], [0.5, 0.4], [], [0.0])
    with pytest.raises(ValueError, match="expected 1"):
        MarkovChain([0.1, 0.2], [0.5, 0.5], [], [0.0, 0.0])
    with pytest.raises(ValueError, match="aggregate"):
        aggregate(MarkovChain([0.1, 0.2], [0.5, 0.5], [], [0.0]), 3)
