"""Markov optimal stopping for early exits: the optimal no-recall rule and T-Tamer's
recall index (Yang, Zhang, Morgenstern, Xu, arXiv 2509.22992; shared/research/ee_cascades.md §1).

**Model.** A request runs exits ``0..n-1`` in order. Opening exit ``i`` costs ``c_i``
(``c_0`` is always paid) and reveals a loss ``R_i`` on a finite, sorted support ``V``.
The losses form a Markov chain: ``R_0 ~ p_0``, ``R_{i+1} | R_i = r ~ P_i(. | r)``. A
policy stops after some exit ``t`` and pays the loss of its answer: ``R_t`` without
recall, ``X_t = min_{j<=t} R_j`` with recall (the best exit consulted; recall refunds no
cost). :class:`MarkovChain` holds such an instance; the losses and costs in it are
already weighted (``λ·loss``, ``(1-λ)·cost``), so the objective is their plain sum.

**DP.** With ``X`` the best loss so far, ``r`` the current one, after exit ``i``::

    Φ_{n-1}(X, r) = X
    Φ_i(X, r)     = min{ X,  C_i(X, r) },   C_i(X, r) = c_{i+1} + Σ_r' P_i(r'|r) Φ_{i+1}(min(X, r'), r')

and the value is ``c_0 + Σ_r p_0(r) Φ_0(r, r)``. ``X`` is itself a support value, so each
``Φ_i`` is a ``|V|×|V|`` table and ``C_i = c_{i+1} + G @ P_i^T`` with
``G[X, r'] = Φ_{i+1}(min(X, r'), r')``: one matrix product per exit. Without recall the
``X`` axis collapses (the answer is ``r``) and each step is a vector-matrix product.

**Index.** ``X - C_i(X, r)`` is non-decreasing in ``X`` (``Φ`` has slope in [0, 1] in
``X``), so the states where stopping is weakly optimal are a down-set ``X <= σ``, and
``σ(r, i+1)`` — the largest such ``X``, T-Tamer's index (Thm 4.5: it does not depend on
``X``) — is where ``X - C_i`` crosses zero. It is found between the two grid points that
bracket the sign change and interpolated linearly. Bracketing reproduces the DP's
decision at every grid point (up to ties within a relative 1e-12); the interpolation is
exact at the last stage, where ``C`` is piecewise linear with kinks on ``V``, so there
``E[(σ - R_{n-1})_+] = c_{n-1}``: Weitzman's reservation value. Online, a request
continues iff ``X > σ(R_i, i+1)``: one table look-up.

**Fitting** (:class:`TTamer`, :class:`OptimalNoRecall`): each exit's confidence is mapped
to a loss proxy — by default its error rate, calibrated by centred isotonic regression on
every labelled sample — discretised into ``bins`` loss states (:class:`LossGrid`;
``"auto"``: the grid of :data:`BIN_CHOICES` that does best out of fold),
and the kernels are counted with additive smoothing (:func:`estimate_chain`) from
cross-fitted states: each sample's states come from a calibration fitted on the other
folds (:func:`cross_fitted_losses`), so the chain is not counted from labels the
calibration has memorised. T-Tamer answers from an earlier exit only where its loss is
lower than the current exit's beyond the estimates' noise (:meth:`TTamer._losses`).
Online, the fitted rule reads each exit's calibrated loss itself, not its grid state, and
interpolates σ (or, without recall, the gap between stopping and going on) between the
states its samples occupy (:class:`Support`): a state holds many requests, and a rule on
states alone moves them all at once as λ changes.

**Soft state aggregation** (``TTamer(aggregate=q)``, :func:`aggregate`): every kernel is
replaced by a rank-``q`` factorisation ``P_i ≈ A B_i`` through ``q`` meta-states. ``A``
(``|V|×q``) gives each grid state soft memberships of the two nearest of ``q`` centres
spread evenly over the grid (hat functions: a partition of unity, and the identity at
``q = |V|``); ``B_i[k]`` is the next-loss distribution of meta-state ``k``, the average of
its members' kernel rows weighted by membership × occupancy of exit ``i``. ``G @ P_i^T``
becomes ``(G @ B_i^T) @ A^T``: ``O(|V|²q)`` instead of ``O(|V|³)`` per exit, and meta-states
pool the sparse transition counts of neighbouring loss bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from sklearn.isotonic import IsotonicRegression

from servesim.policies.exit import Decision, ExitObservation, ExitPolicy, check_stage_costs

_ATOL = 1e-9
# Relative tolerance under which stopping and continuing count as tied (see _crossing).
_TIE = 1e-12
# Occupancy floor in soft aggregation: a meta-state whose members are all unreachable
# still gets a defined (uniformly weighted) kernel; too small to move a reachable one.
_OCCUPANCY_FLOOR = 1e-12
# Cross-fitting folds: each sample's loss state comes from a calibration fitted on the others.
FOLDS = 5
# The state spaces ``bins="auto"`` chooses from, by out-of-fold objective: a coarse grid
# pools sparse transition counts, a fine one resolves the loss; which wins depends on
# how many samples there are and how the exits' losses spread.
BIN_CHOICES = (25, 100, 400)
# Confidence bins of a LossGrid's look-up tables, whatever its number of loss states.
RESOLUTION = 1000
# Recall answers from an earlier exit only if its loss is lower than the last exit's by
# more than this many standard errors of the two estimates together.
RECALL_Z = 2.0
LOSSES = ("calibrated", "agreement", "confidence")


@dataclass(frozen=True)
class DenseKernel:
    """``matrix[r, r'] = P(next loss = r' | current loss = r)``; rows sum to 1."""

    matrix: np.ndarray

    def expect(self, g: np.ndarray) -> np.ndarray:
        """``(g @ P^T)[x, r] = Σ_r' P(r'|r) g[x, r']``."""
        return g @ self.matrix.T


@dataclass(frozen=True)
class LowRankKernel:
    """``P = membership @ emission`` through q meta-states (soft state aggregation)."""

    membership: np.ndarray  # (K, q): soft membership of each loss state in each meta-state
    emission: np.ndarray    # (q, K): next-loss distribution of each meta-state

    @property
    def matrix(self) -> np.ndarray:
        return self.membership @ self.emission

    def expect(self, g: np.ndarray) -> np.ndarray:
        return (g @ self.emission.T) @ self.membership.T


Kernel = Union[DenseKernel, LowRankKernel]


def _check_rows(name: str, array: np.ndarray) -> None:
    if not ((array >= 0).all() and np.allclose(array.sum(axis=-1), 1.0, rtol=0, atol=_ATOL)):
        raise ValueError(f"{name}: entries must be >= 0 and each row must sum to 1")


@dataclass(frozen=True)
class MarkovChain:
    """An abstract instance: support ``values`` (K, strictly increasing, >= 0), ``initial``
    distribution of ``R_0`` (K,), ``kernels[i]`` from exit i to exit i+1 (n-1 of them:
    (K, K) arrays or kernel objects) and ``costs`` (n,: ``costs[i]`` opens exit i)."""

    values: np.ndarray
    initial: np.ndarray
    kernels: Sequence[Kernel]
    costs: np.ndarray

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        costs = np.asarray(self.costs, dtype=np.float64)
        if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all() \
                or (values < 0).any() or (np.diff(values) <= 0).any():
            raise ValueError("values: a non-empty, finite, strictly increasing support of losses >= 0")
        if costs.ndim != 1 or costs.size == 0:
            raise ValueError("costs: one entry per exit (at least one)")
        check_stage_costs(costs, costs.size)
        k = values.size
        initial = np.asarray(self.initial, dtype=np.float64)
        if initial.shape != (k,):
            raise ValueError(f"initial: shape {initial.shape}, expected ({k},)")
        _check_rows("initial", initial)
        if len(self.kernels) != costs.size - 1:
            raise ValueError(f"kernels: {len(self.kernels)} for {costs.size} exits; expected {costs.size - 1}")
        kernels = tuple(_as_kernel(kernel, k, i) for i, kernel in enumerate(self.kernels))
        for name, value in (("values", values), ("initial", initial), ("kernels", kernels), ("costs", costs)):
            object.__setattr__(self, name, value)

    @property
    def n_exits(self) -> int:
        return self.costs.size


def _as_kernel(kernel, k: int, i: int) -> Kernel:
    if isinstance(kernel, LowRankKernel):
        _check_rows(f"kernels[{i}].membership", kernel.membership)
        _check_rows(f"kernels[{i}].emission", kernel.emission)
        shapes = (kernel.membership.shape[0], kernel.emission.shape[1])
    else:
        kernel = kernel if isinstance(kernel, DenseKernel) else DenseKernel(np.asarray(kernel, dtype=np.float64))
        _check_rows(f"kernels[{i}]", kernel.matrix)
        shapes = kernel.matrix.shape
    if shapes != (k, k):
        raise ValueError(f"kernels[{i}]: maps {shapes[0]} states to {shapes[1]}; the support has {k}")
    return kernel


def _backward(chain: MarkovChain, recall: bool, stage) -> float:
    """Backward induction from the last exit to the root. ``stage(i, answer, cont)`` turns
    the continuation table of exit i (expected cost-to-go of opening exit i+1, indexed
    ``[X, r]``; ``X`` is a length-1 axis without recall) and the stop table ``answer``
    (the loss a stop pays) into the cost-to-go after exit i."""
    values = chain.values
    k = values.size
    answer = values[:, None] if recall else values[None, :]
    w = np.broadcast_to(answer, (k, k) if recall else (1, k))
    upper = np.arange(k)[:, None] <= np.arange(k)[None, :] if recall else None
    for i in range(chain.n_exits - 2, -1, -1):
        # G[X, r'] = W[min(X, r'), r']: W itself above the diagonal, W[r', r'] below it.
        g = np.where(upper, w, np.diagonal(w)[None, :]) if recall else w
        w = stage(i, answer, chain.costs[i + 1] + chain.kernels[i].expect(g))
    root = np.diagonal(w) if recall else w[0]
    return float(chain.costs[0] + chain.initial @ root)


@dataclass(frozen=True)
class RecallIndex:
    """A solved recall instance: the DP ``value`` (expected objective of the optimal policy
    from the root), ``sigma[i, r]`` = σ(r, i), the index for opening exit i when the
    previous exit's loss is ``values[r]`` (row 0 is -inf: exit 0 always runs), and
    ``threshold[i, r]`` = how many support values are <= σ, for integer look-ups."""

    value: float
    sigma: np.ndarray
    threshold: np.ndarray

    def decide(self, states: np.ndarray) -> Decision:
        """Vectorised online rule. ``states`` (m, i+1): loss-state indices of exits 0..i
        (indices into the sorted support, so the smallest index is the smallest loss).
        Continue iff the best loss so far X > σ(R_i, i+1); the answer is the exit with the
        smallest loss, the latest one among ties (recall only when strictly better)."""
        i = states.shape[1] - 1
        best = states.min(axis=1)
        answer = (i - np.argmin(states[:, ::-1], axis=1)).astype(np.int64)
        if i == self.sigma.shape[0] - 1:
            return np.ones(states.shape[0], dtype=bool), answer
        return best < self.threshold[i + 1, states[:, i]], answer

    def stop_table(self) -> np.ndarray:
        """The policy as a table ``stop[i, X, r]`` (exits 0..n-2), for :func:`evaluate`."""
        k = self.sigma.shape[1]
        return np.arange(k)[None, :, None] < self.threshold[1:, None, :]

    def stops(self, i: int, best: np.ndarray, current: np.ndarray, at: np.ndarray,
              states: np.ndarray) -> np.ndarray:
        """The rule on losses between the support's values: stop after exit i (< n-1) iff
        ``best <= σ(current, i+1)``, with σ read at ``states`` (sitting at losses ``at``)
        and interpolated linearly between them (flat beyond). Where ``at`` are those
        states' values, at them it is :meth:`decide`."""
        return best <= np.interp(current, at, self.sigma[i + 1, states])


@dataclass(frozen=True)
class StoppingRule:
    """A solved no-recall instance: the DP ``value`` and ``stop[i, r]`` (exits 0..n-2),
    whether to stop after exit i at loss state r."""

    value: float
    stop: np.ndarray
    gap: np.ndarray    # (n-1, K): loss of stopping minus expected cost of going on

    def decide(self, states: np.ndarray) -> Decision:
        i = states.shape[1] - 1
        answer = np.full(states.shape[0], i, dtype=np.int64)
        if i == self.stop.shape[0]:
            return np.ones(states.shape[0], dtype=bool), answer
        return self.stop[i, states[:, i]], answer

    def stop_table(self) -> np.ndarray:
        """``stop[i, X, r]`` with a length-1 ``X`` axis, for ``evaluate(..., recall=False)``."""
        return self.stop[:, None, :]

    def stops(self, i: int, best: np.ndarray, current: np.ndarray, at: np.ndarray,
              states: np.ndarray) -> np.ndarray:
        """The rule on losses between the support's values: stop after exit i (< n-1) iff
        the gap (stop minus go on), read at ``states`` (sitting at losses ``at``) and
        interpolated linearly at ``current``, is <= 0 (``best`` is ignored: the answer
        is the current exit). Where ``at`` are those states' values, at them it is
        :meth:`decide`."""
        return np.interp(current, at, self.gap[i, states]) <= 0


def _crossing(values: np.ndarray, cont: np.ndarray) -> np.ndarray:
    """Per column r, the largest X at which stopping is weakly optimal (X <= C(X, r)).

    ``f = X - C`` is non-decreasing in X and ``f(values[0]) <= 0`` (every continuation
    pays at least the smallest loss). ``f`` within ``_TIE`` of 0 counts as a tie (stop):
    where ``f`` is flat at 0 over a stretch of the grid, rounding would otherwise move σ
    across the whole stretch. The root is interpolated between the bracketing grid
    points; if stopping is optimal on the whole grid, ``C`` is constant above the grid
    and the root is ``C(values[-1], r)``."""
    f = values[:, None] - cont
    tie = _TIE * max(values[-1], 1.0)
    positive = f > tie
    positive[0] = False
    first = positive.argmax(axis=0)            # 0 where f <= 0 on the whole grid
    cols = np.arange(values.size)
    lo = np.maximum(first - 1, 0)
    f_lo = np.where(f[lo, cols] < -tie, f[lo, cols], 0.0)
    f_hi = f[first, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = values[lo] + (values[first] - values[lo]) * (-f_lo) / (f_hi - f_lo)
    return np.where(first == 0, cont[-1], inner)


def solve_recall(chain: MarkovChain) -> RecallIndex:
    """T-Tamer's DP with recall: the value and the σ table."""
    sigma = np.full((chain.n_exits, chain.values.size), -np.inf)

    def stage(i, answer, cont):
        sigma[i + 1] = _crossing(chain.values, cont)
        return np.minimum(answer, cont)

    value = _backward(chain, True, stage)
    threshold = np.searchsorted(chain.values, sigma, side="right")
    return RecallIndex(value, sigma, threshold)


def solve_no_recall(chain: MarkovChain) -> StoppingRule:
    """Markov optimal stopping without recall (the answer is the last exit opened)."""
    gap = np.zeros((chain.n_exits - 1, chain.values.size))

    def stage(i, answer, cont):
        gap[i] = answer[0] - cont[0]
        return np.minimum(answer, cont)

    value = _backward(chain, False, stage)
    return StoppingRule(value, gap <= 0, gap)


def evaluate(chain: MarkovChain, stop: np.ndarray, recall: bool = True) -> float:
    """Exact expected objective of any Markov policy on ``chain``: ``stop[i, X, r]``
    (broadcastable to (n-1, K, K), or (n-1, 1, K) without recall) says whether to stop
    after exit i with best loss state X and current loss state r."""
    k = chain.values.size
    stop = np.broadcast_to(np.asarray(stop, dtype=bool), (chain.n_exits - 1, k if recall else 1, k))
    return _backward(chain, recall, lambda i, answer, cont: np.where(stop[i], answer, cont))


def _hat_membership(k: int, q: int) -> np.ndarray:
    """(k, q) soft memberships: each grid state splits between its two nearest of q evenly
    spaced centres, in proportion to closeness (rows sum to 1; the identity at q = k)."""
    if q == 1:
        return np.ones((k, 1))
    position = np.arange(k) * (q - 1) / (k - 1)
    lo = np.minimum(position.astype(np.intp), q - 2)
    weight = position - lo
    membership = np.zeros((k, q))
    rows = np.arange(k)
    membership[rows, lo] = 1.0 - weight
    membership[rows, lo + 1] = weight
    return membership


def aggregate(chain: MarkovChain, q: int) -> MarkovChain:
    """``chain`` with every kernel replaced by its rank-q soft state aggregation (module
    docstring). The occupancy of each exit comes from propagating ``initial``."""
    k = chain.values.size
    if isinstance(q, bool) or int(q) != q or not 1 <= q <= k:
        raise ValueError(f"aggregate: q must be a whole number in [1, {k}] (the support size), got {q!r}")
    membership = _hat_membership(k, int(q))
    occupancy = chain.initial
    kernels = []
    for kernel in chain.kernels:
        matrix = kernel.matrix
        emission = (membership * (occupancy + _OCCUPANCY_FLOOR)[:, None]).T @ matrix
        kernels.append(LowRankKernel(membership, emission / emission.sum(axis=1, keepdims=True)))
        occupancy = occupancy @ matrix
    return MarkovChain(chain.values, chain.initial, kernels, chain.costs)


@dataclass(frozen=True)
class LossGrid:
    """Maps each exit's confidence to a calibrated loss and a loss state. Confidences fall
    into :data:`RESOLUTION` equal bins, whatever the number of states (a coarse chain
    need not blur what the calibration tells apart); ``loss[j, u]`` is the calibrated
    loss of confidence bin u at exit j and ``se[j, u]`` its standard error (0 for the
    uncalibrated ``confidence`` proxy), for recall decisions that must not trust a
    difference smaller than the estimates' noise. State s holds the losses in the s-th
    of ``bins`` equal bins of [0, 1]."""

    bins: int
    loss: np.ndarray    # (n_exits, RESOLUTION) float
    se: np.ndarray      # (n_exits, RESOLUTION) float

    def bins_of(self, confidence: np.ndarray) -> np.ndarray:
        """(m, c) confidences (in [0, 1]) -> their confidence bins."""
        resolution = self.loss.shape[1]
        u = (np.asarray(confidence) * resolution).astype(np.intp)
        return np.clip(u, 0, resolution - 1)

    def losses(self, confidence: np.ndarray) -> np.ndarray:
        """(m, c) confidences (in [0, 1]) of exits 0..c-1 -> (m, c) calibrated losses."""
        return self.loss[np.arange(confidence.shape[1]), self.bins_of(confidence)]

    def state_of(self, losses: np.ndarray) -> np.ndarray:
        """Losses in [0, 1] -> their loss states."""
        return np.minimum((np.asarray(losses) * self.bins).astype(np.intp), self.bins - 1)

    def states(self, confidence: np.ndarray) -> np.ndarray:
        """(m, c) confidences (in [0, 1]) of exits 0..c-1 -> (m, c) loss states."""
        return self.state_of(self.losses(confidence))


@dataclass(frozen=True)
class Support:
    """Where a fitted chain's states sit: ``values[s]``, the mean loss of the samples in
    state s (over all exits; the bin's midpoint where none fell), is the loss the chain
    gives the state; ``anchors[i] = (at, states)``, the states exit i's samples occupy
    and their mean loss at exit i, is where the online rule reads the solved table and
    between which it interpolates. Means, not bin midpoints: a state's value is then the
    loss its requests have, so a request at a state's mean is decided as that state, and
    empty states — whose kernel rows are only the smoothing prior — are never read.

    Every value is > 0 unless an exit never erred (T-Tamer's Assumption 2.1 asks for
    positive losses: the no-recall / recall ratio is a ratio of expected losses)."""

    values: np.ndarray
    anchors: tuple[tuple[np.ndarray, np.ndarray], ...]


def support(losses: np.ndarray, states: np.ndarray, bins: int) -> Support:
    """The :class:`Support` of samples with ``losses`` (n, E) in ``states`` (n, E)."""
    def means(loss, state):
        count = np.bincount(state, minlength=bins)
        return count, np.bincount(state, weights=loss, minlength=bins) / np.maximum(count, 1)

    count, mean = means(losses.ravel(), states.ravel())
    values = np.where(count > 0, mean, (np.arange(bins) + 0.5) / bins)
    anchors = []
    for j in range(losses.shape[1]):
        count, mean = means(losses[:, j], states[:, j])
        occupied = np.flatnonzero(count)
        anchors.append((mean[occupied], occupied))
    return Support(values, tuple(anchors))


def _calibration(confidence: np.ndarray, errors: np.ndarray, resolution: int, smoothing: float):
    """One exit's error rate as a non-increasing function of its confidence, at the
    centre of each of ``resolution`` equal confidence bins: ``(rate, n)``, by centred isotonic
    regression (Oron & Flournoy, 2017): isotonic regression's blocks, each rate shrunk by
    ``smoothing`` pseudo-samples towards the exit's overall rate and placed at the mean
    confidence of its samples, linearly interpolated between them (flat beyond the
    first and last); ``n`` is the samples behind the estimate, interpolated alike.

    Why centred: plain isotonic regression is a step function with a few steps, so whole
    blocks of requests share one loss state, and a policy fitted on it can only move
    them all at once: its front jumps where a threshold's glides. Interpolating keeps
    the map monotone and the blocks' rates, and tells apart confidences inside a block."""
    mean = float(errors.mean())
    if np.ptp(confidence) == 0:  # one confidence value: one block
        rate = (errors.sum() + smoothing * mean) / (errors.size + smoothing)
        return np.full(resolution, rate), np.full(resolution, errors.size, dtype=np.float64)
    iso = IsotonicRegression(increasing=False, y_min=0.0, y_max=1.0, out_of_bounds="clip")
    fitted = iso.fit_transform(confidence, errors.astype(np.float64))
    # blocks: runs of equal fitted values over the sorted confidences
    order = np.argsort(confidence, kind="stable")
    block = np.concatenate(([0], np.cumsum(np.diff(fitted[order]) != 0)))
    counts = np.bincount(block).astype(np.float64)
    wrong = np.bincount(block, weights=errors[order].astype(np.float64))
    rate = (wrong + smoothing * mean) / (counts + smoothing)
    centre = np.bincount(block, weights=confidence[order]) / counts
    at = (np.arange(resolution) + 0.5) / resolution
    return np.interp(at, centre, rate), np.interp(at, centre, counts)


def loss_grid(table, bins: int, loss: str, smoothing: float, rows: Optional[np.ndarray] = None) -> LossGrid:
    """The loss proxy of each exit as a :class:`LossGrid`, calibrated on ``rows`` of
    ``table`` (default: all of them).

    * ``"confidence"``: loss = 1 - confidence.
    * ``"calibrated"``: loss = the exit's error rate (``~table.correct``) at that
      confidence, by isotonic regression (error never rises with confidence), each
      block's rate shrunk with ``smoothing`` pseudo-samples at the exit's overall rate;
      its standard error is the binomial one of the block. λ·loss is then an expected
      0/1 loss.
    * ``"agreement"``: the same with ``~table.agrees``: disagreement with the final exit
      (the accuracy notion of Apparate and T-Tamer's experiments).
    """
    n_exits = table.n_exits
    if loss == "confidence":
        rate = np.tile(1.0 - (np.arange(RESOLUTION) + 0.5) / RESOLUTION, (n_exits, 1))
        return LossGrid(bins, rate, np.zeros((n_exits, RESOLUTION)))
    errors = _errors(table, loss)
    confidence = np.asarray(table.confidence, dtype=np.float64)
    if rows is not None:
        errors, confidence = errors[rows], confidence[rows]
    rate, samples = np.empty((n_exits, RESOLUTION)), np.empty((n_exits, RESOLUTION))
    for j in range(n_exits):
        rate[j], samples[j] = _calibration(confidence[:, j], errors[:, j], RESOLUTION, smoothing)
    return LossGrid(bins, rate, np.sqrt(rate * (1 - rate) / (samples + smoothing)))


def cross_fitted_losses(table, bins: int, loss: str, smoothing: float, folds: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Every labelled sample's calibrated losses (n, E), each calibrated on the other
    ``folds - 1`` folds (cross-fitting): the chain is then counted from all samples,
    none of them judged by a calibration that has seen its own label (which would make
    the kernels look surer than they are: isotonic regression fits its own samples
    closely)."""
    n = table.n_samples
    confidence = np.asarray(table.confidence, dtype=np.float64)
    if loss == "confidence" or folds < 2 or n < 2 * folds:
        return loss_grid(table, bins, loss, smoothing).losses(confidence)
    fold = rng.permutation(n) % folds
    losses = np.empty(confidence.shape)
    for f in range(folds):
        held = fold == f
        losses[held] = loss_grid(table, bins, loss, smoothing, rows=~held).losses(confidence[held])
    return losses


def estimate_chain(states: np.ndarray, values: np.ndarray, costs: np.ndarray, smoothing: float) -> MarkovChain:
    """The chain of held-out loss states (n, E): ``P_0`` is exit 0's empirical marginal;
    row r of ``P_i`` is the transition counts out of r plus ``smoothing`` pseudo-counts
    spread as exit i+1's marginal, so rows never seen are defined (= that marginal) and
    rarely seen ones are shrunk towards it."""
    n, n_exits = states.shape
    k = values.size
    initial = np.bincount(states[:, 0], minlength=k) / n
    kernels = []
    for i in range(n_exits - 1):
        counts = np.bincount(states[:, i] * k + states[:, i + 1], minlength=k * k).reshape(k, k)
        marginal = counts.sum(axis=0) / n
        kernels.append((counts + smoothing * marginal) / (counts.sum(axis=1, keepdims=True) + smoothing))
    return MarkovChain(values, initial, kernels, costs)


def _errors(table, loss: str) -> np.ndarray:
    """The labelled 0/1 loss of every sample at every exit: wrong (``calibrated``) or
    disagreeing with the final exit (``agreement``)."""
    return ~np.asarray(table.correct if loss == "calibrated" else table.agrees, dtype=bool)


def objective(policy: ExitPolicy, table, costs: np.ndarray, lam: float, loss: str) -> np.ndarray:
    """The objective of ``policy`` deciding ``table``'s samples exit by exit, per sample:
    ``λ·loss`` of its answer, measured with the labels (:func:`_errors`), plus the costs
    of the exits it ran (``costs`` as the chain holds them, already (1-λ)-weighted)."""
    confidence = np.asarray(table.confidence, dtype=np.float64)
    n, n_exits = confidence.shape
    lost = _errors(table, loss)
    running, each = np.arange(n), np.empty(n)
    paid = np.cumsum(costs)
    for i in range(n_exits):
        stop, answer = policy.decide(ExitObservation(i, n_exits, confidence[running, : i + 1], None, None))
        stop = np.ones(running.size, dtype=bool) if i == n_exits - 1 else np.asarray(stop, dtype=bool)
        done = running[stop]
        each[done] = lam * lost[done, np.asarray(answer)[stop]] + paid[i]
        running = running[~stop]
    return each


class _ChainPolicy(ExitPolicy):
    """Fits a loss grid and a Markov chain on the held-out table, solves it, and decides
    by table look-ups. ``chain`` is the estimated chain (λ-weighted losses, (1-λ)-weighted
    costs), ``solution`` the solved rule, ``value`` its DP value. ``bins="auto"`` chooses
    the grid from :data:`BIN_CHOICES` by validation (:meth:`fit`)."""

    def __init__(self, lam: float, bins: Union[int, str], loss: str, smoothing: float):
        name = type(self).__name__
        if not 0 < lam <= 1:
            raise ValueError(f"{name}: lam must be in (0, 1] (at 0 losses vanish and the policy "
                             f"always stops at exit 0), got {lam!r}")
        self.auto_bins = bins == "auto"
        if not self.auto_bins and (isinstance(bins, (bool, str)) or int(bins) != bins or bins < 2):
            raise ValueError(f"{name}: bins must be 'auto' or a whole number >= 2, got {bins!r}")
        if loss not in LOSSES:
            raise ValueError(f"{name}: loss must be one of {LOSSES}, got {loss!r}")
        if not 0 < smoothing < np.inf:
            raise ValueError(f"{name}: smoothing must be a positive number of pseudo-counts, got {smoothing!r}")
        self.lam, self.loss, self.smoothing = float(lam), loss, float(smoothing)
        self.bins = BIN_CHOICES[1] if self.auto_bins else int(bins)  # "auto": the choice where validation cannot run
        self.validation: dict[int, dict[str, np.ndarray]] = {}  # bins -> out-of-fold scores, when chosen
        self.grid: Optional[LossGrid] = None
        self.support: Optional[Support] = None
        self.chain: Optional[MarkovChain] = None
        self.solution: Optional[Union[RecallIndex, StoppingRule]] = None

    def _solve(self, chain: MarkovChain) -> Union[RecallIndex, StoppingRule]:
        raise NotImplementedError

    def _bin_choices(self) -> tuple[int, ...]:
        return BIN_CHOICES

    def _inner(self, bins: int) -> "_ChainPolicy":
        """The same policy at a fixed grid, fitted plainly (what validation scores)."""
        raise NotImplementedError

    def _validates(self, table) -> bool:
        return self.loss != "confidence" and table.n_samples >= 2 * FOLDS

    def _out_of_fold(self, table, stage_costs, bins: int) -> dict[str, np.ndarray]:
        """Per-sample objectives (λ·loss measured with the labels, (1-λ)·cost), each fold
        decided by :meth:`_inner` fitted on the other folds (fixed folds: deterministic):
        ``"rule"``, the policy as fitted, and for a recall policy ``"no_recall"``, the
        optimal no-recall rule of the same fitted chain."""
        costs = (1.0 - self.lam) * check_stage_costs(stage_costs, table.n_exits)
        fold = np.random.default_rng(1).permutation(table.n_samples) % FOLDS
        recall = isinstance(self, TTamer)
        scores = {name: np.empty(table.n_samples) for name in ("rule", "no_recall")[: 1 + recall]}
        for f in range(FOLDS):
            rows = np.flatnonzero(fold == f)
            inner = self._inner(bins).fit(table.take(np.flatnonzero(fold != f)), stage_costs)
            held = table.take(rows)
            scores["rule"][rows] = objective(inner, held, costs, self.lam, self.loss)
            if recall:
                inner.solution, inner.recalls = solve_no_recall(inner.chain), False
                scores["no_recall"][rows] = objective(inner, held, costs, self.lam, self.loss)
        return scores

    def _score(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """The per-sample objectives a grid is judged by."""
        return scores["rule"]

    def fit(self, table, stage_costs: Sequence[float]) -> ExitPolicy:
        """Calibrate each exit's loss on every labelled sample (the online map), and count
        the chain from cross-fitted states (:func:`cross_fitted_losses`, folds drawn with a
        fixed seed: the same table always gives the same policy). With ``bins="auto"``,
        the grid is the one of :data:`BIN_CHOICES` whose policy, fitted on four folds,
        does best on the fifth, summed over folds."""
        costs = check_stage_costs(stage_costs, table.n_exits)
        self.validation = {}
        if self.auto_bins and self._validates(table):
            self.validation = {b: self._out_of_fold(table, stage_costs, b) for b in self._bin_choices()}
            self.bins = min(self.validation, key=lambda b: self._score(self.validation[b]).mean())
        grid = loss_grid(table, self.bins, self.loss, self.smoothing)
        losses = cross_fitted_losses(table, self.bins, self.loss, self.smoothing, FOLDS, np.random.default_rng(0))
        states = grid.state_of(losses)
        self.support = support(losses, states, self.bins)
        chain = estimate_chain(states, self.lam * self.support.values, (1.0 - self.lam) * costs, self.smoothing)
        self.grid, self.chain, self.solution = grid, chain, self._solve(chain)
        return self

    def _solved(self) -> Union[RecallIndex, StoppingRule]:
        if self.solution is None:
            raise RuntimeError(f"{self.name}: call fit() first")
        return self.solution

    def decide(self, obs: ExitObservation) -> Decision:
        """Decide on each exit's calibrated loss itself, not on its grid state: the
        solved rule is interpolated between the states the samples occupy (``stops``,
        :class:`Support`). On the grid's
        states alone, every request in a state moves at once as λ changes, and the
        policy's front jumps where a threshold's glides."""
        solution = self._solved()
        if obs.n_exits != self.chain.n_exits:
            raise ValueError(f"{self.name}: fitted for {self.chain.n_exits} exits, observed {obs.n_exits}")
        losses, answer = self._losses(obs.confidence)
        m, seen = losses.shape
        i = seen - 1
        if i == obs.n_exits - 1:
            return np.ones(m, dtype=bool), answer
        best = losses[np.arange(m), answer]
        at, states = self.support.anchors[i]
        return solution.stops(i, self.lam * best, self.lam * losses[:, i], self.lam * at, states), answer

    def _losses(self, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated losses of the exits run so far, as the rule reads them, and the
        exit each request would answer from (here always the last)."""
        losses = self.grid.losses(confidence)
        return losses, np.full(losses.shape[0], losses.shape[1] - 1, dtype=np.int64)

    @property
    def value(self) -> float:
        """The DP value: expected λ·loss + (1-λ)·cost of the fitted policy on its chain."""
        return self._solved().value

    def params(self) -> dict:
        return {"lam": self.lam, "bins": self.bins, "loss": self.loss, "smoothing": self.smoothing}


class OptimalNoRecall(_ChainPolicy):
    """The best policy that answers with the last exit it ran: Markov optimal stopping by
    backward DP on the fitted chain (the benchmark for what recall adds)."""

    name = "optimal_no_recall"

    def __init__(self, lam: float, bins: Union[int, str] = "auto", loss: str = "calibrated", smoothing: float = 1.0):
        super().__init__(lam, bins, loss, smoothing)

    def _solve(self, chain: MarkovChain) -> StoppingRule:
        return solve_no_recall(chain)

    def _inner(self, bins: int) -> "OptimalNoRecall":
        return OptimalNoRecall(self.lam, bins, self.loss, self.smoothing)


class TTamer(_ChainPolicy):
    """T-Tamer's recall index: continue iff the best loss so far exceeds σ(R_i, i+1);
    answer with the exit of smallest loss seen. ``aggregate=q`` solves the DP on the
    rank-q soft state aggregation of the fitted chain (``value`` is then that chain's).

    Default loss proxy ``"calibrated"``: it makes λ·loss an expected 0/1 error, so λ
    trades errors against cost in the units results report, and it puts all exits on one
    scale — raw confidences of different exits are not comparable (heads are over- or
    under-confident by different amounts), and recall's argmin across exits needs them
    to be."""

    name = "ttamer"

    def __init__(self, lam: float, bins: Union[int, str] = "auto", loss: str = "calibrated",
                 aggregate: Optional[int] = None, smoothing: float = 1.0, check_recall: bool = True):
        super().__init__(lam, bins, loss, smoothing)
        self.check_recall = bool(check_recall)
        self.recalls = True
        most = max(BIN_CHOICES) if self.auto_bins else self.bins
        if aggregate is not None and (isinstance(aggregate, bool) or int(aggregate) != aggregate
                                      or not 1 <= aggregate <= most):
            raise ValueError(f"TTamer: aggregate must be None or a whole number in [1, bins={most}], "
                             f"got {aggregate!r}")
        self.aggregate = None if aggregate is None else int(aggregate)

    def _solve(self, chain: MarkovChain) -> RecallIndex:
        return solve_recall(chain if self.aggregate is None else aggregate(chain, self.aggregate))

    def _bin_choices(self) -> tuple[int, ...]:
        return tuple(b for b in BIN_CHOICES if self.aggregate is None or b >= self.aggregate)

    def _inner(self, bins: int) -> "TTamer":
        return TTamer(self.lam, bins, self.loss, self.aggregate, self.smoothing, check_recall=False)

    def _recall_loses(self, scores: dict[str, np.ndarray]) -> bool:
        """Recall's out-of-fold objective exceeds no-recall's beyond :data:`RECALL_Z`
        standard errors of the paired difference."""
        worse = scores["rule"] - scores["no_recall"]
        return bool(worse.mean() > RECALL_Z * worse.std() / np.sqrt(worse.size))

    def _score(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        checked = self.check_recall and self._recall_loses(scores)
        return scores["no_recall" if checked else "rule"]

    def fit(self, table, stage_costs: Sequence[float]) -> ExitPolicy:
        """Fit the index (see :class:`_ChainPolicy`), then check out of fold that recall
        pays: each fold is decided by the index fitted on the others, and by the optimal
        no-recall rule of the same fitted chain, and their objectives (λ·loss measured
        with the labels, (1-λ)·cost) are compared sample by sample. Recall's gain rests
        on comparing estimated losses across exits, and where those estimates are too
        noisy to rank exits the DP overrates it; then the policy decides as the no-recall
        rule (``recalls`` False), which a recall policy is free to do. With
        ``bins="auto"`` the grid is judged by what this check would keep."""
        super().fit(table, stage_costs)
        self.recalls = True
        if self.check_recall and self._validates(table):
            scores = self.validation.get(self.bins) or self._out_of_fold(table, stage_costs, self.bins)
            if self._recall_loses(scores):
                self.solution, self.recalls = solve_no_recall(self.chain), False
        return self

    def _losses(self, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The losses the index decides on, where an earlier exit counts only if its
        calibrated loss is lower than the current exit's by more than :data:`RECALL_Z`
        standard errors of the difference; any other takes the current exit's loss, so
        it is neither answered from (ties go to the latest exit) nor lets the request
        stop on a best-so-far that is only noise. An argmin over noisy estimates would
        otherwise recall on noise, and lose to the last exit's answer as often as it
        wins. The answer is the exit of smallest loss so far."""
        losses, last = super()._losses(confidence)
        i = losses.shape[1] - 1
        if not self.recalls or not i:
            return losses, last
        u = self.grid.bins_of(confidence)
        se = self.grid.se[np.arange(i + 1), u]
        gap = losses[:, i:] - losses[:, :i]
        noise = np.hypot(se[:, i:], se[:, :i])
        losses[:, :i] = np.where(gap > RECALL_Z * noise, losses[:, :i], losses[:, i:])
        return losses, (i - np.argmin(losses[:, ::-1], axis=1)).astype(np.int64)

    @property
    def sigma(self) -> np.ndarray:
        """σ table (n_exits, bins) in λ-weighted loss units; row 0 is -inf."""
        solution = self._solved()
        if not isinstance(solution, RecallIndex):
            raise RuntimeError("TTamer: validation found that recall did not pay; it decides without an index")
        return solution.sigma

    def params(self) -> dict:
        return {**super().params(), "aggregate": self.aggregate, "recalls": self.recalls}
