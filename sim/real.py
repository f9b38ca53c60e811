"""The thin path to real hardware: replay a trace in wall-clock time against a real model.

The simulator's claims are only as good as its agreement with a real server, so this
module serves the *same* trace with the *same* batching policy object and the *same*
exit-policy object as :func:`sim.simulate`, but runs each batch on a real model, stage
by stage, and reads real confidences from its real ramp heads. It writes the same
per-request :class:`~sim.records.Results`, so every summary, plot and comparison works
on both.

One worker, one loop, no threads: the loop admits every arrival whose time has come
(taking each in, where the model has an ``intake``: the host's per-request work), asks
the batching policy, and either runs a batch or sleeps until the next arrival or the
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

import contextlib
import dataclasses
import gc
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional, Sequence

import numpy as np

from servesim.policies.batching import NEVER_BUSY, DynamicBatcher
from servesim.policies.exit import ExitObservation, ExitPolicy, NeverExit

from .errors import SimulationError
from .exits import SEMANTICS
from .records import COMPLETED, DROPPED, RequestTable, Results

RUN = 4  # bursts of one size in a row when measuring a served profile
MAX_REPLAYS = 4  # times a served-profile replay runs, at most, for half its bursts to come out clean
SPIN_S = 0.002  # the last stretch of a wait is spun, not slept: sleeps overshoot by ~0.1-1 ms


@dataclass
class StagedModel:
    """A real model as the executor drives it: ``batch(rows)`` builds the input of a
    batch from behaviour-table rows; ``stages[i]`` maps the running activations to the
    next; ``heads[i]`` maps stage i's output to class probabilities (a numpy array
    ``(b, classes)``) — for the last exit, the model's own output; ``select(x, keep)``
    keeps the rows of the running activations where ``keep`` is true; a batch runs inside
    one ``session()`` (e.g. ``torch.inference_mode``), entered once, not per call.
    ``intake(row)``, where given, is the host's work to take one request in (parse its
    body into the input ``batch`` reads), done as each request is admitted, on the same
    thread that runs the batches, as a one-process server does. ``on_thread()`` is called
    once on each further thread that runs batches (:mod:`sim.real_clients`' instances)
    before its first: torch's intra-op thread count is per thread (an OpenMP setting), and
    a new thread would otherwise use every core."""

    batch: Callable[[np.ndarray], object]
    stages: Sequence[Callable[[object], object]]
    heads: Sequence[Callable[[object], np.ndarray]]
    select: Callable[[object, np.ndarray], object] = lambda x, keep: x[keep]
    session: Callable[[], ContextManager] = contextlib.nullcontext
    intake: Optional[Callable[[int], None]] = None
    on_thread: Callable[[], None] = lambda: None

    @property
    def n_exits(self) -> int:
        return len(self.stages)


def _read(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence (max probability), prediction (argmax) and entropy (nats) of each row."""
    p = np.asarray(probabilities, dtype=np.float64)
    return p.max(axis=1), p.argmax(axis=1), -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)


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
    if getattr(batcher, "allowed_sizes", ()):
        raise ValueError("the real executor does not pad batches (allowed_sizes); the simulator only costs them")
    if getattr(policy, "learns_online", False) or getattr(policy, "needs_ground_truth", False):
        raise ValueError(f"{type(policy).__name__} is not supported by the real executor yet "
                         f"(online feedback and ground truth are simulator-only for now)")
    policy = policy or NeverExit(model.n_exits)
    times = np.asarray(times, dtype=np.float64)
    out, batches = _replay(times, samples, model, batcher, policy, semantics == "compute_saving", drop_after, _Clock())
    return out.results(times, table, samples, batches, semantics == "compute_saving")


