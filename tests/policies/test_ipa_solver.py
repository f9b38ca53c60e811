"""IPA's pipeline program (policies/ipa.py): the milp optimum against an exhaustive
enumeration, feasibility and pins re-checked from scratch, monotonicity in the SLA,
infeasible instances, the `multiply` limit, and hand-computed answers.

Tolerances: both solvers build their answer from the same option arithmetic, so optima
are compared by objective value (two configurations may tie). HiGHS runs with zero gaps
and the latency row in ms, so a correct program matches the enumeration to rounding.
REL = 1e-6 (the brief's bar, ABS = 1e-9 near 0) is far above that. A real defect misses
by at least a core's β or a batch item's γ. γ is 1e-6 absolute, which REL hides once
|objective| > 1, so the hand-computed tie-break below checks γ on its own. Dropping the
`multiply` link rows fails the first property test.
"""

import dataclasses
import math

import pytest
from hypothesis import given, settings, strategies as st

from servesim.policies.ipa import (
    ACCURACY_METHODS, MAX_COMBINATIONS, PipelineProblem, Stage, StageVariant, brute_force, solve,
)

REL, ABS = 1e-6, 1e-9
BATCHES = (1, 2, 4, 8, 16)


def close(a, b):
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


@st.composite
def stage_variants(draw, name):
    batches = sorted(draw(st.sets(st.sampled_from(BATCHES), min_size=2, max_size=4)))
    k = len(batches)
    if draw(st.booleans()):  # realistic: latency about linear in the batch, throughput saturating
        base, slope = draw(st.floats(0.005, 0.3)), draw(st.floats(0.2, 1.0))
        latency = [base * (1 + slope * (b - 1)) for b in batches]
        throughput = [b / l for b, l in zip(batches, latency)]
    else:  # arbitrary profiles: the program must not assume monotone tables
        latency = draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k))
        throughput = draw(st.lists(st.floats(0.5, 100.0), min_size=k, max_size=k))
    accuracy = draw(st.sampled_from([0.457, 0.568, 0.6975, 0.7831]) | st.floats(0.1, 0.99))
    return StageVariant(name, accuracy, draw(st.integers(1, 4)), tuple(batches), tuple(latency), tuple(throughput))


@st.composite
def pipelines(draw):
    stages = tuple(Stage(f"s{s}", tuple(draw(stage_variants(f"m{m}")) for m in range(draw(st.integers(2, 3)))))
                   for s in range(draw(st.integers(1, 3))))
    max_replicas = draw(st.sampled_from([100, 10, 3]))
    fix_variant = draw(st.none() | st.tuples(*(st.none() | st.sampled_from([v.name for v in stage.variants])
                                               for stage in stages)))
    fix_replicas = draw(st.none() | st.tuples(*(st.none() | st.integers(1, max_replicas) for _ in stages)))
    alpha, beta = draw(st.sampled_from([(2.0, 1.0), (10.0, 0.5), (10.0, 0.125), (0.5, 1.0)]))
    return PipelineProblem(
        stages, load=draw(st.sampled_from([0.0, 10.0]) | st.floats(0.1, 150.0)), sla=draw(st.floats(0.01, 3.0)),
        alpha=alpha, beta=beta, gamma=draw(st.sampled_from([1e-6, 0.0, 0.01])),
        accuracy_method=draw(st.sampled_from(ACCURACY_METHODS)), max_replicas=max_replicas,
        fix_variant=fix_variant, fix_replicas=fix_replicas)


def expected_accuracy(problem, names):
    """ACC from the definition: rank-normalised sum, or the product of raw accuracies."""
    total = 0.0 if problem.accuracy_method == "sum" else 1.0
    for stage, name in zip(problem.stages, names):
        if problem.accuracy_method == "multiply":
            total *= next(v.accuracy for v in stage.variants if v.name == name)
            continue
        ranked = [v.name for v in sorted(stage.variants, key=lambda v: v.accuracy)]  # stable: menu order on ties
        total += ranked.index(name) / (len(ranked) - 1) if len(ranked) > 1 else 1.0
    return total


