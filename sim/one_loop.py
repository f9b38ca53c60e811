"""The lanes of a run's one steady deployment, driven by one heapq event loop instead of
SimPy.

The commonest run (one task served by one deployment under a plan that never changes:
plain requests, no exits, padding, instances or closed loop; routing, batching, drops
and a serving host allowed) is served by :meth:`sim.cluster._Cluster.steady_lane`
processes under SimPy: a SimPy event costs an ``Event`` object, a scheduling, a
callback and a generator resume, and such a run takes two to three of them per request
(a lane's batch end, its wake-up, the dispatcher's arrival timer). This loop runs the
same lanes, by the same rules and through the same policy objects (the deployment's
router and batching policy, its sampler drawn in the order batches start, the
cluster's own routing, drops and logs), on a heap of plain tuples: about one heap
entry per request.

Its events and their order are SimPy's (the steady lane's own, fast-forwarded or not):

* ``(time, number, BATCH_END, lane, items)``: a lane's batch ends. The arrivals up to
  then are routed first (:attr:`_Cluster.catch_up`), so a router still counts the
  batch, then its requests leave the router's count and the lane looks at its queue.
* ``(time, number, TIMER, lane, deadline)``: the batching policy's timer. It wakes the
  lane if it still waits for that deadline (a lane woken earlier keeps its timer when
  it waits again for the same deadline, as :class:`sim.cluster._Waiter` does).
* ``(time, number, WAKE, lane, 0)``: an arrival (or the end of the trace) woke a
  waiting lane, which looks at its queue once the entries already due then are done,
  as a succeeded SimPy event resumes its process. Where none is due, it looks at once.
* SimPy's timer for the next arrival is no entry but three numbers (set, time, order
  number), taken where the engine sets it (:meth:`_Cluster.arm_timer`: when a lane
  starts to wait and none is set, and after it fires while a lane still waits); it
  fires in its place among the entries, even where its arrival was routed meanwhile
  (at a batch's end at that instant), and routes the arrivals up to its time. While
  no lane waits, arrivals are routed lazily, as under SimPy.

``number`` counts the entries pushed (and timers set), so events due at one instant run
in the order they were set, as SimPy's do. A lane looks at its queue as the steady lane
does (drops at the head, ``batcher.decide``, take a batch or wait), runs on through a
batch that ends before anything else is due, and jumps to the next arrival or its timer
while no other lane waits. Times are exact: each event is at the time it was set for,
where SimPy's clock adds a delay to its own time and may round the last bit of a time
that lies more than twice as far from its clock as the clock from zero (early in a
run); ``tests/engine/test_one_loop.py`` holds both to one sample path.
"""

from __future__ import annotations

from heapq import heappop, heappush
from typing import TYPE_CHECKING

from servesim.policies.batching import NEVER_BUSY

if TYPE_CHECKING:
    from .cluster import _BatchLog, _Cluster, _Deployment, _Replica

BATCH_END, TIMER, WAKE = 0, 1, 2
INF = float("inf")


class OneLoopLane:
    """One lane's state between its events. As an entry ``(replica, lane)`` among its
    queue's waiting lanes it is woken by ``succeed()``, as a SimPy event would be."""

    __slots__ = ("loop", "replica", "queue", "idle", "entry", "slot", "log_batch", "code",
                 "free_since", "deadline", "timer_at")

    def __init__(self, loop: "OneLoop", replica: "_Replica", log: "_BatchLog"):
        self.loop, self.replica = loop, replica
        self.queue, self.idle = replica.queue, replica.idle
        self.entry = (replica, self)
        self.slot = -1  # its replica's index among the router's targets (set once they are fixed)
        self.log_batch = log.flat.extend  # (the list is cleared in place when it moves into numpy)
        self.code = log.slot  # its next batch's code
        self.free_since = NEVER_BUSY  # when its last batch ended
        self.deadline = None  # the policy's deadline it waits for
        self.timer_at = None  # its latest timer's deadline while that timer is still to fire

    def succeed(self) -> None:
        """Woken (it left the waiting lanes) by routing: it looks at its queue after the
        events due now (the loop gives it its entry once routing is done)."""
        self.loop.woken.append(self)


