"""Apparate (Dai, Pan, Iyer, Li, Netravali; SOSP 2024): an online controller that tunes
early-exit thresholds and switches ramps on and off while serving.

Apparate's exits save no compute (the ``latency_only`` semantics): every request runs the
whole model, so every active ramp's confidence and the final output are known for every
request, and each ramp's "accuracy" is its agreement with the final exit — continual
feedback without labels. The controller sees only that (:class:`policies.exit.BatchFeedback`
of finished batches) and the measured per-exit latencies; see
``shared/research/ee_cascades.md`` §2 for the paper and the authors' code.

* **Exit rule.** At active ramp j a request exits if ``1 - confidence_j < t_j`` (``t = 0``
  never exits); the answer is that ramp's (no recall).
* **Threshold tuning (reactive).** When the last batch violated the accuracy constraint
  (agreement < 1 - ``accuracy_budget``), after a ramp change, or on the first batch,
  :func:`tune_thresholds` hill-climbs the thresholds on the last ``tuning_window``
  batches, replayed offline (:func:`replay`): greedy multiplicative steps, each taking the
  direction that loses the least agreement per latency saved while the window still meets
  the constraint. ``t = 0`` always meets it, so the result always does.
* **Emergency.** With two violating batches in the window, or cumulative agreement below
  the constraint, the thresholds of ramps whose own windowed agreement is below it are set
  to 0 (``emergency="zero"``, CV) or scaled by 0.1 (``"scale"``, NLP) instead of tuning.
* **Ramp adjustment (periodic, every ``adjustment_period`` samples).** Each active ramp's
  utility per batch (:func:`ramp_utility`) over the last ``adjustment_window`` batches;
  ramps whose utility was never positive are removed and one ramp is added deeper, or, if
  none was removed and the budget allows, one is added toward the input
  (:func:`adjust_ramps`). Ramps' summed head latency stays within ``ramp_budget`` × the
  vanilla latency and their number within ``max_ramps``. Every check ends in a re-tune,
  whether or not a ramp moved: it is the only trigger that can *raise* thresholds once
  traffic has become easier.

After a ramp change both windows restart (the authors' code clears them too): the old
batches lack the new ramp's confidences, and thresholds are re-tuned on the first batch
that ran with the new ramps. Batches that were in flight under an older configuration
still count toward the cumulative agreement and the adjustment period.

Apparate needs ``latency_only``. Under ``compute_saving`` the final exit runs only for
requests that did not exit, so the controller never sees an exit disagree: every judged
request agrees, the tuning window holds only the requests no ramp took, and thresholds
climb unchecked (a smoke run on the digits profile with a synthetic table: agreement
0.86 against 0.99 under ``latency_only``).

Where the paper and the authors' code differ this follows the paper; where the paper is
silent it follows the code or the project's brief:

============================  =======================  ========================  ==========================
item                          paper                    code                      here
============================  =======================  ========================  ==========================
ramp-adjustment period        128 samples              30 (CV) / 100 (NLP)       ``adjustment_period=128``
                                                       batches                   samples
ramp budget                   2% of vanilla latency    5%; at most 3 / 2 ramps   ``ramp_budget=0.02``,
                                                                                 ``max_ramps=None``
budget when tuning            the accuracy constraint  0.0001 (1% to check)      ``accuracy_budget``
feasible window               agreement >= 1 - budget  strict 1 - acc < budget   ``>=``
tuning trigger                agreement of the last    the last batch            the last batch (code, as
                              16 samples                                         briefed)
negative ramp                 all recent utilities     CV: all of the last 20    all per-batch utilities
                              <= 0                     <= 0; NLP: > 60% < 0      of the window <= 0
before removing a negative    re-tune; keep it if      by > 2 (CV) / 5 (NLP)     not done: removed
ramp                          latency improves enough  points                    directly
no negative ramp, no budget   —                        drops the best-scoring    no ramp moves; thresholds
left                                                   ramp, adds one in front   are re-tuned (below)
re-tune at every adjustment   ramp adjustment starts   only via a ramp change,   yes, changed or not: else
check                         by re-tuning             which the code makes at   thresholds only ever fall
                                                       nearly every check
emergency counts              —                        violations since the      violating batches in the
                                                       last ramp check; this     tuning window; each
                                                       batch's ramp accuracy     ramp's windowed agreement
initial ramps                 greedy utility/overhead  evenly spaced (AE         evenly spaced, as many as
                                                       scripts)                  fit (:func:`bootstrap_ramps`)
a step that changes no exit   —                        the first such direction  the step doubles within
                                                       is taken when none saves  the round until an exit
                                                       (index 0 lost to a falsy  changes, then is scored;
                                                       check); t may pass 1;     no move without data;
                                                       4-dp rounding             t <= 1
============================  =======================  ========================  ==========================

Everything here is numpy on what a deployment observes, so a real-hardware executor can
drive the same object.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from servesim.policies.exit import BatchFeedback, Decision, ExitObservation, ExitPolicy, _stop_or_last, check_stage_costs

_SLACK = 1e-9      # float rounding in budget checks (a share of a count, a sum of latencies)
_NO_GAIN = 1e-12   # latency gains closer than this are equal (float noise of a mean)
_MOSTLY_EXITED = 0.9  # kept ramps that already exit this share of inputs need no new ramp
EMERGENCIES = ("zero", "scale")


# ---- latencies of a ramp configuration ---------------------------------------------

def exit_latencies(active: np.ndarray, body_latency: np.ndarray, head_latency: np.ndarray) -> np.ndarray:
    """Latency of a request that leaves at each exit (NaN at inactive ones): the backbone
    up to that exit plus the heads of the active ramps at or before it, so the final
    exit's is the vanilla latency plus every active head (``utils.get_ramp_latencies``)."""
    heads = np.cumsum(np.where(active, head_latency, 0.0))
    return np.where(active, np.cumsum(body_latency) + heads, np.nan)