def _replay(times: np.ndarray, samples: np.ndarray, model: StagedModel, batcher, policy: ExitPolicy, saving: bool,
            drop_after: Optional[float], clock: _Clock) -> tuple["_Outcome", list[tuple[float, float]]]:
    """The serving loop of :func:`execute` on ``clock``: the outcomes and each batch's
    (start, finish). The garbage collector is paused while it serves (as a server that
    freezes its heap after start-up would, and as the simulator does): a collection in
    the middle of a batch is a millisecond-long stall that no profile row would explain."""
    with paused_gc():
        return _serve(times, samples, model, batcher, policy, saving, drop_after, clock)


@contextlib.contextmanager
def paused_gc():
    """The garbage collector paused inside the block (and enabled again after, if it was)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class _Admission:
    """The serving loop's intake: the queue, and how many arrivals have been admitted.

    ``admit()`` puts every arrival whose time has come in the queue. Where the model has
    an ``intake``, each is first taken in (its body parsed) on this thread, and the batch
    being run polls between its calls, as a one-process server that stays responsive does
    (an asyncio server awaiting between stages, or threads sharing the interpreter lock):
    the intake of what arrives during a batch is done *during* it and stretches it —
    what :mod:`sim.host` models with ``launch_share`` 1."""

    def __init__(self, times: np.ndarray, samples: np.ndarray, intake: Optional[Callable[[int], None]], clock):
        self.times, self.samples, self.intake, self.clock = times, samples, intake, clock
        self.queue: deque[int] = deque()
        self.admitted = 0
        self.n = times.size

    def admit(self) -> None:
        times, n, queue, intake = self.times, self.n, self.queue, self.intake
        k = self.admitted
        now = self.clock.now()
        while k < n and times[k] <= now:
            if intake is not None:
                intake(self.samples[k])
                now = self.clock.now()
            queue.append(k)
            k += 1
        self.admitted = k

    def poll(self) -> None:
        """Between a batch's calls (a model with an ``intake``): admit what has arrived."""
        if self.admitted < self.n and self.times[self.admitted] <= self.clock.now():
            self.admit()


def _serve(times: np.ndarray, samples: np.ndarray, model: StagedModel, batcher, policy: ExitPolicy, saving: bool,
           drop_after: Optional[float], clock: _Clock) -> tuple["_Outcome", list[tuple[float, float]]]:
    n = times.size
    out = _Outcome(n, model.n_exits)
    admission = _Admission(times, samples, model.intake, clock)
    queue = admission.queue
    batches: list[tuple[float, float]] = []
    free_since = NEVER_BUSY  # when the last batch finished (some batchers time from it)
    while True:
        admission.admit()
        now = clock.now()
        if drop_after is not None:
            while queue and times[queue[0]] < now - drop_after:
                k = queue.popleft()
                out.drop(k, times[k] + drop_after)
        draining = admission.admitted == n
        if queue:
            limit, wake_at = batcher.decide(now, len(queue), times[queue[0]], draining, free_since)
        elif draining:
            break
        else:
            limit, wake_at = 0, None
        if limit == 0:
            admitted = admission.admitted
            until = min(times[admitted] if admitted < n else np.inf, np.inf if wake_at is None else wake_at)
            if not np.isfinite(until):
                raise SimulationError(f"{type(batcher).__name__} leaves {len(queue)} request(s) waiting "
                                      f"after the last arrival; they would never be served")
            clock.wait_until(until)
            continue
        members = np.array([queue.popleft() for _ in range(min(limit, len(queue)))], dtype=np.int64)
        done = free_since = _run_batch(model, policy, saving, members, samples, now, clock, out,
                                       _nothing if model.intake is None else admission.poll)
        batches.append((now, done))
    return out, batches


def _nothing() -> None:
    """What a batch polls where taking requests in costs nothing: they wait for the loop."""