def check_configuration(problem, config):
    """Every constraint, the pins, least replicas and the objective, re-derived here."""
    assert len(config.stages) == len(problem.stages)
    total = 0.0
    for s, (stage, got) in enumerate(zip(problem.stages, config.stages)):
        variant = next(v for v in stage.variants if v.name == got.variant)
        i = variant.batches.index(got.batch)
        h = variant.throughput[i]
        assert 1 <= got.replicas <= problem.max_replicas
        assert got.replicas * h >= problem.load * (1 - 1e-9)
        if problem.fix_replicas and problem.fix_replicas[s] is not None:
            assert got.replicas == problem.fix_replicas[s]
        else:  # fewer replicas would not carry the load
            assert got.replicas == 1 or (got.replicas - 1) * h < problem.load
        if problem.fix_variant and problem.fix_variant[s] is not None:
            assert got.variant == problem.fix_variant[s]
        assert got.cores == got.replicas * variant.cores
        fill = (got.batch - 1) / problem.load if problem.load > 0 else 0.0
        assert got.latency == pytest.approx(variant.latency[i] + fill, rel=1e-12)
        total += got.latency
    assert total <= problem.sla + 1e-9
    assert config.latency == pytest.approx(total, rel=1e-12)
    accuracy = expected_accuracy(problem, [c.variant for c in config.stages])
    assert close(config.accuracy, accuracy)
    objective = (problem.alpha * accuracy - problem.beta * sum(c.cores for c in config.stages)
                 - problem.gamma * sum(c.batch for c in config.stages))
    assert close(config.objective, objective)


@settings(max_examples=150, deadline=None)
@given(pipelines())
def test_milp_matches_brute_force(problem):
    got, want = solve(problem), brute_force(problem)
    assert (got is None) == (want is None)  # infeasible instances are reported as such
    if got is not None:
        assert close(got.objective, want.objective), (got, want)


@settings(max_examples=100, deadline=None)
@given(pipelines())
def test_returned_configurations_are_feasible_and_respect_the_pins(problem):
    for config in (solve(problem), brute_force(problem)):
        if config is not None:
            check_configuration(problem, config)


@settings(max_examples=60, deadline=None)
@given(pipelines(), st.floats(0.0, 2.0))
def test_a_larger_sla_never_lowers_the_optimum(problem, extra):
    tight, loose = solve(problem), solve(dataclasses.replace(problem, sla=problem.sla + extra))
    if tight is not None:
        assert loose is not None and loose.objective >= tight.objective - ABS


# ---- hand-computed answers

def one_stage(load, sla):
    # b=1: 3 replicas (3·10 >= 30), 0.1 s. b=2: 3 replicas (2·13.3 < 30), 0.15 + 1/30 s.
    # b=4: 2 replicas (2·16 >= 30), 0.25 + 3/30 = 0.35 s.
    variant = StageVariant("yolo", 0.6, 2, (1, 2, 4), (0.1, 0.15, 0.25), (10.0, 13.3, 16.0))
    return PipelineProblem((Stage("detect", (variant,)),), load=load, sla=sla)


def test_one_stage_picks_the_cheapest_batch_that_meets_the_sla():
    # ACC = 1 (a one-variant stage). b=4: 2·1 - 1·(2 replicas · 2 cores) - 1e-6·4.
    got = solve(one_stage(30.0, 1.0))
    assert [(c.batch, c.replicas, c.cores) for c in got.stages] == [(4, 2, 4)]
    assert got.objective == pytest.approx(-2.000004, abs=1e-12) and got.latency == pytest.approx(0.35)
    # SLA 0.3 rules out b=4; b=1 and b=2 both need 6 cores, and γ prefers b=1.
    got = solve(one_stage(30.0, 0.3))
    assert [(c.batch, c.replicas, c.cores) for c in got.stages] == [(1, 3, 6)]
    assert got.objective == pytest.approx(-4.000001, abs=1e-12)
    assert solve(one_stage(30.0, 0.05)) is None and brute_force(one_stage(30.0, 0.05)) is None


def test_gamma_alone_breaks_a_tie_toward_the_smaller_batch():
    # λ = 0: one replica, no fill time; both batches cost the same but for γ·b (1e-6 apart).
    variant = StageVariant("v", 0.5, 1, (1, 2), (0.1, 0.1), (10.0, 20.0))
    got = solve(PipelineProblem((Stage("s", (variant,)),), load=0.0, sla=1.0))
    assert got.stages[0].batch == 1 and got.stages[0].replicas == 1 and got.latency == pytest.approx(0.1)


def two_stages(**kwargs):
    # small: 1 replica of 1 core, 0.1 s; large: 2 replicas of 2 cores (2·5 >= 10), 0.3 s; cls: 1 core, 0.2 s.
    detect = Stage("detect", (StageVariant("small", 0.5, 1, (1,), (0.1,), (10.0,)),
                              StageVariant("large", 0.9, 2, (1,), (0.3,), (5.0,))))
    classify = Stage("classify", (StageVariant("c", 0.8, 1, (1,), (0.2,), (20.0,)),))
    return PipelineProblem((detect, classify), load=10.0, **{"sla": 1.0, **kwargs})


