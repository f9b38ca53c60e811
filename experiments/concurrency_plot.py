"""The plot of a concurrency sweep: throughput against p99 latency, as perf_analyzer's users draw it.

A sweep that varies ``load.clients`` (closed-loop clients, :mod:`experiments.load_specs`)
gets ``plots/concurrency.png``: the clients' throughput (requests/s) against their p99
latency (ms), one line per setting of the sweep's other keys (a swept count of instances
or replicas reads "2 instances"), each point labelled with its concurrency and averaged
over seeds (:func:`experiments.seeds.by_point`). Past some
concurrency more clients only queue: throughput stops growing while p99 keeps rising. The
*knee* marks where that starts: the first concurrency from which the next one in the
sweep adds less than :data:`KNEE_GAIN` throughput per doubling of the clients, while p99
grows. Per doubling, so that a sweep of 1, 2, 4, ... and one of 1, 3, 9, ... find the same
knee: the gain of a step from ``c`` to ``c'`` clients is ``(X'/X) ** (1 / log2(c'/c)) - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import seeds, store
from .figures import plain_log, save_figure

CLIENTS = "load.clients"
THROUGHPUT, P99 = "client_throughput_rps", "client_p99_ms"
KNEE_GAIN = 0.05  # throughput growth per doubling of the clients below which more clients only queue
COUNTS = {"serving.instances": "instance", "serving.replicas": "replica"}  # swept counts, labelled "2 instances"
MARKERS, STYLES = "osD^v", ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Curve:
    """One line of the plot: a setting of the other swept keys (``label``), its
    concurrencies in increasing order, their mean throughput and p99, and the index of
    its knee (None where the sweep never reaches one)."""

    label: str
    clients: np.ndarray
    throughput: np.ndarray
    p99: np.ndarray
    knee: Optional[int]


def knee(clients: np.ndarray, throughput: np.ndarray, p99: np.ndarray, gain: float = KNEE_GAIN) -> Optional[int]:
    """The index of the first concurrency from which the next adds less than ``gain``
    throughput per doubling of the clients while p99 grows (module docstring), or None."""
    for i in range(len(clients) - 1):
        doublings = np.log2(clients[i + 1] / clients[i])
        growth = (throughput[i + 1] / throughput[i]) ** (1 / doublings) - 1
        if growth < gain and p99[i + 1] > p99[i]:
            return i
    return None


def curves(results: pd.DataFrame) -> list[Curve]:
    """The lines of a results table whose sweep varies ``load.clients`` (empty if it does
    not, or its runs have no client figures)."""
    if CLIENTS not in results.columns or THROUGHPUT not in results.columns:
        return []
    points = seeds.by_point(results)
    if points.empty or points[CLIENTS].nunique() < 2 or THROUGHPUT not in points or P99 not in points:
        return []
    others = [key for key in store.swept_keys(results.columns) if key != CLIENTS]
    lines = []
    for values, group in points.groupby(others, sort=False) if others else [((), points)]:
        values = values if isinstance(values, tuple) else (values,)
        group = group.assign(clients=group[CLIENTS].astype(float)).sort_values("clients")
        clients, throughput, p99 = (group[c].to_numpy(float) for c in ("clients", THROUGHPUT, P99))
        label = ", ".join(_setting(key, value) for key, value in zip(others, values)) or "all runs"
        lines.append(Curve(label, clients, throughput, p99, knee(clients, throughput, p99)))
    return lines


def _setting(key: str, value) -> str:
    """A line's label for one swept key: ``2 instances`` for a count of :data:`COUNTS`,
    else ``key=value``."""
    try:
        count = float(value)
    except (TypeError, ValueError):
        count = math.nan
    if key not in COUNTS or not count.is_integer():
        return f"{key}={value}"
    return f"{count:g} {COUNTS[key]}" + ("" if count == 1 else "s")


def concurrency_plot(results: pd.DataFrame, target: Path) -> bool:
    """Draw ``target`` for a concurrency sweep; returns whether there was one to draw."""
    lines = curves(results)
    if not lines:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, curve in enumerate(lines):
        shown = curve.label if curve.knee is None else f"{curve.label}: knee at {curve.clients[curve.knee]:g} clients"
        # a style of its own per line: two settings that serve alike (a second instance that never
        # gets a batch of its own) draw one over the other, and both must stay visible
        [line] = ax.plot(curve.p99, curve.throughput, marker=MARKERS[i % len(MARKERS)], ms=4, lw=1.3,
                         ls=STYLES[i % len(STYLES)], label=shown)
        for c, x, y in zip(curve.clients, curve.p99, curve.throughput):
            ax.annotate(f"{c:g}", (x, y), textcoords="offset points", xytext=(4, -9), fontsize=7)
        if curve.knee is not None:
            ax.scatter([curve.p99[curve.knee]], [curve.throughput[curve.knee]], s=140, facecolors="none",
                       edgecolors=line.get_color(), linewidths=1.6, zorder=4)
    ax.scatter([], [], s=140, facecolors="none", edgecolors="grey", label=(
        f"knee: throughput grows < {KNEE_GAIN:.0%} per doubling of clients after it, p99 grows"))
    plain_log(ax, "x")
    ax.set_xlabel("p99 latency seen by the clients (ms)")
    ax.set_ylabel("throughput (requests/s)")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")  # throughput rises with p99, then flattens: lower right stays empty
    ax.set_title("Concurrency sweep: throughput against p99, points labelled with their clients\n"
                 "(mean over seeds)", fontsize=9)
    save_figure(fig, target)
    return True
