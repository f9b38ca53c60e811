"""The arrival stream and the router in front of the replicas.

Arrivals are known in advance (a trace), so the dispatcher does not wake up for every
one of them. It routes arrivals *lazily*: whenever anything happens at time ``t`` (a
batch finishes, a timer fires) the engine first calls :meth:`Dispatcher.catch_up` to
route every arrival up to ``t``. Between two events nothing but arrivals changes the
replicas' loads, so routing them late but in order, against the loads they would have
seen, gives exactly the decisions of a per-arrival event loop.

The one thing lazy routing cannot do is start a batch *at* an arrival time. So while any
worker is waiting for work the dispatcher keeps a timer set for the next arrival; while
every worker is busy it sets none. At high load most requests therefore cost no event
of their own, which is what makes the engine fast.

Ties: an arrival at the same instant as a batch completion is routed first, so a
join-shortest-queue router still counts the finishing batch as outstanding.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Callable, Optional

from .records import REJECTED


class Dispatcher:
    def __init__(self, env, log, router, max_batch: int,
                 progress: Optional[Callable[[int], None]] = None, progress_every: int = 1 << 16):
        self.env = env
        self.n = len(log.arrival) - 1
        self.times = log.arrival  # ends with +inf: the sentinel spares a bounds check
        self.sizes = log.size
        self.next = 0
        self.log = log
        self.router = router
        self.max_batch = max_batch
        self.queues: list = []
        self.workers: list = []
        self.loads: list[int] = []  # outstanding requests per queue, kept while a router reads them
        self.routed = False
        self.n_waiting = 0
        self.exhausted = self.n == 0
        self.rejections = {"larger than max_batch": 0}
        self._timer_set = False
        self._progress = progress
        self._progress_every = progress_every

    def attach(self, queues: list, workers: list) -> None:
        self.queues = queues
        self.workers = workers
        self.loads = [0] * len(queues)
        self.routed = len(queues) > 1
        self.catch_up = self._make_catch_up()

    def worker_waiting(self) -> None:
        """A worker starts waiting for work: the next arrival may now start a batch."""
        self.n_waiting += 1
        if not self._timer_set and not self.exhausted:
            self._set_timer()

    def _set_timer(self) -> None:
        self._timer_set = True
        timer = self.env.timeout(self.times[self.next] - self.env.now)
        timer.callbacks.append(self._on_timer)

    def _on_timer(self, _event) -> None:
        self._timer_set = False
        self.catch_up(self.env.now)
        if self.n_waiting and not self.exhausted:
            self._set_timer()

    def _make_catch_up(self) -> Callable[[float], None]:
        """Build ``catch_up(now)``: route every arrival at or before ``now`` not yet routed,
        and return the time of the next arrival (+inf after the last).

        It runs after almost every batch, usually to route a single request, so it is a
        closure over what it needs rather than a method that looks it all up each call.
        With one queue (one replica, or a shared queue) and no request too large to
        serve, there is nothing to decide per request: the arrivals up to ``now`` join
        the queue as one slice, found by bisection past the first.
        """
        times, sizes, n = self.times, self.sizes, self.n
        loads, queues, workers, max_batch = self.loads, self.queues, self.workers, self.max_batch
        choose = self.router.choose if len(queues) > 1 else None
        one_queue = len(queues) == 1 and (sizes is None or max(sizes, default=0) <= max_batch)
        queue = queues[0]
        append, extend, waiting = queue.items.append, queue.items.extend, queue.waiting
        # items up to request k: ``k`` without sizes, else a prefix sum
        items_before = None if sizes is None else [0, *itertools.accumulate(sizes)]
        progress, every = self._progress, self._progress_every
        # the next k at which to report progress or, at n, to mark the trace exhausted
        next_stop = min(every if progress is not None else n, n)

        def catch_up(now: float) -> float:
            nonlocal next_stop
            k = self.next
            if times[k] > now:
                return times[k]
            if one_queue:
                j = k + 1
                if times[j] <= now:  # more than one arrival since the last look
                    j += 1
                    if times[j] <= now:  # more than two: bisect
                        j = bisect.bisect_right(times, now, j + 1)
                    extend(range(k, j))
                else:
                    append(k)
                if items_before is not None:
                    queue.queued_items += items_before[j] - items_before[k]
                if waiting:
                    for _ in range(min(j - k, len(waiting))):  # one waiting worker per arrival
                        waiting[0].wake_up()
                k = j
            else:
                while times[k] <= now:
                    size = 1 if sizes is None else sizes[k]
                    if size > max_batch:
                        self._reject(k)
                    else:
                        if choose is None:
                            r = 0
                        else:
                            r = choose(loads)
                            loads[r] += 1
                        q = queues[r]
                        q.items.append(k)
                        if sizes is not None:
                            q.queued_items += size
                        if q.waiting:
                            q.waiting[0].wake_up()
                    k += 1
            self.next = k
            if k >= next_stop:
                if progress is not None:
                    progress(k)
                next_stop = min(k + every, n)
                if k == n:
                    self.exhausted = True
                    for worker in workers:  # a policy waiting for a full batch can now flush
                        worker.wake_up()
            return times[k]

        return catch_up

    def _reject(self, k: int) -> None:
        log = self.log
        log.status[k] = REJECTED
        log.finish[k] = log.arrival[k]
        self.rejections["larger than max_batch"] += 1
