"""Exit / recall policies for early-exit models and cascades, vectorised over a batch.

After exit ``i`` of a model has run on the ``m`` requests of a batch that are still
running, the engine hands the policy an :class:`ExitObservation` (what a deployed system
knows: the confidences, and where the workload has them the argmax labels and entropies,
of exits ``0..i``) and gets back, per request, whether to stop now and which exit's output
the response carries (``answer < i`` is *recall*: an earlier exit's output is returned).
The engine calls ``decide`` at every exit including the last, where it treats every
request as stopped and uses only ``answer``.

Ground truth is structurally out of reach: :class:`ExitObservation` has slots and no
``correct`` field, and only a policy with ``needs_ground_truth = True`` (the
:class:`Oracle`, a bound rather than a deployable policy) is given the
:class:`OracleObservation` that carries it.

``fit(table, stage_costs)`` sees a held-out ``workloads.behaviour.BehaviourTable``
(duck-typed: ``confidence``, ``correct``, ``agrees``, ``prediction``, ``entropy``,
``n_samples``, ``n_exits``) and the per-exit stage costs (``stage_costs[i]`` = cost of
going from exit ``i-1`` to exit ``i``; ``stage_costs[0]`` is always paid). The simple
policies here need no fitting beyond checks; the DP-based ones live in
:mod:`policies.stopping`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

Decision = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, slots=True)
class ExitObservation:
    """What a deployed system knows about the m requests of a batch still running, right
    after exit `exit_index` ran."""

    exit_index: int                   # 0-based index of the exit just computed
    n_exits: int                      # exits of the model; the last one (n_exits-1) is the final output
    confidence: np.ndarray            # float64 (m, exit_index+1): max softmax at exits 0..exit_index (NaN: ramp inactive)
    prediction: Optional[np.ndarray]  # int (m, exit_index+1) argmax labels (-1: inactive), or None when the workload has no labels
    entropy: Optional[np.ndarray]     # float64 (m, exit_index+1) softmax entropy (nats; NaN: inactive), or None


@dataclass(frozen=True, slots=True)
class OracleObservation(ExitObservation):
    """Only for policies with needs_ground_truth = True (Oracle): a bound, not deployable."""

    correct: np.ndarray               # bool (m, exit_index+1)


@dataclass(frozen=True, slots=True)
class BatchFeedback:
    """What a deployed system learns when a batch has finished (at ``time``): for each of
    its m requests, the confidences of the exits that ran for it and whether each of
    those exits' predictions agrees with the final exit's — known only where the final
    exit ran (``final_ran``), which under ``latency_only`` semantics is every request.
    Never the true label. Delivered to policies with ``learns_online = True`` before any
    decision the engine makes at or after ``time``, in order of ``time``."""

    time: float                   # when the batch finished, s
    active: np.ndarray            # bool (n_exits,): the exits active in this batch (last always)
    confidence: np.ndarray        # float64 (m, n_exits), NaN where the exit did not run
    agrees: np.ndarray            # bool (m, n_exits), meaningful where confidence is known and final_ran
    final_ran: np.ndarray         # bool (m,)
    exit_stage: np.ndarray        # int (m,): where each request stopped


class ExitPolicy:
    """Base class of exit policies (see the module docstring for the protocol).

    Online policies (Apparate) also set ``learns_online = True`` and implement
    :meth:`observe`; policies that switch ramps on and off implement
    :meth:`active_exits`, which the engine reads at the start of every batch: an
    inactive ramp costs nothing and is not shown to :meth:`decide` (its column of the
    observation's arrays is NaN)."""

    name: str = ""
    needs_ground_truth: bool = False
    learns_online: bool = False

    def observe(self, feedback: BatchFeedback) -> None:
        """Learn from a finished batch (only called when ``learns_online``)."""

    def active_exits(self) -> Optional[np.ndarray]:
        """bool (n_exits,) of the ramps to run for the next batch (the last exit is always
        run), or ``None``: all of them."""
        return None

    def history(self) -> Optional[dict]:
        """Columns (equal-length lists: ``time`` first) of the policy's own state over the
        run, e.g. thresholds and active ramps, written next to the run's results; ``None``
        if it has none."""
        return None

    def check_exits(self, n_exits: int) -> "ExitPolicy":
        """Refuse (ValueError) a model of ``n_exits`` exits that this policy's settings
        do not fit, one threshold per exit say; `servesim check` calls it, before any
        run. Returns self. Default: any model fits."""
        return self

    def fit(self, table, stage_costs: Sequence[float]) -> "ExitPolicy":
        """Fit on a held-out behaviour table; returns self. Default: no-op."""
        return self

    def decide(self, obs: ExitObservation) -> Decision:
        """``(stop: bool (m,), answer: int64 (m,))`` with ``0 <= answer <= obs.exit_index``."""
        raise NotImplementedError

    def params(self) -> dict:
        """The policy's parameters as plain JSON-able values (for results tables)."""
        return {}


def check_stage_costs(stage_costs: Sequence[float], n_exits: int) -> np.ndarray:
    """``stage_costs`` as a float64 array, checked: one finite, non-negative cost per exit."""
    costs = np.asarray(stage_costs, dtype=np.float64)
    if costs.shape != (n_exits,):
        raise ValueError(f"stage_costs needs one entry per exit ({n_exits}), got shape {costs.shape}")
    if not (np.isfinite(costs).all() and (costs >= 0).all()):
        raise ValueError(f"stage_costs must be finite and >= 0, got {costs.tolist()}")
    return costs


def _current(obs: ExitObservation) -> np.ndarray:
    """Every request answers with the exit just computed (no recall)."""
    return np.full(obs.confidence.shape[0], obs.exit_index, dtype=np.int64)


def _stop_or_last(obs: ExitObservation, stop: np.ndarray) -> Decision:
    """``stop``, forced true at the last exit, with no recall."""
    if obs.exit_index == obs.n_exits - 1:
        stop = np.ones(obs.confidence.shape[0], dtype=bool)
    return stop, _current(obs)


def _require(obs_field: Optional[np.ndarray], policy: str, field: str) -> np.ndarray:
    if obs_field is None:
        raise ValueError(f"{policy} needs the workload's {field}, but the observation has none")
    return obs_field


class _PerExitThreshold(ExitPolicy):
    """A threshold compared with one per-exit statistic: one global value or one per exit
    (the last exit's entry is ignored, since the last exit always stops)."""

    _bounds: tuple[float, float]

    def __init__(self, threshold: float | Sequence[float]):
        values = np.atleast_1d(np.asarray(threshold, dtype=np.float64))
        lo, hi = self._bounds
        if values.ndim != 1 or values.size == 0 or not ((values >= lo) & (values <= hi)).all():
            raise ValueError(f"threshold must be a number or a non-empty list of numbers in "
                             f"[{lo}, {hi}], got {threshold!r}")
        self._global = np.ndim(threshold) == 0
        self.threshold = values

    def check_exits(self, n_exits: int) -> ExitPolicy:
        if not self._global and self.threshold.size != n_exits:
            raise ValueError(f"threshold: {self.threshold.size} thresholds for a model with {n_exits} exits; "
                             f"give one per exit or a single number (got {self.threshold.tolist()})")
        return self

    def _at(self, obs: ExitObservation) -> float:
        self.check_exits(obs.n_exits)
        return self.threshold[0 if self._global else obs.exit_index]

    def fit(self, table, stage_costs: Sequence[float]) -> ExitPolicy:
        check_stage_costs(stage_costs, table.n_exits)
        self.check_exits(table.n_exits)
        return self

    def params(self) -> dict:
        return {"threshold": float(self.threshold[0]) if self._global else self.threshold.tolist()}


class NeverExit(ExitPolicy):
    """Every request answered by the final exit. By default the vanilla model: its
    ramps switched off (neither run nor paid). Early-exit gains are reported against it,
    as Apparate's "vanilla" is the model without ramps: a baseline that ran every ramp
    would count their overhead as a saving the moment a policy switched them off.
    ``run_ramps``: every ramp runs and none is obeyed (what the ramps alone cost).
    ``n_exits`` (or :meth:`fit`) tells it how many exits to switch off."""

    name = "never"

    def __init__(self, n_exits: Optional[int] = None, run_ramps: bool = False):
        self.run_ramps = bool(run_ramps)
        self._active = self._final_only(n_exits)

    def _final_only(self, n_exits: Optional[int]) -> Optional[np.ndarray]:
        if self.run_ramps or n_exits is None:
            return None
        active = np.arange(n_exits) == n_exits - 1
        active.flags.writeable = False
        return active

    def fit(self, table, stage_costs: Sequence[float]) -> "NeverExit":
        self._active = self._final_only(table.n_exits)
        return self

    def active_exits(self) -> Optional[np.ndarray]:
        return self._active

    def params(self) -> dict:
        return {"ramps": "run" if self.run_ramps else "off"}

    def decide(self, obs: ExitObservation) -> Decision:
        return _stop_or_last(obs, np.zeros(obs.confidence.shape[0], dtype=bool))


class ConfidenceThreshold(_PerExitThreshold):
    """SDN / MSDNet / T-Tamer's "1-Thr": stop at exit i once the max softmax is >= t_i;
    no recall."""

    name = "confidence"
    _bounds = (0.0, 1.0)

    def decide(self, obs: ExitObservation) -> Decision:
        return _stop_or_last(obs, obs.confidence[:, obs.exit_index] >= self._at(obs))


class EntropyThreshold(_PerExitThreshold):
    """BranchyNet / DeeBERT: stop at exit i once the softmax entropy (nats) is < t_i;
    no recall. Needs the workload's entropies."""

    name = "entropy"
    _bounds = (0.0, np.inf)

    def fit(self, table, stage_costs: Sequence[float]) -> ExitPolicy:
        _require(table.entropy, self.name, "entropy")
        return super().fit(table, stage_costs)

    def decide(self, obs: ExitObservation) -> Decision:
        entropy = _require(obs.entropy, self.name, "entropy")
        return _stop_or_last(obs, entropy[:, obs.exit_index] < self._at(obs))


class Patience(ExitPolicy):
    """PABEE (Zhou et al., NeurIPS 2020): stop once the argmax prediction has stayed
    unchanged ``k`` times in a row, i.e. exits ``i-k..i`` (k+1 of them) all agree — PABEE's
    own counter, so ``k = 1`` and ``k = 2`` are T-Tamer's "Patience K=1/2". No recall.
    Needs the workload's predictions."""

    name = "patience"

    def __init__(self, k: int):
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"Patience: k must be a whole number >= 1, got {k!r}")
        self.k = int(k)

    def fit(self, table, stage_costs: Sequence[float]) -> ExitPolicy:
        check_stage_costs(stage_costs, table.n_exits)
        _require(table.prediction, self.name, "prediction")
        return self

    def decide(self, obs: ExitObservation) -> Decision:
        prediction = _require(obs.prediction, self.name, "prediction")
        i = obs.exit_index
        if i < self.k:
            return _stop_or_last(obs, np.zeros(prediction.shape[0], dtype=bool))
        window = prediction[:, i - self.k: i + 1]
        return _stop_or_last(obs, (window == window[:, -1:]).all(axis=1))

    def params(self) -> dict:
        return {"k": self.k}


class Oracle(ExitPolicy):
    """Stop at the first exit that is right; a request no exit gets right runs to the end
    and answers with the last exit. Reads ground truth, so it is a bound, not deployable."""

    name = "oracle"
    needs_ground_truth = True

    def decide(self, obs: ExitObservation) -> Decision:
        if not isinstance(obs, OracleObservation):
            raise TypeError("Oracle needs an OracleObservation (the engine passes one when "
                            "needs_ground_truth is True)")
        return _stop_or_last(obs, obs.correct[:, obs.exit_index].astype(bool))