def latest_feasible_ramp(body_latency: np.ndarray, head_latency: np.ndarray) -> int:
    """The deepest ramp whose own exit latency (alone) is at most the vanilla latency; -1
    if none: a ramp past it cannot save anything even when everyone exits there."""
    solo = np.cumsum(body_latency)[:-1] + head_latency[:-1]
    feasible = np.flatnonzero(solo <= body_latency.sum())
    return int(feasible[-1]) if feasible.size else -1


def within_budget(active: np.ndarray, head_latency: np.ndarray, body_latency: np.ndarray,
                  ramp_budget: float, max_ramps: Optional[int]) -> bool:
    """Whether the active ramps' summed heads (the tail latency they add) fit in
    ``ramp_budget`` × vanilla latency and their number in ``max_ramps``."""
    ramps = active[:-1]
    heads = head_latency[:-1][ramps].sum()
    count_ok = max_ramps is None or int(ramps.sum()) <= max_ramps
    return count_ok and heads <= ramp_budget * body_latency.sum() * (1 + _SLACK)


def bootstrap_ramps(body_latency: np.ndarray, head_latency: np.ndarray,
                    ramp_budget: float, max_ramps: Optional[int]) -> np.ndarray:
    """Bootstrap mask: the most ramps that fit the budget, evenly spaced strictly inside
    [0, latest feasible ramp] as the authors' AE scripts place them (``get_new_ramps``).
    Simplifies the paper's greedy utility/overhead bootstrap, which needs data."""
    n_exits = body_latency.size
    latest = latest_feasible_ramp(body_latency, head_latency)
    for count in range(latest + 1, 0, -1):
        active = np.zeros(n_exits, dtype=bool)
        active[-1] = True
        active[np.unique(np.linspace(0, latest, count + 2).astype(int)[1:-1])] = True
        if within_budget(active, head_latency, body_latency, ramp_budget, max_ramps):
            return active
    return np.eye(n_exits, dtype=bool)[-1]


