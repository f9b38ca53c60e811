"""The engine: a serving system under an autoscaler, pipelines of tasks, each run by
deployments of model variants whose replicas come and go.

It serves a *pipeline* (a DAG of tasks: a detector, then a classifier) whose
configuration may change while it runs; a single-model run (:func:`sim.simulate`) is its
simplest case, one task served by one deployment under a plan that never changes, and
the case it serves fastest (:mod:`sim.one_loop`, one heapq loop for all its lanes). Every ``adapter.interval_s``
seconds the adapter (:mod:`policies.autoscaling`) sees the load so far and how busy each
deployment was, and may return a new :class:`~policies.autoscaling.Plan`. The engine
carries it out as a cluster would:

* **Provisioning** takes the variant's load time (model load / cold start); a replica
  costs its cores from the moment it is requested until it is released.
* **Rolling changes** (the default): new replicas start loading at once; the quotas and
  the removal of surplus replicas take effect when every new replica has loaded, so
  capacity never dips. ``Plan.restart`` (the Kubernetes VPA's recreate mode) removes and
  re-routes at once instead, and the new replicas serve only once loaded.
* **No queued request is lost**: a deployment that goes away hands its queue, with the
  original enqueue times, to its task's deployments in force; a retiring replica
  finishes the batch it is running.
* **Drops**: a request that waited longer than its task's ``drop_after`` when a replica
  next looks at the queue is dropped (it counts as an SLO violation), as Triton's queue
  timeout and IPA's queues do.
* **Batching**: a free lane asks its deployment's batching policy (built by
  ``batching(batch, latency)`` for the plan's ``batch`` and the deployment's median
  batch latency, :mod:`policies.batching`) whether to start a batch of what its
  deployment has queued or to wait, until a request is queued or the policy's timer
  fires. The default takes what is queued, up to ``batch``, at once; a dynamic
  batcher's window (Triton's queue delay, TF-Serving's batch timeout) waits for more,
  and its ``allowed_sizes`` pad a batch (which costs what the padded size costs); a
  deadline batcher takes the largest batch whose latency lets the oldest request meet
  its SLO, counted from its queueing at the task. Requests may carry several items (the trace's ``size``
  column): a batch takes requests from the head while their items fit, and a request
  larger than its deployment's batch is rejected where it arrives. A policy is told when
  no request can come any more (``draining``, so that one waiting for a full batch
  flushes): at a source task once the trace is routed, at a later task once the tasks
  before it are drained. The lane that has waited longest takes an arrival, and a lane
  woken before its policy's timer fires keeps that timer when the deadline is unchanged.
* **Exits**: a variant may be a model with exits (an early-exit network or a cascade,
  :mod:`sim.exits`): ``costs.exits(task, variant, units)`` gives its
  :class:`~sim.exits.ExitRun`, which plays each batch exit by exit under its exit policy
  (Apparate's controller, T-Tamer, thresholds). Each request then leaves the task at its
  own exit's time and goes on downstream from there; the lane is busy until the batch
  ends (the last exit under ``compute_saving``, the whole model under ``latency_only``).
  The adapter sees each deployment's exit mix (:class:`ClusterObservation` ``exits``).
* **Host**: with ``host`` (:mod:`sim.host`), the one lane of a one-task run shares its
  serving host with the intake of every arrival, which stretches its batches; a host
  models one server process, so a plan with more lanes, or a change of plan, is refused.
* **Cores**: a replica with ``c`` cores serves either as ``c`` single-threaded *lanes*
  (``core_mode="lanes"``, each running its own batches from the replica's queue:
  TF-Serving's batch threads, as InfAdapter configured it) or as one lane whose batches
  run on ``c`` threads (``"threads"``: the service time of the ``c``-core profile).
* **Instances**: with ``instances=k`` each such device runs ``k`` lanes (model instances,
  Triton's ``instance_group count``) that contend for it. A batch's time is its sampled
  time times the measured slowdown (``costs.contention``, :mod:`workloads.contention`) for
  the number of batches running on the device when it starts, itself included, at its
  size; it is held from then on. That is an approximation of processor sharing, which
  would stretch a running batch again when another starts and shrink it when one ends:
  a batch that starts alone is never slowed by one that starts after it, and one that
  starts beside another keeps its slowdown after the other ends. Ties: a batch ending at
  the instant another starts is not running then; two starting at one instant count
  each other in the order their lanes run. One instance (the default) is exactly the
  engine without instances.

Arrivals are known in advance (a trace), so they are routed lazily
(:attr:`_Cluster.catch_up`): when a lane looks at its queue or ends a batch, or a plan
changes what routing sees, the arrivals up to then are routed first, in order. Between
two such moments nothing but arrivals changes what routing sees, so the decisions are
those of one event per arrival. The one thing lazy routing cannot do, start a batch at
an arrival, is covered by a timer for the next arrival, kept only while a lane of a
source task waits. So a busy system costs no event per arrival. Ties: an arrival at the
instant a batch ends is routed first, so a join-shortest-queue router still counts the
finishing batch as outstanding. Where every arrival goes to one deployment
(:meth:`_Cluster.direct`), it is routed inline: the arrivals up to then join its one
queue as a slice, or its router picks a replica for each, its replicas' loads kept as
they change instead of counted per arrival. Only a window of arrival times is held as
Python floats (:meth:`_Cluster.slide`).

A lane fast-forwards: a batch that ends before SimPy's next event (``env.peek()``) ends
without an event of its own, since nothing else can happen in between (no other lane
finishes, no timer fires, and no waiting lane can be handed an arrival, which keeps a
timer in SimPy's queue); the lane's clock runs ahead, and the lane brings SimPy's clock
up to its own before it waits. An idle lane of a source task jumps to the next arrival
(or its policy's timer) the same way while no other such lane waits. So a lone busy
replica runs at about half the speed of a bare heapq loop (``bench/engine.py``). A lane
whose answers go on to another task, or leave at exits, takes an event per batch.
``fast_forward=False`` gives every batch its event; the tests check that both give the
same results. The one task of a run whose plan never changes, with plain requests and no
exits or padding, runs its lanes as a leaner loop (:meth:`_Cluster.steady_lane`); where
one deployment serves it, not as SimPy processes but all in one heapq loop of the same
rules (:mod:`sim.one_loop`), which takes about one heap entry per request.

Requests are dispatched to a task's deployments by smooth weighted round robin over the
quotas (deterministic: same plan, same split). Within a deployment its replicas share one
queue, or a router (:mod:`policies.routing`) sends each request to one replica's own
queue: one that is ready, or one still loading while none is; a replica that goes away
hands its queue back to be routed again. A request's end-to-end latency is from
its arrival to the end of its last sink task. Each task logs its batches compactly (a
batch code per request; per lane, each batch's start, finish and items, flat), so every
task has the single-model request table
(:meth:`ClusterResults.table`) and the variant that served each request, from which
accuracy follows (:func:`sim.metrics.summarize_cluster`).
"""

from __future__ import annotations

import array
import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Optional, Sequence

import numpy as np
import simpy

from servesim.policies.autoscaling import Adapter, ClusterObservation, Plan, StaticAdapter
from servesim.policies.batching import NEVER_BUSY, BatchingPolicy, DynamicBatcher
from servesim.policies.routing import Router
from servesim.traces.streamed import ArrivalWindow, StreamedTrace
from servesim.traces.trace import Trace

from .closed_loop import ClosedLoop
from .errors import SimulationError
from .exits import ExitRun
from .host import ServingHost
from .one_loop import OneLoop
from .records import COMPLETED, DROPPED, REJECTED, RequestTable
from .row_stream import RecordSink, RowStream

CORE_MODES = ("lanes", "threads")
# The window of arrival times the engine holds as Python floats beyond the last routed
# (see _Cluster.slide), and the arrivals between two calls of a run's progress callback.
WINDOW = 1 << 16
PROGRESS_EVERY = 1 << 16
BUILD_ROWS = 1 << 16  # requests per step when a task's table is built: bounds its temporaries (~3 MB)
# A lane's copy of the next arrival's time that makes it route arrivals after its batch: in a
# closed loop, where another lane's answers may bring a send before the copy it holds
LOOK_AGAIN = float("-inf")
Key = tuple[str, str, int]  # (task, variant, cores)


@dataclass(frozen=True)
class ClusterCosts:
    """What the engine needs to know about the variants: ``service(task, variant, cores)``
    gives a sampler ``batch_size -> seconds`` for one lane (a lane has 1 core in
    ``lanes`` mode and ``cores`` threads in ``threads`` mode); ``load_time(task, variant)``
    is a replica's provisioning delay in seconds; ``exits(task, variant, units)``, where
    given, the :class:`~sim.exits.ExitRun` of a variant with exits on lanes of ``units``
    cores or devices (asked once per (task, variant, units): every lane of that size
    plays its batches through it, so an online policy learns from all of them), or
    ``None`` for a plain variant; ``latency(task, variant, units)``, where given, the
    median seconds of a lane's batch by its size, for batching policies that plan by it
    (the deadline policy); ``contention(task, variant, units)``, where given, the measured
    slowdown of instances sharing one device of a lane's size (a
    :class:`~workloads.contention.ContentionTable`, or None where none was measured),
    asked only for a run of more than one instance per device."""

    service: Callable[[str, str, int], Callable[[int], float]]
    load_time: Callable[[str, str], float]
    exits: Optional[Callable[[str, str, int], Optional[ExitRun]]] = None
    latency: Optional[Callable[[str, str, int], Callable[[int], float]]] = None
    contention: Optional[Callable[[str, str, int], Optional[object]]] = None


@dataclass(frozen=True)
class ReplicaRecord:
    task: str
    variant: str
    cores: int
    requested: float
    ready: float  # inf if released before it loaded
    released: float  # the run's end if never released
    # seconds its lanes ran batches (summed over its lanes; instances sharing a device: while any ran one)
    busy_s: float = 0.0


