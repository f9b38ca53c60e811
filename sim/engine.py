"""Run one simulation: a trace against replicas of one modelled model.

A single-model run is the simplest system the engine serves (:mod:`sim.cluster`): one
task, one deployment of ``replicas`` replicas, and a plan that never changes. ``simulate``
builds that system, runs it, and returns its one task's results as the columnar
:class:`~sim.records.Results`, with the cost model's reports of what it extrapolated and
interpolated. It holds no state between calls: two runs with the same inputs and seed
give byte-identical tables.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from servesim.policies.autoscaling import Deployment, Plan, StaticAdapter
from servesim.policies.routing import JoinShortestQueue
from servesim.traces.streamed import StreamedTrace
from servesim.traces.trace import Trace

from .closed_loop import ClosedLoop
from .cluster import ClusterCosts, ClusterResults, simulate_cluster
from .exits import ExitRun, ExitSetup
from .host import ServingHost
from .records import Results
from .row_stream import RecordSink

TASK, MODEL = "model", "model"  # the one task of a single-model run, and its one variant


def simulate(trace: Trace | StreamedTrace | ClosedLoop, cost_model, batcher, *, replicas: int = 1, router=None,
             shared_queue: bool = False, drop_after: Optional[float] = None, rng: Optional[np.random.Generator] = None,
             progress: Optional[Callable[[int], None]] = None, fast_forward: bool = True,
             exits: Optional[ExitSetup] = None, host: Optional[ServingHost] = None, instances: int = 1,
             sink: Optional[RecordSink] = None) -> Results:
    """Serve ``trace`` with ``replicas`` replicas, each batching with ``batcher``.
    ``trace`` may be a :class:`~sim.closed_loop.ClosedLoop` instead: clients that send
    again once answered (a plain model, without ``drop_after``, ``exits`` or ``host``).

    ``cost_model`` supplies service times (``cost_model.sampler(rng)``, one sampler for
    every replica, drawn in the order batches start); ``router`` chooses a replica per
    request (join-shortest-queue when omitted) unless ``shared_queue``, where all
    replicas pull from one queue (M/M/c); ``drop_after`` (seconds) drops requests that
    waited longer than that; ``progress(k)`` is called now and then with the number of
    arrivals routed so far. ``fast_forward=False`` schedules one SimPy event per batch
    (see :mod:`sim.cluster`); results agree up to clock rounding.

    ``exits`` makes the model one with exits (an early-exit network or a cascade, see
    :mod:`sim.exits`): ``cost_model`` is then only asked for ``batch_latency`` (by
    deadline-aware batchers); segments are costed by ``exits.costs``, each request
    leaves at its own exit, and the table gains the exit columns.

    ``host`` makes the serving host a resource that launches batches and takes requests
    in (:mod:`sim.host`): batches stretch by the intake of what arrives while the host
    launches them. It models one server process, so it needs one replica.

    ``instances`` runs that many model instances on each replica's device, their batches
    stretched by the slowdown the profile measured (``cost_model.contention``, see
    :mod:`sim.cluster`); refused where none was measured. 1 is the run without instances.

    ``sink`` takes the request table instead of the results: it is called with
    consecutive chunks of rows in request order (:data:`sim.row_stream.RecordSink`), as
    the run goes where it is steady (plain requests: no exits, padding, instances or
    closed loop), else once at the end; ``requests`` is then ``None``. A run of days of
    traffic holds its table only this way.
    """
    if replicas < 1 or int(replicas) != replicas:
        raise ValueError(f"replicas must be a whole number >= 1, got {replicas!r}")
    if drop_after is not None and not drop_after > 0:
        raise ValueError(f"drop_after must be > 0 seconds, got {drop_after!r}")
    if host is not None and replicas != 1:
        raise ValueError(f"a serving host models one server process with one worker; got replicas={replicas!r}")
    replicas = int(replicas)
    rng = rng if rng is not None else np.random.default_rng(0)
    if isinstance(trace, ClosedLoop) and (exits is not None or host is not None or drop_after is not None):
        raise ValueError("a closed loop is served by a plain model without drop_after, exits or a serving host")
    if exits is not None:
        if "size" in trace.columns:
            raise ValueError("a model with exits serves one item per request; this trace has a 'size' column")
        if len(exits.samples) != len(trace.times):
            raise ValueError(f"exits.samples has {len(exits.samples)} entries for {len(trace.times)} requests")
    # one sampler (or exit run) for the one deployment: every replica draws from it in turn
    service = cost_model.sampler(rng) if exits is None else None
    execute = None if exits is None else ExitRun(exits, rng)
    # (a count that is not a whole number >= 1 is refused by simulate_cluster)
    several = isinstance(instances, int) and instances > 1 and exits is None
    contention = cost_model.contention(instances, "instances") if several else None
    costs = ClusterCosts(service=lambda task, variant, units: service, load_time=lambda task, variant: 0.0,
                         exits=lambda task, variant, units: execute, contention=lambda task, variant, units: contention)
    router = None if shared_queue or replicas == 1 else (router if router is not None else JoinShortestQueue())
    results = simulate_cluster(trace, [TASK], [], {TASK: (MODEL,)}, costs, StaticAdapter(),
                               Plan({TASK: (Deployment(MODEL, replicas, batch=batcher.max_batch),)}),
                               drop_after=None if drop_after is None else {TASK: drop_after},
                               batching=lambda batch, latency: batcher, routing=lambda key: router,
                               progress=progress, fast_forward=fast_forward, host=host, instances=instances,
                               sink=sink)
    return _single(results, cost_model if exits is None else exits.costs, exits is None, sink)


def _single(results: ClusterResults, costs, plain: bool, sink: Optional[RecordSink] = None) -> Results:
    """The results of a single-model run (its one task's) with the cost model's reports:
    the look-ups it made out of its measured range (``costs``' ``out_of_range_requests``)
    and, for a plain model, the batch sizes it interpolated with a large error."""
    stage = results.stages[TASK]
    requests = None if results.streamed else results.table(TASK)
    if sink is not None and requests is not None:  # a run that could not stream: its table at once
        sink(requests)
        requests = None
    return Results(
        requests=requests,
        replicas=len(results.replicas),
        end_time=results.end_time,
        busy_time=np.array([r.busy_s for r in results.replicas]),
        batches=stage.batches,
        rejections=dict(results.rejections),
        out_of_range=dict(getattr(costs, "out_of_range_requests", {}) or {}),
        interpolated=_interpolated(costs, stage.batch_items) if plain else {},
        exit_names=results.exit_names[TASK][0] if TASK in results.exit_names else (),
        host_busy_s=results.host_busy_s,
    )


def _interpolated(cost_model, batch_items: np.ndarray) -> dict[int, tuple[int, float]]:
    """``{batch size: (batches, estimated relative error)}`` for the batch sizes the run
    used (``batch_items[k]``: batches of k items) whose latency the cost model says it
    interpolated with a large error (``CostModel.interpolation_report``); a cost model
    without that report gives none."""
    report = getattr(cost_model, "interpolation_report", None)
    used = {int(size): int(count) for size, count in enumerate(batch_items.tolist()) if count}
    if report is None or not used:
        return {}
    return {size: (used[size], error) for size, error in report(used).items()}
