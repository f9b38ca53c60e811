"""Summaries of a run, computed from the per-request table only.

Latency is ``finish - arrival`` of completed requests. A request that was dropped or
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
    return {
        "requests": n,
        "completed": completed,
        "dropped": int((req.status == DROPPED).sum()),
        "rejected": int((req.status == REJECTED).sum()),
        "throughput_rps": round(completed / span, 6) if span > 0 else None,
        "latency_ms": {"mean": _ms(latency), "p50": _ms(latency, 50),
                       "p90": _ms(latency, 90), "p99": _ms(latency, 99)},
        "slo_ms": None if slo is None else slo * 1e3,
        "slo_violation_rate": violations,
        "accuracy": None,
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
