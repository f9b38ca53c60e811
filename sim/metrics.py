"""Summaries of a run, computed from the per-request table only.

Latency is ``finish - arrival`` of completed requests (with exits, ``finish`` is when
the request's exit answered). A request that was dropped or
rejected counts as an SLO violation: a client that got no answer did not get it in time.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .records import COMPLETED, DROPPED, REJECTED, Results


def _ms(values: np.ndarray, q: Optional[float] = None) -> Optional[float]:
    if not values.size:
        return None
    value = values.mean() if q is None else np.percentile(values, q)
    return round(float(value) * 1e3, 6)


def summarize(results: Results, slo: Optional[float] = None) -> dict:
    """The run's summary as plain JSON-able values (latencies in ms, times in s).

    ``slo`` (seconds) enables ``slo_violation_rate``; without it that key is ``None``.
    """
    req = results.requests
    n = len(req)
    done = req.status == COMPLETED
    latency = (req.finish - req.arrival)[done]
    completed = int(done.sum())
    span = float(req.finish[done].max() - req.arrival.min()) if completed else 0.0
    provisioned = results.replicas * results.end_time
    busy = float(results.busy_time.sum())
    violations = None
    if slo is not None and n:
        violations = round(float(((latency > slo).sum() + (n - completed)) / n), 9)
    summary = {
        "requests": n,
        "completed": completed,
        "dropped": int((req.status == DROPPED).sum()),
        "rejected": int((req.status == REJECTED).sum()),
        "throughput_rps": round(completed / span, 6) if span > 0 else None,
        "latency_ms": {"mean": _ms(latency), "p25": _ms(latency, 25), "p50": _ms(latency, 50),
                       "p90": _ms(latency, 90), "p95": _ms(latency, 95), "p99": _ms(latency, 99)},
        "slo_ms": None if slo is None else slo * 1e3,
        "slo_violation_rate": violations,
        "accuracy": None,
        "agreement": None,
        "cost": {
            "provisioned_accelerator_s": round(provisioned, 6),
            "busy_accelerator_s": round(busy, 6),
            "utilisation": round(busy / provisioned, 6) if provisioned > 0 else None,
        },
        "batches": results.batches,
        "mean_batch_items": round(float(req.size[done].sum()) / results.batches, 6) if results.batches else None,
        "replicas": results.replicas,
        "duration_s": round(results.end_time, 6),
        "rejections": dict(results.rejections),
        # look-ups of a batch size the profile does not cover, per "stage@batch size"
        "profile_out_of_range": {f"{stage}@{size}": count
                                 for (stage, size), count in sorted(results.out_of_range.items())},
    }
    if req.exits:
        summary.update(_exit_summary(req.exits, done, results.exit_names))
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