def _run_batch(model: StagedModel, policy: ExitPolicy, saving: bool, members: np.ndarray, samples: np.ndarray,
               start: float, clock: _Clock, out: "_Outcome", poll: Callable[[], None] = _nothing) -> float:
    """One batch through the model, exit by exit; returns when it finished. ``poll()``
    is called after each stage and each head (see :class:`_Admission`). Ramps the policy
    has switched off (``active_exits``, read at the batch's start) are skipped, as the
    simulator skips them.

    Kept thin on purpose: every microsecond spent here is host time that the simulator
    has to model (as the measured ``executor`` rows of a host profile), so the batch
    runs inside one ``model.session()``, the readings are written straight into three
    preallocated arrays, and the observation is sliced, not copied, while nobody has left."""
    n_exits, last, size = model.n_exits, model.n_exits - 1, members.size
    active = policy.active_exits()  # ramps switched off are neither run nor decided at
    confidence = np.full((size, n_exits), np.nan)
    prediction = np.full((size, n_exits), -1, dtype=np.int64)
    entropy = np.full((size, n_exits), np.nan)
    running = np.arange(size)  # positions in the batch still waiting for an answer
    whole = True  # running is still the whole batch, so plain slices select it
    with model.session():
        x = model.batch(samples[members])
        for i, (stage, head) in enumerate(zip(model.stages, model.heads)):
            x = stage(x)
            poll()
            if active is not None and not active[i] and i != last:
                continue
            # the rows of x: those still running (compute_saving), or the whole batch (latency_only)
            rows = slice(None) if whole or not saving else running
            confidence[rows, i], prediction[rows, i], entropy[rows, i] = _read(head(x))
            poll()
            if not running.size:  # latency_only: the batch runs on though everyone has its answer
                continue
            cols = np.s_[:, : i + 1] if whole else np.s_[running, : i + 1]
            stop, answer = policy.decide(ExitObservation(i, n_exits, confidence[cols], prediction[cols],
                                                         entropy[cols]))
            if i == last:
                out.serve(members[running], start, clock.now(), size, i, answer)
                break
            stop = np.asarray(stop, dtype=bool)
            if not stop.any():
                continue
            out.serve(members[running[stop]], start, clock.now(), size, i, np.asarray(answer)[stop])
            running, whole = running[~stop], False
            if saving:
                if not running.size:
                    break
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


class _Thinning(ExitPolicy):
    """A measuring device, not a policy: at each ramp, every running request leaves with
    probability ``p`` (seeded), whatever the model says, so the host's work when some
    requests leave and the rest go on is exercised at every batch size; and with
    probability ``everyone`` all of them leave there together, which ``p`` alone would
    almost never make happen to a large batch."""

    def __init__(self, p: float, rng: np.random.Generator, everyone: float = 0.15):
        self.p, self.rng, self.everyone = p, rng, everyone

    def decide(self, obs: ExitObservation):
        m = obs.confidence.shape[0]
        stop = np.ones(m, bool) if self.rng.random() < self.everyone else self.rng.random(m) < self.p
        return stop, np.full(m, obs.exit_index, dtype=np.int64)


