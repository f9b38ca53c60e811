"""Running a batch through a model with exits, one segment at a time.

A worker hands each batch of an early-exit model or cascade to an :class:`ExitRun`,
which plays the batch forward segment by segment (see :mod:`workloads.exits`): after
each segment it shows the exit policy what a deployed system would see for the
requests still running — the confidences (and labels, entropies) of the exits already
run, never correctness nor later exits — and lets it stop some of them and name the exit
whose answer each carries (*recall*: any exit already run).

Two semantics, chosen per experiment:

* ``latency_only`` (Apparate): every segment runs for the whole batch, so a batch
  occupies the accelerator exactly as long as without exits (plus its ramp heads); an
  exited request's response just leaves at the end of its exit's segment.
* ``compute_saving`` (cascades, E3): exited requests leave the batch; the rest go on
  at the smaller batch size, costed from the profile at that size, and the batch ends
  when its last request exits.

The policy is called once per active exit per batch on arrays (vectorised), at every
active exit including the last, where every request stops and only its ``answer`` is
used. A policy may switch ramps off (``active_exits``, read at each batch start): an
inactive ramp's head is neither run nor paid and its observation columns are blank.

An online policy (``learns_online``, Apparate) is taught by :class:`BatchFeedback`: a
batch's outcome is queued when the batch is played and handed to the policy at the
first batch start at or after the batch's finish time — never earlier, so the policy
never learns from the future. Decisions inside a batch use the policy's state at the
batch's start, as a server that reconfigures between batches would.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from servesim.policies.exit import BatchFeedback, ExitObservation, ExitPolicy, OracleObservation

from .errors import SimulationError

SEMANTICS = ("latency_only", "compute_saving")

# Per-request columns an exit run adds to the request table (see sim.records.COLUMNS).
EXIT_COLUMNS = {
    "sample": "row of the behaviour table this request drew (same under every policy)",
    "exit_stage": "exit at which it stopped (0-based; -1 if never served)",
    "answered_from": "exit whose output its response carries (<= exit_stage; recall if <)",
    "stages_paid": "segments whose compute was spent on it (all of them under latency_only)",
    "correct": "its answer is the true label",
    "agrees": "its answer equals the model's final exit's (Apparate's accuracy)",
}


@dataclass(frozen=True)
class ExitSetup:
    """What a run with exits needs besides the trace: the segments' costs
    (:class:`workloads.exits.SegmentCosts`), the behaviour table requests draw from, the
    row each request draws (``samples``, one per request, drawn by the caller so that
    every policy meets the same samples), the policy and the semantics."""

    costs: object
    table: object
    samples: np.ndarray
    policy: ExitPolicy
    semantics: str = "compute_saving"

    def __post_init__(self) -> None:
        if self.semantics not in SEMANTICS:
            raise ValueError(f"exit semantics must be one of {SEMANTICS}, got {self.semantics!r}")
        if self.table.n_exits != self.costs.model.n_exits:
            raise ValueError(f"the behaviour table has {self.table.n_exits} exits but the model "
                             f"{self.costs.model.name!r} has {self.costs.model.n_exits}")
        samples = np.asarray(self.samples)
        if samples.size and (samples.min() < 0 or samples.max() >= self.table.n_samples):
            raise ValueError(f"sample indices must lie in [0, {self.table.n_samples}), "
                             f"got [{samples.min()}, {samples.max()}]")


class ExitRun:
    """The exit state of one simulation: samplers, the feedback an online policy has not
    been given yet, and per-request outcome arrays that become the table's exit columns.
    Called by a worker as ``done = run(now, members)``."""

    def __init__(self, setup: ExitSetup, rng: np.random.Generator, host=None):
        table = setup.table
        self.host_clock = host  # a serving host (sim.host.HostClock) that stretches each batch
        self.samplers = setup.costs.samplers(rng)
        self.host = setup.costs.host_samplers(rng)
        self.scale = setup.costs.batch_scale(rng)
        self.policy = setup.policy
        self.oracle = bool(getattr(setup.policy, "needs_ground_truth", False))
        self.learns = bool(getattr(setup.policy, "learns_online", False))
        self.saving = setup.semantics == "compute_saving"
        self.n_exits = table.n_exits
        self.exit_names = tuple(setup.costs.model.exit_names)
        self.samples = np.asarray(setup.samples, dtype=np.int64)
        self.table = table
        n = self.samples.size
        self.finish = np.full(n, np.nan)
        self.exit_stage = np.full(n, -1, dtype=np.int16)
        self.answered_from = np.full(n, -1, dtype=np.int16)
        # Feedback of finished batches, by finish time: a batch is played when it starts,
        # but what it teaches an online policy is known only when it ends.
        self._pending: list[tuple[float, int, BatchFeedback]] = []
        self._sequence = 0
        self._free_at: dict[int, float] = {}  # per replica, when its last batch ended

    def __call__(self, now: float, members: list[int], replica: int = 0) -> float:
        """Play one batch that starts at ``now`` on ``replica``; returns when the
        accelerator is free."""
        if self.learns:
            self._deliver(now)
        ids = np.asarray(members, dtype=np.int64)
        active = self._active()
        seen = self._seen(self.samples[ids], active)
        exit_stage = np.full(ids.size, -1, dtype=np.int64)
        running = np.arange(ids.size)  # positions in the batch still running
        t, last, host = now, self.n_exits - 1, self.host
        f = 1.0 if self.scale is None else self.scale(ids.size)  # PerBatch noise: one factor per batch
        if host is not None:
            t += f * host.start(self._right_after(replica, now), ids.size)
        for i, (body, head) in enumerate(self.samplers):
            size = running.size if self.saving else ids.size
            t += f * body(size)
            if not active[i]:
                continue  # a switched-off ramp: no head to run, nothing to decide
            if head is not None:
                t += f * head(size)
            if not running.size:  # latency_only: the batch runs on though everyone has exited
                if host is not None:
                    t += f * (host.final if i == last else host.exit)(size)
                continue
            stop, answer = self._decide(i, running, seen)
            leaving = running[stop]
            if host is not None:  # the host's work here depends on who left
                t += f * host.after(i == last, leaving.size, running.size)
            if leaving.size:
                out = ids[leaving]
                self.finish[out] = t
                self.exit_stage[out] = i
                self.answered_from[out] = answer[stop]
                exit_stage[leaving] = i
                running = running[~stop]
            if not running.size and self.saving:
                break
        if self.host_clock is not None:
            t = self._stretch(now, ids, t)
        if self.learns:
            self._pending_feedback(t, active, seen, exit_stage)
        self._free_at[replica] = t
        return t

    def _right_after(self, replica: int, now: float) -> bool:
        """Whether a batch starting at ``now`` on ``replica`` starts as its last batch
        ends (the host's turnaround), not on an idle server. The lane's clock may have
        come to the end through SimPy's, which adds a timeout to its own time: equal up to
        the rounding of that sum (a few ulps), not bit for bit."""
        free = self._free_at.get(replica)
        return free is not None and abs(now - free) <= 4 * math.ulp(max(abs(now), abs(free)))

    def _stretch(self, now: float, ids: np.ndarray, done: float) -> float:
        """The batch's answers and end as the serving host delays them: each moment of
        the batch as played on an idle host, mapped by :meth:`sim.host.HostClock.finish_times`."""
        spans, where = np.unique(np.append(self.finish[ids], done) - now, return_inverse=True)
        moved = np.array(self.host_clock.finish_times(now, spans.tolist()))[where]
        self.finish[ids] = moved[:-1]
        return float(moved[-1])

    def _active(self) -> np.ndarray:
        active = self.policy.active_exits()
        if active is None:
            return np.ones(self.n_exits, dtype=bool)
        active = np.array(active, dtype=bool)
        if active.shape != (self.n_exits,):
            raise SimulationError(f"{type(self.policy).__name__}.active_exits returned shape {active.shape} "
                                  f"for a model with {self.n_exits} exits")
        active[-1] = True
        return active

    def _seen(self, rows: np.ndarray, active: np.ndarray) -> dict:
        """The batch's behaviour rows as a deployment sees them: inactive ramps blanked."""
        table, off = self.table, ~active
        seen = {"confidence": table.confidence[rows], "agrees": table.agrees[rows],
                "prediction": None if table.prediction is None else table.prediction[rows],
                "entropy": None if table.entropy is None else table.entropy[rows],
                "correct": table.correct[rows] if self.oracle else None}
        if off.any():
            seen["confidence"][:, off] = np.nan
            if seen["prediction"] is not None:
                seen["prediction"][:, off] = -1
            if seen["entropy"] is not None:
                seen["entropy"][:, off] = np.nan
        return seen

    def _decide(self, i: int, running: np.ndarray, seen: dict) -> tuple[np.ndarray, np.ndarray]:
        cols = np.s_[running, : i + 1]
        fields = dict(exit_index=i, n_exits=self.n_exits, confidence=seen["confidence"][cols],
                      prediction=None if seen["prediction"] is None else seen["prediction"][cols],
                      entropy=None if seen["entropy"] is None else seen["entropy"][cols])
        obs = (OracleObservation(**fields, correct=seen["correct"][cols]) if self.oracle
               else ExitObservation(**fields))
        stop, answer = self.policy.decide(obs)
        name = type(self.policy).__name__
        stop = np.ones(running.size, dtype=bool) if i == self.n_exits - 1 else np.asarray(stop, dtype=bool)
        answer = np.asarray(answer)
        if stop.shape != running.shape or answer.shape != running.shape:
            raise SimulationError(f"{name}.decide returned shapes {stop.shape} and {answer.shape} "
                                  f"for {running.size} requests at exit {i}")
        chosen = answer[stop]
        if chosen.size and (chosen.min() < 0 or chosen.max() > i):
            raise SimulationError(f"{name} answered from exit {int(chosen.min())}..{int(chosen.max())} at exit {i}; "
                                  f"only exits 0..{i} have run")
        return stop, answer

    def _pending_feedback(self, t: float, active: np.ndarray, seen: dict, exit_stage: np.ndarray) -> None:
        """Queue what the finished batch teaches: under compute_saving a request's later
        exits never ran, so their confidences are unknown and so is its final answer."""
        confidence = seen["confidence"]
        if self.saving:
            confidence = confidence.copy()
            confidence[np.arange(self.n_exits) > exit_stage[:, None]] = np.nan
        feedback = BatchFeedback(time=t, active=active, confidence=confidence, agrees=seen["agrees"],
                                 final_ran=exit_stage == self.n_exits - 1 if self.saving
                                 else np.ones(exit_stage.size, dtype=bool),
                                 exit_stage=exit_stage)
        heapq.heappush(self._pending, (t, self._sequence, feedback))
        self._sequence += 1

    def _deliver(self, now: float) -> None:
        """Give the policy, in time order, the feedback of every batch finished by ``now``."""
        pending = self._pending
        while pending and pending[0][0] <= now:
            self.policy.observe(heapq.heappop(pending)[2])

    def columns(self, served: np.ndarray) -> dict[str, np.ndarray]:
        """The exit columns of the request table; ``served`` marks requests that ran."""
        answered = self.answered_from.astype(np.int64)
        ok = served & (answered >= 0)
        rows, cols = self.samples[ok], answered[ok]
        correct = np.zeros(self.samples.size, dtype=bool)
        agrees = np.zeros(self.samples.size, dtype=bool)
        correct[ok] = self.table.correct[rows, cols]
        agrees[ok] = self.table.agrees[rows, cols]
        paid = np.where(ok, self.exit_stage + 1 if self.saving else self.n_exits, 0).astype(np.int16)
        return {"sample": self.samples, "exit_stage": self.exit_stage, "answered_from": self.answered_from,
                "stages_paid": paid, "correct": correct, "agrees": agrees}