@dataclass
class ClusterResults:
    """Per request (``arrival``, ``finish``: end of the last sink task, or when it was
    dropped or rejected; ``status``; ``dropped_at``: index of the task it was dropped or
    rejected at, or -1; ``variant[task]``: index into ``variants[task]`` of the variant
    that served it, -1 if it never got there; ``size``: its items, None for one each;
    ``stages[task]``: its batch there, :class:`TaskColumns`), every replica's life, every
    plan with the time it was decided, and the run's end time. ``exits[task]``: for a
    task where some variant has exits, the exit columns of :data:`sim.exits.EXIT_COLUMNS`
    (``exit_stage`` -1 where a request was not served by a variant with exits) and
    ``exit_names[task][k]`` the exit names of its k-th variant (empty for a plain one).
    ``rejections``: requests rejected, by reason, as :class:`sim.records.Results`'."""

    tasks: tuple[str, ...]
    arrival: np.ndarray
    finish: np.ndarray
    status: np.ndarray
    dropped_at: np.ndarray
    variant: dict[str, np.ndarray]
    variants: dict[str, tuple[str, ...]]
    replicas: list[ReplicaRecord]
    plans: list[tuple[float, Plan]]
    end_time: float
    exits: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    exit_names: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    size: Optional[np.ndarray] = None  # items per request (None: one each)
    edges: tuple[tuple[str, str], ...] = ()  # the pipeline's: (from, to)
    stages: dict[str, "TaskColumns"] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    host_busy_s: Optional[float] = None  # with a serving host: its seconds of intake and launching
    streamed: bool = False  # its one task's rows went to a sink as it ran (sim.row_stream): no per-request columns

    def reached(self, task: str) -> np.ndarray:
        """When each request reached ``task``: its arrival at a source, else the last of its
        answers at the tasks before (NaN where one of them did not serve it)."""
        before = [a for a, b in self.edges if b == task]
        if not before:
            return np.asarray(self.arrival, dtype=np.float64)
        return np.max([self.stages[a].finish for a in before], axis=0)

    def table(self, task: str) -> RequestTable:
        """The request table of ``task``, in a single-model run's format
        (:class:`~sim.records.RequestTable`): a request served there is ``completed`` with
        its batch's start, its finish *at this task* (its exit's time with exits), the
        replica (index into :attr:`replicas`) and the batch's items; any other keeps the
        request's own status and finish (dropped or rejected here or on another task).
        A one-task cluster's table is the table :func:`sim.simulate` would give."""
        stage = self.stages[task]
        if len(self.tasks) == 1:  # the request's own status and finish are the task's: shared, not copied
            status, finish = self.status, self.finish
        else:
            served = stage.served()
            status = np.where(served, COMPLETED, self.status).astype(np.int8)
            finish = np.where(served, stage.finish, self.finish)
        n = self.arrival.size
        return RequestTable(arrival=np.asarray(self.arrival, dtype=np.float64),
                            size=np.ones(n, dtype=np.int32) if self.size is None else self.size.astype(np.int32),
                            start=stage.start, finish=finish,
                            replica=stage.replica, batch_size=stage.batch_size, status=status,
                            exits=dict(self.exits.get(task, {})))

    def cost_core_seconds(self) -> float:
        """Cores provisioned, integrated over the run (a replica costs from request to release)."""
        return float(sum(r.cores * (r.released - r.requested) for r in self.replicas))

    def peak_cores(self) -> int:
        """The most cores provisioned at once. During a rolling change the old replicas
        stay until the new ones have loaded, so this may exceed every plan's own cores."""
        changes = sorted([(r.requested, r.cores) for r in self.replicas]
                         + [(r.released, -r.cores) for r in self.replicas])  # a release before a request at a tie
        return int(np.max(np.cumsum([c for _, c in changes]), initial=0))

    def cores_over_time(self, times: np.ndarray, by: str = "task") -> dict[str, np.ndarray]:
        """Cores provisioned at each of ``times``, per task (``by="task"``) or per
        ``task/variant`` (``by="variant"``)."""
        out: dict[str, np.ndarray] = {}
        for r in self.replicas:
            name = r.task if by == "task" else f"{r.task}/{r.variant}"
            live = (times >= r.requested) & (times < r.released)
            out[name] = out.get(name, np.zeros(times.size)) + r.cores * live
        return out


@dataclass
class TaskColumns:
    """Per request, what happened at one task: its batch's ``start``, its ``finish``
    there (NaN where it was not served there), the ``replica`` that served or dropped it
    (index into :attr:`ClusterResults.replicas`, -1 if none) and the items of its batch
    (``batch_size``, 0 if not served)."""

    start: np.ndarray
    finish: np.ndarray
    replica: np.ndarray
    batch_size: np.ndarray
    batches: int = 0  # batches the task ran
    # batches the task ran by their items (``batch_items[k]``: batches of k items), for the
    # cost model's report of the batch sizes it interpolated (sim.engine)
    batch_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    NAMES: ClassVar[tuple[str, ...]] = ("start", "finish", "replica", "batch_size")  # the per-request columns

    @classmethod
    def empty(cls, n: int) -> "TaskColumns":
        return cls(np.full(n, np.nan), np.full(n, np.nan), np.full(n, -1, dtype=np.int32), np.zeros(n, dtype=np.int32))

    def served(self) -> np.ndarray:
        """Which requests were served at the task (dropped ones have a replica, no finish)."""
        return (self.replica >= 0) & ~np.isnan(self.finish)


# A batch's code: its number in its lane's log, shifted past the lane's slot in its task by
# LANE_BITS bits, or by as few as the task's lanes need where a plan never changes them
LANE_BITS = 24


class _BatchLog:
    """One lane's batches, three numbers each (start, finish, items): appended to a plain
    list, the fastest to extend (a list of tuples would hand the garbage collector a
    container per batch to track), and
    moved into numpy each time the window of arrival times moves on
    (:meth:`_Cluster.slide`), so a long run holds 24 bytes a batch rather than three
    Python floats. The lane is ``slot`` among its task's lanes and serves for
    ``replica``; a request served in its ``j``-th batch is coded ``j << bits | slot``, so
    the lane numbers its batches by adding :attr:`step`."""

    def __init__(self, slot: int, replica: int, bits: int):
        if slot >= 1 << bits:
            raise SimulationError(f"a task ran more than {1 << bits} lanes in one run")
        self.slot, self.replica, self.step = slot, replica, 1 << bits
        self.device: Optional[_Device] = None  # the device it shares with other instances, if it does
        self.flat: list[float] = []
        self.chunks: list[np.ndarray] = []

    def flush(self) -> None:
        if self.flat:
            self.chunks.append(np.array(self.flat, dtype=np.float64).reshape(-1, 3))
            self.flat.clear()

    def close(self) -> int:
        """Move what is left into numpy; returns the batches logged (rows of :attr:`chunks`)."""
        self.flush()
        return sum(len(chunk) for chunk in self.chunks)


class _Device:
    """A device that several lanes (model instances) share: the end of each one's latest
    batch on it, from which a lane counts the batches running when it starts one."""

    __slots__ = ("ends",)

    def __init__(self, instances: int):
        self.ends = [float("-inf")] * instances


class _Queue(deque):
    """A FIFO of request numbers that counts the items it holds (``items``), which
    batching policies are asked about when requests carry several items. When each was
    queued is its task's to know (:attr:`_Cluster.since`): a request is queued at a task
    once, whichever of its deployments or replicas holds it."""

    def __init__(self):
        super().__init__()
        self.items = 0


class _Replica:
    """One replica: its lanes are SimPy processes pulling from its queue, which is the
    deployment's own where no router splits it (one queue shared by every replica)."""

    def __init__(self, deployment: "_Deployment", now: float, ready_at: float, number: int):
        self.deployment = deployment
        self.number = number  # its index among the run's replicas (the request tables' ``replica``)
        self.requested, self.ready_at = now, ready_at
        self.ready: Optional[float] = None
        self.released: Optional[float] = None
        self.retired = False
        self.busy_lanes = 0
        shared = deployment.router is None
        self.queue: _Queue = deployment.queue if shared else _Queue()
        self.idle: list[tuple[_Replica, simpy.Event]] = deployment.idle if shared else []  # lanes waiting for work
        self.in_flight = 0  # requests in its batches now: with the queue, what a router counts
        self.slot = -1  # its index among its deployment's router targets (-1: not one now)

    def release(self, now: float) -> None:
        if self.released is None:
            self.released = now


class _Waiter:
    """How a lane waits for work: as an entry among its queue's waiting lanes (``idle``:
    the one that has waited longest takes the next request), until a request comes or its
    batching policy's timer fires. A lane woken before its timer fires keeps the timer if
    it waits again for the same deadline, so lanes waiting
    for one deadline wake in the order they set it."""

    __slots__ = ("cluster", "replica", "source", "entry", "deadline", "timer_at", "timer")

    def __init__(self, cluster: "_Cluster", replica: "_Replica"):
        self.cluster, self.replica = cluster, replica
        self.source = replica.deployment.source  # a lane of a source task: arrivals need a timer while it waits
        self.entry: Optional[tuple] = None  # its entry in ``idle`` while it waits
        self.deadline: Optional[float] = None
        self.timer_at: Optional[float] = None
        self.timer = None

    def wait(self, now: float, wake_at: Optional[float]) -> simpy.Event:
        """The event to yield on until a request comes, or the policy's ``wake_at``."""
        cluster = self.cluster
        env = cluster.env
        self.entry = entry = (self.replica, env.event())
        self.replica.idle.append(entry)
        if self.source:
            cluster.waiting += 1
            if not cluster.timer_set:
                cluster.arm_timer()
        if wake_at is not None and (wake_at != self.timer_at or self.timer.processed):
            self.timer_at, self.timer = wake_at, env.timeout(wake_at - now)
            self.timer.callbacks.append(lambda _event, at=wake_at: self.on_timer(at))
        self.deadline = wake_at
        return entry[1]

    def on_timer(self, at: float) -> None:
        """The policy's timer for ``at``: it wakes the lane if it still waits until then."""
        entry, idle = self.entry, self.replica.idle
        if at == self.deadline and entry in idle:
            idle.remove(entry)
            self.cluster.waiting -= self.source
            entry[1].succeed()