def measure_served(model: StagedModel, samples: np.ndarray, batch_sizes: Sequence[int], *, repeats: int = 100,
                   warmup: int = 10, seed: int = 0, leave: float = 1 / 3,
                   idle: tuple[float, float] = (0.0, 5e-4),
                   mix: Optional[Sequence[float]] = None) -> dict[tuple[str, int, int], np.ndarray]:
    """Time ``model`` as :func:`execute` serves it, host included: replay bursts of ``b``
    simultaneous requests (per round, each ``b`` of ``batch_sizes`` for :data:`RUN`
    bursts in a row, the sizes in a fresh order; ``warmup`` untimed rounds then
    ``repeats`` timed), each burst arriving an ``idle`` stretch (uniform, seconds) after
    the time its batch is expected to take, so that it is one batch on a server idle
    just long enough to spin, not sleep, as under steady load, with every stage and
    head call timed where the executor makes it.

    Kernels timed one at a time in a tight loop run from warm caches; served, each call
    follows the previous stage's and the host's own work and takes longer (on the 2-core
    development machine about twice as long for the digits MLP), and the host's work —
    noticing the arrivals, forming the batch, reading each ramp, deciding, answering — is
    itself a large part of a small model's batch. Two instrumented replays: one never
    exits (every stage and head at every size), one lets each request leave at each
    ramp with probability ``leave`` (and, now and then, the whole batch at once).
    Measured, per batch size, in seconds:

    * ``("stage", i, b)``, ``("head", i, b)``: stage i's and ramp head i's calls at the
      size they ran at (the final exit's head, which hands over the model's own output,
      counts as host);
    * ``("batch", -1, b)``: from the burst's arrival to the first stage call (the loop
      noticing it, the batching decision, gathering the input);
    * ``("exit", -1, b)``: from a ramp head's return to the next stage call when nobody
      left there (reading the ramp, the policy's decision);
    * ``("leave", -1, b)``: the same gap when some of the ``b`` left and the rest went on
      (also answering them and selecting the rest's activations);
    * ``("turnaround", -1, b)``: on a busy server, from the previous batch's last
      answer to this batch's first stage call (returning, the loop, the batching
      decision, gathering the input);
    * ``("final", -1, b)``: from the end of the last stage to the batch's last answer
      (the final exit's head, which hands over the model's own output, counts as host:
      reading it, the decision, the answers);
    * ``("all_left", -1, b)``: from the return of a ramp head where everyone left to the
      batch's last answer (the decision and the answers only);
    * ``("intake", -1, 1)``: where the model has an ``intake``, each request's, the time
      the host took to take it in (left out of whichever gap above it fell in);
    * ``("total", -1, b)``: a never-exiting batch's whole time, arrival to last answer,
      in a third replay of the model *unwrapped*: how its calls vary *together* (a slow
      batch is slow throughout), which the parts' own spreads, taken one by one, cannot
      tell, at the level of a batch that nobody times (the timing wrappers cost a few
      microseconds a call: on the digits MLP on the development machine 36-48 us, 4-6%,
      of a batch, which the parts include and ``total`` does not).

    ``mix`` (a weight per size of ``batch_sizes``) draws the bursts' sizes one by one in
    those proportions (blended with a tenth of the uniform mix, so that every size is
    measured) instead of in runs: a call's cost depends on the shapes the process has
    been running lately, not only on its own (on the digits MLP on the development
    machine, batch 1 took 0.64 ms when every batch was of 1, 0.69-0.73 ms among runs of
    sizes 1-8), so a profile meant for one load is best measured under that load's
    batch sizes.

    A burst whose batch did not start on an idle server or did not take exactly its ``b``
    requests (the one before it overran) is left out; a replay with fewer than half its
    bursts clean (a busy machine) runs again, the idle bursts twice as far apart, at most
    :data:`MAX_REPLAYS` times. The bursts' rows are drawn from ``samples`` with a
    generator seeded by ``seed``.
    """
    rng = np.random.default_rng(seed)
    if mix is not None:
        weights = np.asarray(mix, dtype=float)
        if weights.shape != (len(batch_sizes),) or not (weights >= 0).all() or not weights.sum() > 0:
            raise ValueError(f"mix must be one non-negative weight per batch size, not all 0; got {mix!r}")
        weights = 0.9 * weights / weights.sum() + 0.1 / len(batch_sizes)
    samples = np.asarray(samples, dtype=np.int64)
    sizes = [int(b) for b in batch_sizes]
    clock = _Clock()
    calls: list[tuple[str, int, float, float]] = []  # kind, index, start, end (perf_counter's own clock)
    stamp = time.perf_counter

    # As little as possible between the stamps and around them: even ``len(x)`` on a
    # torch tensor, at ~0.5 us alone, cost the digits MLP ~25 us a batch served (4%);
    # each call's size is read off the outcome afterwards instead.
    def timed(kind: str, i: int, fn):
        def call(x):
            begin = stamp()
            y = fn(x)
            calls.append((kind, i, begin, stamp()))
            return y
        return call

    served = StagedModel(batch=model.batch, stages=[timed("stage", i, f) for i, f in enumerate(model.stages)],
                         heads=[timed("head", i, f) for i, f in enumerate(model.heads)], select=model.select,
                         session=model.session, intake=None if model.intake is None else timed("intake", -1, model.intake))
    # ``total`` is the batch alone: a request's intake is the host's, measured apart
    bare = dataclasses.replace(model, intake=None)
    # How far apart bursts go: each size's batch time, timed on the model unwrapped.
    probe = _Outcome(samples.size, model.n_exits)
    took = {}
    for b in sizes:
        members, spans = rng.choice(samples.size, size=b, replace=b > samples.size), []
        for _ in range(20):
            begin = clock.now()
            for row in samples[members] if model.intake is not None else ():  # a burst is taken in first
                model.intake(row)
            _run_batch(model, NeverExit(), True, members, samples, begin, clock, probe)
            spans.append(clock.now() - begin)
        took[b] = 1.2 * float(np.median(spans))
    found: dict[tuple[str, int, int], list[float]] = {}
    # Instrumented: both replays, every call timed. Plain: never exiting, the model
    # unwrapped, for the whole batches alone (the timing wrappers themselves cost a few
    # microseconds a call, some 5% of a small batch, which ``total`` must not include).
    for policy, model_k in ((NeverExit(), served), (_Thinning(leave, rng), served), (NeverExit(), bare)):
        # On a busy machine a burst may come out unclean (the one before it overran, the
        # process was descheduled): the replay runs again, up to MAX_REPLAYS times and each
        # time with its bursts further apart, until at least half of its timed bursts were
        # clean, so that no part goes unmeasured
        timed_bursts, clean, apart = repeats * len(sizes) * RUN, 0, 1.0
        for _ in range(MAX_REPLAYS):
            # Each size in a run of RUN bursts, the runs in a fresh order each round: served
            # traffic changes batch size now and then, not at every batch, and a call at a
            # size other than its last costs more (shapes are looked up anew).
            if mix is None:
                order = [b for _ in range(warmup + repeats) for b in rng.permutation(sizes).tolist()
                         for _ in range(RUN)]
            else:
                order = rng.choice(sizes, size=(warmup + repeats) * len(sizes) * RUN, p=weights).tolist()
            # Never exiting, every other burst arrives halfway through the batch before it,
            # so that its batch starts the moment that one ends: the host's turnaround on a
            # busy server (the previous batch's last answer to this one's first stage).
            turnarounds = isinstance(policy, NeverExit) and model_k is served
            busy = np.arange(len(order)) % 2 == 1 if turnarounds else np.zeros(len(order), bool)
            took_k = np.array([took[b] for b in order])
            wait = apart * took_k + rng.uniform(*idle, len(order))  # after a busy burst, also the half it came early
            wait[1:] += np.where(busy[1:], 0.5 * took_k[:-1], 0.0)
            step = np.where(busy[1:], 0.5 * took_k[:-1], wait[:-1])
            starts = clock.now() + 0.01 + np.concatenate(([0.0], np.cumsum(step)))
            times = np.repeat(starts, order)
            calls.clear()
            out, _ = _replay(times, rng.choice(samples, size=times.size), model_k, DynamicBatcher(max(sizes)), policy,
                             True, None, clock)
            bursts = _clean_bursts(out, starts, order, busy, warmup * len(sizes) * RUN)
            clean += len(bursts)
            if model_k is bare:
                for _, arrival, ids, _, end, _ in bursts:  # all idle: no busy bursts in this replay
                    found.setdefault(("total", -1, ids.stop - ids.start), []).append(end - arrival)
            else:
                _collect(found, [(k, i, t0 - clock.t0, t1 - clock.t0) for k, i, t0, t1 in calls], bursts,
                         out.exit_stage, model.n_exits - 1)
            if 2 * clean >= timed_bursts:
                break
            apart *= 2.0
    return {key: np.array(values) for key, values in found.items()}