# ---- replaying thresholds on a window of feedback ----------------------------------

@dataclass(frozen=True)
class ReplayOutcome:
    """What a set of thresholds does on a window of requests."""

    exits: np.ndarray  # (m,) exit each request takes
    agreeing: int      # requests whose answer agrees with the final exit's
    accuracy: float    # agreeing / m (1 on an empty window)
    gain: float        # saved latency / vanilla latency (negative: heads cost more than exits save)


@dataclass(frozen=True)
class _Window:
    """A window prepared for many replays: slack ``1 - confidence``, agreement with the
    final exit (true at the final exit itself), and each exit's latency."""

    slack: np.ndarray
    agrees: np.ndarray
    ramps: np.ndarray    # indices of the active ramps (the final exit excluded)
    latency: np.ndarray  # exit_latencies of the configuration
    vanilla: float

    @classmethod
    def of(cls, confidence, agrees, active, body_latency, head_latency) -> "_Window":
        confidence = np.asarray(confidence, dtype=np.float64)
        agrees = np.array(agrees, dtype=bool)
        active = np.asarray(active, dtype=bool)
        body, head = _latencies(body_latency, head_latency)
        if confidence.ndim != 2 or agrees.shape != confidence.shape or confidence.shape[1:] != body.shape:
            raise ValueError(f"confidence and agrees need shape (m, {body.size}), got "
                             f"{confidence.shape} and {agrees.shape}")
        if active.shape != body.shape or not active[-1]:
            raise ValueError(f"active needs {body.size} entries with the last exit active, got {active.tolist()}")
        agrees[:, -1] = True
        return cls(1.0 - confidence, agrees, np.flatnonzero(active[:-1]),
                   exit_latencies(active, body, head), float(body.sum()))

    def outcome(self, thresholds: np.ndarray) -> ReplayOutcome:
        """Each request exits at its first active ramp with ``1 - confidence < t``
        (unknown confidences never exit), else at the final exit."""
        m, n_exits = self.slack.shape
        exits = np.full(m, n_exits - 1)
        if self.ramps.size:
            hit = self.slack[:, self.ramps] < thresholds[self.ramps]
            some = hit.any(axis=1)
            exits[some] = self.ramps[hit.argmax(axis=1)[some]]
        agreeing = int(self.agrees[np.arange(m), exits].sum())
        mean_latency = self.latency[exits].mean() if m else self.vanilla
        return ReplayOutcome(exits, agreeing, agreeing / m if m else 1.0, float(1.0 - mean_latency / self.vanilla))

    def meets(self, outcome: ReplayOutcome, budget: float) -> bool:
        return not _short(outcome.agreeing, self.slack.shape[0], 1.0 - budget)


def _short(agreeing: int, total: int, target: float) -> bool:
    """Whether ``agreeing`` of ``total`` falls short of the share ``target`` (on counts,
    so ``99`` of ``100`` meets 0.99 whatever the rounding of 1 - 0.01)."""
    return agreeing < target * total - _SLACK


def replay(confidence, agrees, active, thresholds, body_latency, head_latency) -> ReplayOutcome:
    """Replay per-exit ``thresholds`` on a window: ``confidence``/``agrees`` are (m, E)
    per request and exit (agreement of each exit's prediction with the final exit's),
    ``active`` the (E,) mask of the configuration (last exit active)."""
    window = _Window.of(confidence, agrees, active, body_latency, head_latency)
    return window.outcome(np.asarray(thresholds, dtype=np.float64))


