"""The sweep's answer on the console: one line per sweep point, its seeds averaged.

``servesim run`` ends with this table (not under ``--quiet``): per point the mean over
its seeds, ± the half-width of the 95% confidence interval where it has two seeds or
more, of p50 and p99 latency, the clients' throughput (closed-loop load), the SLO
violation rate (with an SLO), accuracy (runs with exits, clusters), cost (clusters; a
single model's where the points' costs differ) and the requests dropped. A long sweep shows the points no other point beats on every
figure shown, at most :data:`MAX_ROWS`, and says where the full table is
(``results_by_point.csv``, :func:`experiments.seeds.by_point`). A sweep with clients
(``load:``) then shows perf_analyzer's figures per point (:func:`perf_lines`), the
figures of ``perf_analyzer.csv`` (:mod:`experiments.perf_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .perf_table import CONCURRENCY, PERF_COLUMNS, REQUEST_RATE
from .seeds import mean_ci

MAX_ROWS = 50  # points listed one per line; a longer sweep lists the ones no other point beats
SAME_COST = 0.05  # a single model's costs within 5% of each other tell the points little apart


@dataclass(frozen=True)
class Column:
    figure: str  # results_by_point.csv's column of means
    header: str
    spec: str  # of the mean; the interval's is two significant digits
    scale: float = 1.0
    better: int = -1  # -1: lower is better, +1: higher


LATENCY = [Column("latency_p50_ms", "p50 ms", ".4g"), Column("latency_p99_ms", "p99 ms", ".4g")]
SLO = Column("slo_violation_rate", "SLO viol. %", ".3g", 100.0)
ACCURACY = Column("accuracy", "accuracy", ".4f", better=1)
DROPPED = Column("dropped", "dropped", ".4g")
THROUGHPUT = Column("client_throughput_rps", "req/s", ".4g", better=1)  # closed-loop and request-rate runs


def columns(points: pd.DataFrame, cluster: bool) -> list[Column]:
    """The figures shown: those the sweep has (and a single model's cost only where it
    differs between points)."""
    shown = list(LATENCY)
    has = {c for c in points.columns if points[c].notna().any()}
    if THROUGHPUT.figure in has:  # clients that wait for answers: how much they get through is the answer
        shown.append(THROUGHPUT)
    if SLO.figure in has:
        shown.append(SLO)
    if ACCURACY.figure in has:
        shown.append(ACCURACY)
    if "cost_money" in has:
        shown.append(Column("cost_money", "cost", ".4g"))
    elif "cost" in has:
        cost = points["cost"].astype(float)
        if cluster or cost.max() > (1 + SAME_COST) * cost.min():
            shown.append(Column("cost", "core-s" if cluster else "accel-s", ".4g"))
    return shown + [DROPPED]


def unbeaten(points: pd.DataFrame, shown: list[Column]) -> np.ndarray:
    """Whether each point is one no other point beats on every figure ``shown`` (at
    least as good on all, better on one; a missing figure counts as the worst)."""
    score = np.column_stack([points[c.figure].astype(float).to_numpy() * -c.better for c in shown])  # lower: better
    score = np.where(np.isnan(score), np.inf, score)
    at_least = (score[:, None, :] <= score[None, :, :]).all(axis=2)  # [i, j]: i at least as good as j
    better = (score[:, None, :] < score[None, :, :]).any(axis=2)
    return ~(at_least & better).any(axis=0)


def lines(points: pd.DataFrame, cluster: bool, where: str) -> list[str]:
    """The table as text lines: a title, a header, a line per point (all of them, or in
    a long sweep the unbeaten ones), and a note where points were left out."""
    if points.empty:
        return []
    shown = columns(points, cluster)
    rows = points
    if len(points) > MAX_ROWS:
        rows = points[unbeaten(points, shown)].head(MAX_ROWS)
    seeds = sorted(set(points["seeds"]))
    several = seeds[-1] > 1
    head = ["point"] + (["seeds"] if len(seeds) > 1 else []) + [c.header for c in shown]
    body = [[row["point"]] + ([str(row["seeds"])] if len(seeds) > 1 else [])
            + [mean_ci(row[c.figure] * c.scale, row[f"{c.figure}_ci95"] * c.scale, c.spec) for c in shown]
            for _, row in rows.iterrows()]
    spread = f"mean ± 95% CI over {' or '.join(map(str, seeds))} seeds" if several else "one seed each"
    out = [f"{len(points)} sweep point(s), {spread}:", *aligned(head, body)]
    if len(rows) < len(points):
        out.append(f"({len(rows)} of {len(points)} points shown: those no other point beats on every figure above; "
                   f"all of them in {where})")
    return out


# perf_analyzer's columns as the console shows them (short: the line has 15 figures)
PERF_HEADERS = {CONCURRENCY: "conc.", REQUEST_RATE: "rate/s", "Inferences/Second": "infer/s", "Client Send": "send",
                "Network+Server Send/Recv": "network", "Server Queue": "queue", "Server Compute Input": "input",
                "Server Compute Infer": "infer", "Server Compute Output": "output", "Client Recv": "recv",
                "p50 latency": "p50", "p90 latency": "p90", "p95 latency": "p95", "p99 latency": "p99",
                "Avg latency": "avg"}


def perf_lines(table: pd.DataFrame, where: str) -> list[str]:
    """perf_analyzer's table (:func:`experiments.perf_table.perf_table`) as text lines: a
    title, a header and a line per point (at most :data:`MAX_ROWS`); a figure not measured
    shows as ``-``."""
    if table.empty:
        return []
    shown = [c for c in (CONCURRENCY, REQUEST_RATE) if c in table.columns] + list(PERF_COLUMNS)
    head = ["point"] + [PERF_HEADERS[c] for c in shown]
    body = [[row["point"]] + ["-" if pd.isna(row[c]) else format(row[c], ".5g") for c in shown]
            for _, row in table.head(MAX_ROWS).iterrows()]
    out = [f"perf_analyzer's figures per point (its median run; times in usec, as in {where}):", *aligned(head, body)]
    if len(table) > MAX_ROWS:
        out.append(f"({MAX_ROWS} of {len(table)} points shown; all of them in {where})")
    return out


def aligned(head: list[str], body: list[list[str]]) -> list[str]:
    """A header and rows as lines of columns: the first left-aligned, the rest right."""
    widths = [max(len(text) for text in column) for column in zip(head, *body)]
    return ["  ".join(text.ljust(w) if i == 0 else text.rjust(w) for i, (text, w) in enumerate(zip(line, widths)))
            .rstrip() for line in [head, *body]]
