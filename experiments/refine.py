"""Adaptive refinement of a sweep: run the midpoints where a front takes a large step.

A fixed grid of λ (or of thresholds) samples a front: where accuracy and latency move
fast with the parameter, two neighbours can sit 10 points of accuracy apart, and any
rival point that falls between them looks like a win it may not be. Refinement draws the
front instead: it compares each pair of neighbouring values (means over seeds), and where
a pair differs by more than ``accuracy_step`` in accuracy *and* by more than
``latency_step`` (relative) in one of its ``latencies`` it asks for the midpoint, with every seed; the
runner repeats this for ``rounds`` rounds at most (:class:`~experiments.config.RefineConfig`).

Which pairs are neighbours: runs whose other swept values are equal and whose values of
the refined key differ only in the bisected field (``ttamer`` at λ 0.6 and 0.65 in one
workload). Everything here reads finished summaries; a failed run is no neighbour.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .config import RefineConfig, Run, is_number


def _field(value: Any, fields: list[str]) -> Optional[str]:
    """The first of ``fields`` that ``value`` (a swept value) holds as a number."""
    if not isinstance(value, dict):
        return None
    return next((field for field in fields if is_number(value.get(field))), None)


def _figures(summary: dict, latencies: list[str]) -> Optional[tuple[float, ...]]:
    """(accuracy, each latency) of a finished run's summary."""
    figures = [summary.get("accuracy")] + [(summary.get("latency_ms") or {}).get(x) for x in latencies]
    return None if None in figures else tuple(map(float, figures))


def midpoints(refine: RefineConfig, runs: list[Run], summaries: dict[str, dict]) -> list[dict[str, Any]]:
    """The sweep points (``params``) to run next: the midpoint of every pair of
    neighbours whose step is large in both accuracy and latency. Midpoints are rounded
    to 6 significant digits (run folders are named after them) and never repeat a value
    already run."""
    lines: dict[tuple, dict] = {}  # (other params, value less the field, field) -> line
    for run in runs:
        value = run.params.get(refine.key)
        field = _field(value, refine.fields)
        figures = _figures(summaries.get(run.name) or {}, refine.latencies)
        if field is None:
            continue
        others = tuple((k, repr(v)) for k, v in run.params.items() if k != refine.key)
        rest = repr(sorted((k, repr(v)) for k, v in value.items() if k != field))
        line = lines.setdefault((others, rest, field), {"params": run.params, "points": {}})
        points = line["points"].setdefault(float(value[field]), [])
        if figures is not None:
            points.append(figures)
    wanted = []
    for (_, _, field), line in lines.items():
        at = sorted(line["points"])
        means = {x: np.mean(line["points"][x], axis=0) for x in at if line["points"][x]}
        for a, b in zip(at, at[1:]):
            if a not in means or b not in means:
                continue
            (acc_a, *lat_a), (acc_b, *lat_b) = means[a], means[b]
            wide = (abs(acc_b - acc_a) > refine.accuracy_step
                    and any(abs(y - x) > refine.latency_step * min(x, y) for x, y in zip(lat_a, lat_b)))
            middle = float(f"{(a + b) / 2:.6g}")
            if wide and a < middle < b:
                params = dict(line["params"])
                params[refine.key] = {**params[refine.key], field: middle}
                wanted.append(params)
    return wanted