def tune_thresholds(confidence, agrees, active, body_latency, head_latency, budget: float,
                    initial_step: float = 0.01, min_step: float = 0.001) -> np.ndarray:
    """Apparate's greedy multiplicative hill climb (``utils.tune_threshold``) on a window.

    From ``t = 0`` and one step per active ramp, each round tries ``t_d + step_d`` at
    every ramp d (never past 1); a trial is feasible if the window's agreement stays
    ``>= 1 - budget``. The move is the feasible trial losing the least agreement per
    latency gained (``|Δacc| / Δgain``); its step doubles, and so do the steps of the
    other "free" trials (agreement or latency unchanged). A step that changes no
    request's exit (a plateau of confidences) is doubled until it does, as the code's
    doubling of free steps achieves over later rounds — so a threshold never moves
    without data. With no move, steps above ``min_step`` halve; the climb ends when no
    move is left at ``min_step``. Every move is feasible and gains latency, so the result
    meets the budget on the window and gains at least what ``t = 0`` does.

    Returns per-exit thresholds, 0 at inactive ramps and at the final exit.
    """
    _check_steps(initial_step, min_step)
    _check_fraction("budget", budget, upper_open=True)
    window = _Window.of(confidence, agrees, active, body_latency, head_latency)
    thresholds = np.zeros(window.latency.size)
    steps = np.full(window.latency.size, float(initial_step))
    current = window.outcome(thresholds)
    ramps = window.ramps
    while True:
        trials = [trial for d in ramps if (trial := _step_up(window, thresholds, steps, int(d), current, budget))]
        gaining = [trial for trial in trials if trial.gained > _NO_GAIN]
        if not gaining:
            if (steps[ramps] <= min_step).all():
                return thresholds
            steps[ramps] = np.maximum(steps[ramps] / 2, min_step)
            continue
        move = min(gaining, key=lambda trial: trial.lost / trial.gained)
        for trial in trials:
            if trial is move or trial.lost == 0 or trial.gained <= _NO_GAIN:
                steps[trial.ramp] = min(2 * trial.step, 1.0)
        thresholds[move.ramp] = move.threshold
        current = move.outcome


@dataclass(frozen=True)
class _Trial:
    """One feasible step up at one ramp, against the current thresholds."""

    ramp: int
    step: float
    threshold: float
    outcome: ReplayOutcome
    lost: float    # |agreement change|
    gained: float  # latency gain change (>= 0: raising a threshold only makes exits earlier)


def _step_up(window: _Window, thresholds: np.ndarray, steps: np.ndarray, d: int,
             current: ReplayOutcome, budget: float) -> Optional[_Trial]:
    """Raise t_d by its step, doubled while no request's exit changes; None if nothing
    changes before t_d reaches 1 or the change breaks the budget."""
    step, trial = steps[d], thresholds.copy()
    while thresholds[d] + step <= 1.0 + _NO_GAIN:
        trial[d] = min(thresholds[d] + step, 1.0)
        outcome = window.outcome(trial)
        if not np.array_equal(outcome.exits, current.exits):
            if not window.meets(outcome, budget):
                return None
            lost = abs(current.agreeing - outcome.agreeing) / window.slack.shape[0]
            return _Trial(d, step, float(trial[d]), outcome, lost, outcome.gain - current.gain)
        step *= 2
    return None


# ---- ramp utility and adjustment ----------------------------------------------------

def ramp_utility(exit_rate: np.ndarray, active: np.ndarray, body_latency: np.ndarray,
                 head_latency: np.ndarray) -> np.ndarray:
    """Per active ramp i, ``e_i (L_next - L_i) - (sum_{k>i} e_k) o_i``: the latency its
    exits save against the next active exit, minus its head paid by everyone passing it
    (``e`` = exit rates, ``L`` = exit latencies of the configuration, ``o`` = head latency).
    NaN at inactive ramps and at the final exit."""
    latency = exit_latencies(active, body_latency, head_latency)
    exits = np.flatnonzero(active)
    rate = np.asarray(exit_rate, dtype=np.float64)[exits]
    passing = rate[::-1].cumsum()[::-1] - rate  # share exiting after each active exit
    utility = np.full(active.size, np.nan)
    saved = rate[:-1] * (latency[exits[1:]] - latency[exits[:-1]])
    utility[exits[:-1]] = saved - passing[:-1] * head_latency[exits[:-1]]
    return utility