class _Deployment:
    """A (task, variant, cores) deployment: its queue (or, with a router, its replicas'
    queues), replicas, batching policy (for the plan's batch) and sampler."""

    def __init__(self, key: Key, batcher: BatchingPolicy, sampler: Callable[[int], float],
                 latency: Optional[Callable[[int], float]], variant_index: int,
                 execute: Optional[ExitRun] = None, router: Optional[Router] = None):
        self.key, self.sampler, self.latency, self.variant_index = key, sampler, latency, variant_index
        # with several instances per device, factors[k][b]: the slowdown of a batch of b items
        # while k batches run on its device (ContentionTable.factors); None with one instance
        self.factors: Optional[list[list[float]]] = None
        self.use(batcher)
        self.execute = execute  # a variant with exits plays its batches through this
        self.router = router  # None: one queue shared by every replica
        self.source = False  # whether its task is a source of the pipeline (arrivals come to it)
        self.queue = _Queue()
        self.replicas: list[_Replica] = []
        self._targets: Optional[list[_Replica]] = None
        # what the router counts for each of :meth:`targets`: requests queued there or in its
        # batches, kept as they change (by enqueue, and by the lanes as batches end or
        # requests are dropped) rather than counted at every arrival
        self.loads: list[int] = []
        self.idle: list[tuple[_Replica, simpy.Event]] = []  # lanes waiting for work
        self.busy_core_seconds = 0.0
        # with exits: requests answered at each exit so far (the adapter sees the mix)
        self.exit_counts = None if execute is None else np.zeros(execute.n_exits, dtype=np.int64)

    def alive(self) -> list[_Replica]:
        return [r for r in self.replicas if not r.retired]

    def targets(self) -> list[_Replica]:
        """The replicas its router chooses among: those serving, or those loading while none
        is. Kept until a replica comes, loads or goes (:meth:`changed`)."""
        if self._targets is None:
            alive = self.alive()
            self._targets = [r for r in alive if r.ready is not None] or alive
            for slot, replica in enumerate(self._targets):
                replica.slot = slot
            self.loads = [len(r.queue) + r.in_flight for r in self._targets]
        return self._targets

    def changed(self) -> None:
        self._targets = None
        for replica in self.replicas:
            replica.slot = -1

    def use(self, batcher: BatchingPolicy) -> None:
        """Batch with ``batcher``. With ``allowed_sizes`` a batch is padded up to an allowed
        size and costs what that size costs (TF-Serving): :attr:`padded` maps its items to it."""
        self.batcher = batcher
        self.padded = batcher.padded if getattr(batcher, "allowed_sizes", ()) else None


