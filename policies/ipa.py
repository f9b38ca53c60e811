"""IPA's pipeline program: for each stage of an inference pipeline, pick the model
variant, the batch size and the number of replicas (Ghafouri et al., arXiv 2308.12871;
shared/research/ipa_infadapter.md §1.1, §1.2, §1.6).

**Model.** The stages run in order. Variant ``m`` of a stage has an accuracy and ``R``
cores per replica, its base allocation (scaling is horizontal only). For each profiled
batch size ``b`` it has a p99 latency ``l(b)`` (s) and a maximum throughput ``h(b)``
(req/s per replica). For the predicted load ``λ`` and the end-to-end ``sla``::

    maximise   α·ACC − β·Σ_s R_s·n_s − γ·Σ_s b_s
    subject to n_s·h_s(b_s) ≥ λ,   1 ≤ n_s ≤ max_replicas
               Σ_s [l_s(b_s) + q(b_s)] ≤ sla,   q(b) = (b − 1)/λ (0 when λ = 0)

``q`` is the time a batch takes to fill at rate λ. There are two accuracy methods.
``sum`` (IPA's original) adds rank-normalised accuracies. Each stage's variants, sorted
by accuracy (ties in menu order), score 0, 1/(k−1), …, 1, and a one-variant stage
scores 1. ``multiply`` (IPA's revision, "PAS") is the product of the raw accuracies.

**Program** (:func:`solve`, ``scipy.optimize.milp``). Neither the latency constraint nor
ACC depends on ``n``, and the cost grows with it. So for a chosen (variant, batch) the
least ``n`` with ``n·h ≥ λ`` is optimal, and it is computed, not searched. An option
whose least ``n`` exceeds ``max_replicas`` is dropped. What remains is one choice of
option per stage under one knapsack constraint. The binaries are ``x[s, m, b]``, with
Σ x = 1 per stage and Σ latency·x ≤ sla. ``multiply`` adds one weight ``w_c ∈ [0, 1]`` per
combination ``c`` of variants, with Σ_c w_c = 1 and ``w_c ≤ Σ_b x[s, c_s, b]`` at every
stage. Only the combination actually chosen can take the weight, so α·Σ_c w_c·Π acc is
exactly α·PAS. Because of that, ``w`` is integral without being declared so, and HiGHS
branches on ``x`` alone. The rows number combinations × stages, hence :data:`MAX_COMBINATIONS`.

**Baselines are pins** (IPA emulates them so, §1.6). ``fix_variant`` (FA2) keeps only the
pinned variant's options, leaving scale and batch free. ``fix_replicas`` (RIM) sets ``n``
to the pin, leaving variant and batch free. An option whose pinned replicas cannot carry
λ is excluded.

**Ties and infeasibility.** One optimum comes back (IPA's solution pool holds one).
``None`` means no configuration meets the constraints; IPA's adapter then keeps the
current one. The latency row is written in milliseconds, so HiGHS's absolute feasibility
tolerance (1e-7) is 1e-10 s, under the 1 ns slack both solvers allow on the SLA for the
float error of a sum of latencies. The optimality gaps are 0 (see
:func:`policies.milp.exact_milp`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cached_property
from itertools import product
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint
from scipy.sparse import coo_array

from .milp import exact_milp

ACCURACY_METHODS = ("sum", "multiply")
# `multiply` needs a variable and a row per stage for every combination of variants. 1000
# covers 3 stages of 10 variants; the video pipeline needs 25, and IPA's nlp pipeline 12.
MAX_COMBINATIONS = 1000
# Replicas a stage may get (IPA's bound n_s <= max_replicas): each count is a candidate the
# program enumerates per stage, variant and batch.
MAX_REPLICAS = 100
_LATENCY_SLACK = 1e-9  # s: float error of a sum of latencies, not a real excess
_CARRY_RTOL = 1e-12    # n·h that falls short of λ by this relative amount still carries it
_MS = 1e3              # the latency row in ms (see the module docstring)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value, minimum: int) -> bool:
    return _is_real(value) and float(value).is_integer() and value >= minimum


@dataclass(frozen=True)
class StageVariant:
    """One model variant of a stage. ``accuracy`` is a fraction, and ``cores`` is the
    cores per replica (R). ``latency[i]`` (p99, s) and ``throughput[i]`` (max req/s of
    one replica) are measured at ``batches[i]``, which increase."""

    name: str
    accuracy: float
    cores: int
    batches: tuple[int, ...]
    latency: tuple[float, ...]
    throughput: tuple[float, ...]

    def __post_init__(self):
        who = f"variant {self.name!r}"
        if not (_is_real(self.accuracy) and 0 <= self.accuracy <= 1):
            raise ValueError(f"{who}: accuracy must be a fraction in [0, 1], got {self.accuracy!r}")
        if not _is_whole(self.cores, 1):
            raise ValueError(f"{who}: cores must be a whole number >= 1, got {self.cores!r}")
        for name in ("batches", "latency", "throughput"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.batches or not all(_is_whole(b, 1) for b in self.batches) \
                or any(a >= b for a, b in zip(self.batches, self.batches[1:])):
            raise ValueError(f"{who}: batches must be increasing whole numbers >= 1, got {self.batches!r}")
        if len(self.latency) != len(self.batches) or len(self.throughput) != len(self.batches):
            raise ValueError(f"{who}: latency and throughput need one value per batch size "
                             f"({len(self.batches)}), got {len(self.latency)} and {len(self.throughput)}")
        if not all(_is_real(x) and x >= 0 for x in self.latency):
            raise ValueError(f"{who}: latency must be finite seconds >= 0, got {self.latency!r}")
        if not all(_is_real(x) and x > 0 for x in self.throughput):
            raise ValueError(f"{who}: throughput must be finite req/s > 0, got {self.throughput!r}")


@dataclass(frozen=True)
class Stage:
    """One task of the pipeline and its menu of variants (distinct names)."""

    name: str
    variants: tuple[StageVariant, ...]

    def __post_init__(self):
        object.__setattr__(self, "variants", tuple(self.variants))
        names = [v.name for v in self.variants]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"stage {self.name!r}: variants must be a non-empty list with distinct names, got {names}")

    @cached_property
    def rank_scores(self) -> tuple[float, ...]:
        """Per variant (menu order), the rank-normalised accuracy of ``sum``."""
        k = len(self.variants)
        if k == 1:
            return (1.0,)
        scores = [0.0] * k
        for rank, m in enumerate(sorted(range(k), key=lambda m: self.variants[m].accuracy)):
            scores[m] = rank / (k - 1)
        return tuple(scores)


@dataclass(frozen=True)
class PipelineProblem:
    """One decision. ``load`` is the predicted λ (req/s, >= 0) and ``sla`` the end-to-end
    budget (s). The pins give one entry per stage, ``None`` where the stage is free:
    ``fix_variant`` holds a variant name (FA2) and ``fix_replicas`` a replica count (RIM)."""

    stages: tuple[Stage, ...]
    load: float
    sla: float
    alpha: float = 2.0
    beta: float = 1.0
    gamma: float = 1e-6
    accuracy_method: str = "sum"
    max_replicas: int = MAX_REPLICAS
    fix_variant: Optional[tuple[Optional[str], ...]] = None
    fix_replicas: Optional[tuple[Optional[int], ...]] = None

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("stages must list at least one stage, got none")
        if not (_is_real(self.load) and self.load >= 0):
            raise ValueError(f"load must be a finite rate >= 0 req/s, got {self.load!r}")
        if not (_is_real(self.sla) and self.sla > 0):
            raise ValueError(f"sla must be a finite number of seconds > 0, got {self.sla!r}")
        for name in ("alpha", "beta", "gamma"):
            if not (_is_real(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite weight >= 0, got {getattr(self, name)!r}")
        if self.accuracy_method not in ACCURACY_METHODS:
            raise ValueError(f"accuracy_method must be one of {ACCURACY_METHODS}, got {self.accuracy_method!r}")
        if not _is_whole(self.max_replicas, 1):
            raise ValueError(f"max_replicas must be a whole number >= 1, got {self.max_replicas!r}")
        self._check_pins()
        combinations = math.prod(1 if self._variant_pin(s) is not None else len(stage.variants)
                                 for s, stage in enumerate(self.stages))
        if self.accuracy_method == "multiply" and combinations > MAX_COMBINATIONS:
            raise ValueError(f"accuracy_method='multiply' needs one variable per combination of variants, and these "
                             f"stages have {combinations} (at most {MAX_COMBINATIONS}); use 'sum' or fewer variants")

    def _check_pins(self) -> None:
        for name in ("fix_variant", "fix_replicas"):
            pins = getattr(self, name)
            if pins is None:
                continue
            pins = tuple(pins)
            object.__setattr__(self, name, pins)
            if len(pins) != len(self.stages):
                raise ValueError(f"{name} needs one entry per stage ({len(self.stages)}), got {len(pins)}: {pins!r}")
        for stage, pin in zip(self.stages, self.fix_variant or ()):
            if pin is not None and pin not in {v.name for v in stage.variants}:
                raise ValueError(f"fix_variant: stage {stage.name!r} has no variant {pin!r}")
        for stage, pin in zip(self.stages, self.fix_replicas or ()):
            if pin is not None and not (_is_whole(pin, 1) and pin <= self.max_replicas):
                raise ValueError(f"fix_replicas: stage {stage.name!r} needs a whole number in "
                                 f"[1, max_replicas={self.max_replicas}], got {pin!r}")

    def _variant_pin(self, s: int) -> Optional[str]:
        return None if self.fix_variant is None else self.fix_variant[s]

    def _replica_pin(self, s: int) -> Optional[int]:
        return None if self.fix_replicas is None or self.fix_replicas[s] is None else int(self.fix_replicas[s])


@dataclass(frozen=True)
class StageConfig:
    """What one stage runs. ``cores`` is replicas × cores per replica, and ``latency``
    is l(b) + (b − 1)/λ."""

    variant: str
    batch: int
    replicas: int
    cores: int
    latency: float


@dataclass(frozen=True)
class PipelineConfig:
    """Per stage, its configuration. ``accuracy`` is ACC under the problem's method, and
    ``latency`` is the predicted end-to-end latency (s)."""

    stages: tuple[StageConfig, ...]
    accuracy: float
    objective: float
    latency: float


@dataclass(frozen=True)
class _Option:
    """One (variant, batch) of a stage with the replicas it needs."""

    variant: int
    batch: int
    replicas: int
    latency: float


def _carries(replicas: int, throughput: float, load: float) -> bool:
    return replicas * throughput >= load * (1 - _CARRY_RTOL)


def _least_replicas(problem: PipelineProblem, s: int, throughput: float) -> Optional[int]:
    """The pin if it carries λ. Otherwise the least n carrying λ, provided it is within
    the cap. ceil(λ/h) is nudged so that it agrees with :func:`_carries` despite float
    rounding."""
    pin = problem._replica_pin(s)
    if pin is not None:
        return pin if _carries(pin, throughput, problem.load) else None
    n = max(1, math.ceil(problem.load / throughput))
    while n > 1 and _carries(n - 1, throughput, problem.load):
        n -= 1
    while not _carries(n, throughput, problem.load):
        n += 1
    return n if n <= problem.max_replicas else None


def _scanned_replicas(problem: PipelineProblem, s: int, throughput: float) -> Optional[int]:
    """The same answer as :func:`_least_replicas`, by trying every allowed count in turn."""
    pin = problem._replica_pin(s)
    candidates = (pin,) if pin is not None else range(1, problem.max_replicas + 1)
    return next((n for n in candidates if _carries(n, throughput, problem.load)), None)


def _stage_options(problem: PipelineProblem, s: int,
                   replicas: Callable[[PipelineProblem, int, float], Optional[int]]) -> list[_Option]:
    """Every (variant, batch) of stage ``s`` the pins allow and that can carry λ."""
    pin = problem._variant_pin(s)
    options = []
    for m, variant in enumerate(problem.stages[s].variants):
        if pin is not None and variant.name != pin:
            continue
        for b, latency, throughput in zip(variant.batches, variant.latency, variant.throughput):
            n = replicas(problem, s, throughput)
            if n is not None:
                fill = (b - 1) / problem.load if problem.load > 0 else 0.0
                options.append(_Option(m, int(b), n, latency + fill))
    return options


def _accuracy(problem: PipelineProblem, variants: Sequence[int]) -> float:
    if problem.accuracy_method == "sum":
        return sum(stage.rank_scores[m] for stage, m in zip(problem.stages, variants))
    return math.prod(stage.variants[m].accuracy for stage, m in zip(problem.stages, variants))


def _configuration(problem: PipelineProblem, picks: Sequence[_Option]) -> PipelineConfig:
    stages = tuple(StageConfig(stage.variants[o.variant].name, o.batch, o.replicas,
                               o.replicas * stage.variants[o.variant].cores, o.latency)
                   for stage, o in zip(problem.stages, picks))
    accuracy = _accuracy(problem, [o.variant for o in picks])
    objective = (problem.alpha * accuracy - problem.beta * sum(c.cores for c in stages)
                 - problem.gamma * sum(c.batch for c in stages))
    return PipelineConfig(stages, accuracy, objective, sum(c.latency for c in stages))


def brute_force(problem: PipelineProblem) -> Optional[PipelineConfig]:
    """Enumerate every combination of per-stage options (small instances), with the
    replicas found by scanning rather than computed, and keep the best that meets the
    SLA. ``None`` if none does."""
    options = [_stage_options(problem, s, _scanned_replicas) for s in range(len(problem.stages))]
    feasible = (_configuration(problem, picks) for picks in product(*options)
                if sum(o.latency for o in picks) <= problem.sla + _LATENCY_SLACK)
    return max(feasible, key=lambda config: config.objective, default=None)


def solve(problem: PipelineProblem) -> Optional[PipelineConfig]:
    """The optimal configuration (HiGHS via ``scipy.optimize.milp``), or ``None`` if no
    configuration carries λ within the SLA."""
    options = [_stage_options(problem, s, _least_replicas) for s in range(len(problem.stages))]
    if not all(options):
        return None
    flat = [(s, o) for s, stage_options in enumerate(options) for o in stage_options]
    n_x = len(flat)
    stage_of = np.array([s for s, _ in flat])
    one_each = (stage_of[None, :] == np.arange(len(options))[:, None]).astype(float)
    latency = np.array([o.latency for _, o in flat]) * _MS
    cost = np.array([problem.beta * o.replicas * problem.stages[s].variants[o.variant].cores
                     + problem.gamma * o.batch for s, o in flat])
    combos = _combinations(options) if problem.accuracy_method == "multiply" else []
    n_w = len(combos)
    rows = [LinearConstraint(np.hstack([one_each, np.zeros((len(options), n_w))]), 1, 1),
            LinearConstraint(np.concatenate([latency, np.zeros(n_w)])[None, :], -np.inf,
                             (problem.sla + _LATENCY_SLACK) * _MS)]
    if problem.accuracy_method == "sum":
        gain = problem.alpha * np.array([problem.stages[s].rank_scores[o.variant] for s, o in flat])
    else:
        gain = np.concatenate([np.zeros(n_x), [problem.alpha * _accuracy(problem, c) for c in combos]])
        cost = np.concatenate([cost, np.zeros(n_w)])
        rows += _combination_rows(flat, combos, n_x)
    integrality = np.concatenate([np.ones(n_x), np.zeros(n_w)])  # w follows x (see the module docstring)
    x = exact_milp(cost - gain, rows, integrality, Bounds(0, 1))
    if x is None:
        return None
    chosen = np.flatnonzero(np.round(x[:n_x]))
    return _configuration(problem, [flat[i][1] for i in chosen])


def _combinations(options: list[list[_Option]]) -> list[tuple[int, ...]]:
    """Every combination of variants that still has options at each stage."""
    return list(product(*(sorted({o.variant for o in stage_options}) for stage_options in options)))


def _combination_rows(flat: list[tuple[int, _Option]], combos: list[tuple[int, ...]], n_x: int) -> list[LinearConstraint]:
    """``w_c − Σ_b x[s, c_s, b] ≤ 0`` for every combination c and stage s, and Σ_c w_c = 1."""
    members: dict[tuple[int, int], list[int]] = {}
    for i, (s, option) in enumerate(flat):
        members.setdefault((s, option.variant), []).append(i)
    row, col, val = [], [], []
    for c, combo in enumerate(combos):
        for s, m in enumerate(combo):
            r = c * len(combo) + s
            row += [r] * (1 + len(members[s, m]))
            col += [n_x + c, *members[s, m]]
            val += [1.0] + [-1.0] * len(members[s, m])
    link = coo_array((val, (row, col)), shape=(len(combos) * len(combos[0]), n_x + len(combos))).tocsr()
    pick_one = np.concatenate([np.zeros(n_x), np.ones(len(combos))])[None, :]
    return [LinearConstraint(link, -np.inf, 0), LinearConstraint(pick_one, 1, 1)]
