"""The thin path to real hardware: replay a trace in wall-clock time against a real model.

The simulator's claims are only as good as its agreement with a real server, so this
module serves the *same* trace with the *same* batching policy object and the *same*
exit-policy object as :func:`sim.simulate`, but runs each batch on a real model, stage
by stage, and reads real confidences from its real ramp heads. It writes the same
per-request :class:`~sim.records.Results`, so every summary, plot and comparison works
on both.

One worker, one loop, no threads: the loop admits every arrival whose time has come,
asks the batching policy, and either runs a batch or sleeps until the next arrival or the
policy's timer (sleeping coarsely, then spinning for the last stretch, since a sleep can
overshoot by a scheduler tick). Times are seconds since the replay started, on
``time.perf_counter``.

What the policy sees is computed, not looked up: each ramp head's softmax gives the
confidence (max probability), the prediction (argmax) and the entropy. Scoring a request
(``correct``, ``agrees``) uses the behaviour table of the same, deterministic model on the
same inputs — under ``compute_saving`` the final exit never runs for a request that left
early, so its final answer comes from that table; the policy never sees it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from policies.exit import ExitObservation, ExitPolicy, NeverExit

from .errors import SimulationError
from .exits import SEMANTICS
from .records import COMPLETED, DROPPED, RequestTable, Results

SPIN_S = 0.002  # the last stretch of a wait is spun, not slept: sleeps overshoot by ~0.1-1 ms


@dataclass
class StagedModel:
    """A real model as the executor drives it: ``batch(rows)`` builds the input of a
    batch from behaviour-table rows; ``stages[i]`` maps the running activations to the
    next; ``heads[i]`` maps stage i's output to class probabilities (a numpy array
    ``(b, classes)``) — for the last exit, the model's own output."""

    batch: Callable[[np.ndarray], object]
    stages: Sequence[Callable[[object], object]]
    heads: Sequence[Callable[[object], np.ndarray]]
    select: Callable[[object, np.ndarray], object] = lambda x, keep: x[keep]

    @property
    def n_exits(self) -> int:
        return len(self.stages)


