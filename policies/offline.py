"""Offline-tuned exit policies: the static baselines Apparate is compared with.

Each is fitted once on a behaviour table and never learns online, which is the point
of the comparison: on a stream whose behaviour drifts, thresholds that met the accuracy
budget on the fitting data need not meet it later.

* :class:`BranchyNet` (and :class:`DeeBERT`, the same rule and search): ramps at every
  exit, one shared entropy threshold T (exit at the first ramp with entropy < T), the
  largest-saving T on a grid whose agreement with the final exit on the table is
  >= 1 - ``accuracy_budget``; ``per_ramp=True`` is the papers' "+" variant, one T per
  ramp, improved greedily from the shared one.
* :class:`BestStatic`: Apparate's own rule (exit at ramp j if 1 - confidence_j < t_j)
  with per-ramp thresholds searched the same way; given the evaluation rows
  ("hindsight") it is the best static configuration, a bound on what tuning once buys.

All searches work on a *cut* per ramp: exit at the first ramp whose *score* exceeds its
cut (score = confidence, cut = 1 - t; or score = -entropy, cut = -T), so one search
serves both rules. A cut of 1 (t = 0) or 0 (T = 0) never exits, so a feasible
configuration always exists. The cost of exiting at exit i is ``sum(stage_costs[:i+1])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from servesim.policies.exit import Decision, ExitObservation, ExitPolicy, _stop_or_last, check_stage_costs

_SLACK = 1e-9  # per row: float noise in summed costs (agreement counts are exact)


@dataclass(frozen=True)
class Replay:
    """What a fitted rule does on a table, row by row, offline."""

    agreement: float  # share of rows answered in agreement with the final exit
    accuracy: float   # share of rows answered correctly
    cost: float       # mean cost paid, in stage-cost units
    saving: float     # 1 - cost / cost of the full path


def first_exits(score: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Per row, the first exit whose score exceeds its cut; the last exit if none does."""
    stop = score > cut
    stop[:, -1] = True
    return stop.argmax(axis=1)


