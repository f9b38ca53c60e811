"""InfAdapter's allocation program (policies/infadapter.py): the milp optimum against an
exhaustive enumeration, feasibility re-checked from scratch, monotonicity in the budget,
infeasible instances, and hand-computed answers.

Tolerances: both solvers turn their core vector into an allocation with the same greedy
quota fill, so optima are compared by objective value (two allocations may tie). HiGHS
runs with zero gaps, so its optimum is exact up to its feasibility tolerance, which the
quota rows scale down to 1e-10 req/s. REL = 1e-6 (the brief's bar, ABS = 1e-9 for optima
near 0) is thus far above a correct solver's error. A program that drops a term or a row
misses by a core's α/B, a load time's β share or an accuracy's share of λ, and the
enumeration catches it: removing the loading-cost rows fails the first property test.
"""

import math

import pytest
from hypothesis import given, settings, strategies as st

from servesim.policies.infadapter import (
    AllocationProblem, Variant, brute_force, evaluate, fill_quotas, linear_capacity, solve,
)

REL, ABS = 1e-6, 1e-9
MAX_B = 10


def close(a, b):
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


@st.composite
def variants(draw, max_cores):
    """A capacity table either from a linear fit (InfAdapter's model) or arbitrary
    (measured tables need not be monotone)."""
    if draw(st.booleans()):
        capacity = linear_capacity(draw(st.floats(0.0, 30.0)), draw(st.integers(-10, 10)), max_cores)
    else:
        capacity = (0, *draw(st.lists(st.integers(0, 60), min_size=max_cores, max_size=max_cores)))
    accuracy = draw(st.sampled_from([0.698, 0.733, 0.761, 0.774, 0.783]) | st.floats(0.3, 0.95))
    load_time = draw(st.sampled_from([0.0, 6.44, 8.52]) | st.floats(0.0, 10.0))
    return accuracy, capacity, load_time


@st.composite
def problems(draw, max_cores=MAX_B):
    k = draw(st.integers(1, 3))
    budget = draw(st.integers(1, max_cores))
    specs = [draw(variants(max_cores)) for _ in range(k)]
    return AllocationProblem(
        variants=tuple(Variant(f"v{m}", acc, cap, lt) for m, (acc, cap, lt) in enumerate(specs)),
        load=draw(st.sampled_from([1.0, 20.0, 45.0]) | st.floats(0.5, 150.0)),
        budget=budget,
        current_cores=tuple(draw(st.integers(0, budget)) for _ in range(k)),
        min_cores=draw(st.integers(1, min(3, budget))),
        alpha=draw(st.sampled_from([0.0, 0.05, 0.5])),
        beta=draw(st.sampled_from([0.0, 0.001, 0.1])),
    )


def check_allocation(problem, allocation):
    """Re-derive feasibility and the objective from the problem, independently of the module."""
    cores, quotas = allocation.cores, allocation.quotas
    assert len(cores) == len(quotas) == len(problem.variants)
    assert all(n == 0 or problem.min_cores <= n <= problem.budget for n in cores)
    assert sum(cores) <= problem.budget
    for v, n, q in zip(problem.variants, cores, quotas):
        assert -1e-12 <= q <= v.capacity[n] + 1e-9
    capacity = sum(v.capacity[n] for v, n in zip(problem.variants, cores))
    assert math.isclose(sum(quotas), min(problem.load, capacity), rel_tol=1e-12, abs_tol=1e-9)
    assert allocation.feasible == (capacity >= problem.load - 1e-9)
    longest = max(v.load_time for v in problem.variants)
    changed = [v.load_time for v, n, now in zip(problem.variants, cores, problem.current_cores) if n and n != now]
    lc = max(changed, default=0.0) / longest if longest else 0.0
    objective = (sum(q * v.accuracy for q, v in zip(quotas, problem.variants)) / problem.load
                 - problem.alpha * sum(cores) / problem.budget - problem.beta * lc)
    assert close(allocation.objective, objective)


@settings(max_examples=150, deadline=None)
@given(problems())
def test_milp_matches_brute_force(problem):
    got, want = solve(problem), brute_force(problem)
    assert got.feasible == want.feasible
    if not got.feasible:  # best effort: the most load, then the objective
        assert math.isclose(sum(got.quotas), sum(want.quotas), abs_tol=1e-9)
    assert close(got.objective, want.objective), (got, want)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_returned_allocations_are_feasible_under_the_model(problem):
    check_allocation(problem, solve(problem))
    check_allocation(problem, brute_force(problem))


@settings(max_examples=60, deadline=None)
@given(problems(), st.integers(1, MAX_B))
def test_a_larger_budget_never_lowers_the_optimum(problem, extra):
    larger = AllocationProblem(problem.variants, problem.load, min(MAX_B, problem.budget + extra),
                               problem.current_cores, problem.min_cores, problem.alpha, problem.beta)
    small, big = solve(problem), solve(larger)
    assert big.feasible >= small.feasible
    if small.feasible:
        assert big.objective >= small.objective - ABS
    elif not big.feasible:
        assert sum(big.quotas) >= sum(small.quotas) - 1e-9


# ---- hand-computed answers

