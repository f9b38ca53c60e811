"""Summaries of a run, computed from the per-request table only (whole, or fed in chunks to a
:class:`sim.summary_stream.RequestStream` as a long run goes).

Latency is ``finish - arrival`` of completed requests (with exits, ``finish`` is when
the request's exit answered). A request that was dropped or
rejected counts as an SLO violation: a client that got no answer did not get it in time.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .backlog import keeping_up
from .records import COMPLETED, DROPPED, REJECTED, Results
from .summary_stream import RequestStream, latency_ms as _latency_ms


def summarize(results: Results, slo: Optional[float] = None, warmup: float = 0.0,
              stream: Optional[RequestStream] = None) -> dict:
    """The run's summary as plain JSON-able values (latencies in ms, times in s).

    ``slo`` (seconds) enables ``slo_violation_rate``; without it that key is ``None``.
    ``warmup`` (seconds): requests that arrive earlier are left out of every per-request
    figure (counts, latency, throughput, SLO, accuracy, exits), as a measured server's
    first requests are; the cost and batch figures stay those of the whole run.

    ``stream``: a run whose table was handed over in chunks (``results.requests`` may
    then be ``None``) was fed to this :class:`RequestStream`, built with the same ``slo``
    and ``warmup``; the per-request figures are its, and the summary gains
    ``latency_sketch`` (its sketch, :meth:`sim.sketch.LatencySketch.to_json`, for merging
    across seeds) and ``records`` (``full``: exact percentiles; ``summary``: the sketch's).
    Without one the table is fed to a :class:`RequestStream` as one chunk.
    """
    req = results.requests
    if stream is None:
        stream = RequestStream(len(req), req.arrival[-1] if len(req) else 0.0, slo, warmup,
                               relative_accuracy=None, interval_s=None)
        stream.add(req)
        streamed = False
    elif (stream.slo, stream.warmup) != (slo, warmup):
        raise ValueError(f"summarize: the stream was built for slo {stream.slo}, warmup {stream.warmup};"
                         f" asked for slo {slo}, warmup {warmup}")
    else:
        streamed = True
    figures = stream.figures()
    provisioned = results.replicas * results.end_time
    busy = float(results.busy_time.sum())
    summary = {
        "requests": figures["requests"],
        "completed": figures["completed"],
        "dropped": figures["dropped"],
        "rejected": figures["rejected"],
        "throughput_rps": figures["throughput_rps"],
        "latency_ms": figures["latency_ms"],
        "slo_ms": None if slo is None else slo * 1e3,
        "slo_violation_rate": figures["slo_violation_rate"],
        "accuracy": None,
        "agreement": None,
        "cost": {
            "provisioned_accelerator_s": round(provisioned, 6),
            "busy_accelerator_s": round(busy, 6),
            "utilisation": round(busy / provisioned, 6) if provisioned > 0 else None,
            # with a serving host (sim.host): the share of the run its host spent taking requests in and launching
            **({} if results.host_busy_s is None or not results.end_time
               else {"host_utilisation": round(results.host_busy_s / results.end_time, 6)}),
        },
        "batches": results.batches,
        "mean_batch_items": (round(float(figures["completed_items"]) / results.batches, 6)
                             if results.batches else None),
        "replicas": results.replicas,
        "duration_s": round(results.end_time, 6),
        "rejections": dict(results.rejections),
        "backlog_mid": figures["backlog_mid"],
        "backlog_end": figures["backlog_end"],
        "overloaded": figures["overloaded"],
        # look-ups of a batch size the profile does not cover, per "stage@batch size"
        "profile_out_of_range": {f"{stage}@{size}": count
                                 for (stage, size), count in sorted(results.out_of_range.items())},
    }
    if results.interpolated:  # batch sizes interpolated where the profile says that errs by 5% or more
        summary["profile_interpolation"] = {str(size): {"batches": count, "error_estimate": round(error, 4)}
                                            for size, (count, error) in sorted(results.interpolated.items())}
    if warmup > 0:
        summary.update({"warmup_s": warmup, "warmup_requests": figures["warmup_requests"]})
    if streamed:
        summary.update({"latency_sketch": stream.sketch().to_json(), "records": "full" if stream.exact else "summary"})
    if req is not None and req.exits:
        skip = figures["warmup_requests"]
        summary.update(_exit_summary({k: v[skip:] for k, v in req.exits.items()}, req.status[skip:] == COMPLETED,
                                     results.exit_names))
    return summary


def _exit_summary(exits: dict, done: np.ndarray, names: tuple[str, ...]) -> dict:
    """Accuracy and where requests left, over completed requests.

    ``accuracy`` is the fraction whose answer is the true label; ``agreement`` the
    fraction whose answer equals the model's final exit's (what Apparate calls accuracy).
    """
    if not done.any():
        return {}
    stage = exits["exit_stage"][done]
    share = np.bincount(stage, minlength=len(names)) / stage.size
    return {
        "accuracy": round(float(exits["correct"][done].mean()), 9),
        "agreement": round(float(exits["agrees"][done].mean()), 9),
        "exits": {
            "share": {name: round(float(x), 9) for name, x in zip(names, share)},
            "recalled": round(float((exits["answered_from"][done] < stage).mean()), 9),
            "mean_stages_paid": round(float(exits["stages_paid"][done].mean()), 9),
        },
    }


def _cluster_exits(results, done: np.ndarray) -> dict:
    """Per task and variant with exits, :func:`_exit_summary`'s ``exits`` over the
    completed requests that variant served."""
    out: dict = {}
    for task, exits in results.exits.items():
        for k, names in enumerate(results.exit_names[task]):
            served = done & (results.variant[task] == k)
            if names and served.any():
                out.setdefault(task, {})[results.variants[task][k]] = _exit_summary(exits, served, names)["exits"]
    return out


def summarize_cluster(results, accuracy: dict, slo: Optional[float] = None) -> dict:
    """The summary of a cluster run (:class:`sim.cluster.ClusterResults`) as plain JSON-able
    values, in the shape of :func:`summarize`'s where the figures are the same.

    ``accuracy[task][k]`` is the accuracy of the task's k-th variant. Over completed
    requests: ``accuracy`` is InfAdapter's *average accuracy* (each request's variant's
    accuracy, averaged over requests and, in a pipeline, over tasks), ``pipeline_accuracy``
    IPA's PAS (the product over tasks), and ``per_task`` each task's mean; a request
    served by a variant with exits scores its own answer (right or wrong, from the
    behaviour table) instead of the menu's figure, and the summary gains ``agreement``
    (with the variant's final exit; 1 for a plain variant, averaged over tasks) and
    ``exits`` (per task and variant, where requests left). Cost is the
    cores provisioned, integrated over the run (core-seconds), their mean over time and
    their peak (``peak_cores``: what a hard budget would have to admit, rolling changes
    included). ``tasks`` says, per task, where the time went (:func:`_task_summary`); for
    a one-task cluster its figures are those :func:`summarize` gives the same run served
    as a single model.
    """
    n = results.arrival.size
    done = results.status == COMPLETED
    latency = (results.finish - results.arrival)[done]
    violations = None
    if slo is not None and n:
        violations = round(float(((latency > slo).sum() + (n - int(done.sum()))) / n), 9)
    per_task, agreement = {}, {}
    for task in results.tasks:
        table = np.asarray(accuracy[task], dtype=float)
        per_task[task] = table[results.variant[task][done]] if done.any() else np.array([])
        exits = results.exits.get(task)
        if exits is not None and done.any():  # a request served with exits scores its own answer
            left = exits["exit_stage"][done] >= 0
            per_task[task] = np.where(left, exits["correct"][done], per_task[task])
            agreement[task] = np.where(left, exits["agrees"][done], True)
    stacked = np.vstack(list(per_task.values())) if done.any() else np.zeros((1, 0))
    cost = results.cost_core_seconds()
    duration = float(results.end_time)
    share = {task: {name: round(float((results.variant[task][done] == k).mean()), 9) if done.any() else None
                    for k, name in enumerate(results.variants[task])} for task in results.tasks}
    return {
        "requests": n,
        "completed": int(done.sum()),
        "dropped": int((results.status == DROPPED).sum()),
        "rejected": int((results.status == REJECTED).sum()),
        "rejections": dict(results.rejections),
        "throughput_rps": round(float(done.sum()) / duration, 6) if duration > 0 else None,
        **keeping_up(results.arrival, results.finish),
        "latency_ms": _latency_ms(latency),
        "slo_ms": None if slo is None else slo * 1e3,
        "slo_violation_rate": violations,
        "accuracy": round(float(stacked.mean()), 9) if stacked.size else None,
        "pipeline_accuracy": round(float(stacked.prod(axis=0).mean()), 9) if stacked.size else None,
        "per_task_accuracy": {t: round(float(a.mean()), 9) if a.size else None for t, a in per_task.items()},
        "variant_share": share,
        **({"agreement": round(float(np.mean([a.mean() for a in agreement.values()])), 9),
            "exits": _cluster_exits(results, done)} if agreement else {}),
        "cost": {"core_s": round(cost, 6), "mean_cores": round(cost / duration, 6) if duration > 0 else None,
                 "peak_cores": results.peak_cores(),
                 # with a serving host (sim.host): the share of the run it spent taking requests in and launching
                 **({} if results.host_busy_s is None or not duration
                    else {"host_utilisation": round(results.host_busy_s / duration, 6)})},
        "replicas_started": len(results.replicas),
        "plans": len(results.plans),
        "duration_s": round(duration, 6),
        "tasks": {task: _task_summary(results, task) for task in results.tasks},
    }


def _task_summary(results, task: str) -> dict:
    """Where a pipeline's time goes: at ``task``, the requests it served and dropped, their
    time there (``latency_ms``, from reaching it to its answer, as :func:`summarize`
    counts a single-model run's) and the part of it spent queued (``wait_ms``), its
    batches and their mean items."""
    stage = results.stages[task]
    served = stage.served()
    reached = results.reached(task)[served]
    items = int(served.sum() if results.size is None else results.size[served].sum())
    return {
        "completed": int(served.sum()),
        "dropped": int(((results.status == DROPPED) & (results.dropped_at == results.tasks.index(task))).sum()),
        "latency_ms": _latency_ms(stage.finish[served] - reached),
        "wait_ms": _latency_ms(stage.start[served] - reached),
        "batches": stage.batches,
        "mean_batch_items": round(items / stage.batches, 6) if stage.batches else None,
    }
