"""A worker: one accelerator with its own queue, running batches back to back.

Each worker is one SimPy process. It asks its batching policy what to do, and either
starts a batch — holding the accelerator for a service time drawn from the cost model at
that batch size — or waits until a request arrives or the policy's timer fires.
Requests that waited longer than the drop limit are dropped when the worker next looks
at its queue (as Triton's queue timeout does), counted, and never served; their finish
time is the moment they expired, so it does not depend on when the worker looked.

The loop is the engine's innermost code, so it is written for speed: state it touches
per request lives in local variables, and it logs three numbers per *batch*
(``start, finish, items``) plus one integer per request (the code of the batch that
served it, which also names the replica); the per-request columns are expanded from
those at the end. Requests are known by their position in the log's window
(:class:`~sim.records.RequestLog`), which the dispatcher moves on between batches.

Fast-forward: when a batch would finish before the next event in SimPy's queue
(``env.peek()``), nothing else can happen in between — no other worker finishes, no
timer fires, and no waiting worker can receive an arrival, because the dispatcher keeps
a timer for the next arrival whenever any worker waits. The worker then completes the
batch without scheduling an event and carries on with its own clock ahead of SimPy's.
Likewise an idle worker jumps to the next arrival (or its policy's timer) when that
comes before the next queued event and no other worker waits. It brings SimPy's clock
up to its own (one timeout) before it really waits or when a batch would end at or
after the next queued event. Results are those of one event per batch,
up to floating-point rounding of the clock (``fast_forward=False`` checks that in the
tests); a lone busy replica then runs at the speed of a bare event loop.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from policies.batching import NEVER_BUSY

from .errors import SimulationError
from .queue import RequestQueue
from .records import DROPPED


class Worker:
    def __init__(self, index: int, queue: RequestQueue, env, dispatcher, batcher,
                 service_time: Callable[[int], float], log, drop_after: Optional[float],
                 fast_forward: bool = True, execute: Optional[Callable[[float, list, int], float]] = None,
                 host=None):
        self.index = index
        self.queue = queue
        self.env = env
        self.dispatcher = dispatcher
        self.batcher = batcher
        self.service_time = service_time
        self.log = log
        self.drop_after = drop_after
        self.fast_forward = fast_forward
        # A model with exits: ``execute(now, members, replica) -> done`` plays the batch (sim.exits)
        self.execute = execute
        # A serving host (sim.host.HostClock) that stretches batches by its intake work
        self.host = host
        self.wake = None  # the event this worker waits on, while it waits
        self._timer_at: Optional[float] = None

    def wake_up(self) -> None:
        event = self.wake
        if event is not None:
            self.wake = None
            self.queue.waiting.remove(self)
            self.dispatcher.n_waiting -= 1
            event.succeed()

    def _on_timer(self, at: float) -> None:
        if self._timer_at == at:
            self._timer_at = None
            self.wake_up()

    def _wait(self, wake_at: Optional[float]):
        """The event to yield on until an arrival (or the policy's ``wake_at``) comes."""
        env = self.env
        self.wake = env.event()
        self.queue.waiting.append(self)
        self.dispatcher.worker_waiting()
        if wake_at is not None and wake_at != self._timer_at:
            self._timer_at = wake_at
            timer = env.timeout(wake_at - env.now)
            timer.callbacks.append(lambda _event, at=wake_at: self._on_timer(at))
        return self.wake

    def _stuck(self, now: float, wake_at: Optional[float]) -> str:
        name = type(self.batcher).__name__
        if wake_at is not None:
            return f"{name} asked worker {self.index} at t={now!r} s to wait until t={wake_at!r} s, which is not later"
        return (f"{name} leaves {len(self.queue.items)} request(s) waiting on worker {self.index} "
                f"after the last arrival; they would never be served")

    def _drop_expired(self, now: float) -> None:
        queue = self.queue
        items = queue.items
        log = self.log
        oldest_allowed = now - self.drop_after
        while items and log.arrival[items[0]] < oldest_allowed:
            k = items.popleft()
            if log.size is not None:
                queue.queued_items -= log.size[k]
            if self.dispatcher.routed:
                self.dispatcher.loads[queue.index] -= 1
            i = k + log.base  # its id: k is its position in the log's window
            log.status[i] = DROPPED
            log.finish[i] = log.arrival[k] + self.drop_after  # when it expired, not when noticed
            log.replica[i] = self.index

    def run(self):
        env = self.env
        shared = self.queue
        queue = shared.items
        popleft = queue.popleft
        dispatcher = self.dispatcher
        catch_up = dispatcher.catch_up
        loads, routed = dispatcher.loads, dispatcher.routed
        decide = self.batcher.decide
        service_time = self.service_time
        execute = self.execute
        host = self.host
        log = self.log
        arrival, size_of, batch_col = log.arrival, log.size, log.batch
        log_batch = log.batches[self.index].extend
        qi = shared.index
        # this worker's batch codes: r, r + R, r + 2R, ... (r its index, R the replicas)
        b, step = self.index, len(log.batches)
        dropping = self.drop_after is not None
        sized = size_of is not None
        plain = not sized and execute is None
        # Without fast-forward the next event is taken to be "now": every batch and every
        # idle spell then goes through SimPy.
        peek = env.peek if self.fast_forward else lambda: float("-inf")
        times = dispatcher.times
        now = env.now
        # The next arrival as this worker last saw it. Only the dispatcher moves it, and
        # only forward, so a stale copy is early: it costs a needless catch_up call, never
        # a missed arrival.
        next_arrival = times[dispatcher.next]
        # SimPy's next event. Between two yields of this worker only its own catch_up
        # calls (which may wake other workers) schedule events, so it is read again
        # after those and after every yield, not before every batch.
        horizon = peek()
        free_since = NEVER_BUSY  # when this worker's last batch finished (some batchers time from it)
        while True:
            if dropping and queue:
                self._drop_expired(now)
            if queue:
                queued = shared.queued_items if sized else len(queue)
                limit, wake_at = decide(now, queued, arrival[queue[0]], dispatcher.exhausted, free_since)
            elif dispatcher.exhausted:
                return
            else:
                limit, wake_at = 0, None
            if limit == 0:
                if wake_at is not None and wake_at <= now or wake_at is None and dispatcher.exhausted and queue:
                    raise SimulationError(self._stuck(now, wake_at))
                # Idle until the next arrival or the policy's timer. If that comes before
                # any queued event and no other worker waits (so the arrival cannot be
                # routed to one), jump to it without an event.
                until = times[dispatcher.next]
                if wake_at is not None and wake_at < until:
                    until = wake_at
                if until < horizon and not dispatcher.n_waiting:
                    now = until
                    next_arrival = catch_up(now)
                    horizon = peek()
                    continue
                if now > env.now:  # bring SimPy's clock up to this worker's first
                    yield env.timeout(now - env.now)
                yield self._wait(wake_at)
                now = env.now
                horizon = peek()
                continue
            # Take requests from the head while they fit; the head always goes.
            # The batch ends at ``done`` exactly; SimPy's clock, which adds the timeout to
            # its own time, may land an ulp away, so the log keeps ``done``.
            if plain:  # unit requests, one service time per batch: the commonest case
                if limit == 1:
                    m = items = 1
                    batch_col[popleft()] = b
                else:
                    m = items = min(limit, len(queue))
                    for _ in range(m):
                        batch_col[popleft()] = b
                done = now + service_time(items) if host is None else host.finish(now, service_time(items))
            elif execute is not None:  # exits: requests leave at their own times
                members = [popleft() for _ in range(min(limit, len(queue)))]
                for k in members:
                    batch_col[k] = b
                m = items = len(members)
                done = execute(now, np.add(members, log.base), self.index)  # by id, not window position
            else:
                k = popleft()
                batch_col[k] = b
                items = size_of[k]
                m = 1
                while queue and items + size_of[queue[0]] <= limit:
                    k = popleft()
                    batch_col[k] = b
                    items += size_of[k]
                    m += 1
                shared.queued_items -= items
                done = now + service_time(items) if host is None else host.finish(now, service_time(items))
            log_batch((now, done, items))
            if done >= horizon:
                yield env.timeout(done - env.now)
                horizon = peek()
            if next_arrival <= done:
                next_arrival = catch_up(done)
                horizon = peek()
            if routed:
                loads[qi] -= m
            now = free_since = done
            b += step
