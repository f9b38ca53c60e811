"""InfAdapter's allocation program: how many cores each model variant gets and which
share of the predicted load it serves (Salmani et al., EuroMLSys '23, arXiv 2304.10892;
shared/research/ipa_infadapter.md §2).

**Model.** Variant ``m`` has an accuracy ``acc_m``, a capacity ``tp_m(n)`` (integer req/s
it sustains within the SLO on ``n`` cores) and a load time. For the predicted load ``λ``
and a budget of ``B`` cores::

    maximise   AA − α·Σ_m n_m / B − β·LC,        AA = Σ_m (l_m / λ)·acc_m
    subject to 0 ≤ l_m ≤ tp_m(n_m),  Σ_m l_m = λ,  Σ_m n_m ≤ B,  n_m ∈ {0} ∪ [min_cores, B]

``l_m`` is variant m's quota (req/s). ``LC`` is the loading cost. It is the longest load
time among the variants whose cores change to a new non-zero value, divided by the
longest load time of any variant. A variant being resized or started makes the change
wait for its load; one being removed or kept costs nothing.

**Quotas for fixed cores are greedy.** Once the cores are fixed, AA is the only term that
depends on the quotas. Maximising Σ l_m·acc_m subject to 0 ≤ l_m ≤ tp_m and Σ l_m = λ is
a fractional knapsack with unit weights. Filling from the most accurate variant down is
optimal: if a less accurate variant carried load while a more accurate one had spare
capacity, moving ε of load over would raise AA by ε·(acc_i − acc_j)/λ ≥ 0.
:func:`fill_quotas` does this, and both solvers return quotas from it.

**Program** (:func:`solve`, ``scipy.optimize.milp``). There is one binary ``y[m, k]`` per
variant and allowed non-zero core count ``k``, with Σ_k y[m, k] ≤ 1 (all zero: n_m = 0).
The quotas are continuous with ``l_m ≤ Σ_k tp_m(k)·y[m, k]``. A continuous
``z ∈ [0, 1]`` stands for LC, with ``z ≥ (load_m / max load)·Σ_{k ≠ current_m} y[m, k]``;
minimising ``β·z`` makes it the maximum.

**Not enough capacity.** If no allocation within B carries λ, the program is
infeasible. :func:`solve` then answers lexicographically. It first finds the largest load
any allocation within B serves (a knapsack over the same binaries). It then finds the
best objective among the allocations that serve that much. AA is still taken over the
predicted λ, so the unserved share counts as zero accuracy. The answer has
``feasible=False``. Serving as much as possible is what the deployment must do anyway:
the shortfall is dropped or violates the SLO whatever else is chosen.
:func:`brute_force` ranks allocations by the same order.

**Exactness.** scipy exposes HiGHS's relative gap (default 1e-4). HiGHS also stops at an
absolute gap of 1e-6 by default, and ``exact_milp`` passes that option through verbatim.
Both gaps are set to 0, because the objectives trade terms smaller than the default
gaps. A relative gap of 1e-4 of an objective near 0.7 is 7e-5. Here, one req/s moved
between ResNet-101 and -152 (0.774 vs 0.783) at λ = 274 is worth 3e-5. Loading ResNet-50
instead of -34 (6.82 vs 6.79 s) costs β·LC = 3.5e-6. In IPA (:mod:`policies.ipa`, which
shares ``exact_milp``) the small term is γ = 1e-6 per item of batch.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from itertools import product
from typing import Optional, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint

from .milp import exact_milp

CAPACITY_HEADROOM = 0.8  # InfAdapter's CAPACITY_COEF: plan on 80% of the measured capacity
# floor() of a capacity that float error put just below an integer (0.8·(a·n + c)) keeps it.
_FLOOR_SLACK = 1e-9
# A capacity this far (req/s) below λ still carries it: float error in λ, not a shortfall.
_LOAD_SLACK = 1e-9
# The quota rows are written in milli-req/s, so HiGHS's absolute feasibility tolerance
# (1e-7) is 1e-10 req/s, under _LOAD_SLACK.
_MILLI = 1e3


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer()


def _is_finite_at_least(value, minimum: float) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and value >= minimum


def linear_capacity(slope: float, intercept: float, max_cores: int,
                    headroom: float = CAPACITY_HEADROOM) -> tuple[int, ...]:
    """Capacity table from InfAdapter's linear fit of measured capacity on cores.

    ``capacity[n] = floor(max(headroom·(slope·n + intercept), 0))`` for ``n = 1..max_cores``,
    and ``capacity[0] = 0``: a variant with no cores serves nothing, whatever the fit's
    intercept says. InfAdapter truncates the intercept to an int before this; that is the
    caller's choice.
    """
    if not _is_whole(max_cores) or max_cores < 1:
        raise ValueError(f"max_cores must be a whole number >= 1, got {max_cores!r}")
    if not (_is_finite_at_least(headroom, 0.0) and 0 < headroom <= 1):
        raise ValueError(f"headroom must lie in (0, 1], got {headroom!r}")
    for name, value in (("slope", slope), ("intercept", intercept)):
        if not _is_finite_at_least(value, -math.inf):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    return (0,) + tuple(math.floor(max(headroom * (slope * n + intercept), 0.0) + _FLOOR_SLACK)
                        for n in range(1, int(max_cores) + 1))


@dataclass(frozen=True)
class Variant:
    """One model variant. ``capacity[n]`` is the load (req/s, a whole number) it sustains
    on ``n`` cores, with ``capacity[0] = 0``. ``load_time`` is how many seconds a new
    deployment of it takes to load."""

    name: str
    accuracy: float
    capacity: tuple[int, ...]
    load_time: float = 0.0

    def __post_init__(self):
        if not (_is_finite_at_least(self.accuracy, 0.0) and self.accuracy <= 1):
            raise ValueError(f"variant {self.name!r}: accuracy must be a fraction in [0, 1], got {self.accuracy!r}")
        capacity = tuple(self.capacity)
        if not capacity or not all(_is_whole(c) and c >= 0 for c in capacity):
            raise ValueError(f"variant {self.name!r}: capacity must be a non-empty list of whole numbers >= 0 "
                             f"(req/s for 0, 1, 2, ... cores), got {self.capacity!r}")
        if capacity[0] != 0:
            raise ValueError(f"variant {self.name!r}: capacity[0] (no cores) must be 0, got {capacity[0]!r}")
        object.__setattr__(self, "capacity", tuple(int(c) for c in capacity))
        if not _is_finite_at_least(self.load_time, 0.0):
            raise ValueError(f"variant {self.name!r}: load_time must be >= 0 seconds, got {self.load_time!r}")


@dataclass(frozen=True)
class AllocationProblem:
    """One decision. ``load`` is the predicted λ (req/s, > 0), and ``budget`` is B cores;
    every variant's capacity table must reach B. ``current_cores`` holds each variant's
    cores now (used for LC). ``None`` means nothing is deployed yet, so every variant
    that gets cores is loading."""

    variants: tuple[Variant, ...]
    load: float
    budget: int
    current_cores: Optional[tuple[int, ...]] = None
    min_cores: int = 2
    alpha: float = 0.05
    beta: float = 0.001

    def __post_init__(self):
        variants = tuple(self.variants)
        if not variants:
            raise ValueError("variants must list at least one variant, got none")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants must have distinct names, got {names}")
        object.__setattr__(self, "variants", variants)
        if not _is_whole(self.budget) or self.budget < 1:
            raise ValueError(f"budget must be a whole number of cores >= 1, got {self.budget!r}")
        for v in variants:
            if len(v.capacity) <= self.budget:
                raise ValueError(f"variant {v.name!r}: capacity covers 0..{len(v.capacity) - 1} cores, "
                                 f"but budget {self.budget!r} needs 0..{self.budget}")
        if not (_is_finite_at_least(self.load, 0.0) and self.load > 0):
            raise ValueError(f"load must be a finite rate > 0 req/s (AA divides by it), got {self.load!r}")
        if not _is_whole(self.min_cores) or not 1 <= self.min_cores <= self.budget:
            raise ValueError(f"min_cores must be a whole number in [1, budget={self.budget}], got {self.min_cores!r}")
        for name in ("alpha", "beta"):
            if not _is_finite_at_least(getattr(self, name), 0.0):
                raise ValueError(f"{name} must be a finite weight >= 0, got {getattr(self, name)!r}")
        current = (0,) * len(variants) if self.current_cores is None else tuple(self.current_cores)
        if len(current) != len(variants) or not all(_is_whole(n) and n >= 0 for n in current):
            raise ValueError(f"current_cores must give {len(variants)} whole numbers >= 0, "
                             f"got {self.current_cores!r}")
        object.__setattr__(self, "current_cores", tuple(int(n) for n in current))

    @property
    def core_options(self) -> range:
        """The non-zero core counts a variant may get."""
        return range(self.min_cores, self.budget + 1)


@dataclass(frozen=True)
class Allocation:
    """Cores and quota (req/s) per variant, in the problem's order. ``feasible`` is False
    when the quotas cannot carry the whole predicted load (see the module docstring)."""

    cores: tuple[int, ...]
    quotas: tuple[float, ...]
    objective: float
    feasible: bool


def fill_quotas(problem: AllocationProblem, cores: Sequence[int]) -> tuple[float, ...]:
    """Quotas for fixed cores: the predicted load goes to the most accurate variant up to
    its capacity, the rest to the next, and so on (optimal: see the module docstring).
    Among variants of equal accuracy, menu order goes first."""
    order = sorted(range(len(cores)), key=lambda m: -problem.variants[m].accuracy)
    quotas = [0.0] * len(cores)
    remaining = float(problem.load)
    for m in order:
        quotas[m] = min(float(problem.variants[m].capacity[cores[m]]), remaining)
        remaining -= quotas[m]
    return tuple(quotas)


def loading_cost(problem: AllocationProblem, cores: Sequence[int]) -> float:
    """LC in [0, 1]: the longest load among variants whose cores change to a new non-zero
    value, over the longest load time of any variant (0 if no variant takes time to load)."""
    longest = max(v.load_time for v in problem.variants)
    if longest == 0:
        return 0.0
    loading = [v.load_time for v, n, now in zip(problem.variants, cores, problem.current_cores) if n and n != now]
    return max(loading, default=0.0) / longest


def evaluate(problem: AllocationProblem, cores: Sequence[int]) -> Allocation:
    """The allocation ``cores`` makes: greedy quotas, its objective, and whether it
    carries the predicted load."""
    allowed = set(problem.core_options) | {0}
    if len(cores) != len(problem.variants) or not all(_is_whole(n) and n in allowed for n in cores) \
            or sum(cores) > problem.budget:
        raise ValueError(f"cores must give each of the {len(problem.variants)} variants 0 or "
                         f"{problem.min_cores}..{problem.budget} cores, {problem.budget} in all; got {cores}")
    cores = tuple(int(n) for n in cores)
    quotas = fill_quotas(problem, cores)
    accuracy = sum(q * v.accuracy for q, v in zip(quotas, problem.variants)) / problem.load
    objective = (accuracy - problem.alpha * sum(cores) / problem.budget
                 - problem.beta * loading_cost(problem, cores))
    return Allocation(cores, quotas, objective, sum(quotas) >= problem.load - _LOAD_SLACK)


def _rank(allocation: Allocation) -> tuple:
    """The order :func:`brute_force` maximises and :func:`solve` reaches in its two
    phases: a feasible allocation first, otherwise the most load served, then the objective."""
    return (allocation.feasible, 0.0 if allocation.feasible else sum(allocation.quotas), allocation.objective)


def brute_force(problem: AllocationProblem) -> Allocation:
    """Enumerate every core vector within the budget (small instances: the count is
    (B − min_cores + 2)^variants) and keep the best by :func:`_rank`."""
    options = (0, *problem.core_options)
    allocations = (evaluate(problem, cores) for cores in product(options, repeat=len(problem.variants))
                   if sum(cores) <= problem.budget)
    return max(allocations, key=_rank)


class _Program:
    """The binaries ``y[m, k]`` (variant m gets the k-th allowed non-zero core count),
    flattened variant-major. The quotas and LC's ``z`` follow in :meth:`best`."""

    def __init__(self, problem: AllocationProblem):
        self.problem = problem
        self.options = np.array(problem.core_options, dtype=float)
        self.m, self.k = len(problem.variants), self.options.size
        self.capacity = np.array([[v.capacity[int(k)] for k in self.options] for v in problem.variants], dtype=float)
        self.ny = self.m * self.k

    def _per_variant(self, rows: np.ndarray) -> np.ndarray:
        """An ``m × ny`` block matrix whose row m holds ``rows[m]`` in variant m's columns."""
        return (np.eye(self.m)[:, :, None] * rows[None, :, :]).reshape(self.m, self.ny)

    def _choice_rows(self, extra: int) -> list[LinearConstraint]:
        """At most one core count per variant, and the budget; ``extra`` more columns follow y."""
        pad = np.zeros((self.m, extra))
        one_each = np.hstack([self._per_variant(np.ones((self.m, self.k))), pad])
        budget = np.concatenate([np.tile(self.options, self.m), np.zeros(extra)])
        return [LinearConstraint(one_each, -np.inf, 1), LinearConstraint(budget[None, :], -np.inf, self.problem.budget)]

    def cores(self, x: np.ndarray) -> tuple[int, ...]:
        y = np.round(x[:self.ny]).reshape(self.m, self.k)
        return tuple(int(n) for n in y @ self.options)

    def max_capacity(self) -> float:
        """The largest load any allocation within the budget serves (a whole number)."""
        x = exact_milp(-self.capacity.ravel(), self._choice_rows(0), np.ones(self.ny),
                       Bounds(np.zeros(self.ny), np.ones(self.ny)))
        return float(np.round(self.capacity.ravel() @ np.round(x)))

    def best(self, served: float) -> Optional[np.ndarray]:
        """Maximise the objective with exactly ``served`` req/s in quotas. Variables: y,
        then the quotas l (m), then z."""
        p, m, ny = self.problem, self.m, self.ny
        n_vars = ny + m + 1
        rows = self._choice_rows(m + 1)
        quota_cap = np.hstack([-self._per_variant(self.capacity), np.eye(m), np.zeros((m, 1))]) * _MILLI
        rows.append(LinearConstraint(quota_cap, -np.inf, 0))
        all_served = np.concatenate([np.zeros(ny), np.ones(m), [0.0]]) * _MILLI
        rows.append(LinearConstraint(all_served[None, :], served * _MILLI, served * _MILLI))
        longest = max(v.load_time for v in p.variants)
        if longest > 0:
            changes = self.options[None, :] != np.array(p.current_cores, dtype=float)[:, None]
            weights = np.array([v.load_time / longest for v in p.variants])[:, None] * changes
            rows.append(LinearConstraint(np.hstack([self._per_variant(weights), np.zeros((m, m)), -np.ones((m, 1))]),
                                         -np.inf, 0))
        accuracy = np.array([v.accuracy for v in p.variants])
        c = np.concatenate([np.tile(p.alpha / p.budget * self.options, m), -accuracy / p.load, [p.beta]])
        integrality = np.concatenate([np.ones(ny), np.zeros(m + 1)])
        upper = np.concatenate([np.ones(ny), np.full(m, np.inf), [1.0]])
        return exact_milp(c, rows, integrality, Bounds(np.zeros(n_vars), upper))


def solve(problem: AllocationProblem) -> Allocation:
    """The optimal allocation (HiGHS via ``scipy.optimize.milp``). If none carries the
    predicted load, the best-effort one described in the module docstring, with
    ``feasible=False``."""
    program = _Program(problem)
    x = program.best(served=float(problem.load))
    if x is None:
        x = program.best(served=program.max_capacity())
    return evaluate(problem, program.cores(x))