def test_one_variant_takes_the_fewest_cores_that_carry_the_load():
    v = Variant("r18", 0.7, tuple(10 * n for n in range(11)), load_time=6.0)
    # 10n >= 35 first at n = 4; more cores only cost. 0.7 - 0.05·4/10 - 0.001·1 (a new deployment loads).
    got = solve(AllocationProblem((v,), load=35.0, budget=10))
    assert got.cores == (4,) and got.quotas == (35.0,) and got.feasible
    assert got.objective == pytest.approx(0.679, abs=1e-12)
    # Already on 4 cores: nothing loads.
    kept = solve(AllocationProblem((v,), load=35.0, budget=10, current_cores=(4,)))
    assert kept.cores == (4,) and kept.objective == pytest.approx(0.68, abs=1e-12)


def test_two_variants_split_the_load_most_accurate_first():
    accurate = Variant("big", 0.8, tuple(5 * n for n in range(5)), load_time=8.0)
    fast = Variant("small", 0.6, tuple(20 * n for n in range(5)), load_time=6.0)
    # λ = 40, B = 4: (0, 2) gives 0.6 - 0.025 - 0.001·6/8 = 0.57425; (2, 2) serves 10 + 30:
    # AA = (8 + 18)/40 = 0.65, minus 0.05·4/4 and 0.001·8/8 -> 0.599; (4, 0) carries only 20.
    got = solve(AllocationProblem((accurate, fast), load=40.0, budget=4))
    assert got.cores == (2, 2) and got.quotas == (10.0, 30.0)
    assert got.objective == pytest.approx(0.599, abs=1e-12)
    assert brute_force(AllocationProblem((accurate, fast), load=40.0, budget=4)) == got


def test_the_loading_cost_keeps_an_equally_good_deployed_variant():
    twins = tuple(Variant(name, 0.7, tuple(10 * n for n in range(5)), load_time=7.0) for name in ("x", "y"))
    got = solve(AllocationProblem(twins, load=20.0, budget=4, current_cores=(0, 2)))
    assert got.cores == (0, 2) and got.objective == pytest.approx(0.7 - 0.05 * 2 / 4, abs=1e-12)


def test_not_enough_capacity_serves_the_most_it_can_and_says_so():
    v = Variant("r152", 0.7, tuple(10 * n for n in range(5)), load_time=8.0)
    got = solve(AllocationProblem((v,), load=50.0, budget=4))
    # 40 of 50 req/s served: (40/50)·0.7 - 0.05·4/4 - 0.001.
    assert not got.feasible and got.cores == (4,) and got.quotas == (40.0,)
    assert got.objective == pytest.approx(0.509, abs=1e-12)


def test_linear_capacity_floors_eighty_percent_of_the_fit_and_clips_at_zero():
    assert linear_capacity(10.3, 5, 3) == (0, 12, 20, 28)  # 0.8·15.3 = 12.24, 0.8·25.6 = 20.48, 0.8·35.9 = 28.72
    assert linear_capacity(5, -20, 5) == (0, 0, 0, 0, 0, 4)  # negative until n = 4, then 0.8·5 = 4
    assert linear_capacity(25, 0, 1, headroom=1.0) == (0, 25)


def test_quotas_fill_the_most_accurate_variant_first():
    vs = (Variant("a", 0.6, (0, 50, 50)), Variant("b", 0.9, (0, 30, 30)), Variant("c", 0.7, (0, 15, 15)))
    problem = AllocationProblem(vs, load=50.0, budget=2, min_cores=1)
    assert fill_quotas(problem, (1, 1, 0)) == (20.0, 30.0, 0.0)
    assert evaluate(problem, (1, 1, 0)).feasible


@pytest.mark.parametrize("make, word", [
    (lambda v: AllocationProblem((v,), load=10.0, budget=0), "budget"),
    (lambda v: AllocationProblem((v,), load=10.0, budget=5), "capacity covers"),
    (lambda v: AllocationProblem((v,), load=0.0, budget=2), "load"),
    (lambda v: AllocationProblem((v,), load=10.0, budget=2, min_cores=3), "min_cores"),
    (lambda v: AllocationProblem((v,), load=10.0, budget=2, current_cores=(1, 1)), "current_cores"),
    (lambda v: AllocationProblem((v,), load=10.0, budget=2, alpha=-1.0), "alpha"),
    (lambda v: AllocationProblem((v, v), load=10.0, budget=2), "distinct names"),
    (lambda v: Variant("w", 0.5, (3, 4)), r"capacity\[0\]"),
    (lambda v: Variant("w", 0.5, (0, 2.5)), "whole numbers"),
    (lambda v: Variant("w", 1.5, (0, 2)), "accuracy"),
    (lambda v: Variant("w", 0.5, (0, 2), load_time=-1.0), "load_time"),
    (lambda v: linear_capacity(1.0, 0.0, 4, headroom=0.0), "headroom"),
    (lambda v: evaluate(AllocationProblem((v,), load=10.0, budget=2), (1,)), "cores"),
    (lambda v: evaluate(AllocationProblem((v,), load=10.0, budget=2, min_cores=1), (1.5,)), "cores"),
])
def test_bad_input_is_rejected_naming_the_parameter(make, word):
    with pytest.raises(ValueError, match=word):
        make(Variant("v", 0.7, (0, 10, 20)))