class _Search:
    """The rows of a table as a search sees them: scores, agreement, cost of each exit."""

    def __init__(self, score: np.ndarray, agrees: np.ndarray, paid: np.ndarray, budget: float):
        self.score, self.paid = score, paid
        self.agrees = agrees.astype(np.float64)
        self.rows = np.arange(score.shape[0])
        self.budget = budget

    def best(self, agree: np.ndarray, cost: np.ndarray) -> int:
        """Index of the cheapest candidate (totals over the rows) whose agreement meets the
        budget, the more agreeing among equally cheap ones. Agreement is count / rows, the
        division a mean does, so a fit meets its budget exactly as
        :meth:`_OfflineThresholds.replay` measures it. Every search offers a feasible
        candidate: the never-exiting cut, or the current one."""
        feasible = np.flatnonzero(agree / self.rows.size >= 1.0 - self.budget)
        return int(feasible[np.lexsort((-agree[feasible], cost[feasible]))[0]])

    def totals(self, cut: np.ndarray) -> tuple[float, float]:
        """(agreeing rows, total cost) under ``cut``."""
        exits = first_exits(self.score, cut)
        return self.agrees[self.rows, exits].sum(), self.paid[exits].sum()

    def shared(self, grid: np.ndarray) -> np.ndarray:
        """The best feasible cut shared by every ramp, as a per-exit cut."""
        n_exits = self.score.shape[1]
        cuts = [np.append(np.full(n_exits - 1, c), -np.inf) for c in grid]
        agree, cost = np.array([self.totals(cut) for cut in cuts]).T
        return cuts[self.best(agree, cost)]

    def coordinate(self, cut: np.ndarray, j: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(agreeing rows, total cost) for every cut in ``grid`` at ramp j, the others
        kept: rows reaching ramp j exit there iff their score exceeds the cut, so after
        one sort each candidate is a suffix sum of what exiting at j changes."""
        without = cut.copy()
        without[j] = np.inf
        exits = first_exits(self.score, without)
        agree, paid = self.agrees[self.rows, exits], self.paid[exits]
        change = (exits > j)[:, None] * np.column_stack([self.agrees[:, j] - agree, self.paid[j] - paid])
        order = np.argsort(self.score[:, j])
        suffix = np.vstack([np.cumsum(change[order][::-1], axis=0)[::-1], np.zeros((1, 2))])
        base = np.array([agree.sum(), paid.sum()])
        totals = base + suffix[np.searchsorted(self.score[order, j], grid, side="right")]
        return totals[:, 0], totals[:, 1]

    def per_ramp(self, grid: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Greedy coordinate search from the feasible ``start`` (cuts on ``grid``): move the one
        ramp's cut that lowers the cost most while staying feasible, until none does."""
        cut = start.copy()
        _, cost = self.totals(cut)
        while True:
            moves = []
            for j in range(cut.size - 1):
                agree_j, cost_j = self.coordinate(cut, j, grid)
                k = self.best(agree_j, cost_j)
                moves.append((cost_j[k], j, grid[k]))
            best_cost, j, value = min(moves)
            if best_cost >= cost - _SLACK * self.rows.size:
                return cut
            cut[j], cost = value, best_cost


class _OfflineThresholds(ExitPolicy):
    """Cuts on a per-exit score fitted once on a table; see the module docstring.
    Subclasses give the score and ``_offset`` (threshold = offset - cut)."""

    _offset: float
    _threshold_bounds: tuple[float, float]

    def __init__(self, accuracy_budget: float, grid: int | Sequence[float], per_ramp: bool):
        if not 0 <= accuracy_budget < 1:
            raise ValueError(f"{self.name}: accuracy_budget must be in [0, 1), got {accuracy_budget!r}")
        if np.ndim(grid) == 0:
            if isinstance(grid, bool) or int(grid) != grid or grid < 2:
                raise ValueError(f"{self.name}: grid must be a whole number >= 2 (quantiles) or a list "
                                 f"of thresholds, got {grid!r}")
            grid = int(grid)
        else:
            values = np.asarray(grid, dtype=np.float64)
            lo, hi = self._threshold_bounds
            if values.ndim != 1 or values.size == 0 or not ((values >= lo) & (values <= hi)).all():
                raise ValueError(f"{self.name}: grid thresholds must be numbers in [{lo}, {hi}], got {grid!r}")
            grid = values.tolist()
        self.accuracy_budget = float(accuracy_budget)
        self.grid = grid
        self.per_ramp = per_ramp
        self.cut: Optional[np.ndarray] = None
        self.fitted: Optional[Replay] = None

    def _score(self, source) -> np.ndarray:
        """Per-exit scores of a table or an observation: higher is surer."""
        raise NotImplementedError

    def _cuts(self, score: np.ndarray) -> np.ndarray:
        """Candidate cuts: the grid's thresholds, or quantiles of the ramps' scores, and
        always the cut that never exits."""
        if isinstance(self.grid, int):
            candidates = np.quantile(score[:, :-1], np.linspace(0, 1, self.grid))
        else:
            candidates = self._offset - np.asarray(self.grid)
        return np.unique(np.append(candidates, self._offset))

    def fit(self, table, stage_costs: Sequence[float]) -> ExitPolicy:
        paid = np.cumsum(check_stage_costs(stage_costs, table.n_exits))
        if table.n_exits < 2:
            raise ValueError(f"{self.name}: the table has no ramp to exit at (one exit)")
        score = self._score(table)
        search = _Search(score, table.agrees, paid, self.accuracy_budget)
        cuts = self._cuts(score)
        cut = search.shared(cuts)
        self.cut = search.per_ramp(cuts, cut) if self.per_ramp else cut
        self.fitted = self.replay(table, stage_costs)
        return self

    def _fitted_cut(self, n_exits: int) -> np.ndarray:
        if self.cut is None:
            raise ValueError(f"{self.name}: call fit() before deciding or replaying")
        if self.cut.size != n_exits:
            raise ValueError(f"{self.name}: fitted for {self.cut.size} exits, asked about {n_exits}")
        return self.cut

    def replay(self, table, stage_costs: Sequence[float]) -> Replay:
        """How the fitted rule does on ``table`` (e.g. the rows of a later regime)."""
        paid = np.cumsum(check_stage_costs(stage_costs, table.n_exits))
        exits = first_exits(self._score(table), self._fitted_cut(table.n_exits))
        rows = np.arange(table.n_samples)
        cost = float(paid[exits].mean())
        return Replay(agreement=float(table.agrees[rows, exits].mean()),
                      accuracy=float(table.correct[rows, exits].mean()),
                      cost=cost, saving=float(1.0 - cost / paid[-1]) if paid[-1] > 0 else 0.0)

    def decide(self, obs: ExitObservation) -> Decision:
        i = obs.exit_index
        cut = self._fitted_cut(obs.n_exits)
        return _stop_or_last(obs, self._score(obs)[:, i] > cut[i])

    def thresholds(self) -> Optional[list[float]]:
        """The fitted per-ramp thresholds in the rule's own units (the final exit has none)."""
        return None if self.cut is None else (self._offset - self.cut[:-1]).tolist()

    def params(self) -> dict:
        params = {"accuracy_budget": self.accuracy_budget, "grid": self.grid, "per_ramp": self.per_ramp,
                  "thresholds": self.thresholds()}
        if self.fitted is not None:
            params.update(fit_agreement=self.fitted.agreement, fit_saving=self.fitted.saving)
        return params


class BranchyNet(_OfflineThresholds):
    """BranchyNet (Teerapittayanon et al., ICPR 2016): exit at the first ramp whose
    softmax entropy (nats) is below T, T grid-searched offline for the largest saving
    within the agreement budget; one T shared by all ramps, or one per ramp
    (``per_ramp``, the "+" variant). ``grid``: a number of quantiles of the table's ramp
    entropies, or a list of T values. Needs the workload's entropies."""

    name = "branchynet"
    _offset = 0.0
    _threshold_bounds = (0.0, np.inf)

    def __init__(self, accuracy_budget: float = 0.01, grid: int | Sequence[float] = 200, per_ramp: bool = False):
        super().__init__(accuracy_budget, grid, per_ramp)

    def _score(self, source) -> np.ndarray:
        if source.entropy is None:
            raise ValueError(f"{self.name} thresholds softmax entropies, but the workload has none "
                             f"(entropy is None)")
        return -source.entropy


class DeeBERT(BranchyNet):
    """DeeBERT (Xin et al., ACL 2020): one global entropy threshold S on every highway
    ramp, chosen offline; the same rule and search as :class:`BranchyNet`."""

    name = "deebert"


class BestStatic(_OfflineThresholds):
    """Apparate's exit rule (exit at ramp j if 1 - confidence_j < t_j) with the per-ramp
    thresholds t that save most while agreeing with the final exit on >= 1 -
    ``accuracy_budget`` of the table they are fitted on. Fitted on the evaluation rows it
    is the hindsight-best static configuration. The greedy per-ramp search starts from
    the best shared threshold, so it never saves less than any one threshold on its grid.
    ``grid``: a number of quantiles of the table's ramp confidences, or a list of t."""

    name = "best_static"
    _offset = 1.0
    _threshold_bounds = (0.0, 1.0)

    def __init__(self, accuracy_budget: float = 0.01, grid: int | Sequence[float] = 200):
        super().__init__(accuracy_budget, grid, per_ramp=True)

    def _score(self, source) -> np.ndarray:
        return source.confidence