@pytest.mark.parametrize("kwargs, variant, replicas, objective", [
    ({}, "small", 1, -2e-6),  # sum: 2·(0 + 1) - 2 cores vs 2·(1 + 1) - 5 cores
    ({"alpha": 10.0}, "large", 2, 15 - 2e-6),  # 10·2 - 5 beats 10·1 - 2
    ({"alpha": 10.0, "sla": 0.45}, "small", 1, 8 - 2e-6),  # large's 0.5 s misses the SLA
    ({"alpha": 10.0, "accuracy_method": "multiply"}, "large", 2, 2.2 - 2e-6),  # 10·0.72 - 5 vs 10·0.4 - 2
    ({"accuracy_method": "multiply"}, "small", 1, -1.2 - 2e-6),  # 2·0.4 - 2 vs 2·0.72 - 5
    ({"fix_variant": ("large", None)}, "large", 2, -1 - 2e-6),  # FA2: variant pinned
    ({"alpha": 10.0, "fix_replicas": (1, None)}, "small", 1, 8 - 2e-6),  # RIM: 1 large replica carries 5 < 10
    ({"alpha": 10.0, "fix_replicas": (3, 3)}, "large", 3, 20 - 9 - 2e-6),  # 3·2 + 3·1 cores
])
def test_two_stage_answers(kwargs, variant, replicas, objective):
    problem = two_stages(**kwargs)
    got = solve(problem)
    assert (got.stages[0].variant, got.stages[0].replicas) == (variant, replicas)
    assert got.objective == pytest.approx(objective, abs=1e-12)
    assert brute_force(problem).objective == pytest.approx(objective, abs=1e-12)


def test_multiply_refuses_too_many_combinations():
    variants = tuple(StageVariant(f"m{m}", 0.5 + m / 20, 1, (1,), (0.01,), (10.0,)) for m in range(6))
    stages = tuple(Stage(f"s{s}", variants) for s in range(4))  # 6^4 = 1296 > MAX_COMBINATIONS
    assert 6 ** 4 > MAX_COMBINATIONS >= 6 ** 3
    with pytest.raises(ValueError, match="1296"):
        PipelineProblem(stages, load=5.0, sla=1.0, accuracy_method="multiply")
    # A pinned stage has one variant, so 6^3 = 216 combinations remain.
    pinned = PipelineProblem(stages, load=5.0, sla=1.0, accuracy_method="multiply", fix_variant=("m0", None, None, None))
    # Every variant costs one replica of one core, so the free stages take the most accurate.
    assert [c.variant for c in solve(pinned).stages] == ["m0", "m5", "m5", "m5"]


def variant(**changes):
    fields = {"name": "v", "accuracy": 0.5, "cores": 1, "batches": (1, 2), "latency": (0.1, 0.2), "throughput": (5.0, 8.0)}
    return StageVariant(**{**fields, **changes})


@pytest.mark.parametrize("make, word", [
    (lambda: variant(accuracy=1.5), "accuracy"),
    (lambda: variant(cores=0), "cores"),
    (lambda: variant(batches=(2, 2)), "batches"),
    (lambda: variant(latency=(0.1,)), "one value per batch size"),
    (lambda: variant(throughput=(0.0, 1.0)), "throughput"),
    (lambda: variant(latency=(-0.1, 0.2)), "latency"),
    (lambda: Stage("s", (variant(), variant())), "distinct names"),
    (lambda: PipelineProblem((Stage("s", (variant(),)),), load=-1.0, sla=1.0), "load"),
    (lambda: PipelineProblem((Stage("s", (variant(),)),), load=1.0, sla=0.0), "sla"),
    (lambda: PipelineProblem((Stage("s", (variant(),)),), load=1.0, sla=1.0, accuracy_method="average"),
     "accuracy_method"),
    (lambda: PipelineProblem((Stage("s", (variant(),)),), load=1.0, sla=1.0, max_replicas=0), "max_replicas"),
    (lambda: PipelineProblem((Stage("s", (variant(),)),), load=1.0, sla=1.0, gamma=-1.0), "gamma"),
    (lambda: PipelineProblem((Stage("s", (variant(),)),), load=1.0, sla=1.0, fix_variant=("w",)), "no variant 'w'"),
    (lambda: PipelineProblem((Stage("s", (variant(),)),), load=1.0, sla=1.0, fix_variant=("v", None)),
     "one entry per stage"),
    (lambda: PipelineProblem((Stage("s", (variant(),)),), load=1.0, sla=1.0, fix_replicas=(101,)), "fix_replicas"),
    (lambda: PipelineProblem((), load=1.0, sla=1.0), "stages"),
])
def test_bad_input_is_rejected_naming_the_parameter(make, word):
    with pytest.raises(ValueError, match=word):
        make()
