"""The figure kit the plots share, and the figures of one run.

Shared: a latency CDF line drawn from at most :data:`MAX_CDF_POINTS` quantiles, log axes
that read as plain numbers (``5``, ``20``, never ``4×10⁰``), the SLO drawn as a red dashed
line, units of swept keys, swept values read back from results.csv, a Pareto front.

Per run: ``timeseries-<run>.png`` (latency p50/p99 with the SLO, offered load, throughput
and drops over time), ``cluster-<run>.png`` (load, cores per task, variant mix) and
``controller-<run>.png`` (an online exit policy's thresholds and ramps). The figures of a
whole sweep, averaged over seeds, are drawn by :mod:`.plots`.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from servesim.sim.sketch import LatencySketch  # noqa: E402

from . import store  # noqa: E402
from .names import label as folder_label  # noqa: E402

MAX_CDF_POINTS = 2000
PLOTTED = ["arrival", "finish", "status"]  # the only request columns the plots read
SLO_STYLE = {"color": "tab:red", "ls": "--", "lw": 1.2}
# units of swept keys, by their last part (``trace.rate`` -> rate); a key ending in _ms or
# _s names its own unit
UNITS = {"rate": "requests/s", "rates": "requests/s", "duration": "s", "count": "requests", "budget": "cores",
         "cores": "cores", "replicas": "replicas", "max_batch": "requests", "batch": "requests"}


def unit(key: str) -> str:
    """The unit of a swept key's values, '' where it has none (a threshold) or names its own."""
    return UNITS.get(key.rsplit(".", 1)[-1], "")


def plain_log(ax, axis: str = "y") -> None:
    """A log axis whose ticks read as plain numbers: matplotlib labels a narrow log range
    with minor ticks such as ``4×10⁰``, which nobody reads as 4."""
    getattr(ax, f"set_{axis}scale")("log")
    plain_ticks(getattr(ax, f"{axis}axis"))


def plain_ticks(ticks) -> None:
    """Label a log axis's decades and its 2s and 5s (``0.02``, ``50``) as plain numbers."""
    ticks.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ticks.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if v > 0 and f"{v:.0e}"[0] in "25" else ""))


def slo_line(ax, slo_ms, axis: str = "x") -> None:
    """The SLO as a red dashed line across ``ax`` (vertical on a latency x axis)."""
    if slo_ms is not None and np.isfinite(slo_ms):
        (ax.axvline if axis == "x" else ax.axhline)(slo_ms, label=f"SLO {slo_ms:g} ms", **SLO_STYLE)


def _completed(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == 0]


def latencies_ms(tables: list[pd.DataFrame]) -> np.ndarray:
    """Sorted latencies (ms) of the completed requests of ``tables``, pooled."""
    done = [_completed(t) for t in tables]
    return np.sort(np.concatenate([(t["finish"] - t["arrival"]).to_numpy() for t in done] or [np.empty(0)]) * 1e3)


def cdf_line(ax, lat: np.ndarray, points: int = MAX_CDF_POINTS, **style) -> None:
    """The empirical CDF of the sorted ``lat``, drawn through at most ``points`` of its quantiles."""
    if lat.size:
        pick = np.unique(np.linspace(0, lat.size - 1, min(lat.size, points)).astype(int))
        ax.plot(lat[pick], (pick + 1) / lat.size, lw=1.4, **style)


def sketch_cdf_line(ax, sketch: LatencySketch, **style) -> None:
    """The CDF of a latency sketch (s), in ms, through its buckets (latencies above 0)."""
    values, fractions = sketch.cdf()
    keep = values > 0
    if keep.any():
        ax.plot(values[keep] * 1e3, fractions[keep], lw=1.4, **style)


def timeseries(name: str, table: pd.DataFrame, target: Path, slo_ms: float | None = None, bins: int = 120) -> None:
    """One run over time, from its request table: p50 and p99 latency of the requests
    completed in each bin (with the SLO), and the offered load, the throughput and the
    drops per second."""
    done = _completed(table)
    end = float(np.nanmax(table["finish"])) if len(table) else 0.0
    if end <= 0:
        return
    edges = np.linspace(0.0, end, bins + 1)
    width = edges[1] - edges[0]
    which = np.clip(np.digitize(done["finish"], edges) - 1, 0, bins - 1)
    lat = (done["finish"] - done["arrival"]).to_numpy() * 1e3
    frame = pd.DataFrame({"bin": which, "lat": lat})
    grouped = frame.groupby("bin")["lat"]
    mids = (edges[:-1] + edges[1:]) / 2
    rates = {"offered (arrivals/s)": np.histogram(table["arrival"], edges)[0] / width,
             "throughput (completed/s)": np.bincount(which, minlength=bins) / width,
             "dropped (requests/s)": np.histogram(table.loc[table["status"] == 1, "finish"], edges)[0] / width}
    _timeseries(name, (mids, grouped.quantile(0.5).reindex(range(bins)), grouped.quantile(0.99).reindex(range(bins))),
                (mids, rates), "time since the first arrival (s)", target, slo_ms)


