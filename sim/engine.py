"""Run one simulation: a trace against replicas of one modelled model.

``simulate`` wires a SimPy environment, one :class:`~sim.dispatcher.Dispatcher` process
for the arrival stream and one :class:`~sim.worker.Worker` process per replica, runs it
until every request has completed, been dropped or been rejected, and returns the
columnar :class:`~sim.records.Results`. It holds no state between calls: two runs with
the same inputs and seed give byte-identical tables.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Callable, Iterator, Optional

import numpy as np
import simpy

from policies.routing import JoinShortestQueue
from traces.trace import Trace

from .dispatcher import Dispatcher
from .errors import SimulationError
from .exits import ExitRun, ExitSetup
from .host import ServingHost
from .queue import RequestQueue
from .records import COMPLETED, RequestLog, RequestTable, Results
from .worker import Worker


def simulate(trace: Trace, cost_model, batcher, *, replicas: int = 1, router=None,
             shared_queue: bool = False, drop_after: Optional[float] = None, rng: Optional[np.random.Generator] = None,
             progress: Optional[Callable[[int], None]] = None, fast_forward: bool = True,
             exits: Optional[ExitSetup] = None, host: Optional[ServingHost] = None) -> Results:
    """Serve ``trace`` with ``replicas`` workers, each batching with ``batcher``.

    ``cost_model`` supplies service times (``cost_model.sampler(rng)``); ``router``
    chooses a replica per request (join-shortest-queue when omitted) unless
    ``shared_queue``, where all replicas pull from one queue (M/M/c); ``drop_after``
    (seconds) drops requests that waited longer than that; ``progress(k)`` is called now
    and then with the number of arrivals routed so far. ``fast_forward=False`` schedules
    one SimPy event per batch (see :mod:`sim.worker`); results agree up to clock rounding.

    ``exits`` makes the model one with exits (an early-exit network or a cascade, see
    :mod:`sim.exits`): ``cost_model`` is then only asked for ``batch_latency`` (by
    deadline-aware batchers); segments are costed by ``exits.costs``, each request
    leaves at its own exit, and the table gains the exit columns.

    ``host`` makes the serving host a resource that launches batches and takes requests
    in (:mod:`sim.host`): batches stretch by the intake of what arrives while the host
    launches them. It models one server process, so it needs one replica.
    """
    if replicas < 1 or int(replicas) != replicas:
        raise ValueError(f"replicas must be a whole number >= 1, got {replicas!r}")
    if drop_after is not None and not drop_after > 0:
        raise ValueError(f"drop_after must be > 0 seconds, got {drop_after!r}")
    if host is not None and replicas != 1:
        raise ValueError(f"a serving host models one server process with one worker; got replicas={replicas!r}")
    rng = rng if rng is not None else np.random.default_rng(0)
    sizes = trace.columns.get("size")
    if exits is not None:
        if sizes is not None:
            raise ValueError("a model with exits serves one item per request; this trace has a 'size' column")
        if len(exits.samples) != len(trace.times):
            raise ValueError(f"exits.samples has {len(exits.samples)} entries for {len(trace.times)} requests")
    log = RequestLog(trace, int(replicas))
    env = simpy.Environment()
    dispatcher = Dispatcher(env, log, router if router is not None else JoinShortestQueue(),
                            batcher.max_batch, progress)
    host_clock = None if host is None else host.clock(trace.times)
    execute = None if exits is None else ExitRun(exits, rng, host_clock)
    service_time = cost_model.sampler(rng) if exits is None else None
    if getattr(batcher, "allowed_sizes", ()):  # TF-Serving pads a batch up to an allowed size, and pays for it
        if exits is not None:
            raise ValueError("padded batches (allowed_sizes) are modelled for models without exits only")
        unpadded, padded = service_time, batcher.padded
        service_time = lambda items: unpadded(padded(items))  # noqa: E731
    queues = [RequestQueue(i) for i in range(1 if shared_queue else int(replicas))]
    workers = [Worker(i, queues[0 if shared_queue else i], env, dispatcher, batcher,
                      service_time, log, drop_after, fast_forward, execute,
                      host=host_clock if exits is None else None)
               for i in range(int(replicas))]
    dispatcher.attach(queues, workers)
    finished = env.all_of([env.process(worker.run()) for worker in workers])
    # A sentinel that never fires keeps SimPy's queue non-empty, so ``env.peek()`` (asked
    # after every batch, see sim.worker) never takes the slow path of an empty queue.
    env.timeout(float("inf"))
    with _collector_paused():
        env.run(until=finished)

    log.close()
    batches, first = log.batch_table()
    records = RequestTable.build(trace.times, sizes, log, batches, first)
    if execute is not None:
        served = records.status == COMPLETED
        records.finish[served] = execute.finish[served]
        records.exits = execute.columns(served)
    # Workers, dispatcher and SimPy's events reference one another, so they wait for a
    # full collection to be freed; dropping the batch codes now returns their memory at
    # once (a sweep calls simulate many times in one process).
    log.code = None
    tables = [batches[first[r]:first[r + 1]] for r in range(int(replicas))]
    left = np.flatnonzero(np.isnan(records.finish))
    if left.size:
        raise SimulationError(f"{left.size} requests neither completed nor dropped (first: {left[0]})")
    return Results(
        requests=records,
        replicas=int(replicas),
        end_time=max([float(env.now)] + [float(t[-1, 1]) for t in tables if len(t)]),
        busy_time=np.array([float((t[:, 1] - t[:, 0]).sum()) for t in tables]),
        batches=sum(len(t) for t in tables),
        rejections={k: v for k, v in dispatcher.rejections.items() if v},
        out_of_range=dict(getattr(cost_model if exits is None else exits.costs, "out_of_range_requests", {}) or {}),
        interpolated=_interpolated(cost_model, tables) if exits is None else {},
        exit_names=() if exits is None else tuple(exits.costs.model.exit_names),
        host_busy_s=None if host_clock is None else host_clock.busy,
    )


def _interpolated(cost_model, tables: list[np.ndarray]) -> dict[int, tuple[int, float]]:
    """``{batch size: (batches, estimated relative error)}`` for the batch sizes the run
    used whose latency the cost model says it interpolated with a large error
    (``CostModel.interpolation_report``); a cost model without that report gives none."""
    report = getattr(cost_model, "interpolation_report", None)
    if report is None or not tables:
        return {}
    sizes, counts = np.unique(np.concatenate([t[:, 2] for t in tables]).astype(np.int64), return_counts=True)
    used = dict(zip(sizes.tolist(), counts.tolist()))
    return {size: (used[size], error) for size, error in report(used).items()}


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the duration of a run.

    The run keeps long-lived lists (the request log's window) that every collection the
    allocations trigger would traverse again, while the engine makes no reference cycles
    per request; pausing it saves several percent of a run. It is restored afterwards
    (and collects whatever cycles SimPy's few events left) however the run ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