class OneLoop:
    """The event loop of the lanes of ``cluster``'s one steady deployment: :meth:`add`
    each as it is created, then :meth:`run` the whole run."""

    def __init__(self, cluster: "_Cluster"):
        self.cluster = cluster
        self.heap: list[tuple] = []
        self.woken: list[OneLoopLane] = []  # lanes woken by the routing of arrivals, to be given entries
        self.lanes: list[OneLoopLane] = []
        self.step = 0  # from one batch's code to the next's, in every lane of the task

    def add(self, replica: "_Replica", log: "_BatchLog") -> None:
        self.lanes.append(OneLoopLane(self, replica, log))
        self.step = log.step

    def run(self) -> None:
        cluster = self.cluster
        dep: _Deployment = self.lanes[0].replica.deployment
        task = dep.key[0]
        heap, woken = self.heap, self.woken
        number = 0  # entries pushed so far: entries due at one instant come out in the order pushed
        routed = dep.router is not None
        if routed:  # the replicas its router chooses among, fixed from now on, and their loads
            dep.targets()
        loads = dep.loads
        for lane in self.lanes:
            lane.slot = lane.replica.slot
        catch_up = cluster.catch_up
        catch_up(0.0)
        for lane in self.lanes:  # every lane looks at its queue at 0, in order
            number += 1
            heappush(heap, (0.0, number, WAKE, lane, 0))
        times, since, batch_of = cluster.times, cluster.since[task], cluster.batch_of[task]
        limit = cluster.drop_after.get(task)
        sampler, decide, host = dep.sampler, dep.batcher.decide, cluster.host_clock
        targets, choose = dep._targets, dep.router.choose if routed else None
        step = self.step
        # SimPy's timer for the next arrival, set while a lane waits (one at a time): when it is
        # due and where it stands among the entries due at that instant (its order number)
        timer_set, timer_at, timer_number = False, INF, 0
        while True:
            if timer_set and (not heap or timer_at < heap[0][0]
                              or timer_at == heap[0][0] and timer_number < heap[0][1]):
                # the arrival timer is next: the arrivals up to its time are routed
                timer_set = False
                now = timer_at
                k = cluster.arrived
                if times[k] > now or k + 1 == cluster.report_at or times[k + 1] == now:
                    # routed already (at a batch's end at this instant), several at once, or the
                    # window of arrival times moves on: by catch_up
                    catch_up(now)
                    for woke in woken:
                        number += 1
                        heappush(heap, (now, number, WAKE, woke, 0))
                    woken.clear()
                    if cluster.waiting and not cluster.exhausted:
                        timer_set, timer_at, number = True, times[cluster.arrived], number + 1
                        timer_number = number
                    continue
                # one arrival, routed here as catch_up would (the commonest event of a lightly loaded system)
                cluster.arrived = k + 1
                if routed:
                    slot = choose(loads)
                    loads[slot] += 1
                    target = targets[slot]
                else:
                    target = dep
                target.queue.append(k)
                lane = None
                if target.idle:
                    lane = target.idle.pop(0)[1]  # the lane that has waited longest wakes
                    cluster.waiting -= 1
                if cluster.waiting:  # (not the last arrival: more are to come)
                    timer_set, timer_at, number = True, times[k + 1], number + 1
                    timer_number = number
                if lane is None:
                    continue
                if heap and heap[0][0] <= now:  # it looks after the entries due now
                    number += 1
                    heappush(heap, (now, number, WAKE, lane, 0))
                    continue
                queue, free_since, next_arrival = lane.queue, lane.free_since, times[k + 1]
            else:
                if not heap:
                    break
                now, _, kind, lane, data = heappop(heap)
                queue = lane.queue
                next_arrival = times[cluster.arrived]
                if kind == BATCH_END:
                    if next_arrival <= now:  # (arrivals at the batch's end count it as outstanding)
                        next_arrival = catch_up(now)
                        for woke in woken:
                            number += 1
                            heappush(heap, (now, number, WAKE, woke, 0))
                        woken.clear()
                    if routed:
                        loads[lane.slot] -= data
                    free_since = now
                else:
                    if kind == TIMER:
                        if data == lane.timer_at:
                            lane.timer_at = None
                        if data != lane.deadline or lane.entry not in lane.idle:
                            continue
                        lane.idle.remove(lane.entry)
                        cluster.waiting -= 1
                        if heap and heap[0][0] <= now or timer_set and timer_at <= now:
                            number += 1  # it looks after the entries due now
                            heappush(heap, (now, number, WAKE, lane, 0))
                            continue
                    free_since = lane.free_since
            while True:  # the lane looks at its queue at ``now``
                if limit is not None:
                    cluster.drop_expired(task, dep, lane.replica, now, limit)
                if queue:
                    size, wake_at = decide(now, len(queue), since[queue[0]], cluster.exhausted, free_since)
                    if size:  # it takes a batch
                        queued = len(queue)
                        code = lane.code
                        if size >= queued:  # (from here on, what it takes)
                            size = queued
                        if size == 1:
                            batch_of[queue.popleft()] = code
                        else:
                            popleft = queue.popleft
                            for _ in range(size):
                                batch_of[popleft()] = code
                        done = now + sampler(size) if host is None else host.finish(now, sampler(size))
                        lane.log_batch((now, done, size))
                        lane.code = code + step
                        # It runs on without an entry where nothing else can happen before its batch ends: no
                        # entry and no arrival timer is due by then (so no lane waits for an arrival by then).
                        if not (heap and heap[0][0] <= done or timer_set and timer_at <= done):
                            now = free_since = done
                            if next_arrival <= now:  # routed first: a router counts the batch (no lane waits to be woken)
                                next_arrival = catch_up(now)
                            if routed:
                                loads[lane.slot] -= size
                            continue
                        number += 1
                        heappush(heap, (done, number, BATCH_END, lane, size))
                        break
                    if wake_at is None:
                        if cluster.exhausted:
                            raise cluster.stall(dep, now, wake_at, len(queue))
                    elif wake_at <= now:
                        raise cluster.stall(dep, now, wake_at, len(queue))
                elif cluster.exhausted:
                    break  # nothing left to come: it is done (its replica stays up to the run's end)
                else:
                    wake_at = None
                # it waits, the longest-waiting lane of its queue last in line
                if not cluster.waiting:
                    # No other lane waits: idle until the next arrival or the policy's timer, if that
                    # comes before every entry, without an entry (the first look routes the arrival).
                    until = next_arrival if wake_at is None or next_arrival <= wake_at else wake_at
                    if until < INF and not (heap and heap[0][0] <= until or timer_set and timer_at <= until):
                        now = until
                        next_arrival = catch_up(now)  # (no lane waits: none to wake)
                        continue
                lane.idle.append(lane.entry)
                cluster.waiting += 1
                if not timer_set and not cluster.exhausted:  # arrivals need a timer while a lane waits
                    timer_set, timer_at, number = True, next_arrival, number + 1
                    timer_number = number
                if wake_at is not None and wake_at != lane.timer_at:
                    lane.timer_at = wake_at
                    number += 1
                    heappush(heap, (wake_at, number, TIMER, lane, wake_at))
                lane.deadline, lane.free_since = wake_at, free_since
                break