def adjust_ramps(active: np.ndarray, utilities: np.ndarray, exit_rate: np.ndarray,
                 body_latency: np.ndarray, head_latency: np.ndarray,
                 ramp_budget: float, max_ramps: Optional[int]) -> np.ndarray:
    """The next ramp mask (``check_signals_cv``): ramps whose per-batch ``utilities``
    ((batches, E) rows of :func:`ramp_utility`) are all <= 0 are removed and one ramp is
    added midway between the deepest active ramp and the latest feasible one, unless the
    kept ramps already exit > 90% of inputs (``exit_rate``: the window's (E,) rates);
    if none was removed, one is added at ``(first active - 1) // 2``, toward the input.
    An addition happens only inside the budget."""
    ramps = np.flatnonzero(active[:-1])
    negative = ramps[(np.asarray(utilities)[:, ramps] <= 0).all(axis=0)]
    after = active.copy()
    after[negative] = False
    if negative.size:
        left, right = int(ramps[-1]) + 1, latest_feasible_ramp(body_latency, head_latency)
        kept_rate = float(np.asarray(exit_rate)[np.flatnonzero(after[:-1])].sum())
        candidate = (left + right) // 2 if left <= right and kept_rate <= _MOSTLY_EXITED else None
    else:
        first = int(np.flatnonzero(active)[0])
        candidate = (first - 1) // 2 if first >= 1 else None
    if candidate is not None:
        grown = after.copy()
        grown[candidate] = True
        if within_budget(grown, head_latency, body_latency, ramp_budget, max_ramps):
            return grown
    return after


# ---- the controller -----------------------------------------------------------------

@dataclass(frozen=True)
class _Batch:
    """A finished batch as the controller keeps it."""

    confidence: np.ndarray  # (r, E): requests usable for replay (final ran, every active ramp ran)
    agrees: np.ndarray      # (r, E)
    exits: np.ndarray       # (m,): exit each request took
    judged: np.ndarray      # exits of the requests whose final ran
    agreed: np.ndarray      # whether each of those answered in agreement with the final

    @classmethod
    def of(cls, feedback: BatchFeedback, active: np.ndarray) -> "_Batch":
        confidence = np.asarray(feedback.confidence, dtype=np.float64)
        agrees = np.asarray(feedback.agrees, dtype=bool)
        exits = np.asarray(feedback.exit_stage, dtype=np.int64)
        final_ran = np.asarray(feedback.final_ran, dtype=bool)
        last = active.size - 1
        if confidence.shape != (exits.size, active.size) or agrees.shape != confidence.shape:
            raise ValueError(f"feedback needs (m, {active.size}) confidences and agreements for its "
                             f"{exits.size} requests, got {confidence.shape} and {agrees.shape}")
        if exits.size and not (0 <= exits.min() and exits.max() <= last):
            raise ValueError(f"feedback exit stages must lie in [0, {last}], got {exits.min()}..{exits.max()}")
        judged = exits[final_ran]
        agreed = (judged == last) | agrees[final_ran, judged]
        ramps = np.flatnonzero(active[:-1])
        usable = final_ran & np.isfinite(confidence[:, ramps]).all(axis=1)
        return cls(confidence[usable], agrees[usable], exits, judged, agreed)

    def violates(self, target: float) -> bool:
        """Whether fewer than ``target`` of its judged requests agreed."""
        return bool(self.agreed.size) and _short(int(self.agreed.sum()), self.agreed.size, target)

    def exit_counts(self, n_exits: int) -> np.ndarray:
        return np.bincount(self.exits, minlength=n_exits)


