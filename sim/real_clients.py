"""Closed-loop clients served for real: N client threads against k real model instances.

:mod:`sim.closed_loop` simulates perf_analyzer's concurrency mode; this module runs it.
``clients`` client threads each send one request of ``size`` items, block until its
answer, think (the load's think time), and send again, until ``count`` requests are
sent. ``instances`` instance threads take batches from one shared queue, each asking the
*same kind* of batching policy object the simulator asks (a
:class:`~policies.batching.DynamicBatcher`, guarded by the queue's lock), and run them
on the real model (:class:`sim.real.StagedModel`, the whole model: every stage, then the
last exit's head; ramps are not run). Nothing here is simulated: the latency is what each
client measures on ``time.perf_counter`` from the moment it begins to send to the moment
it holds its answer, and the wall clock's variation is the measurement.

Every request's times are kept, as perf_analyzer splits them: ``sent`` (its client
begins), ``arrival`` (it is in the server's queue), ``start`` (an instance took it into a
batch), ``finish`` (the batch's answers were handed back) and ``received`` (its client
woke with the answer). The server's part is written as the simulator's
:class:`~sim.records.Results` (``arrival, start, finish, batch_size``), so
:func:`sim.summarize` and the client view work on both; the clients' part is
:class:`ClientTimes`. Request ids are given in send order, and request k's input rows are
fixed by k alone (``(k * size + j) % inputs``), so two runs serve the same rows in the
same order of ids; which client sent which id is the wall clock's.

Python threads share one interpreter lock. torch releases it inside its kernels, so two
instances' batches do run at once on two cores, but the Python between the kernels, the
batching decisions and every client's wake-up take turns. That is part of what is
measured: the costs the simulation is given come from isolated measurements of the same
code (:func:`batch_call`, :func:`measure_client_overhead`), never from these runs.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from servesim.policies.batching import NEVER_BUSY, DynamicBatcher

from .client_view import _mean_ms, client_view
from .closed_loop import ClientCosts, ClientSamples, ClosedLoop
from .errors import SimulationError
from .metrics import _latency_ms
from .real import StagedModel, _Clock, paused_gc
from .records import COMPLETED, RequestTable, Results


@dataclass(frozen=True)
class ClientTimes:
    """The clients' side of a real closed-loop run, per request (seconds on the run's
    clock): which ``client`` sent it, when it began to send (``sent``) and when it held
    its answer (``received``)."""

    client: np.ndarray
    sent: np.ndarray
    received: np.ndarray


@dataclass(frozen=True)
class ClosedLoopRun:
    """A real closed-loop run: the server's per-request ``results`` (as the simulator
    writes them), the ``clients``' times, and every batch as a row of ``batches``:
    ``(instance, start, finish, items)``."""

    results: Results
    clients: ClientTimes
    batches: np.ndarray


def forward(model: StagedModel, rows: np.ndarray):
    """The whole model on ``rows``: every stage, then the last exit's head (the model's
    own output); the ramps are not run."""
    with model.session():
        x = model.batch(rows)
        for stage in model.stages:
            x = stage(x)
        return model.heads[-1](x)


NULL_MODEL = StagedModel(batch=lambda rows: rows, stages=(), heads=(lambda x: x,))  # answers at once


class _Server:
    """One queue, the batching policy, and every request's times. ``take`` and
    ``deliver`` are the instance's side, ``send`` the client's; all share ``cond``'s lock."""

    def __init__(self, model: StagedModel, batcher: DynamicBatcher, count: int, size: int, inputs: int,
                 clients: int, clock: _Clock):
        if type(batcher) is not DynamicBatcher or batcher.allowed_sizes:
            raise ValueError(f"the real closed loop batches with a dynamic batcher without allowed_sizes "
                             f"(got {type(batcher).__name__})")
        if size > batcher.max_batch:
            raise ValueError(f"requests of {size} items never fit a batch of at most {batcher.max_batch}")
        if inputs < 1:
            raise ValueError(f"the model needs at least one input row, got {inputs}")
        self.model, self.batcher, self.count, self.size, self.inputs, self.clock = (
            model, batcher, count, size, inputs, clock)
        self.cond = threading.Condition()
        self.queue: deque[int] = deque()
        self.sent = 0  # ids handed out: requests sent so far
        self.answers = [threading.Event() for _ in range(clients)]
        self.client = np.full(count, -1, dtype=np.int32)
        self.times = {name: np.full(count, np.nan) for name in ("sent", "arrival", "start", "finish", "received")}
        self.batch_size = np.zeros(count, dtype=np.int32)
        self.batches: list[tuple[int, float, float, int]] = []  # appended under the GIL, one per batch
        self.failure: Optional[BaseException] = None

    def send(self, c: int) -> int:
        """Client ``c`` sends its next request: its id, or -1 when all are sent."""
        began = self.clock.now()
        with self.cond:
            k = self.sent
            if k == self.count or self.failure is not None:
                return -1
            self.sent = k + 1
            self.client[k] = c
            self.times["sent"][k] = began
            self.times["arrival"][k] = self.clock.now()
            self.queue.append(k)
            if self.sent == self.count:  # idle instances wake to drain, then leave
                self.cond.notify_all()
            else:
                self.cond.notify()  # the instance that has waited longest
        return k

    def take(self, free_since: float) -> Optional[list[int]]:
        """An instance's next batch (request ids), once the batching policy runs one; None
        when every request has been sent and none is queued."""
        queue, times, cond = self.queue, self.times["arrival"], self.cond
        with cond:
            while True:
                draining = self.sent == self.count
                if self.failure is not None or (not queue and draining):
                    return None
                now = self.clock.now()
                wake_at = None
                if queue:
                    items, wake_at = self.batcher.decide(now, len(queue) * self.size, times[queue[0]], draining,
                                                         free_since)
                    if items:
                        members = [queue.popleft() for _ in range(min(len(queue), max(1, items // self.size)))]
                        self.times["start"][members] = now
                        if queue:  # another instance may take the rest
                            cond.notify()
                        return members
                cond.wait(None if wake_at is None else max(0.0, wake_at - now))

    def rows(self, members: list[int]) -> np.ndarray:
        """The input rows of requests ``members``: request k's item j is row ``(k * size + j) % inputs``."""
        ids = np.asarray(members, dtype=np.int64)[:, None] * self.size + np.arange(self.size)
        return (ids % self.inputs).ravel()

    def deliver(self, instance: int, members: list[int]) -> float:
        """Hand a finished batch's answers back; returns when."""
        done = self.clock.now()
        self.times["finish"][members] = done
        self.batch_size[members] = len(members) * self.size
        self.batches.append((instance, float(self.times["start"][members[0]]), done, len(members) * self.size))
        for k in members:
            self.answers[self.client[k]].set()
        return done

    def serve(self, instance: int) -> None:
        """An instance's loop: take a batch, run it, answer, until no request is left."""
        free_since = NEVER_BUSY
        try:
            self.model.on_thread()
            while (members := self.take(free_since)) is not None:
                forward(self.model, self.rows(members))
                free_since = self.deliver(instance, members)
        except BaseException as exc:  # every client must wake and stop, not wait forever
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            self.failure = self.failure or exc
            self.cond.notify_all()
        for answer in self.answers:
            answer.set()


def _client(server: _Server, c: int, first_think: float, think: Callable[[int], float]) -> None:
    """Client ``c``: think, send, wait for the answer, until every request is sent."""
    answer, now = server.answers[c], server.clock.now
    pause = first_think
    while True:
        if pause > 0:  # slept, not spun: many clients spinning would take the instances' cores
            time.sleep(pause)
        answer.clear()
        k = server.send(c)
        if k < 0:
            return
        answer.wait()
        server.times["received"][k] = now()
        if server.failure is not None:
            return
        pause = think(k)


def serve_closed_loop(model: StagedModel, batcher: DynamicBatcher, load: ClosedLoop, *, instances: int = 1,
                      inputs: int = 1) -> ClosedLoopRun:
    """Serve ``load`` for real: ``load.clients`` client threads against ``instances``
    instance threads running ``model`` (``inputs`` distinct input rows), batched by
    ``batcher``. Think times are drawn as the simulator draws them (``load.think`` from
    ``load.seed``): each client's first, then one per request id. ``load.client_overhead_s``
    is not added: the real clients' overhead is what they measure. The garbage collector
    is paused while it serves, as in :func:`sim.real.execute`."""
    if int(instances) != instances or instances < 1:
        raise ValueError(f"instances must be a whole number >= 1, got {instances!r}")
    clock = _Clock()
    server = _Server(model, batcher, load.count, load.size, inputs, load.clients, clock)
    draw = load.think.sampler(np.random.default_rng(load.seed))
    thinks = np.array([draw() for _ in range(load.clients + load.count)])
    threads = [threading.Thread(target=server.serve, args=(i,), name=f"instance-{i}") for i in range(instances)]
    threads += [threading.Thread(target=_client, args=(server, c, float(thinks[c]),
                                                       lambda k: float(thinks[load.clients + k])),
                                 name=f"client-{c}") for c in range(min(load.clients, load.count))]
    with paused_gc():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if server.failure is not None:
        raise server.failure
    if server.sent != load.count or np.isnan(server.times["received"]).any():
        raise SimulationError(f"the real closed loop answered {int((~np.isnan(server.times['received'])).sum())} "
                              f"of {load.count} requests")
    return _outcome(server, load)


def _outcome(server: _Server, load: ClosedLoop) -> ClosedLoopRun:
    n, times = load.count, server.times
    batches = np.array(server.batches, dtype=np.float64).reshape(-1, 4)
    requests = RequestTable(arrival=times["arrival"], size=np.full(n, load.size, dtype=np.int32),
                            start=times["start"], finish=times["finish"], replica=np.zeros(n, dtype=np.int32),
                            batch_size=server.batch_size, status=np.full(n, COMPLETED, dtype=np.int8))
    results = Results(requests=requests, replicas=1, end_time=float(times["received"].max()),
                      busy_time=np.array([busy_seconds(batches[:, 1:3])]), batches=len(batches))
    return ClosedLoopRun(results, ClientTimes(server.client, times["sent"], times["received"]), batches)


def real_client_view(run: ClosedLoopRun, load: ClosedLoop, summary: dict, warmup: float = 0.0) -> dict:
    """:func:`sim.client_view.client_view` of a real run, with what its clients measured
    in place of the load's client costs: the latency each client saw (send to answer),
    ``client_send`` (the client begins -> its request is queued) and ``client_recv`` (the
    answer handed back -> the client holds it). ``network`` is ``None``: in one process
    there is none, and the handoff to an idle instance (what :func:`measure_client_overhead`
    gives as ``network``) falls inside the measured queue. ``warmup`` leaves out requests queued
    earlier, as there."""
    view = client_view(run.results.requests, dataclasses.replace(load, client=ClientCosts()), summary, warmup)
    table, clients = run.results.requests, run.clients
    kept = slice(int(np.searchsorted(table.arrival, warmup, side="left")) if warmup > 0 else 0, None)
    send, receive = (table.arrival - clients.sent)[kept], (clients.received - table.finish)[kept]
    block = view["closed_loop"]
    block["latency_ms"] = _latency_ms((clients.received - clients.sent)[kept])
    block["split_ms"].update(client_send=_mean_ms(send), network=None, client_recv=_mean_ms(receive))
    return view


def busy_seconds(spans: np.ndarray) -> float:
    """The length of the union of ``[start, finish)`` intervals (rows of ``spans``): the
    device's busy time when several instances' batches overlap, as the simulator counts it."""
    if not len(spans):
        return 0.0
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    reach = np.maximum.accumulate(spans[:, 1])
    gaps = np.maximum(spans[1:, 0] - reach[:-1], 0.0)
    return float(reach[-1] - spans[0, 0] - gaps.sum())


def batch_call(model: StagedModel, items: int, inputs: int) -> Callable[[], None]:
    """A call that serves one batch of ``items`` one-item requests as an instance of
    :func:`serve_closed_loop` does — the queue's lock, the batching decision, taking
    them, the model, handing the answers back — on a server of the calling thread's own,
    its queue refilled at each call (a few microseconds of the span). What
    ``profile_whole`` times, alone and beside other threads doing the same."""
    local = threading.local()
    batcher = DynamicBatcher(items)

    def call() -> None:
        server = getattr(local, "server", None)
        if server is None:
            server = local.server = _Server(model, batcher, items, 1, inputs, 1, _Clock())
            server.client[:] = 0
            model.on_thread()
        server.queue.extend(range(items))
        server.sent = items
        server.batches.clear()
        members = server.take(NEVER_BUSY)
        forward(model, server.rows(members))
        server.deliver(0, members)
    return call


def measure_client_overhead(count: int = 2000, model: StagedModel = NULL_MODEL, inputs: int = 1) -> ClientSamples:
    """One client, ``count`` requests, against one instance of ``model`` (``inputs``
    input rows; by default :data:`NULL_MODEL`, which answers at once), the first tenth left
    out as warm-up: the per-request cost of the client and the queue themselves, measured
    in isolation (nothing else is sent, nothing queues), for the simulation's
    ``load.client``. Every kept request is a row (seconds): ``send`` (the client begins to
    send -> the request is queued), ``network`` (queued -> the idle instance has taken it:
    the handoff between threads, where a networked server has its network and server
    receive) and ``recv`` (the answer handed back -> the client holds it); together,
    everything in a lone request's round trip but its batch. Against the real model the
    client sleeps through a real batch, as it does when served: a thread woken after
    milliseconds of sleep wakes later than one woken after microseconds (measured: 0.12 ms
    against 0.017 ms on average for ResNet-18 32x32 on a 2-core VM), so that is the
    measurement a closed loop of that model needs. The rows, not only their means: a rare
    late wake-up (milliseconds) is what sets clients that send in step out of step
    (:mod:`sim.closed_loop`)."""
    run = serve_closed_loop(model, DynamicBatcher(1), ClosedLoop(1, count), inputs=inputs)
    table, clients = run.results.requests, run.clients
    kept = slice(count // 10, None)
    parts = (table.arrival - clients.sent, table.start - table.arrival, clients.received - table.finish)
    against = "an instance that answers at once" if model is NULL_MODEL else "one instance of the model, alone"
    return ClientSamples(*(part[kept] for part in parts),
                         source=f"measure_client_overhead: {count - count // 10} requests of one client against "
                                f"{against}, after {count // 10} left out")