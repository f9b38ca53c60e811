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
        self.n = log.n
        self.times = log.arrival  # the log's window, moved on in place; ends with +inf
        self.sizes = log.size
        self.next = 0             # window position of the next arrival to route
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
        # the next request id at which to report progress or, at n, to mark the trace exhausted
        self._report_at = min(progress_every if progress is not None else self.n, self.n)
        # items of the window's requests before position k, while a single queue counts them
        self._items_before: list[int] = []

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

    def _make_catch_up(self) -> Callable[[float], float]:
        """Build ``catch_up(now)``: route every arrival at or before ``now`` not yet routed,
        and return the time of the next arrival (+inf after the last).

        It runs after almost every batch, usually to route a single request, so it is a
        closure over what it needs rather than a method that looks it all up each call.
        With one queue (one replica, or a shared queue) and no request too large to
        serve, there is nothing to decide per request: the arrivals up to ``now`` join
        the queue as one slice, found by bisection past the first. Routing stops at the
        end of the log's window as at the last arrival (both are +inf); :meth:`_stop` then
        moves the window on and routing resumes, so the window costs nothing per request.
        """
        times, sizes = self.times, self.sizes
        loads, queues, max_batch = self.loads, self.queues, self.max_batch
        choose = self.router.choose if len(queues) > 1 else None
        largest = self.log.largest_size
        one_queue = len(queues) == 1 and (largest is None or largest <= max_batch)
        queue = queues[0]
        append, extend, waiting = queue.items.append, queue.items.extend, queue.waiting
        # items up to window position k: ``k`` without sizes, else a prefix sum
        items_before = None if sizes is None or not one_queue else self._items_before
        if items_before is not None:
            items_before.extend(itertools.accumulate(sizes, initial=0))
        # the next window position at which to stop: the window's end, or the next report
        next_stop = self._next_stop()

        def catch_up(now: float) -> float:
            nonlocal next_stop
            k = self.next
            if times[k] > now:
                return times[k]
            while True:
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
                if k < next_stop:
                    return times[k]
                more = self._stop(now)
                next_stop = self._next_stop()
                k = self.next
                if not more:
                    return times[k]

        return catch_up

    def _next_stop(self) -> int:
        return min(self._report_at - self.log.base, self.log.end)

    def _stop(self, now: float) -> bool:
        """Routing reached the window's end or the next report; returns whether arrivals up
        to ``now`` remain to be routed (in the window just taken)."""
        log, k = self.log, self.next
        if k == log.end and not log.final:
            self._next_window()
            if self.times[self.next] <= now:
                return True
        routed = self.next + log.base
        if routed >= self._report_at:
            if self._progress is not None:
                self._progress(routed)
            self._report_at = min(routed + self._progress_every, self.n)
            if routed == self.n:
                self.exhausted = True
                for worker in self.workers:  # a policy waiting for a full batch can now flush
                    worker.wake_up()
        return False

    def _next_window(self) -> None:
        """Move the log's window on and renumber every window position held here."""
        log = self.log
        keep = min([self.next] + [q.items[0] for q in self.queues if q.items])
        shift = log.advance(keep)
        self.next -= shift
        if shift:
            for q in self.queues:
                if q.items:
                    ids = [k - shift for k in q.items]
                    q.items.clear()
                    q.items.extend(ids)
        items_before = self._items_before
        if items_before:
            del items_before[:shift]
            # the running total from the old end on; its first value is already there
            totals = itertools.accumulate(self.sizes[len(items_before) - 1:], initial=items_before[-1])
            items_before.extend(itertools.islice(totals, 1, None))

    def _reject(self, k: int) -> None:
        log = self.log
        log.status[k + log.base] = REJECTED
        log.finish[k + log.base] = log.arrival[k]
        self.rejections["larger than max_batch"] += 1