@dataclass(frozen=True)
class _Change:
    """A row of the controller's history."""

    time: float
    thresholds: list  # per exit; NaN at inactive ramps and at the final exit
    active_ramps: str  # e.g. "1;3"
    event: str         # start, tune, emergency, adjust


class Apparate(ExitPolicy):
    """Apparate's controller as an exit policy (see the module docstring).

    ``head_latency[i]`` is ramp i's head cost and ``body_latency[i]`` the backbone from
    exit i-1 to exit i, in seconds at a reference batch size; the final exit has no head
    (``head_latency[-1] == 0``). ``initial_ramps`` lists the ramps active at the start
    (None: :func:`bootstrap_ramps`)."""

    name = "apparate"
    learns_online = True

    def __init__(self, head_latency: Sequence[float], body_latency: Sequence[float], *,
                 accuracy_budget: float = 0.01, ramp_budget: float = 0.02, max_ramps: Optional[int] = None,
                 tuning_window: int = 4, adjustment_window: int = 20, adjustment_period: int = 128,
                 initial_step: float = 0.01, min_step: float = 0.001, emergency: str = "zero",
                 new_ramp_threshold: float = 0.0, initial_ramps: Optional[Sequence[int]] = None):
        self.body, self.head = _latencies(body_latency, head_latency)
        _check_fraction("accuracy_budget", accuracy_budget, upper_open=True)
        _check_fraction("new_ramp_threshold", new_ramp_threshold)
        if not ramp_budget >= 0:
            raise ValueError(f"Apparate: ramp_budget must be >= 0, got {ramp_budget!r}")
        for key, value in (("tuning_window", tuning_window), ("adjustment_window", adjustment_window),
                           ("adjustment_period", adjustment_period)):
            _check_count(key, value, minimum=1)
        if max_ramps is not None:
            _check_count("max_ramps", max_ramps, minimum=0)
        _check_steps(initial_step, min_step)
        if emergency not in EMERGENCIES:
            raise ValueError(f"Apparate: emergency must be one of {EMERGENCIES}, got {emergency!r}")
        self.accuracy_budget, self.ramp_budget = float(accuracy_budget), float(ramp_budget)
        self.max_ramps = None if max_ramps is None else int(max_ramps)
        self.tuning_window, self.adjustment_window = int(tuning_window), int(adjustment_window)
        self.adjustment_period = int(adjustment_period)
        self.initial_step, self.min_step = float(initial_step), float(min_step)
        self.emergency, self.new_ramp_threshold = emergency, float(new_ramp_threshold)
        self.initial_ramps = None if initial_ramps is None else [int(r) for r in initial_ramps]
        self.active = self._initial_mask()
        self.thresholds = np.zeros(self.n_exits)
        self._tuning: deque[_Batch] = deque(maxlen=self.tuning_window)
        self._recent: deque[_Batch] = deque(maxlen=self.adjustment_window)
        self._judged = self._agreeing = self._since_adjustment = 0
        self._retune = True  # trigger (c): the first batch
        self._changes: list[_Change] = []
        self._record(0.0, "start")

    @property
    def n_exits(self) -> int:
        return self.body.size

    def _initial_mask(self) -> np.ndarray:
        if self.initial_ramps is None:
            return bootstrap_ramps(self.body, self.head, self.ramp_budget, self.max_ramps)
        ramps = self.initial_ramps
        if len(set(ramps)) != len(ramps) or any(not 0 <= r < self.n_exits - 1 for r in ramps):
            raise ValueError(f"Apparate: initial_ramps must be distinct ramps in [0, {self.n_exits - 2}], "
                             f"got {ramps}")
        active = np.eye(self.n_exits, dtype=bool)[-1]
        active[ramps] = True
        if not within_budget(active, self.head, self.body, self.ramp_budget, self.max_ramps):
            raise ValueError(f"Apparate: initial_ramps {ramps} exceed the ramp budget "
                             f"({self.ramp_budget} of vanilla latency, max_ramps={self.max_ramps})")
        return active

    # ---- the ExitPolicy protocol

    def fit(self, table, stage_costs: Sequence[float]) -> ExitPolicy:
        """Nothing to fit (tuning starts at t = 0 online); checks the model's shape."""
        check_stage_costs(stage_costs, table.n_exits)
        if table.n_exits != self.n_exits:
            raise ValueError(f"Apparate: latencies for {self.n_exits} exits, but the behaviour "
                             f"table has {table.n_exits}")
        return self

    def active_exits(self) -> np.ndarray:
        return self.active.copy()

    def decide(self, obs: ExitObservation) -> Decision:
        if obs.n_exits != self.n_exits:
            raise ValueError(f"Apparate: latencies for {self.n_exits} exits, observation has {obs.n_exits}")
        i = obs.exit_index
        slack = 1.0 - obs.confidence[:, i]  # NaN (ramp did not run) never exits
        return _stop_or_last(obs, (slack < self.thresholds[i]) & self.active[i])

    def observe(self, feedback: BatchFeedback) -> None:
        batch = _Batch.of(feedback, self.active)
        self._judged += batch.agreed.size
        self._agreeing += int(batch.agreed.sum())
        if np.array_equal(np.asarray(feedback.active, dtype=bool), self.active):
            self._tuning.append(batch)
            self._recent.append(batch)
        self._react(batch, feedback.time)
        self._since_adjustment += batch.exits.size
        if self._since_adjustment >= self.adjustment_period:
            self._since_adjustment = 0
            self._adjust(feedback.time)

    def history(self) -> dict:
        """One row per change: ``time``, ``threshold_<i>`` per exit (NaN where inactive and
        at the final exit, which has no threshold), ``active_ramps`` ("1;3"), ``event``
        (start, tune, emergency, adjust). The start row is at time 0."""
        changes = self._changes
        columns = {"time": [c.time for c in changes]}
        for i in range(self.n_exits):
            columns[f"threshold_{i}"] = [c.thresholds[i] for c in changes]
        columns["active_ramps"] = [c.active_ramps for c in changes]
        columns["event"] = [c.event for c in changes]
        return columns

    def params(self) -> dict:
        return {"accuracy_budget": self.accuracy_budget, "ramp_budget": self.ramp_budget,
                "max_ramps": self.max_ramps, "tuning_window": self.tuning_window,
                "adjustment_window": self.adjustment_window, "adjustment_period": self.adjustment_period,
                "initial_step": self.initial_step, "min_step": self.min_step, "emergency": self.emergency,
                "new_ramp_threshold": self.new_ramp_threshold, "initial_ramps": self.initial_ramps}

    # ---- the controller's reactions

    def _react(self, batch: _Batch, time: float) -> None:
        """Emergency if accuracy keeps failing, else re-tune on a trigger (CV order:
        the emergency replaces tuning for that batch)."""
        target = 1.0 - self.accuracy_budget
        violations = sum(b.violates(target) for b in self._tuning)
        if violations >= 2 or (self._judged and _short(self._agreeing, self._judged, target)):
            if self._emergency_cut():
                self._record(time, "emergency")
        elif batch.violates(target) or self._retune:
            self._tune(time)

    def _tune(self, time: float) -> None:
        confidence = self._pooled("confidence")
        if confidence is None or not confidence.shape[0]:
            return  # no request ran with the current ramps yet: keep the trigger for the first ones
        agrees = self._pooled("agrees")
        tuned = tune_thresholds(confidence, agrees, self.active, self.body, self.head, self.accuracy_budget,
                                self.initial_step, self.min_step)
        self._retune = False
        if not np.array_equal(tuned, self.thresholds):
            self.thresholds = tuned
            self._record(time, "tune")

    def _emergency_cut(self) -> bool:
        """Cut the thresholds of ramps whose exits in the window agree too rarely; returns
        whether any changed."""
        if not self._tuning:
            return False
        judged, agreed = self._pooled("judged"), self._pooled("agreed")
        before = self.thresholds.copy()
        for ramp in np.flatnonzero(self.active[:-1]):
            here = agreed[judged == ramp]
            if here.size and _short(int(here.sum()), here.size, 1.0 - self.accuracy_budget):
                self.thresholds[ramp] = 0.0 if self.emergency == "zero" else 0.1 * self.thresholds[ramp]
        return not np.array_equal(before, self.thresholds)

    def _adjust(self, time: float) -> None:
        """Periodic ramp adjustment on the batches run with the current ramps."""
        if not self._recent:
            return
        counts = sum(b.exit_counts(self.n_exits) for b in self._recent)
        utilities = np.array([ramp_utility(b.exit_counts(self.n_exits) / b.exits.size, self.active,
                                           self.body, self.head) for b in self._recent])
        after = adjust_ramps(self.active, utilities, counts / max(counts.sum(), 1), self.body, self.head,
                             self.ramp_budget, self.max_ramps)
        if np.array_equal(after, self.active):
            # No ramp moves, but the check still starts by re-tuning (the paper's first
            # step of ramp adjustment): without it thresholds could only ever fall, since
            # the other triggers are a violation and a ramp change.
            self._retune = True
            return
        added = after & ~self.active
        self.thresholds = np.where(after, self.thresholds, 0.0)
        self.thresholds[added] = self.new_ramp_threshold
        self.active = after
        self._tuning.clear()
        self._recent.clear()
        self._retune = True  # trigger (b)
        self._record(time, "adjust")

    def _pooled(self, field: str) -> Optional[np.ndarray]:
        """One field of the tuning window's batches, stacked (None if the window is empty)."""
        return np.concatenate([getattr(b, field) for b in self._tuning]) if self._tuning else None

    def _record(self, time: float, event: str) -> None:
        shown = np.where(self.active, self.thresholds, np.nan)
        shown[-1] = np.nan
        ramps = ";".join(str(r) for r in np.flatnonzero(self.active[:-1]))
        self._changes.append(_Change(float(time), shown.tolist(), ramps, event))