def streamed_timeseries(name: str, counters: pd.DataFrame, latency: pd.DataFrame, target: Path,
                        slo_ms: float | None = None, bins: int = 600) -> None:
    """One run over time, from what a run that streamed its table kept
    (sim.summary_stream): its counters per interval of arrival time (``intervals.parquet``,
    summed into at most ``bins`` bins) and its latency percentiles per sketch interval
    (``latency_intervals.parquet``), both by arrival time."""
    if counters.empty:
        return
    start = counters["start_s"].to_numpy()
    width = float(start[1] - start[0]) if start.size > 1 else 1.0
    per_bin = -(-start.size // bins)  # intervals per bin
    group = np.arange(start.size) // per_bin
    summed = counters.groupby(group).sum(numeric_only=True)
    mids = start[::per_bin] + per_bin * width / 2
    rates = {label: summed[column].to_numpy() / (per_bin * width)
             for label, column in (("offered (arrivals/s)", "arrivals"), ("throughput (completed/s)", "completed"),
                                   ("dropped (requests/s)", "dropped"))}
    lat_mids = latency["start_s"] + (latency["end_s"] - latency["start_s"]) / 2
    _timeseries(name, (lat_mids, latency["p50_ms"], latency["p99_ms"]), (mids, rates),
                "arrival time (s)", target, slo_ms)


def _timeseries(name: str, latency: tuple, rates: tuple, xlabel: str, target: Path, slo_ms: float | None) -> None:
    """The two panels of a run's timeseries: ``latency`` (x, p50, p99 in ms) with the SLO,
    and ``rates`` (x, {label: requests/s}; drops only where there are some)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    x, p50, p99 = latency
    top.plot(x, p50, label="p50")
    top.plot(x, p99, label="p99")
    slo_line(top, slo_ms, axis="y")
    top.set_ylabel("latency (ms, log scale)")
    plain_log(top, "y")
    top.legend(fontsize=8)
    top.grid(True, which="both", alpha=0.3)
    x, series = rates
    for (label, values), style in zip(series.items(), ({"color": "grey", "lw": 1}, {}, {"color": "tab:red"})):
        if not label.startswith("dropped") or values.any():
            bottom.plot(x, values, label=label, **style)
    bottom.set_ylabel("rate (requests/s)")
    bottom.set_xlabel(xlabel)
    bottom.legend(fontsize=8)
    bottom.grid(True, alpha=0.3)
    fig.suptitle(name, fontsize=9)
    save_figure(fig, target)


def cluster_timeseries(name: str, series: pd.DataFrame, target: Path) -> None:
    """A cluster run over time: the offered load, the cores provisioned per task, and
    per task the cores of each variant (stacked): what the adapter did and when."""
    tasks = [c.split(":", 1)[1] for c in series.columns if c.startswith("cores:") and "/" not in c]
    fig, axes = plt.subplots(2 + len(tasks), 1, figsize=(8, 2.2 * (2 + len(tasks))), sharex=True)
    t = series["time_s"]
    axes[0].plot(t, series["load_rps"], color="grey", lw=1)
    axes[0].set_ylabel("load (requests/s)")
    for task in tasks:
        axes[1].step(t, series[f"cores:{task}"], where="post", label=task)
    axes[1].set_ylabel("cores")
    axes[1].legend(fontsize=7)
    for ax, task in zip(axes[2:], tasks):
        columns = [c for c in series.columns if c.startswith(f"cores:{task}/")]
        ax.stackplot(t, *(series[c] for c in columns), labels=[c.split("/", 1)[1] for c in columns], step="post")
        ax.set_ylabel(f"{task}\ncores by variant", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    axes[-1].set_xlabel("time (s)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.suptitle(name, fontsize=9)
    save_figure(fig, target)


def front(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both (lower latency, higher accuracy), by latency."""
    order = np.lexsort((-accuracy, latency))
    best, keep = -np.inf, []
    for i in order:
        if accuracy[i] > best:
            keep.append(i)
            best = accuracy[i]
    return np.array(keep, dtype=int)


def controller(name: str, history: pd.DataFrame, end: float, target: Path) -> None:
    """An online exit policy's thresholds (top) and active ramps (bottom) over time; each
    row of ``history`` holds from its time until the next row's (or ``end``)."""
    times = history["time"].to_numpy(dtype=float)
    until = np.append(times[1:], max(end, times[-1]))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for column in [c for c in history.columns if c.startswith("threshold_")]:
        values = history[column].to_numpy(dtype=float)
        if np.isfinite(values).any():
            top.step(np.append(times, until[-1]), np.append(values, values[-1]), where="post",
                     label=column.removeprefix("threshold_"))
    top.set_ylabel("threshold")
    if top.get_legend_handles_labels()[0]:  # an online policy that never set a threshold has none
        top.legend(fontsize=7, title="exit", ncol=2)
    top.grid(True, alpha=0.3)
    for start, stop, ramps in zip(times, until, history["active_ramps"].fillna("").astype(str)):
        for ramp in filter(None, ramps.split(";")):
            bottom.plot([start, stop], [int(ramp)] * 2, color="tab:blue", lw=4, solid_capstyle="butt")
    bottom.set_ylabel("active ramp")
    bottom.set_xlabel("time (s)")
    bottom.grid(True, alpha=0.3)
    fig.suptitle(f"{name}: controller state", fontsize=9)
    save_figure(fig, target)


def value_label(value) -> str:
    """A swept value as a panel title shows it: as in the run folders' names."""
    return folder_label(swept_value(value))


LONGEST_SWEPT_VALUE = 2000  # characters: far more than any config's value, far less than parsing can choke on


def swept_value(value):
    """A swept value as results.csv spells it read back as data: JSON
    (``{"policy": "dynamic"}``) or, in folders written before results.csv spoke JSON, a
    Python literal (``{'policy': 'dynamic'}``); the text itself where it is neither.
    Neither parser calls anything; a hostile results.csv can still make one exhaust
    itself (deep nesting: RecursionError, MemoryError; a 5,000-digit number: ValueError),
    so long texts stay text and those errors are caught."""
    if not isinstance(value, str) or len(value) > LONGEST_SWEPT_VALUE:
        return value
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
    return value


def save_figure(fig, target: Path) -> None:
    with warnings.catch_warnings():  # a crowded figure keeps its default margins: say nothing
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    with store.atomic_path(target) as tmp:  # tight: a legend right of the axes is kept
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