def _read(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence (max probability), prediction (argmax) and entropy (nats) of each row."""
    p = np.asarray(probabilities, dtype=np.float64)
    safe = np.where(p > 0, p, 1.0)
    return p.max(axis=1), p.argmax(axis=1), -(p * np.log(safe)).sum(axis=1)


class _Clock:
    """Seconds since the replay began; waits that land within tens of microseconds."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def wait_until(self, t: float) -> None:
        while True:
            left = t - self.now()
            if left <= 0:
                return
            if left > SPIN_S:
                time.sleep(left - SPIN_S)


def execute(times: np.ndarray, model: StagedModel, batcher, *, table, samples: np.ndarray,
            policy: Optional[ExitPolicy] = None, semantics: str = "compute_saving",
            drop_after: Optional[float] = None) -> Results:
    """Serve the arrivals ``times`` (seconds) on ``model`` in real time.

    ``samples[k]`` is the behaviour-table row (and input) of request k; ``policy``
    (default: never exit) and ``semantics`` are as in :class:`sim.exits.ExitSetup`; the
    result has the exit columns whenever the model has more than one exit.
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"exit semantics must be one of {SEMANTICS}, got {semantics!r}")
    if getattr(policy, "learns_online", False) or getattr(policy, "needs_ground_truth", False):
        raise ValueError(f"{type(policy).__name__} is not supported by the real executor yet "
                         f"(online feedback and ground truth are simulator-only for now)")
    times = np.asarray(times, dtype=np.float64)
    n = times.size
    policy = policy or NeverExit()
    saving = semantics == "compute_saving"
    out = _Outcome(n, model.n_exits)
    queue: deque[int] = deque()
    clock = _Clock()
    admitted = 0
    batches: list[tuple[float, float]] = []
    while True:
        now = clock.now()
        while admitted < n and times[admitted] <= now:
            queue.append(admitted)
            admitted += 1
        if drop_after is not None:
            while queue and times[queue[0]] < now - drop_after:
                k = queue.popleft()
                out.drop(k, times[k] + drop_after)
        draining = admitted == n
        if queue:
            limit, wake_at = batcher.decide(now, len(queue), times[queue[0]], draining)
        elif draining:
            break
        else:
            limit, wake_at = 0, None
        if limit == 0:
            until = min(times[admitted] if admitted < n else np.inf, np.inf if wake_at is None else wake_at)
            if not np.isfinite(until):
                raise SimulationError(f"{type(batcher).__name__} leaves {len(queue)} request(s) waiting "
                                      f"after the last arrival; they would never be served")
            clock.wait_until(until)
            continue
        members = np.array([queue.popleft() for _ in range(min(limit, len(queue)))], dtype=np.int64)
        done = _run_batch(model, policy, saving, members, samples, now, clock, out)
        batches.append((now, done))
    return out.results(times, table, samples, batches, saving)


def _run_batch(model: StagedModel, policy: ExitPolicy, saving: bool, members: np.ndarray, samples: np.ndarray,
               start: float, clock: _Clock, out: "_Outcome") -> float:
    """One batch through the model, exit by exit; returns when it finished."""
    last = model.n_exits - 1
    x = model.batch(samples[members])
    running = np.arange(members.size)  # positions in the batch still waiting for an answer
    seen = np.full((members.size, model.n_exits, 3), np.nan)  # confidence, prediction, entropy
    for i, (stage, head) in enumerate(zip(model.stages, model.heads)):
        x = stage(x)
        # the rows of x: those still running (compute_saving), or the whole batch (latency_only)
        seen[running if saving else slice(None), i] = np.column_stack(_read(head(x)))
        if not running.size:  # latency_only: the batch runs on though everyone has its answer
            continue
        cols = np.s_[running, : i + 1]
        obs = ExitObservation(exit_index=i, n_exits=model.n_exits, confidence=seen[cols + (0,)],
                              prediction=seen[cols + (1,)].astype(np.int64), entropy=seen[cols + (2,)])
        stop, answer = policy.decide(obs)
        stop = np.ones(running.size, dtype=bool) if i == last else np.asarray(stop, dtype=bool)
        t = clock.now()
        leaving = running[stop]
        out.serve(members[leaving], start, t, members.size, i, np.asarray(answer)[stop])
        running = running[~stop]
        if saving:
            if not running.size:
                break
            if stop.any():
                x = model.select(x, ~stop)
    return clock.now()


class _Outcome:
    """Per-request outcomes of a replay, filled as requests finish."""

    def __init__(self, n: int, n_exits: int):
        self.start = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.batch_size = np.zeros(n, dtype=np.int32)
        self.status = np.full(n, COMPLETED, dtype=np.int8)
        self.exit_stage = np.full(n, -1, dtype=np.int16)
        self.answered_from = np.full(n, -1, dtype=np.int16)
        self.n_exits = n_exits

    def drop(self, k: int, when: float) -> None:
        self.status[k] = DROPPED
        self.finish[k] = when

    def serve(self, ids: np.ndarray, start: float, finish: float, size: int, exit_at: int, answer: np.ndarray) -> None:
        self.start[ids] = start
        self.finish[ids] = finish
        self.batch_size[ids] = size
        self.exit_stage[ids] = exit_at
        self.answered_from[ids] = answer

    def results(self, times: np.ndarray, table, samples: np.ndarray, batches: list, saving: bool) -> Results:
        n = times.size
        served = self.exit_stage >= 0
        table_cols = {"sample": np.asarray(samples, dtype=np.int64), "exit_stage": self.exit_stage,
                      "answered_from": self.answered_from,
                      "stages_paid": np.where(served, self.exit_stage + 1 if saving else self.n_exits, 0).astype(np.int16),
                      "correct": np.zeros(n, dtype=bool), "agrees": np.zeros(n, dtype=bool)}
        rows, cols = table_cols["sample"][served], self.answered_from[served].astype(np.int64)
        table_cols["correct"][served] = table.correct[rows, cols]
        table_cols["agrees"][served] = table.agrees[rows, cols]
        requests = RequestTable(arrival=times, size=np.ones(n, dtype=np.int32), start=self.start,
                                finish=self.finish, replica=np.where(served | (self.status == DROPPED), 0, -1)
                                .astype(np.int32), batch_size=self.batch_size, status=self.status,
                                exits=table_cols if self.n_exits > 1 else {})
        spans = np.array(batches, dtype=np.float64).reshape(-1, 2)
        return Results(requests=requests, replicas=1, end_time=float(spans[-1, 1]) if len(spans) else 0.0,
                       busy_time=np.array([float((spans[:, 1] - spans[:, 0]).sum())]), batches=len(spans),
                       exit_names=tuple(table.exit_names) if self.n_exits > 1 else ())