# ---- argument checks ----------------------------------------------------------------

def _latencies(body_latency, head_latency) -> tuple[np.ndarray, np.ndarray]:
    """Checked float arrays: one finite, non-negative entry per exit, a positive vanilla
    latency, and no head at the final exit."""
    body = np.asarray(body_latency, dtype=np.float64)
    head = np.asarray(head_latency, dtype=np.float64)
    if body.ndim != 1 or body.size == 0 or head.shape != body.shape:
        raise ValueError(f"Apparate: head_latency and body_latency need one entry per exit, "
                         f"got shapes {head.shape} and {body.shape}")
    if not (np.isfinite(body).all() and np.isfinite(head).all() and (body >= 0).all() and (head >= 0).all()):
        raise ValueError(f"Apparate: latencies must be finite and >= 0, got body {body.tolist()}, "
                         f"head {head.tolist()}")
    if body.sum() <= 0 or head[-1] != 0:
        raise ValueError(f"Apparate: the vanilla latency must be > 0 and the final exit has no head "
                         f"(head_latency[-1] = 0); got body {body.tolist()}, head {head.tolist()}")
    return body, head


def _check_fraction(key: str, value: float, upper_open: bool = False) -> None:
    ok = 0 <= value < 1 if upper_open else 0 <= value <= 1
    if isinstance(value, bool) or not ok:
        raise ValueError(f"Apparate: {key} must lie in [0, 1{')' if upper_open else ']'}, got {value!r}")


def _check_count(key: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"Apparate: {key} must be a whole number >= {minimum}, got {value!r}")


def _check_steps(initial_step: float, min_step: float) -> None:
    if not 0 < min_step <= initial_step <= 1:
        raise ValueError(f"Apparate: need 0 < min_step <= initial_step <= 1, got {min_step!r}, {initial_step!r}")
