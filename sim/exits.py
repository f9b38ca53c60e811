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

The policy is called once per exit per batch on arrays (vectorised), at every exit
including the last, where every request stops and only its ``answer`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.exit import ExitObservation, ExitPolicy, OracleObservation

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
    """The exit state of one simulation: samplers, and per-request outcome arrays that
    become the table's exit columns. Called by a worker as ``done = run(now, members)``."""

    def __init__(self, setup: ExitSetup, rng: np.random.Generator):
        table = setup.table
        self.samplers = setup.costs.samplers(rng)
        self.policy = setup.policy
        self.oracle = bool(getattr(setup.policy, "needs_ground_truth", False))
        self.saving = setup.semantics == "compute_saving"
        self.n_exits = table.n_exits
        self.samples = np.asarray(setup.samples, dtype=np.int64)
        self.table = table
        n = self.samples.size
        self.finish = np.full(n, np.nan)
        self.exit_stage = np.full(n, -1, dtype=np.int16)
        self.answered_from = np.full(n, -1, dtype=np.int16)

    def __call__(self, now: float, members: list[int]) -> float:
        """Play one batch that starts at ``now``; returns when the accelerator is free."""
        ids = np.asarray(members, dtype=np.int64)
        rows = self.samples[ids]
        table, last = self.table, self.n_exits - 1
        confidence = table.confidence[rows]
        prediction = None if table.prediction is None else table.prediction[rows]
        entropy = None if table.entropy is None else table.entropy[rows]
        correct = table.correct[rows] if self.oracle else None
        running = np.arange(ids.size)  # positions in the batch still running
        t = now
        for i, sample in enumerate(self.samplers):
            t += sample(running.size if self.saving else ids.size)
            if not running.size:  # latency_only: the batch runs on though everyone has exited
                continue
            stop, answer = self.policy.decide(self._observe(i, running, confidence, prediction, entropy, correct))
            stop = np.ones(running.size, dtype=bool) if i == last else np.asarray(stop, dtype=bool)
            answer = np.asarray(answer)
            if stop.shape != running.shape or answer.shape != running.shape:
                raise SimulationError(f"{type(self.policy).__name__}.decide returned shapes {stop.shape} and "
                                      f"{answer.shape} for {running.size} requests at exit {i}")
            leaving = running[stop]
            if leaving.size:
                chosen = answer[stop]
                if chosen.min() < 0 or chosen.max() > i:
                    raise SimulationError(f"{type(self.policy).__name__} answered from exit "
                                          f"{int(chosen.min())}..{int(chosen.max())} at exit {i}; "
                                          f"only exits 0..{i} have run")
                out = ids[leaving]
                self.finish[out] = t
                self.exit_stage[out] = i
                self.answered_from[out] = chosen
                running = running[~stop]
            if not running.size and self.saving:
                break
        return t

    def _observe(self, i, running, confidence, prediction, entropy, correct) -> ExitObservation:
        seen = np.s_[running, : i + 1]
        fields = dict(exit_index=i, n_exits=self.n_exits, confidence=confidence[seen],
                      prediction=None if prediction is None else prediction[seen],
                      entropy=None if entropy is None else entropy[seen])
        if correct is not None:
            return OracleObservation(**fields, correct=correct[seen])
        return ExitObservation(**fields)

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