class _Cluster:
    # Whether a run's one steady deployment is served by one heapq loop (sim.one_loop) rather
    # than SimPy processes of steady_lane; the tests turn it off to hold both to one sample path.
    one_loop: ClassVar[bool] = True

    def __init__(self, env: simpy.Environment, trace: Trace | ClosedLoop, tasks: Sequence[str], edges, variants, costs,
                 adapter: Adapter, drop_after: Mapping[str, Optional[float]], core_mode: str,
                 batching: Callable[[int, Optional[Callable[[int], float]]], BatchingPolicy],
                 routing: Optional[Callable[[Key], Optional[Router]]],
                 progress: Optional[Callable[[int], None]] = None, fast_forward: bool = True,
                 host: Optional[ServingHost] = None, instances: int = 1):
        self.env, self.costs, self.adapter, self.core_mode = env, costs, adapter, core_mode
        self.instances = instances  # lanes (model instances) sharing each device
        closed = trace if isinstance(trace, ClosedLoop) else None  # clients that wait for their answers
        # the serving host of the one lane every request reaches (sim.host), which takes each
        # arrival in between launching batches: it runs on the trace's arrival times
        self.host_clock = None if host is None else host.clock(trace.times)
        self.fast_forward = fast_forward
        # a plan that never changes: no adapter to ask, and lanes that never retire (steady_lane)
        self.static = type(adapter) is StaticAdapter
        self.batching, self.routing = batching, routing
        self.tasks = tuple(tasks)
        self.variants = {t: tuple(v) for t, v in variants.items()}
        self.succ = {t: [b for a, b in edges if a == t] for t in self.tasks}
        self.preds = {t: [a for a, b in edges if b == t] for t in self.tasks}
        self.sources = [t for t in self.tasks if not self.preds[t]]
        self.sinks = [t for t in self.tasks if not self.succ[t]]
        # whether a request is ever at two tasks at once (several sources, or a task with
        # several successors): then one queued at a task may have been dropped at another
        self.forks = len(self.sources) > 1 or any(len(after) > 1 for after in self.succ.values())
        self.drop_after = drop_after
        n = len(trace.times) if closed is None else closed.count
        # a closed loop's arrival times become known as its clients send (kept as they are routed: keep_sent)
        self.arrival = trace.times if closed is None else np.full(n, np.nan)
        # Requests that ended unserved, the rare case: request -> (status, when, task index).
        # The request-level columns are built from it and the sink's answers at the end.
        self.ended: dict[int, tuple[int, float, int]] = {}
        # With several sinks, a request's finish is its last sink's answer, noted as it comes.
        self.finish = np.full(n, np.nan) if len(self.sinks) > 1 else None
        # Per task, what each request's batch was: one store per request, its batch's code
        # (an int64 array: as fast to store into as a list, 8 bytes a request and no Python
        # int per batch; int32 where the lanes are fixed, :meth:`fix_lanes`), and per lane
        # its batches' start, finish and items (:class:`_BatchLog`); the columns are
        # expanded from them at the end (:meth:`task_columns`).
        # (grown as the window of arrivals moves on, :meth:`slide`)
        self.batch_of = {t: array.array("q") for t in self.tasks}
        self.lane_bits = dict.fromkeys(self.tasks, LANE_BITS)  # per task, the bits of a code that name its lane
        self.batches: dict[str, list[_BatchLog]] = {t: [] for t in self.tasks}
        self.dropped_by: dict[str, dict[int, int]] = {t: {} for t in self.tasks}  # request -> replica
        sizes = (trace.columns.get("size") if closed is None
                 else None if closed.size == 1 else np.full(n, closed.size, dtype=np.int64))
        self.size = None if sizes is None else np.asarray(sizes)
        self.sizes = None if sizes is None else self.size.tolist()  # a list: fast to index per request
        self.rejected = 0
        self.progress = progress
        self.exhausted = n == 0  # every arrival routed: no more will come to a source task
        # the next arrival count at which to report progress or, at n, to mark the trace exhausted
        self.report_at = self.next_report(0)
        self.joins: dict[tuple[int, str], int] = {}  # (request, task) -> predecessors still to finish
        self.sinks_left: dict[int, int] = {}
        self.deployments: dict[Key, _Deployment] = {}
        self.routes: dict[str, list] = {}  # task -> [[deployment, weight, current], ...]
        self.plan: Optional[Plan] = None
        self.plans: list[tuple[float, Plan]] = []
        self.generation = 0  # a newer plan cancels an older plan's pending switch
        self.records: list[_Replica] = []
        # Arrival times as a list of Python floats (the fastest to index), ending in +inf. Only a
        # window of them is held as floats: from the oldest still queued at a source task (or
        # the next to route) to :data:`WINDOW` past the last routed; the others point at one
        # shared +inf. So a run holds 8 bytes a request for them, not 32 (:meth:`slide`, which
        # grows the list as the window moves on), and a run that streams its rows under the
        # one loop drops the slots before its window: then it holds none per request (rebase).
        self.times = [np.inf] * (n + 1) if closed is not None else [np.inf]
        self.held = self.filled = 0  # the floats held: times[held:filled]
        # The request id of slot 0 of the per-request lists (times, batch_of) and of the ids in
        # the queues: 0 but where a streaming run moves it on (rebase)
        self.base = 0
        self.requeued = False  # whether a request was ever queued again (a queue then need not be in order)
        self.arrived = 0  # arrivals routed so far (all of those at or before the last catch_up)
        self.timer_set = False
        # read off the lanes' logs as the tables are built (task_columns): each replica's
        # seconds running batches, and the last batch's end (the run's end, with exits)
        self.busy_s: Optional[np.ndarray] = None
        self.last_batch_end = 0.0
        self.timer_at = np.inf  # the arrival time the timer is set for, while one is
        self.waiting = 0  # lanes of source tasks waiting for work: while any does, arrivals need a timer
        self.lanes = 0
        # the loop that serves the lanes of a steady run (see start), None where SimPy does
        self.loop: Optional[OneLoop] = None
        self.steady = True  # whether every lane so far is steady (add_replica): then rows can stream
        self.rows: Optional[RowStream] = None  # hands the table to a sink as the run goes, where one is given
        self.exit_runs: dict[tuple[str, str, int], Optional[ExitRun]] = {}
        self.orphans: list[tuple[_Deployment, int]] = []  # queued at a replica that went away
        # ``catch_up(now)``: route the arrivals up to ``now`` and return the next one's time;
        # one by one (:meth:`route_each`), or inline to one deployment (:meth:`direct`), as the
        # plan in force allows. A lane holds it between two yields (a plan changes only then).
        self.catch_up: Callable[[float], float] = self.route_each
        # per task, when each request was queued there: its arrival at a source, else the
        # moment the tasks before it answered (kept for requests queued there only)
        self.since = {t: self.times if not self.preds[t] else array.array("d", [np.nan]) * n for t in self.tasks}
        # A closed loop's sends (sim.closed_loop), kept in ``times`` as they become known
        # (nothing to fill them from: ``filled`` is n), and told of every batch's answers
        # (``answered_by``: None for a trace, so that its lanes skip the call).
        self.sends = None if closed is None else closed.sends(self.times)
        self.answered_by: Optional[Callable[[float, int], None]] = None
        if closed is not None:
            self.filled = n
            self.answered_by, self.arm_timer = self.clients_answered, self.arm_send_timer
        self.slide()

    # --- requests --------------------------------------------------------------------
    def route_each(self, now: float) -> float:
        """Route every arrival at or before ``now`` not yet routed, at its own time, and
        return the time of the next arrival (+inf after the last): :attr:`catch_up` where
        arrivals are routed one by one.

        Arrivals are known in advance, so they are routed lazily: whenever a lane looks at its
        queue, or a plan changes the routes, the arrivals up to then are routed first, in
        order. Between two such moments nothing but arrivals changes what routing sees,
        so the decisions are those of one event per arrival. The one thing lazy routing
        cannot do, start a batch at an arrival, is covered by :meth:`arm_timer`.
        """
        times, k = self.times, self.arrived
        while times[k] <= now:
            if len(self.sinks) > 1:
                self.sinks_left[k] = len(self.sinks)
            self.arrived = k + 1
            for task in self.sources:
                self.dispatch(task, k)
            k += 1
            if k == self.report_at:
                self.reached(k)
                k = self.arrived  # (moved, where the window was rebased)
        return times[k]

    def direct(self, dep: _Deployment) -> Callable[[float], float]:
        """:attr:`catch_up` where every arrival goes to ``dep`` (one source task, one
        deployment, one item per request, one sink), with nothing to decide per arrival
        but which replica, and that inline. Where its replicas share one queue, not even
        that: the arrivals up to ``now`` join it as one slice. Each arrival wakes the lane
        that has waited longest at its queue, if any."""
        times = self.times
        if dep.router is not None:
            choose = dep.router.choose

            def route(now: float) -> float:
                k = self.arrived
                if times[k] > now:
                    return times[k]
                # nothing changes the replicas a router chooses among while arrivals are routed
                targets, stop = dep._targets or dep.targets(), self.report_at
                loads = dep.loads
                while times[k] <= now:
                    slot = choose(loads)
                    loads[slot] += 1
                    target = targets[slot]
                    target.queue.append(k)
                    if target.idle:
                        target.idle.pop(0)[1].succeed()
                        self.waiting -= 1
                    k += 1
                    if k == stop:
                        self.arrived = k
                        self.reached(k)
                        k, stop = self.arrived, self.report_at
                self.arrived = k
                return times[k]
            return route
        queue, idle = dep.queue, dep.idle
        append, extend = queue.append, queue.extend

        def join(now: float) -> float:
            k = self.arrived
            while times[k] <= now:
                stop = self.report_at
                j = k + 1
                if j < stop and times[j] <= now:  # more than one since the last look
                    j += 1
                    if j < stop and times[j] <= now:  # more than two: bisect
                        j = bisect.bisect_right(times, now, j + 1, stop)
                    extend(range(k, j))
                else:
                    append(k)
                self.arrived = j
                if idle:
                    for _ in range(min(j - k, len(idle))):
                        idle.pop(0)[1].succeed()
                        self.waiting -= 1
                k = j
                if k == stop:
                    self.reached(k)
                    k = self.arrived
            return times[k]
        return join

    def reached(self, k: int) -> None:
        """``k`` arrivals are routed (``k`` counted from :attr:`base`): report progress
        (every :data:`PROGRESS_EVERY`), and move the window of arrival times on; at the
        last, wake the source tasks' waiting lanes, where a policy waiting for a full batch
        may now flush."""
        k += self.base
        if self.progress is not None and (k % PROGRESS_EVERY == 0 or k == self.arrival.size):
            self.progress(k)
        self.slide()
        self.report_at = self.next_report(k) - self.base
        if k == self.arrival.size:
            self.exhausted = True
            for replica in self.records:
                if replica.deployment.source:
                    self.wake(replica)

    def next_report(self, k: int) -> int:
        """After ``k`` arrivals routed, the count at which to report progress or move the
        window of arrival times on next, or at the latest the last arrival's (when the
        trace is marked routed)."""
        return min((k // WINDOW + 1) * WINDOW, (k // PROGRESS_EVERY + 1) * PROGRESS_EVERY, self.arrival.size)

    def slide(self) -> None:
        """Hold the next :data:`WINDOW` arrival times as floats, and let go of those before
        the oldest request still queued at a source task (or waiting to be queued again),
        which nothing reads any more; move the lanes' batch logs into numpy. A run that
        streams its rows hands over those of the requests before that oldest one
        (:class:`~sim.row_stream.RowStream`) and, under the one loop, drops their slots
        (:meth:`rebase`)."""
        for logs in self.batches.values():
            for log in logs:
                log.flush()
        times, base = self.times, self.base
        start, end = self.filled, min(self.filled + WINDOW, self.arrival.size - base)
        if len(times) <= end:
            times.extend([np.inf] * (end + 1 - len(times)))
        times[start:end] = self.arrival[start + base:end + base].tolist()
        self.filled = end
        for codes in self.batch_of.values():
            if len(codes) < self.filled:
                codes.extend(array.array(codes.typecode, [-1]) * (self.filled - len(codes)))
        oldest = self.arrived
        for dep in self.deployments.values():
            if dep.source:
                for queue in [dep.queue] + [r.queue for r in dep.replicas if r.queue is not dep.queue]:
                    if queue:  # in arrival order, unless a request was queued again
                        oldest = min(oldest, min(queue) if self.requeued else queue[0])
        for _, rid in self.orphans:
            oldest = min(oldest, rid)
        if self.rows is not None:
            self.rows.emit(oldest + base)
            if self.loop is not None:
                self.rebase(oldest)
                return
        if oldest > self.held:
            if self.sends is not None:
                self.keep_sent(oldest)
            times[self.held:oldest] = [np.inf] * (oldest - self.held)
            self.held = oldest

    def rebase(self, k: int) -> None:
        """Let go of the first ``k`` slots of the per-request lists, whose requests are
        handed over (:class:`~sim.row_stream.RowStream`): slot 0 is request :attr:`base`
        + ``k`` from now on, and so are the ids in the queues and the counts of arrivals.
        Only the one loop (:mod:`sim.one_loop`) is served this way: it holds no request id
        across a call that may move the window on, where SimPy's lanes would."""
        if k <= 0:
            return
        del self.times[:k]
        for codes in self.batch_of.values():
            del codes[:k]
        for dep in self.deployments.values():
            for queue in {id(q): q for q in [dep.queue] + [r.queue for r in dep.replicas]}.values():
                if queue:
                    ids = [rid - k for rid in queue]
                    queue.clear()
                    queue.extend(ids)
        self.arrived -= k
        self.filled -= k
        self.held = 0
        self.base += k

    def arm_timer(self) -> Optional[simpy.Event]:
        """While a lane of a source task waits, keep a timer set for the next arrival (one
        at a time: :attr:`timer_at` is its arrival's time, exact where SimPy's clock, which
        adds the delay to its own time, may round). Returns the timer set, if one was."""
        if self.timer_set or self.exhausted:
            return None
        self.timer_set = True
        self.timer_at = at = self.times[self.arrived]
        delay = at - self.env.now
        timer = self.env.timeout(delay if delay > 0.0 else 0.0)
        timer.callbacks.append(self.on_timer)
        return timer

    # --- a closed loop's arrivals (sim.closed_loop) ----------------------------------
    def arm_send_timer(self) -> None:
        """:meth:`arm_timer` of a closed loop (it stands in for it there), whose next send
        may not be known yet (every client waits for an answer: the answers' batches will
        tell), and may become known earlier than the timer set: the timer is kept
        (:attr:`send_timer`) to be moved (:meth:`clients_answered`)."""
        if self.times[self.arrived] < np.inf:
            timer = _Cluster.arm_timer(self)
            if timer is not None:
                self.send_timer = timer

    def clients_answered(self, at: float, count: int) -> None:
        """A batch of ``count`` requests answers at ``at`` (told as it starts): their clients
        send again. A timer set for a later arrival than a send now known is taken back (a
        lane that starts to wait trusts a timer set to be the next arrival's), and set again
        while a lane of a source task waits (a lane that calls this reads SimPy's next event
        again)."""
        self.sends.answered(at, count, self.arrived)
        if self.timer_set and self.times[self.arrived] < self.timer_at:
            self.send_timer.callbacks.remove(self.on_timer)
            self.timer_set = False
        if self.waiting and not self.timer_set:
            self.arm_timer()

    def shorten(self, n: int) -> None:
        """Keep the first ``n`` requests' columns: a closed loop that ended by time sent
        fewer than the room it was given (nothing was stored past them)."""
        self.arrival = self.arrival[:n]
        self.batch_of = {task: codes[:n] for task, codes in self.batch_of.items()}
        if self.size is not None:
            self.size = self.size[:n]

    def keep_sent(self, upto: int) -> None:
        """Copy the routed sends' times before ``upto`` (and after those copied already) into
        :attr:`arrival`, the request table's column, before their floats are let go."""
        self.arrival[self.held:upto] = self.times[self.held:upto]

    def on_timer(self, _event) -> None:
        self.timer_set = False
        self.catch_up(self.timer_at)
        if self.waiting:
            self.arm_timer()

    def dispatch(self, task: str, rid: int) -> None:
        """Send ``rid`` to one of ``task``'s deployments by smooth weighted round robin."""
        route = self.routes[task]
        if len(route) == 1:  # the one deployment (its round-robin credit would not change)
            self.enqueue(route[0][0], rid)
            return
        total = 0.0
        best = None
        for entry in route:
            entry[2] += entry[1]
            total += entry[1]
            if best is None or entry[2] > best[2]:
                best = entry
        best[2] -= total
        self.enqueue(best[0], rid)

    def enqueue(self, dep: _Deployment, rid: int) -> None:
        """Queue ``rid`` at ``dep``: in its one queue, or at the replica its router picks
        among those serving (among those loading while none is ready)."""
        if self.sizes is not None:
            size = self.sizes[rid]
            if size > dep.batcher.max_batch:  # it could never be served: rejected, not left waiting
                if rid not in self.ended:
                    self.rejected += 1
                self.drop(dep.key[0], rid, self.since[dep.key[0]][rid], -1, REJECTED)
                return
        target = dep
        if dep.router is not None:
            candidates = dep.targets()
            slot = dep.router.choose(dep.loads)
            dep.loads[slot] += 1
            target = candidates[slot]
        target.queue.append(rid)
        if self.sizes is not None:  # counted, and asked about, only where requests carry sizes
            target.queue.items += size
        if target.idle:  # the lane that has waited longest takes it
            _, event = target.idle.pop(0)
            self.waiting -= dep.source
            event.succeed()

    def task_done(self, task: str, rid: int, now: float) -> None:
        if rid in self.ended:
            return  # dropped on another branch
        for nxt in self.succ[task]:
            if len(self.preds[nxt]) > 1:
                left = self.joins.get((rid, nxt), len(self.preds[nxt])) - 1
                if left:
                    self.joins[(rid, nxt)] = left
                    continue
                self.joins.pop((rid, nxt), None)
            self.since[nxt][rid] = now
            self.dispatch(nxt, rid)
        if not self.succ[task] and len(self.sinks) > 1:  # done at its last sink
            self.sinks_left[rid] -= 1
            if not self.sinks_left[rid]:
                self.finish[rid] = now
        # with one sink, a request's finish is its answer there, read off the batch log at the end

    def drop_expired(self, task: str, dep: "_Deployment", replica: "_Replica", now: float, limit: float) -> None:
        """Drop the requests at the head of ``replica``'s queue that have waited more than
        ``limit`` by ``now`` (a steady lane's look at its queue, under SimPy or the one loop)."""
        queue, since = replica.queue, self.since[task]
        while queue and now - since[queue[0]] > limit:
            rid = queue.popleft()
            if dep.router is not None:
                dep.loads[replica.slot] -= 1
            self.drop(task, rid, since[rid] + limit, replica.number)

    def drop(self, task: str, rid: int, when: float, replica: int, status: int = DROPPED) -> None:
        """``rid`` ends at ``task`` unserved at ``when``: dropped by ``replica``, or rejected
        (``status``; no replica, -1), unless it already ended on another branch."""
        rid += self.base  # (kept by request id: the lists' slots move on in a streaming run)
        if rid not in self.ended:
            self.ended[rid] = (status, when, self.tasks.index(task))
            if replica >= 0:
                self.dropped_by[task][rid] = replica

    def drained(self, task: str) -> bool:
        """No request can reach ``task`` any more: the trace is routed, and every task
        before it is drained and has nothing queued or running (a request waiting to be
        queued again means not)."""
        if not self.exhausted or self.orphans:
            return False
        for before in self.preds[task]:
            if not self.drained(before):
                return False
            for dep in self.deployments.values():
                if dep.key[0] == before and (dep.queue or any(r.queue or r.busy_lanes for r in dep.replicas)):
                    return False
        return True

    def wake_drained(self, task: str) -> None:
        """``task`` has nothing left: wake the waiting lanes of the tasks after it that no
        request can reach now, so that a policy waiting for a full batch flushes."""
        for after in self.succ[task]:
            if self.drained(after):
                for replica in self.records:
                    if replica.deployment.key[0] == after:
                        self.wake(replica)

    def wake(self, replica: _Replica) -> None:
        """Wake every lane of ``replica`` waiting for work, to look at its queue again."""
        for entry in [e for e in replica.idle if e[0] is replica]:
            replica.idle.remove(entry)
            self.waiting -= replica.deployment.source
            entry[1].succeed()

    # --- replicas --------------------------------------------------------------------
    def lane(self, replica: _Replica, dep: _Deployment, cores_per_lane: int, lane: int,
             device: Optional[_Device] = None, instance: int = 0):
        """A lane: one SimPy process serving batches from its replica's queue, for whatever a
        deployment can be (see :meth:`steady_lane` for the commonest case, served faster).
        ``device``: with several instances per device, the device it shares (its lanes'
        batch ends; this lane's at ``instance``): a batch is stretched by the slowdown for
        the batches running there when it starts."""
        env = self.env
        task = dep.key[0]
        batch_of, log = self.batch_of[task], self.lane_log(replica)
        log.device = device
        ends = None if device is None else device.ends
        log_batch = log.flat.extend  # (the list is cleared in place when it moves into numpy)
        b = log.slot  # its next batch's code
        step = log.step  # from one batch's code to the next's
        limit = self.drop_after.get(task)
        sizes = self.sizes
        # looked up once: the loop below runs once per batch
        ended, number, times, since = self.ended, replica.number, self.times, self.since[task]
        # Fast-forward: a batch that ends before SimPy's next event ends
        # without an event of its own, the lane's clock ``now`` running ahead of SimPy's, which
        # it brings up to its own before it waits. Nothing can happen in between: arrivals
        # while a source lane waits keep a timer in SimPy's queue (arm_timer). Not where
        # answers go on to another task (they could wake a lane there) or leave at exits
        # (at times of their own).
        fast = self.fast_forward and dep.execute is None and not self.succ[task]
        peek = env.peek if fast else (lambda: float("-inf"))
        # whether a queued request may have to leave unserved: its wait ran out, or it ended
        # on another branch of the pipeline while queued here
        checking = limit is not None or self.forks
        # whether the batch's answers go anywhere: on to other tasks, to a sink's count, or to
        # the exit mix (otherwise the batch log says it all)
        handing_on = dep.execute is not None or bool(self.succ[task]) or len(self.sinks) > 1
        plain = sizes is None and not checking and not handing_on
        yield env.timeout(max(0.0, replica.ready_at - env.now))
        if replica.retired:
            return
        catch_up = self.catch_up
        next_arrival = catch_up(env.now)  # arrivals before it was ready went elsewhere
        replica.ready = now = env.now
        dep.changed()
        free_since = NEVER_BUSY
        queue = replica.queue
        popleft = queue.popleft
        source = dep.source
        waiter = _Waiter(self, replica)
        # SimPy's next event: it changes only when this lane yields or routes arrivals
        horizon = peek()
        routed = dep.router is not None  # its replicas' queues are their own: a router counts their loads
        # fixed for the deployment; its batching policy changes with a plan's batch, which only
        # happens while this lane yields (read again after each yield)
        sampler, execute, decide, padded = dep.sampler, dep.execute, dep.batcher.decide, dep.padded
        factors = dep.factors
        host = self.host_clock if execute is None else None  # an exit run plays the host itself
        unload = self.unloader(replica)
        answered = self.answered_by
        while not replica.retired:
            if next_arrival <= now:  # a stale copy is early: a needless call, never a missed arrival
                next_arrival = catch_up(now)
                horizon = peek()
            if checking:
                while queue and (queue[0] in ended  # dropped on another branch
                                 or limit is not None and now - since[queue[0]] > limit):
                    rid = popleft()
                    if sizes is not None:
                        queue.items -= sizes[rid]
                    if routed:
                        unload(1)
                    if rid not in ended:
                        self.drop(task, rid, since[rid] + limit, number)
            if queue:
                # whether more requests may still come (batching policies that wait for a
                # full batch flush when none will)
                draining = self.exhausted and (source or self.drained(task))
                size, wake_at = decide(now, len(queue) if sizes is None else queue.items, since[queue[0]],
                                       draining, free_since)
            else:
                size, wake_at, draining = 0, None, False
            if size == 0:  # wait for a request, or for more until the policy's timer
                if wake_at is not None and wake_at <= now or wake_at is None and draining:
                    raise self.stall(dep, now, wake_at, len(queue))
                if source and not self.waiting:
                    # Idle until the next arrival or the policy's timer: if that comes before
                    # SimPy's next event and no other lane waits for arrivals, jump to it
                    # without an event.
                    until = times[self.arrived]
                    if wake_at is not None and wake_at < until:
                        until = wake_at
                    if until < horizon:
                        now = until
                        next_arrival = catch_up(now)
                        horizon = peek()
                        continue
                if now > env.now:  # SimPy's clock up to this lane's first; then look again
                    yield env.timeout(now - env.now)
                else:
                    if self.exhausted and not queue:  # nothing left here: the next tasks may be drained now
                        self.wake_drained(task)
                    yield waiter.wait(now, wake_at)
                    next_arrival = times[self.arrived]
                now = env.now
                horizon = peek()
                # a plan may have changed its batch, or how arrivals are routed
                decide, padded, catch_up = dep.batcher.decide, dep.padded, self.catch_up
                continue
            if plain:  # one item per request, none to check, the answers logged only
                if size == 1:
                    taken = items = 1
                    batch_of[popleft()] = b
                else:
                    taken = items = size if size < len(queue) else len(queue)
                    for _ in range(taken):
                        batch_of[popleft()] = b
                members = ()
            else:  # take requests from the head while their items fit; the head always goes
                members, items, popped = [], 0, 0
                while queue and items < size:
                    if sizes is not None and members and items + sizes[queue[0]] > size:
                        break
                    rid = popleft()
                    popped += 1
                    if sizes is not None:
                        queue.items -= sizes[rid]
                    if limit is not None and now - since[rid] > limit:
                        self.drop(task, rid, since[rid] + limit, number)
                    elif rid not in ended:  # not dropped on another branch
                        members.append(rid)
                        batch_of[rid] = b
                        items += 1 if sizes is None else sizes[rid]
                taken = len(members)
                if routed and popped > taken:  # those dropped leave the router's count now
                    unload(popped - taken)
                if not members:
                    continue
            if execute is None:
                cost = items if padded is None else padded(items)
                service = sampler(cost)
                if ends is not None:  # held from its start: see the module docstring (Instances)
                    running = 1
                    for end in ends:  # (this lane's own ended by now)
                        if end > now:
                            running += 1
                    slowdown = factors[running]
                    service *= slowdown[cost] if cost < len(slowdown) else slowdown[-1]
                    ends[instance] = now + service
                if host is not None:  # the host's intake of what arrives meanwhile stretches it
                    service = host.finish(now, service) - now
                done = now + service
            else:  # each request leaves at its own exit; those leaving before the end go on at once
                done = execute(now, members, lane)
                service = done - now
                answers = execute.finish[members]
                for t in np.unique(answers[answers < done]).tolist():
                    leaving = [rid for rid, a in zip(members, answers) if a == t]
                    env.timeout(t - now).callbacks.append(lambda _e, g=leaving, t=t: self.answered(dep, g, t))
                members = [rid for rid, a in zip(members, answers) if a >= done]
            log_batch((now, done, items))  # with exits, each request's own: ExitRun.finish
            b += step
            if answered is not None:  # a closed loop's clients send again after their answers
                answered(done, taken)
                # any lane's answers may bring the next arrival forward: look after the batch
                next_arrival = LOOK_AGAIN
                horizon = peek()
            if routed:
                replica.in_flight += taken
            end = done
            if done >= horizon:  # an event: SimPy's clock moves to the batch's end
                # (only then can anyone see the lane busy: a retiring replica waits for it)
                replica.busy_lanes += 1
                yield env.timeout(service if now == env.now else done - env.now)
                replica.busy_lanes -= 1
                end = env.now
                horizon = peek()
                decide, padded, catch_up = dep.batcher.decide, dep.padded, self.catch_up
            if next_arrival <= end:  # arrivals up to now are routed against the loads they met
                next_arrival = catch_up(end)
                horizon = peek()
            if routed:
                replica.in_flight -= taken
                unload(taken)
            dep.busy_core_seconds += service * cores_per_lane
            now, free_since = end, done
            if handing_on:
                self.answered(dep, members, done)
        if not replica.busy_lanes:
            replica.release(env.now)

    def steady_lane(self, replica: _Replica, dep: _Deployment):
        """The lane of the commonest deployment, served as lean as can be:
        one task whose plan never changes (so the lane never retires and its batching
        policy stays), one item per request, no exits and no padding, answers that go
        nowhere but the batch log. It fast-forwards, takes drops at the head of its queue,
        and routes and waits as :meth:`lane` does; only the checks those cases need are
        left out. Nobody asks whether it is busy (its replica never retires), and its
        router's choices are fixed (every replica ready from the start), so it keeps no
        count of the requests in its batches: the router's loads alone. (Both lanes are
        held to one sample path, ``tests/engine/test_lanes_agree.py``.)"""
        env = self.env
        task = dep.key[0]
        batch_of, log = self.batch_of[task], self.lane_log(replica)
        log_batch = log.flat.extend  # (the list is cleared in place when it moves into numpy)
        b, step = log.slot, log.step
        limit = self.drop_after.get(task)
        catch_up, times, since = self.catch_up, self.times, self.since[task]
        sampler, decide, host = dep.sampler, dep.batcher.decide, self.host_clock
        queue = replica.queue
        popleft = queue.popleft
        routed = dep.router is not None
        waiter = _Waiter(self, replica)
        peek = env.peek
        yield env.timeout(0.0)  # its replica was there from the start: it serves once every lane is up
        if routed:  # the replicas its router chooses among, fixed from now on, and their loads
            dep.targets()
            loads, slot = dep.loads, replica.slot
        next_arrival = catch_up(env.now)
        now = env.now
        free_since = NEVER_BUSY
        horizon = peek()
        while True:
            if limit is not None:
                self.drop_expired(task, dep, replica, now, limit)
            if queue:
                size, wake_at = decide(now, len(queue), since[queue[0]], self.exhausted, free_since)
            elif self.exhausted:
                return  # nothing left to come: it is done (its replica stays up to the run's end)
            else:
                size, wake_at = 0, None
            if size == 0:
                if wake_at is not None and wake_at <= now or wake_at is None and self.exhausted and queue:
                    raise self.stall(dep, now, wake_at, len(queue))
                until = times[self.arrived]
                if wake_at is not None and wake_at < until:
                    until = wake_at
                if until < horizon and not self.waiting:  # idle to then without an event
                    now = until
                    next_arrival = catch_up(now)
                    horizon = peek()
                    continue
                if now > env.now:
                    yield env.timeout(now - env.now)
                else:
                    yield waiter.wait(now, wake_at)
                    next_arrival = times[self.arrived]
                now = env.now
                horizon = peek()
                continue
            if size == 1:
                taken = 1
                batch_of[popleft()] = b
            else:
                taken = size if size < len(queue) else len(queue)
                for _ in range(taken):
                    batch_of[popleft()] = b
            done = now + sampler(taken) if host is None else host.finish(now, sampler(taken))
            log_batch((now, done, taken))
            b += step
            if done >= horizon:
                yield env.timeout(done - env.now)
                horizon = peek()
            if next_arrival <= done:  # (arrivals at the batch's end count it as outstanding)
                next_arrival = catch_up(done)
                horizon = peek()
            if routed:
                loads[slot] -= taken
            now = free_since = done

    def lane_log(self, replica: _Replica) -> _BatchLog:
        """A new lane's batch log, the next slot of its task's."""
        logs = self.batches[replica.deployment.key[0]]
        task = replica.deployment.key[0]
        logs.append(_BatchLog(len(logs), replica.number, self.lane_bits[task]))
        return logs[-1]

    def stall(self, dep: _Deployment, now: float, wake_at: Optional[float], queued: int) -> SimulationError:
        """The error of a wait that would stall (checked inline, on the hot path): a timer
        not later than now, or requests left queued with nothing more to come and no timer."""
        if wake_at is not None:
            return SimulationError(f"{self.named(dep)} asked a lane at t={now!r} s to wait until "
                                   f"t={wake_at!r} s, which is not later")
        return SimulationError(f"{self.named(dep)} leaves {queued} request(s) waiting after the "
                               f"last arrival; they would never be served")

    @staticmethod
    def unloader(replica: _Replica) -> Callable[[int], None]:
        """``unload(count)``: ``count`` requests leave ``replica``'s load, as its router counts it."""
        dep = replica.deployment

        def unload(count: int) -> None:
            if replica.slot >= 0:
                dep.loads[replica.slot] -= count
        return unload

    @staticmethod
    def named(dep: _Deployment) -> str:
        """``dep``'s batching policy, as an error names it."""
        return f"{type(dep.batcher).__name__} of {dep.key[0]}/{dep.key[1]}"

    def answered(self, dep: _Deployment, members: list[int], now: float) -> None:
        """``dep``'s answers for ``members`` are out at ``now``: on to the next tasks."""
        task = dep.key[0]
        if dep.execute is not None:
            dep.exit_counts += np.bincount(dep.execute.exit_stage[members], minlength=dep.exit_counts.size)
        if self.succ[task] or len(self.sinks) > 1:  # at the one sink, its batch log says it all
            for rid in members:
                self.task_done(task, rid, now)

    def add_replica(self, dep: _Deployment, warm: bool = False) -> _Replica:
        task, variant, cores = dep.key
        now = self.env.now
        replica = _Replica(dep, now, now if warm else now + self.costs.load_time(task, variant), len(self.records))
        if warm:  # serving from the start: its router may count on it at once
            replica.ready = now
        dep.replicas.append(replica)
        dep.changed()
        self.records.append(replica)
        lanes, per_lane = (cores, 1) if self.core_mode == "lanes" else (1, cores)
        # the one task of a run whose plan never changes, with plain requests and batches and
        # arrivals known in advance (a closed loop's clients are told of answers by lane())
        steady = (self.static and len(self.tasks) == 1 and self.fast_forward and dep.execute is None
                  and self.sizes is None and dep.padded is None and self.answered_by is None and dep.factors is None)
        self.steady &= steady
        for _ in range(lanes):
            # with several instances, one lane each, sharing the device: their batches' ends
            device = None if dep.factors is None else _Device(self.instances)
            for instance in range(self.instances):
                self.lanes += 1  # a lane's number: an exit run's host tells a busy lane's batches apart
                if steady and self.loop is not None:
                    self.loop.add(replica, self.lane_log(replica))
                    continue
                lane = (self.steady_lane(replica, dep) if steady
                        else self.lane(replica, dep, per_lane, self.lanes, device, instance))
                self.env.process(lane)
        return replica

    def retire(self, replica: _Replica) -> None:
        """Retire ``replica``; a queue of its own goes to :attr:`orphans`, to be queued again
        once the plan's routes are in force."""
        replica.retired = True
        replica.deployment.changed()
        self.wake(replica)  # its waiting lanes wake, see it is retired, and end
        if replica.queue is not replica.deployment.queue:
            self.orphans.extend((replica.deployment, rid) for rid in replica.queue)
            replica.queue.clear()
            replica.queue.items = 0
        if not replica.busy_lanes:
            replica.release(self.env.now)

    def deployment(self, task: str, variant: str, cores: int, batch: int) -> _Deployment:
        key = (task, variant, cores)
        dep = self.deployments.get(key)
        if dep is None:
            if variant not in self.variants[task]:
                raise SimulationError(f"plan: task {task!r} has no variant {variant!r}; "
                                      f"its variants are {list(self.variants[task])}")
            per_lane = 1 if self.core_mode == "lanes" else cores
            sampler = self.costs.service(task, variant, per_lane)
            latency = None if self.costs.latency is None else self.costs.latency(task, variant, per_lane)
            dep = self.deployments[key] = _Deployment(key, self.batching(batch, latency), sampler, latency,
                                                      self.variants[task].index(variant),
                                                      self.exit_run(task, variant, per_lane),
                                                      None if self.routing is None else self.routing(key))
            dep.source = task in self.sources
            if self.instances > 1:
                dep.factors = self.contention(task, variant, per_lane, dep.execute is not None)
        if dep.batcher.max_batch != batch:
            dep.use(self.batching(batch, dep.latency))
        if dep.execute is not None and dep.padded is not None:
            raise ValueError("padded batches (allowed_sizes) are modelled for models without exits only")
        return dep

    def contention(self, task: str, variant: str, per_lane: int, exits: bool) -> list[list[float]]:
        """The slowdown factors of :attr:`instances` instances of ``variant`` sharing a device
        (see :attr:`_Deployment.factors`): measured, or the run is refused."""
        if exits:
            raise SimulationError(f"{task}/{variant}: instances sharing a device are modelled for models without "
                                  f"exits only")
        table = None if self.costs.contention is None else self.costs.contention(task, variant, per_lane)
        if table is None:
            raise SimulationError(f"{task}/{variant}: {self.instances} instances share each device, and no contention "
                                  f"was measured for them; instances are never assumed not to contend")
        if self.instances > table.max_instances:
            raise SimulationError(f"{task}/{variant}: {self.instances} instances share each device, and contention "
                                  f"was measured up to {table.max_instances} only")
        return table.factors()

    def exit_run(self, task: str, variant: str, per_lane: int) -> Optional[ExitRun]:
        """The variant's exit run on lanes of ``per_lane`` units (one for all its deployments
        of that size, so an online policy learns from all their batches), or None."""
        key = (task, variant, per_lane)
        if key not in self.exit_runs:
            run = None if self.costs.exits is None else self.costs.exits(task, variant, per_lane)
            if run is not None and self.host_clock is not None:
                run.host_clock = self.host_clock
            self.exit_runs[key] = run
        return self.exit_runs[key]

    def task_columns(self) -> tuple[dict[str, TaskColumns], dict[str, np.ndarray]]:
        """Per task, its :class:`TaskColumns` and each request's variant there (index into
        its variants; -1 where it was not served there), expanded from the lanes' batch
        logs :data:`BUILD_ROWS` requests at a time (which bounds the
        temporaries); each log is let go once in the task's batch table."""
        stages, variants = {}, {}
        n = self.arrival.size
        self.busy_s = np.zeros(len(self.records))
        variant_of = np.array([r.deployment.variant_index for r in self.records], dtype=np.int16)
        for task in self.tasks:
            codes_of = self.batch_of[task]
            code = np.frombuffer(codes_of, dtype=np.int32 if codes_of.itemsize == 4 else np.int64)
            bits = self.lane_bits[task]
            table, first, replica_of, items = self.batch_table(task)
            stage = stages[task] = TaskColumns.empty(n)  # (once the lanes' logs are let go)
            stage.batches, stage.batch_items = len(table), items
            variants[task] = np.full(n, -1, dtype=np.int16)
            for lo in range(0, n, BUILD_ROWS):
                served = lo + np.flatnonzero(code[lo:lo + BUILD_ROWS] >= 0)
                codes = code[served]
                slot = codes & ((1 << bits) - 1)
                rows = first[slot] + (codes >> bits)
                stage.replica[served] = replica_of[slot]
                variants[task][served] = variant_of[replica_of[slot]]
                for k, name in enumerate(("start", "finish", "batch_size")):  # the batch log's order
                    getattr(stage, name)[served] = table[rows, k]
            for run in (r for (t, _, _), r in self.exit_runs.items() if t == task and r is not None):
                mine = run.exit_stage >= 0  # with exits, a request's answer there is its exit's
                stage.finish[mine] = run.finish[mine]
            dropped = self.dropped_by[task]
            if dropped:
                stage.replica[np.fromiter(dropped, dtype=np.int64)] = np.fromiter(dropped.values(), dtype=np.int32)
        return stages, variants

    def batch_table(self, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``task``'s batches as one table (start, finish, items; its lanes' logs one after
        the other, each let go once copied in), each lane's first row in it, each lane's
        replica, and how many of its batches had k items (``[k]``). On the way, each
        replica's busy seconds and the last batch's end."""
        logs = self.batches[task]
        counts = [log.close() for log in logs]
        first = np.cumsum([0] + counts)
        table = np.empty((int(first[-1]), 3))
        items = np.zeros(1, dtype=np.int64)
        shared: dict[_Device, list[np.ndarray]] = {}  # a shared device's batches, from all its lanes
        for log, row in zip(logs, first.tolist()):
            top = row
            chunks, log.chunks = log.chunks[::-1], []
            while chunks:  # each let go as soon as it is copied in
                chunk = chunks.pop()
                table[row:row + len(chunk)] = chunk
                row += len(chunk)
                used = np.bincount(chunk[:, 2].astype(np.int64))
                if used.size > items.size:
                    items, used = used, items
                items[:used.size] += used
                self.last_batch_end = max(self.last_batch_end, float(chunk[:, 1].max()))
            # summed over the lane's batches at once: a sum that does not depend on how they were chunked
            if log.device is None:
                self.busy_s[log.replica] += float((table[top:row, 1] - table[top:row, 0]).sum())
            else:  # instances sharing a device: it is busy while any of them runs a batch
                shared.setdefault(log.device, []).append(table[top:row, :2])
        for device, spans in shared.items():
            self.busy_s[next(log.replica for log in logs if log.device is device)] += _covered(np.concatenate(spans))
        return table, first[:-1], np.array([log.replica for log in logs], dtype=np.int32), items

    def request_columns(self, stages: dict[str, TaskColumns]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each request's ``status``, ``finish`` and ``dropped_at`` (ClusterResults'): where
        it ended unserved, from :attr:`ended`; else its answer at its last sink."""
        n = self.arrival.size
        status = np.full(n, COMPLETED, dtype=np.int8)
        dropped_at = np.full(n, -1, dtype=np.int16)
        if self.finish is None:  # one sink: a request served there is done when it answers there
            finish = stages[self.sinks[0]].finish
            if self.ended:  # (shared with the sink's column unless some request ended elsewhere)
                finish = finish.copy()
        else:
            finish = self.finish
        if self.ended:
            ids = np.fromiter(self.ended, dtype=np.int64, count=len(self.ended))
            how = np.array(list(self.ended.values()), dtype=np.float64).reshape(-1, 3)
            status[ids], finish[ids], dropped_at[ids] = how[:, 0], how[:, 1], how[:, 2]
        return status, finish, dropped_at

    def exit_columns(self, served: np.ndarray) -> tuple[dict[str, dict[str, np.ndarray]],
                                                         dict[str, tuple[tuple[str, ...], ...]]]:
        """Per task with exits, each request's exit columns from the run that served it
        (``served``: the requests served to the end), and the exit names of each of its
        variants (ClusterResults' ``exits``, ``exit_names``)."""
        columns, names = {}, {}
        for task in self.tasks:
            runs = [(variant, run) for (t, variant, _), run in self.exit_runs.items() if t == task and run is not None]
            if not runs:
                continue
            if len(runs) == 1:  # every request drew its behaviour row from it, served there or not
                columns[task] = runs[0][1].columns(served)
            else:
                merged: dict[str, np.ndarray] = {}
                for _, run in runs:
                    mine = run.exit_stage >= 0  # a request is served at a task by one deployment
                    for name, column in run.columns(served & mine).items():
                        blank = np.full_like(column, False if column.dtype == bool else -1)
                        merged.setdefault(name, blank)[mine] = column[mine]
                columns[task] = merged
            exit_names = {variant: run.exit_names for variant, run in runs}
            names[task] = tuple(exit_names.get(v, ()) for v in self.variants[task])
        return columns, names

    # --- plans -----------------------------------------------------------------------
    def lanes_of(self, plan: Plan, task: str) -> int:
        """The lanes ``plan`` runs for ``task``."""
        return sum(d.replicas * (d.cores if self.core_mode == "lanes" else 1) * self.instances
                   for d in plan.tasks.get(task, ()))

    def fix_lanes(self, plan: Plan) -> None:
        """``plan`` is the run's for good: each task's lanes are its lanes. Code their batches
        with as few bits for the lane as that needs, so that, where the run is short enough,
        a request's batch code fits 4 bytes (an int32 array)."""
        n = self.arrival.size
        for task in self.tasks:
            bits = max(self.lanes_of(plan, task) - 1, 1).bit_length()
            if n << bits < 2 ** 31:
                self.lane_bits[task] = bits
                self.batch_of[task] = array.array("i", [-1]) * len(self.batch_of[task])

    def apply(self, plan: Plan, warm: bool = False) -> None:
        """Start carrying ``plan`` out (see the module docstring); ``warm``: at once, its
        replicas loaded already (the cluster a run starts with)."""
        unknown = set(plan.tasks) ^ set(self.tasks)
        if unknown:
            raise SimulationError(f"plan: its tasks {sorted(plan.tasks)} are not the pipeline's {list(self.tasks)}")
        if self.routes:  # new replicas change where a router may send what arrived before now
            self.catch_up(self.env.now)
        if self.host_clock is not None:
            lanes = sum(self.lanes_of(plan, task) for task in plan.tasks)
            if not warm or len(self.tasks) != 1 or lanes != 1:
                raise SimulationError("a serving host models one server process that takes in every request: it "
                                      "needs one task served by one lane, and a plan that never changes; "
                                      f"got tasks {list(self.tasks)} and a plan of {lanes} lane(s) at "
                                      f"t={self.env.now!r} s")
        self.plan = plan
        self.plans.append((self.env.now, plan))
        self.generation += 1
        wanted: dict[Key, int] = {}
        new: list[_Replica] = []
        for task, deployments in plan.tasks.items():
            for d in deployments:
                dep = self.deployment(task, d.variant, d.cores, d.batch)
                wanted[dep.key] = d.replicas
                for _ in range(d.replicas - len(dep.alive())):
                    new.append(self.add_replica(dep, warm))
        if plan.restart or warm or not new:
            self.switch(plan, wanted)
        else:
            self.env.process(self.switch_when_ready(plan, wanted, new, self.generation))

    def switch_when_ready(self, plan: Plan, wanted: dict, new: list[_Replica], generation: int):
        yield self.env.timeout(max(r.ready_at for r in new) - self.env.now)
        if generation == self.generation:
            self.switch(plan, wanted)

    def switch(self, plan: Plan, wanted: dict[Key, int]) -> None:
        """Quotas of ``plan`` in force; surplus replicas retired (loading ones first, then
        idle, then busy); the queues of deployments left without a quota re-dispatched."""
        if self.routes:  # the arrivals up to now go by the routes they met (none before the first plan)
            self.catch_up(self.env.now)
        for key, dep in self.deployments.items():
            alive = dep.alive()
            surplus = len(alive) - wanted.get(key, 0)
            for replica in sorted(alive, key=lambda r: (r.ready is not None, r.busy_lanes > 0))[:max(0, surplus)]:
                self.retire(replica)
        self.routes = {task: [[self.deployments[(task, d.variant, d.cores)], d.quota, 0.0]
                              for d in deployments if d.replicas and d.quota > 0]
                       for task, deployments in plan.tasks.items()}
        routed = {id(entry[0]) for route in self.routes.values() for entry in route}
        route = self.routes[self.sources[0]]
        simple = len(self.sources) == 1 and len(self.sinks) == 1 and self.sizes is None and len(route) == 1
        self.catch_up = self.direct(route[0][0]) if simple else self.route_each
        for dep in self.deployments.values():
            if dep.queue and id(dep) not in routed:
                self.orphans.extend((dep, rid) for rid in dep.queue)
                dep.queue.clear()
                dep.queue.items = 0
        orphans, self.orphans = self.orphans, []
        self.requeued = self.requeued or bool(orphans)
        for dep, rid in orphans:  # to their deployment's replicas while it serves, else anew
            if id(dep) in routed and dep.alive():
                self.enqueue(dep, rid)
            else:
                self.dispatch(dep.key[0], rid)

    def exit_counts(self) -> dict[Key, np.ndarray]:
        """Per deployment with exits, the requests answered at each exit so far."""
        return {key: dep.exit_counts.copy() for key, dep in self.deployments.items() if dep.exit_counts is not None}

    def adapting(self):
        interval = self.adapter.interval_s
        # arrivals per second (``per_second[i]``: second i), known in advance; an adapter is shown the past only
        times = self.arrival
        per_second = np.bincount(times.astype(np.int64), minlength=int(np.ceil(times[-1])) + 2
                                 if times.size else 1).astype(float)
        last = {key: dep.busy_core_seconds for key, dep in self.deployments.items()}
        counted = self.exit_counts()
        while self.arrived < self.arrival.size:
            yield self.env.timeout(interval)
            now = self.env.now
            self.catch_up(now)
            busy = {key: (dep.busy_core_seconds - last.get(key, 0.0)) / interval
                    for key, dep in self.deployments.items()}
            last = {key: dep.busy_core_seconds for key, dep in self.deployments.items()}
            ready = {key: sum(1 for r in dep.alive() if r.ready is not None) for key, dep in self.deployments.items()}
            exits, before, counted = {}, counted, self.exit_counts()
            for key, counts in counted.items():
                new = counts - before.get(key, 0)
                if new.sum():
                    exits[key] = tuple((new / new.sum()).tolist())
            observation = ClusterObservation(now, per_second[:int(now)].copy(), self.plan, busy, ready, interval,
                                             exits)
            plan = self.adapter.decide(observation)
            if plan is not None and plan != self.plan:
                self.apply(plan)


def simulate_cluster(trace: Trace | StreamedTrace | ClosedLoop, tasks: Sequence[str], edges: Sequence[tuple[str, str]],
                     variants: Mapping[str, Sequence[str]], costs: ClusterCosts, adapter: Adapter, initial: Plan, *,
                     drop_after: Optional[Mapping[str, float]] = None, core_mode: str = "lanes",
                     batching: Callable[[int, Optional[Callable[[int], float]]], BatchingPolicy] = (
                         lambda batch, latency: DynamicBatcher(batch)),
                     routing: Optional[Callable[[Key], Optional[Router]]] = None,
                     progress: Optional[Callable[[int], None]] = None,
                     fast_forward: bool = True, host: Optional[ServingHost] = None,
                     instances: int = 1, sink: Optional[RecordSink] = None) -> ClusterResults:
    """Serve ``trace`` through the pipeline ``tasks``/``edges`` (a DAG; every request
    enters at its sources), starting from ``initial`` (its replicas are ready at time 0,
    as a cluster already running) and adapted by ``adapter``; ``variants[task]`` are the
    variant names a plan may use for it; ``drop_after`` (seconds, per task) is the
    longest a request may wait in a task's queue; ``batching(batch, latency)`` builds a
    deployment's batching policy for its plan's ``batch`` and its lanes' median batch
    latency (``costs.latency``'s, or None; default: take what is queued, up to ``batch``,
    at once); ``routing(key)`` the router of the deployment
    ``key`` = (task, variant, cores) over its replicas (default, or ``None``: its
    replicas share one queue); ``progress(k)`` is called now and then with the number of
    arrivals routed so far. A request carrying more items than a deployment's batch
    (the trace's ``size`` column) is rejected there when it arrives. ``fast_forward=False``
    gives every batch its own SimPy event (see :meth:`_Cluster.lane`); results agree up to
    clock rounding. ``host`` makes the serving host a resource that launches batches and
    takes requests in (:mod:`sim.host`), as :func:`sim.simulate` does: it models one server
    process, so it needs one task served by one lane under a plan that never changes.
    ``instances`` runs that many lanes (model instances) on each device of a replica,
    their batches stretched by the measured slowdown ``costs.contention`` gives (see the
    module docstring; refused where none was measured); 1 is the engine without instances.

    ``trace`` may instead be a :class:`~sim.closed_loop.ClosedLoop`: clients that send
    again once answered (:mod:`sim.closed_loop`); the table's ``arrival`` is then when
    each request was sent. It serves one task of plain variants under a plan that never
    changes, without drops (a client would wait for an answer no server gives).

    ``sink``, where given, is handed the one task's request table in chunks as the run
    goes (:mod:`sim.row_stream`), where the run is steady (one task, a plan that never
    changes, plain requests); the results then hold no per-request columns
    (``streamed``). Elsewhere it is ignored: the caller builds the table at the end."""
    if core_mode not in CORE_MODES:
        raise ValueError(f"core_mode must be one of {CORE_MODES}, got {core_mode!r}")
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise ValueError(f"instances must be a whole number >= 1, got {instances!r}")
    closed = trace if isinstance(trace, ClosedLoop) else None
    if closed is not None:
        _check_closed_loop(closed, tasks, adapter, initial, drop_after, host)
    env = simpy.Environment()
    cluster = _Cluster(env, trace, tasks, edges, variants, costs, adapter, dict(drop_after or {}), core_mode, batching,
                       routing, progress, fast_forward, host, instances)
    if cluster.static:
        cluster.fix_lanes(initial)
        # one task served by one deployment: its lanes, if steady, run in one heapq loop
        serving = [d for deployments in initial.tasks.values() for d in deployments if d.replicas]
        if cluster.one_loop and len(tasks) == 1 and len(serving) == 1 and fast_forward and closed is None:
            cluster.loop = OneLoop(cluster)
    cluster.apply(initial, warm=True)
    if sink is not None and cluster.steady and cluster.records:
        cluster.rows = RowStream(cluster, tasks[0], sink)
    if isinstance(cluster.arrival, ArrivalWindow) and (cluster.rows is None or cluster.loop is None):
        raise ValueError(f"{trace.source}: a trace drawn as it is read (records: summary) is served only where the "
                         f"run hands its rows over as it goes: one plain model (no exits, padding or instances) "
                         f"under a plan that never changes, with a sink for its rows")
    if closed is not None and any(dep.execute is not None for dep in cluster.deployments.values()):
        raise ValueError("a closed loop is served by plain models only; this plan's variants have exits")
    if not cluster.static:
        env.process(cluster.adapting())
    # A sentinel that never fires keeps SimPy's queue non-empty, so ``env.peek()`` (asked
    # after every batch) never takes the slow path of an empty queue (as sim.engine does).
    env.timeout(float("inf"))
    if cluster.loop is not None and cluster.loop.lanes:
        cluster.loop.run()
    else:
        env.run()
    if closed is not None:
        sent = cluster.sends.created  # all of count, or what a loop that ends by time sent before its end
        if cluster.arrived < sent or not cluster.sends.done:
            planned = f"of {closed.count} requests" if closed.duration_s is None else \
                f"requests, before its end at {closed.duration_s:g} s"
            raise SimulationError(f"the closed loop stopped after {cluster.arrived} {planned}: "
                                  f"its {closed.clients} clients' last requests wait for a batch that is never "
                                  f"started (does the batching policy wait for more than they can send at once?)")
        cluster.keep_sent(sent)
        if sent < closed.count:
            cluster.shorten(sent)
    # the arrival times as n list slots (8 bytes a request), let go before the tables are built
    cluster.times = cluster.since = cluster.catch_up = None
    if cluster.rows is not None:
        return _streamed(cluster, tuple(map(tuple, edges)))
    stages, variant = cluster.task_columns()
    status, finish, dropped_at = cluster.request_columns(stages)
    unfinished = np.isnan(finish)
    if unfinished.any():
        raise SimulationError(f"{int(unfinished.sum())} request(s) were neither served nor dropped "
                              f"(the first: {int(np.flatnonzero(unfinished)[0])})")
    # the run ends with its last answer, arrival or batch (with exits a batch may run on
    # past its last answer): replicas still up are released then, not when the adapter's
    # last timer would have fired
    end = float(max(np.max(finish, initial=0.0), np.max(cluster.arrival, initial=0.0), cluster.last_batch_end))
    exits, names = cluster.exit_columns(status == COMPLETED)
    return ClusterResults(cluster.tasks, cluster.arrival, finish, status, dropped_at,
                          variant, cluster.variants, _replica_records(cluster, end, cluster.busy_s), cluster.plans,
                          end, exits, names, cluster.size, tuple(map(tuple, edges)), stages, _rejections(cluster),
                          None if cluster.host_clock is None else cluster.host_clock.busy)


def _replica_records(cluster: _Cluster, end: float, busy_s: np.ndarray) -> list[ReplicaRecord]:
    """Every replica's life, up to the run's ``end``, and its busy seconds."""
    return [ReplicaRecord(*r.deployment.key, min(r.requested, end), r.ready if r.ready is not None else np.inf,
                          min(end, r.released if r.released is not None else end), float(busy))
            for r, busy in zip(cluster.records, busy_s)]


def _rejections(cluster: _Cluster) -> dict[str, int]:
    return {"larger than max_batch": cluster.rejected} if cluster.rejected else {}


def _streamed(cluster: _Cluster, edges: tuple[tuple[str, str], ...]) -> ClusterResults:
    """The results of a run whose rows went to a sink (:class:`~sim.row_stream.RowStream`):
    the rest of its rows handed over, then its run-level figures, without per-request columns."""
    rows, task = cluster.rows, cluster.tasks[0]
    rows.emit(cluster.arrival.size, final=True)
    last_arrival = float(cluster.arrival[-1]) if cluster.arrival.size else 0.0  # (arrivals are in time order)
    end = float(max(rows.last_finish, last_arrival, rows.last_batch_end))
    stage = TaskColumns.empty(0)
    stage.batches, stage.batch_items = rows.batches, rows.batch_items
    none = np.empty(0)
    return ClusterResults(cluster.tasks, none, none, none.astype(np.int8), none.astype(np.int16),
                          {task: none.astype(np.int16)}, cluster.variants, _replica_records(cluster, end, rows.busy_s),
                          cluster.plans, end, {}, {}, None, edges, {task: stage}, _rejections(cluster),
                          None if cluster.host_clock is None else cluster.host_clock.busy, streamed=True)


def _covered(spans: np.ndarray) -> float:
    """The length of the union of the intervals ``spans`` (rows of start, end)."""
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    reached = np.maximum.accumulate(spans[:, 1])  # covered up to here by the intervals so far, from the first start
    before = np.concatenate(([-np.inf], reached[:-1]))
    return float(np.maximum(0.0, spans[:, 1] - np.maximum(spans[:, 0], before)).sum())


def _check_closed_loop(load: ClosedLoop, tasks: Sequence[str], adapter: Adapter, initial: Plan,
                       drop_after: Optional[Mapping[str, float]], host: Optional[ServingHost]) -> None:
    """What a closed loop can be served by (:func:`simulate_cluster`): its clients hear of
    an answer from the one task's batches as they start, so one task, a plan that never
    changes, no serving host (it runs on arrival times known in advance), and no drops or
    rejections (whose clients would never send again)."""
    drops = any(limit is not None for limit in (drop_after or {}).values())
    if len(tasks) != 1 or type(adapter) is not StaticAdapter or host is not None or drops:
        raise ValueError("a closed loop is served by one task under a plan that never changes, without a serving "
                         "host or drops")
    smallest = min((d.batch for d in initial.tasks.get(tasks[0], ())), default=load.size)
    if load.size > smallest:
        raise ValueError(f"a closed loop's requests of {load.size} items exceed a deployment's batch of {smallest} "
                         f"items: they could never be served")