def _clean_bursts(out: "_Outcome", starts: np.ndarray, order: list[int], busy: np.ndarray, skip: int):
    """The bursts of a :func:`measure_served` replay that came out as designed, past the
    first ``skip``: ``(busy, arrival, ids, start, end, previous)`` — its requests (a
    slice), its batch's start and last answer, and the last answer of the batch before it."""
    clean = []
    first = np.concatenate(([0], np.cumsum(order)[:-1]))
    free_at = -np.inf  # when the batch before this burst's had its last answer
    for k, (arrival, b, lo) in enumerate(zip(starts, order, first)):
        ids = slice(lo, lo + b)
        start, finish, size = out.start[ids], out.finish[ids], out.batch_size[ids]
        # a clean burst is one batch of exactly its requests, started as designed: on an
        # idle server, or (busy) right after a batch it arrived during
        on_time = (arrival < free_at <= start[0]) if busy[k] else free_at <= arrival
        ok = on_time and (start == start[0]).all() and (size == b).all()
        previous, free_at = free_at, max(free_at, float(finish.max()))
        if ok and k >= skip:
            clean.append((bool(busy[k]), float(arrival), ids, float(start[0]), free_at, previous))
    return clean


def _collect(found: dict, calls: list, bursts: list, exit_stage: np.ndarray, last: int) -> None:
    """Add the parts of one instrumented replay's clean ``bursts`` (see
    :func:`measure_served`) to ``found``; ``exit_stage`` (per request) tells how many of
    a batch were still running at each call. Intake calls (``intake``, where the model
    takes requests in) are host time of their own: each is one ``("intake", -1, 1)``
    sample, and is not counted again in the gap (``batch``, ``exit``, ...) it falls in."""
    taken = np.array([(begin, done) for kind, _, begin, done in calls if kind == "intake"]).reshape(-1, 2)
    if taken.size and bursts:  # those of the measured bursts, not of the warm-up's
        found.setdefault(("intake", -1, 1), []).extend((taken[:, 1] - taken[:, 0])[taken[:, 0] >= bursts[0][1]])
    taken_before = np.concatenate(([0.0], np.cumsum(taken[:, 1] - taken[:, 0])))  # intake time before each call

    def gap(t0: float, t1: float) -> float:
        """From ``t0`` to ``t1``, less the intake done in between."""
        lo, hi = np.searchsorted(taken[:, 0], [t0, t1])
        return t1 - t0 - float(taken_before[hi] - taken_before[lo])

    groups: dict[float, list] = {}  # a batch's calls, by the time its first stage began
    for call in (c for c in calls if c[0] != "intake"):
        if call[0] == "stage" and call[1] == 0:
            group = groups.setdefault(call[2], [])
        group.append(call)
    by_first_call = sorted(groups)
    for busy, arrival, ids, start, end, previous in bursts:
        # this batch's calls: the first group to begin after its start
        group = groups[by_first_call[int(np.searchsorted(by_first_call, start))]]
        exits = exit_stage[ids]
        running = [int((exits >= i).sum()) for i in range(last + 2)]  # at exit i; none after the last
        b = running[0]
        parts = [(("turnaround" if busy else "batch", -1, b), gap(previous if busy else arrival, group[0][2]))]
        for c, (kind, i, begin, done) in enumerate(group):
            n = running[i]
            if kind == "stage":
                parts.append((("stage", i, n), done - begin))
            elif i == last:  # the final exit's head hands over the model's output: host work
                parts.append((("final", -1, n), gap(group[c - 1][3], end)))
            else:
                parts.append((("head", i, n), done - begin))
                if not running[i + 1]:  # everyone left at this ramp
                    parts.append((("all_left", -1, n), gap(done, end)))
                else:
                    parts.append((("leave" if running[i + 1] < n else "exit", -1, n), gap(done, group[c + 1][2])))
        for key, seconds in parts:
            found.setdefault(key, []).append(seconds)
