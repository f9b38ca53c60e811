"""The plots of an experiment folder: its sweep averaged over seeds, drawn to read as
well at 200 runs as at 4.

A sweep is read as *factors*: each swept key, and each field of a swept mapping
(``serving.batching`` gives ``policy``, ``max_batch``, ``max_wait_ms``), that takes two values
or more over the sweep's points (a point: its runs under every seed). Each gets a role:

* **family**: the first named choice (the name of a swept policy, adapter or router; a
  swept group's label where there is none): one colour per family;
* **shade**: the other fields of the family's key (``max_batch``, a threshold, a λ): a
  sequential shade of the family's colour, light to dark in sorted order;
* **x**: the numeric swept key with the most values (three or more), set at every point
  (``trace.rate``): the x axis of the comparison;
* **facets**: the rest: one panel, or one row of panels, each.

A point's figures are the means over its seeds with the half-width of their 95%
confidence interval (Student's t, :func:`.seeds.by_point`); drops are a per cent of
each run's requests, SLO violations a per cent of its requests.

Files in ``OUT/plots``:

* ``comparison.png`` (``cluster_comparison.png`` for cluster runs): each figure per point,
  one panel per figure: lines against x with their 95% band, a row per facet; without
  an x, a dot per point with its 95% interval; with more than :data:`MAX_ROWS` points, a
  heatmap per figure (families × shades down, facets across), means only;
* ``latency_cdf.png``: the latency CDF of every point (its seeds' completed requests
  pooled), one panel per facet and x value, the SLO drawn;
* ``pareto.png`` (runs with accuracy): accuracy against p50 and p99 latency, a front and
  its 95% band per family, a row per facet;
* ``concurrency.png`` (a sweep of ``load.clients``): throughput against p99, the knee
  marked (:mod:`experiments.concurrency_plot`).
* ``cluster_tasks.png`` (cluster runs): per point, the mean time a served request spent
  at each task, queued and in its batch, stacked;
* per run, for the first :data:`MAX_PER_RUN` runs: ``timeseries-<run>.png`` or
  ``cluster-<run>.png``, and ``controller-<run>.png`` for every run with an online exit
  policy (:mod:`.figures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D

from servesim.sim.sketch import LatencySketch

from . import seeds, store
from .concurrency_plot import concurrency_plot
from .figures import (PLOTTED, SLO_STYLE, cdf_line, cluster_timeseries, controller, front, latencies_ms, plain_log,
                      plain_ticks, save_figure, sketch_cdf_line, streamed_timeseries, swept_value, timeseries, unit,
                      value_label)
from .names import GROUP_LABEL

MAX_ROWS = 40  # points a dot plot lists one per row; more are drawn as heatmaps
MAX_FACET_ROWS = 6  # rows of line panels; more facets are drawn as heatmaps
MAX_LEGEND = 20  # entries a legend lists one by one; more are listed by family
MAX_CDF_PANELS = 25
CDF_POINTS = 400  # quantiles per CDF line: smooth at print size, quick at 200 lines
MAX_PER_RUN = 12  # runs drawn one figure each (about half a second apiece); a large sweep is read through its summaries
LONGEST_LABEL = 60  # characters of a label on a plot
FAMILY_MAPS = ("Blues", "Oranges", "Greens", "Purples", "Greys", "PuRd", "YlOrBr", "BuGn", "Reds", "GnBu")


@dataclass(frozen=True)
class Metric:
    column: str
    label: str  # with its unit
    log: bool = False  # latencies span decades
    share: bool = False  # a per cent: its axis starts at 0


SERVING = (Metric("latency_p50_ms", "p50 latency (ms)", log=True), Metric("latency_p99_ms", "p99 latency (ms)", log=True),
           Metric("throughput_rps", "throughput (requests/s)"), Metric("dropped", "dropped (% of requests)", share=True),
           Metric("slo_violation_rate", "SLO violations (% of requests)", share=True), Metric("accuracy", "accuracy (fraction)"))
CLUSTER = (Metric("slo_violation_rate", "SLO violations (% of requests)", share=True), Metric("cost", "cost (core-seconds)"),
           Metric("accuracy", "average accuracy (fraction)"), Metric("mean_cores", "mean cores (cores)"),
           Metric("latency_p99_ms", "p99 latency (ms)", log=True), Metric("dropped", "dropped (% of requests)", share=True))


@dataclass(frozen=True)
class Factor:
    """One swept quantity: its key (``serving.batching.max_batch``), the results.csv
    column it comes from, and its value at each point (None where a point has none)."""
    key: str
    column: str
    values: tuple

    @property
    def numeric(self) -> bool:
        known = [v for v in self.values if v is not None]
        return bool(known) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in known)


@dataclass
class Sweep:
    """The points of a sweep, seed-averaged (:func:`.seeds.by_point`'s table), each with
    its ``family``, ``series`` (its label in a legend), ``colour``, ``facet`` (the panel
    title of its facets), ``panel`` (its facets and x), ``x``, ``label`` and ``slo_ms``;
    ``runs`` maps each point to its runs."""
    points: pd.DataFrame
    runs: dict[str, list[str]]
    x: str | None
    shades: list[str]  # keys of the shade factors, for a legend's title


def _scalar(value):
    """A factor's value: a number or a short text, None where the point has none."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return value_label(value) if isinstance(value, (dict, list, tuple)) else str(value)


def factors(first: pd.DataFrame) -> list[Factor]:
    """The factors of a sweep, from one row per point: each swept key, or each field of
    a swept mapping, that takes two values or more and does not just repeat another's."""
    found, partitions = [], set()
    for column in store.swept_keys(first.columns):
        values = [swept_value(v) for v in first[column]]
        if any(isinstance(v, dict) for v in values):  # a policy: {name: ...} or its bare name
            fields = [v if isinstance(v, dict) else {"name": v} for v in values]
            if all(GROUP_LABEL in f for f in fields):
                candidates = [Factor(column, column, tuple(str(f[GROUP_LABEL]) for f in fields))]
            else:
                keys = list(dict.fromkeys(k for f in fields for k in f))
                candidates = [Factor(f"{column}.{k}", column, tuple(_scalar(f.get(k)) for f in fields)) for k in keys]
        else:
            candidates = [Factor(column, column, tuple(_scalar(v) for v in values))]
        for factor in candidates:
            partition = tuple(pd.factorize(pd.Series([repr(v) for v in factor.values]))[0])
            if len(set(partition)) > 1 and partition not in partitions:
                found.append(factor)
                partitions.add(partition)
    return found


def _text(key: str, value, with_unit: bool = True) -> str:
    """``max_batch=8``, ``rate=1600 requests/s``."""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    suffix = f" {unit(key)}" if with_unit and unit(key) and value is not None else ""
    return f"{key.rsplit('.', 1)[-1]}={shown}{suffix}"


def _cut(text: str) -> str:
    return text if len(text) <= LONGEST_LABEL else text[:LONGEST_LABEL - 1] + "…"


def _sort_key(values: tuple) -> tuple:
    """Values in a sortable order: missing first, then numbers, then texts."""
    return tuple((v is not None, isinstance(v, str), v if v is not None else 0) for v in values)


def _roles(found: list[Factor]) -> tuple[Factor | None, list[Factor], Factor | None, list[Factor]]:
    """(family, shades, x, facets) of a sweep's factors (see the module docstring)."""
    named = [f for f in found if not f.numeric]
    family = next((f for f in named if f.key != f.column), named[0] if named else None)
    xs = [f for f in found if f.numeric and None not in f.values and len(set(f.values)) >= 3
          and (family is None or f.column != family.column)]
    x = max(xs, key=lambda f: len(set(f.values)), default=None)
    if family is not None:
        series_column = family.column
    else:  # no named choice: the last swept key other than x is shaded
        series_column = next((f.column for f in reversed(found) if f is not x), None)
    shades = [f for f in found if f.column == series_column and f is not family]
    facets = [f for f in found if f.column != series_column and f is not x]
    return family, shades, x, facets


def per_cent(ok: pd.DataFrame) -> pd.DataFrame:
    """Runs with drops and SLO violations as per cents of each run's requests, so that
    their means and intervals over seeds read in the comparison's units."""
    return ok.assign(dropped=100 * ok["dropped"] / ok["requests"].where(ok["requests"] > 0),
                     slo_violation_rate=100 * ok["slo_violation_rate"])


def describe(results: pd.DataFrame, slo: dict[str, float | None]) -> Sweep:
    """The finished runs of ``results`` as a :class:`Sweep`; ``slo`` maps runs to their SLO (ms)."""
    ok = results[results["status"] == "ok"]
    points = seeds.by_point(per_cent(ok))
    grouped = ok.groupby(seeds.points_of(ok), sort=False)
    runs = {p: frame["run"].tolist() for p, frame in grouped}
    first = grouped.head(1).set_axis(list(runs)).loc[points["point"]]
    found = factors(first)
    family, shades, x, facets = _roles(found)
    n = len(points)
    points["family"] = [str(v) for v in family.values] if family else ["all points"] * n
    shade_values = list(zip(*(f.values for f in shades))) if shades else [()] * n
    points["series"] = [_cut(" ".join([*([fam] if family else []),
                                       *(_text(f.key, v, with_unit=False) for f, v in zip(shades, values) if v is not None)])
                             or "all points") for fam, values in zip(points["family"], shade_values)]
    points["facet"] = [", ".join(_text(f.key, v) for f, v in zip(facets, values)) for values in
                       (zip(*(f.values for f in facets)) if facets else [()] * n)]
    points["x"] = np.asarray(x.values, dtype=float) if x else np.nan
    points["panel"] = [_cut(", ".join(filter(None, [facet, _text(x.key, v) if x else ""])) or "all points")
                       for facet, v in zip(points["facet"], x.values if x else [None] * n)]
    points["facet"] = points["facet"].map(lambda t: _cut(t) if t else "")
    points["label"] = [_cut(f"{facet}: {series}" if facet else series)
                       for facet, series in zip(points["facet"], points["series"])]
    points["slo_ms"] = [slo.get(runs[p][0]) for p in points["point"]]
    points["colour"] = _colours(points["family"].tolist(), shade_values)
    order = sorted(range(n), key=lambda i: (list(dict.fromkeys(points["facet"])).index(points["facet"][i]),
                                            list(dict.fromkeys(points["family"])).index(points["family"][i]),
                                            _sort_key(shade_values[i]), points["x"][i]))
    return Sweep(points.iloc[order].reset_index(drop=True), runs, x.key if x else None, [f.key for f in shades])


def _colours(families: list[str], shade_values: list[tuple]) -> list:
    """One sequential colour map per family; a point's shade is the rank of its shade
    values among its family's, light to dark."""
    maps = {family: plt.get_cmap(FAMILY_MAPS[i % len(FAMILY_MAPS)]) for i, family in enumerate(dict.fromkeys(families))}
    ranks = {}
    for family in maps:
        distinct = sorted({v for f, v in zip(families, shade_values) if f == family}, key=_sort_key)
        ranks.update({(family, v): (0.75 if len(distinct) == 1 else 0.4 + 0.55 * i / (len(distinct) - 1))
                      for i, v in enumerate(distinct)})
    return [maps[f](ranks[f, v]) for f, v in zip(families, shade_values)]


def family_colour(sweep: Sweep, family: str):
    return plt.get_cmap(FAMILY_MAPS[list(dict.fromkeys(sweep.points["family"])).index(family) % len(FAMILY_MAPS)])(0.75)


def _slo(ax, pts: pd.DataFrame, axis: str) -> None:
    """The SLO of the points drawn in ``ax`` (one line per distinct value)."""
    for value in sorted({v for v in pts["slo_ms"] if v is not None and np.isfinite(v)}):
        (ax.axvline if axis == "x" else ax.axhline)(value, **SLO_STYLE)


def _legend(fig, sweep: Sweep, pts: pd.DataFrame, marker: str = "o", series: bool = True) -> None:
    """One legend for the figure, right of it: each series, or past :data:`MAX_LEGEND`
    of them each family (its shades then said in the title); the SLO."""
    series = pts.drop_duplicates("series") if series else pts.iloc[:0]
    if len(series) <= MAX_LEGEND:
        handles = [Line2D([], [], color=c, marker=marker, label=s) for s, c in zip(series["series"], series["colour"])]
        title = None
    else:
        handles = [Line2D([], [], color=family_colour(sweep, f), lw=3, label=_cut(f))
                   for f in dict.fromkeys(series["family"])]
        title = _cut("darker: larger " + ", ".join(k.rsplit(".", 1)[-1] for k in sweep.shades)) if sweep.shades else None
    slos = sorted({v for v in pts["slo_ms"] if v is not None and np.isfinite(v)})
    handles += [Line2D([], [], label=f"SLO {v:g} ms", **SLO_STYLE) for v in slos]
    if handles:
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=7, title=title,
                   title_fontsize=7, frameon=False)


def comparison(sweep: Sweep, metrics: tuple[Metric, ...], target: Path, title: str) -> None:
    """Each figure of ``metrics`` per point: lines against x, dots, or heatmaps (module docstring)."""
    pts = sweep.points
    shown = [m for m in metrics if m.column in pts and pts[m.column].notna().any()]
    if pts.empty or not shown:
        return
    facets = list(dict.fromkeys(pts["facet"]))
    banded = " with 95% interval" if (pts["seeds"] > 1).any() else ""
    if sweep.x and len(facets) <= MAX_FACET_ROWS:
        fig = _lines(sweep, shown, facets)
    elif len(pts) <= MAX_ROWS:
        fig = _dots(sweep, shown)
    else:
        fig, banded = _heatmaps(sweep, shown), ""
    fig.suptitle(f"{title}: mean over seeds{banded}")
    save_figure(fig, target)


def _wrapped(count: int, width: float, height: float, **shared):
    """``count`` panels of ``width`` x ``height`` inches, three across: the axes, in order, and the figure."""
    across = min(3, count)
    down = -(-count // across)
    fig, axes = plt.subplots(down, across, figsize=(width * across, height * down + 0.6), squeeze=False, **shared)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _style(ax, metric: Metric, values: pd.Series, axis: str) -> None:
    """A figure's axis: log for latencies (plain ticks), from 0 for a per cent."""
    if metric.log and (values > 0).all():
        plain_log(ax, axis)
    elif metric.share:
        getattr(ax, f"set_{axis}lim")(0)
    ax.tick_params(which="both", labelsize=7)


def _lines(sweep: Sweep, metrics: list[Metric], facets: list[str]):
    """Each figure against x, a line and its band per series; one row per figure, one
    column per facet (figures sharing their scale along the row), or wrapped three across
    for one facet."""
    pts = sweep.points
    if len(facets) == 1:
        fig, flat = _wrapped(len(metrics), 3.4, 2.8)
        cells = [(ax, metric, facets[0]) for ax, metric in zip(flat, metrics)]
    else:
        fig, axes = plt.subplots(len(metrics), len(facets), figsize=(3.2 * len(facets), 2.5 * len(metrics) + 0.6),
                                 squeeze=False, sharey="row", sharex=True)
        cells = [(ax, metric, facet) for row, metric in zip(axes, metrics) for ax, facet in zip(row, facets)]
        for ax, facet in zip(axes[0], facets):
            ax.set_title(facet, fontsize=8)
    xs = pts["x"].to_numpy()
    for ax, metric, facet in cells:
        here = pts[pts["facet"] == facet]
        for _, line in here.groupby("series", sort=False):
            line = line.sort_values("x")
            mean, half = line[metric.column].to_numpy(float), line[f"{metric.column}_ci95"].to_numpy(float)
            colour = line["colour"].iloc[0]
            ax.plot(line["x"], mean, marker="o", ms=3, lw=1.3, color=colour)
            if np.isfinite(half).any():
                ax.fill_between(line["x"], mean - half, mean + half, color=colour, alpha=0.2, lw=0)
        _style(ax, metric, pts[metric.column].dropna(), "y")
        if metric.column.startswith("latency"):
            _slo(ax, here, "y")
        if xs.max() >= 20 * xs.min() > 0:
            plain_log(ax, "x")
        ax.set_ylabel(metric.label, fontsize=8)
        ax.set_xlabel(sweep.x.rsplit(".", 1)[-1] + (f" ({unit(sweep.x)})" if unit(sweep.x) else ""), fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig, sweep, pts)
    return fig


def _dots(sweep: Sweep, metrics: list[Metric]):
    """Each figure a dot per point with its 95% interval, points down (the same rows in
    every panel), panels three across."""
    pts = sweep.points
    y = np.arange(len(pts))[::-1]
    fig, flat = _wrapped(len(metrics), 3.2, 0.24 * len(pts) + 0.9, sharey=True)
    changes = [yy + 0.5 for yy, a, b in zip(y[1:], pts["facet"][1:], pts["facet"][:-1]) if a != b]
    for ax, metric in zip(flat, metrics):
        for yy, (_, point) in zip(y, pts.iterrows()):
            half = point[f"{metric.column}_ci95"]
            ax.errorbar(point[metric.column], yy, xerr=half if np.isfinite(half) else None, fmt="o", ms=4,
                        capsize=2, color=point["colour"])
        _style(ax, metric, pts[metric.column].dropna(), "x")
        if metric.column.startswith("latency"):
            _slo(ax, pts, "x")
        for level in changes:  # a rule between facets
            ax.axhline(level, color="grey", lw=0.6)
        ax.set_xlabel(metric.label, fontsize=8)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    flat[0].set_yticks(y, pts["label"], fontsize=7)
    flat[0].set_ylim(-0.7, len(pts) - 0.3)
    _legend(fig, sweep, pts, series=False)  # the rows say which point is which
    return fig


def _heatmaps(sweep: Sweep, metrics: list[Metric]):
    """Families and shades down, panels (facets, x) across, one heatmap per figure, three
    across; a red x marks a latency over the point's SLO."""
    pts = sweep.points
    rows = list(dict.fromkeys(pts["series"]))
    columns = list(dict.fromkeys(pts.sort_values(["facet", "x"], kind="stable")["panel"]))
    width = min(8.0, 0.3 * len(columns) + 3.2)
    down = -(-len(metrics) // 3)
    fig, flat = _wrapped(len(metrics), width, min(18.0 / down, 0.16 * len(rows) + 1.8), sharey=True)
    slo = pts.pivot_table(index="series", columns="panel", values="slo_ms", aggfunc="first",
                          dropna=False).reindex(index=rows, columns=columns).to_numpy(dtype=float) \
        if pts["slo_ms"].notna().any() else None
    for ax, metric in zip(flat, metrics):
        grid = pts.pivot_table(index="series", columns="panel", values=metric.column, aggfunc="first",
                               dropna=False).reindex(index=rows, columns=columns)
        values = grid.to_numpy(dtype=float)
        positive = values[np.isfinite(values) & (values > 0)]
        log = metric.log and positive.size and positive.max() > positive.min()
        image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis", interpolation="nearest",
                          norm=LogNorm(positive.min(), positive.max()) if log else None,
                          vmin=0 if metric.share and not log else None,
                          # a share that is 0 everywhere reads 0..1%, not a scale around 0 with negative shares
                          vmax=1.0 if metric.share and not log and not np.nanmax(values, initial=0) else None)
        bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.02)
        bar.ax.tick_params(which="both", labelsize=7)
        if log:
            plain_ticks(bar.ax.yaxis)
        if slo is not None and metric.column.startswith("latency"):
            over = np.argwhere(values > slo)
            ax.scatter(over[:, 1], over[:, 0], marker="x", s=12, color="tab:red", lw=1)
        ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=6)
        ax.set_title(metric.label, fontsize=8)
    size = max(4.0, min(7.0, 500 / max(len(rows), 1)))
    flat[0].set_yticks(range(len(rows)), rows)
    colours = dict(zip(pts["series"], pts["colour"]))
    for ax in flat:  # the rows' labels in their family's colour, left of each row of panels
        for tick, row in zip(ax.get_yticklabels(), rows):
            tick.set_color(colours[row])
            tick.set_fontsize(size)
    if slo is not None:
        fig.legend(handles=[Line2D([], [], marker="x", ls="", color="tab:red", label="over the SLO")],
                   loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=7, frameon=False)
    return fig


def latency_cdf(sweep: Sweep, tables: dict[str, pd.DataFrame], target: Path,
                sketched: Optional[dict[str, dict]] = None) -> None:
    """Latency CDF of every point (its seeds pooled), one panel per facet and x value:
    from its runs' tables, or from their latency sketches merged where every run of the
    point has one (``sketched``: run -> summary)."""
    sketched = sketched or {}
    pts = sweep.points[sweep.points["point"].map(lambda p: any(r in tables or r in sketched for r in sweep.runs[p]))]
    panels = list(dict.fromkeys(pts.sort_values(["facet", "x"], kind="stable")["panel"]))
    if pts.empty or len(panels) > MAX_CDF_PANELS:
        return
    across = min(4, len(panels))
    down = -(-len(panels) // across)
    fig, axes = plt.subplots(down, across, figsize=(3.6 * across + 0.5, 2.9 * down + 0.6), squeeze=False,
                             sharex=True, sharey=True)
    for ax, panel in zip(axes.flat, panels):
        here = pts[pts["panel"] == panel]
        for _, point in here.iterrows():
            runs = sweep.runs[point["point"]]
            pooled = LatencySketch.pooled([sketched.get(r, {}) for r in runs])
            if pooled is not None:
                sketch_cdf_line(ax, pooled, color=point["colour"])
                continue
            lat = latencies_ms([tables[r] for r in runs if r in tables])
            cdf_line(ax, lat[lat > 0], points=CDF_POINTS, color=point["colour"])
        _slo(ax, here, "x")
        ax.set_title(panel, fontsize=8, loc="left")
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(which="both", labelsize=7)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    plain_log(axes[0][0], "x")
    for ax in axes.flat[max(0, len(panels) - across):len(panels)]:  # the lowest panel of each column
        ax.xaxis.set_tick_params(which="both", labelbottom=True)
        ax.set_xlabel("latency (ms, log scale)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("completed requests (fraction)", fontsize=8)
    _legend(fig, sweep, pts, marker="")
    fig.suptitle("Latency CDF per sweep point, seeds pooled")
    save_figure(fig, target)


def pareto(sweep: Sweep, target: Path) -> None:
    """Accuracy against p50 and p99 latency: per family its points and its front, with a
    band of each front point's 95% interval of accuracy over seeds; a row per panel."""
    pts = sweep.points[sweep.points.get("accuracy", pd.Series(dtype=float)).notna()] \
        if "accuracy" in sweep.points else sweep.points.iloc[:0]
    if pts.empty:
        return
    panels = list(dict.fromkeys(pts.sort_values(["facet", "x"], kind="stable")["panel"]))
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3.4 * len(panels) + 0.6), squeeze=False)
    for panel, row in zip(panels, axes):
        here = pts[pts["panel"] == panel]
        for ax, column, name in ((row[0], "latency_p50_ms", "p50"), (row[1], "latency_p99_ms", "p99")):
            for family, group in here.groupby("family", sort=False):
                lat, acc, band = (group[c].to_numpy(float) for c in (column, "accuracy", "accuracy_ci95"))
                on = front(lat, acc)
                ax.scatter(lat, acc, s=14, color=list(group["colour"]), zorder=3)
                ax.plot(lat[on], acc[on], lw=1.3, color=family_colour(sweep, family))
                if np.isfinite(band[on]).any():
                    ax.fill_between(lat[on], acc[on] - band[on], acc[on] + band[on], color=family_colour(sweep, family),
                                    alpha=0.15, lw=0)
            _slo(ax, here, "x")
            ax.set_xlabel(f"{name} latency (ms)", fontsize=8)
            ax.set_ylabel("accuracy (fraction)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
        row[0].set_title(panel, fontsize=8, loc="left")
    handles = [Line2D([], [], color=family_colour(sweep, f), marker="o", label=_cut(f)) for f in dict.fromkeys(pts["family"])]
    slos = sorted({v for v in pts["slo_ms"] if v is not None and np.isfinite(v)})
    handles += [Line2D([], [], label=f"SLO {v:g} ms", **SLO_STYLE) for v in slos]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=7, frameon=False,
               title=_cut("darker: larger " + ", ".join(k.rsplit(".", 1)[-1] for k in sweep.shades)) if sweep.shades
               else None, title_fontsize=7)
    fig.suptitle("Accuracy against latency: front per family, mean over seeds")
    save_figure(fig, target)


def cluster_tasks(sweep: Sweep, summaries: dict[str, dict], target: Path) -> None:
    """Where each point's time goes: per task, the mean time a served request spent queued
    there and in its batch (``summary.json``'s ``tasks``, averaged over seeds), stacked
    in task order, so a bar is the mean time through the pipeline."""
    rows = []
    for _, point in sweep.points.iterrows():
        found = [summaries[r]["tasks"] for r in sweep.runs[point["point"]] if (summaries.get(r) or {}).get("tasks")]
        if found:
            rows.append((point, {task: (np.mean([f[task]["wait_ms"]["mean"] or 0.0 for f in found]),
                                        np.mean([f[task]["latency_ms"]["mean"] or 0.0 for f in found]))
                                 for task in found[0]}))
    if not rows:
        return
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(9, min(16.0, 0.28 * len(rows) + 1.6)))
    left = np.zeros(len(rows))
    for k, task in enumerate(rows[0][1]):
        wait = np.array([times[task][0] for _, times in rows])
        total = np.array([times[task][1] for _, times in rows])
        colour = plt.cm.tab10(k % 10)
        ax.barh(y, wait, left=left, color=colour, alpha=0.4, hatch="//", label=f"{task}: queued")
        ax.barh(y, total - wait, left=left + wait, color=colour, label=f"{task}: in its batch")
        left += total
    ax.set_yticks(y, [point["label"] for point, _ in rows], fontsize=max(4, min(7, 600 / len(rows))))
    ax.set_xlabel("mean time of a served request (ms)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle("Where the time goes, task by task (mean over seeds)")
    save_figure(fig, target)


def panel_keys(results: pd.DataFrame) -> list[str]:
    """The swept columns of results.csv other than the exit policy's (panels of ``servesim fronts``)."""
    return [c for c in store.swept_columns(results.columns) if not c.startswith("exits.policy")]


def point_keys(results: pd.DataFrame) -> list[str]:
    """Columns that tell one exit-policy setting from another: its name and the swept
    ``exits.policy...`` keys (not the fitted ``policy_*`` values, which differ by seed)."""
    return ["policy"] + [c for c in results.columns if c.startswith("exits.policy")]


def panels(ok: pd.DataFrame) -> tuple[list[pd.DataFrame], list[str], dict[str, str]]:
    """The runs split into one panel per combination of the swept keys other than the
    exit policy, each panel's title, and one colour per policy name (the same in all)."""
    panels = panel_keys(ok)
    groups = list(ok.groupby(panels, dropna=False, sort=False)) if panels else [((), ok)]
    titles = []
    for key, _ in groups:
        values = key if isinstance(key, tuple) else (key,)
        titles.append(", ".join(f"{k.rsplit('.', 1)[-1]}={value_label(v)}" for k, v in zip(panels, values)) or "all runs")
    colours = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(ok["policy"]))}
    return [frame for _, frame in groups], titles, colours


def plot_experiment(out_dir: Path | str) -> list[Path]:
    """Draw every plot of an experiment folder into ``out_dir/plots``; returns the files."""
    out_dir = Path(out_dir)
    results = store.read_folder(out_dir)
    plots = out_dir / "plots"
    ok_runs = results.loc[results["status"] == "ok", "run"].tolist()
    summaries = store.read_summaries(out_dir, ok_runs)
    # a run that streamed its table kept a latency sketch and its counters over time, which
    # the plots read instead of its table (a day of requests would not fit in memory)
    streamed = [name for name in ok_runs if "latency_sketch" in summaries.get(name, {})
                and (out_dir / name / store.INTERVALS).exists() and (out_dir / name / store.LATENCY_INTERVALS).exists()]
    tables = {name: store.read_requests(out_dir / name / store.REQUESTS, PLOTTED) for name in ok_runs
              if name not in streamed and (out_dir / name / store.REQUESTS).exists()}
    slo = {name: summary.get("slo_ms") for name, summary in summaries.items()}
    if not ok_runs:
        return []
    sweep = describe(results, slo)
    written = [plots / "latency_cdf.png"]
    latency_cdf(sweep, tables, written[0], {name: summaries[name] for name in streamed})
    if "adapter" in results.columns:  # cluster runs: what each adapter did
        written += [plots / "cluster_comparison.png", plots / "cluster_tasks.png"]
        comparison(sweep, CLUSTER, written[1], "Cluster runs compared")
        cluster_tasks(sweep, summaries, written[2])
        for name in list(tables)[:MAX_PER_RUN]:
            path = out_dir / name / store.TIMESERIES
            if path.exists():
                written.append(plots / f"cluster-{name}.png")
                cluster_timeseries(name, pd.read_csv(path), written[-1])
        return [p for p in written if p.exists()]
    written += [plots / "comparison.png", plots / "pareto.png"]
    comparison(sweep, SERVING, written[1], "Sweep points compared")
    pareto(sweep, written[2])
    if concurrency_plot(results, plots / "concurrency.png"):  # a sweep of load.clients
        written.append(plots / "concurrency.png")
    for name, table in tables.items():
        path = out_dir / name / store.CONTROLLER
        if path.exists():
            target = plots / f"controller-{name}.png"
            controller(name, pd.read_csv(path, dtype={"active_ramps": str}), float(np.nanmax(table["finish"])), target)
            written.append(target)
    for name in [n for n in ok_runs if n in tables or n in streamed][:MAX_PER_RUN]:
        target = plots / f"timeseries-{name}.png"
        if name in tables:
            timeseries(name, tables[name], target, slo.get(name))
        else:
            streamed_timeseries(name, pd.read_parquet(out_dir / name / store.INTERVALS),
                                pd.read_parquet(out_dir / name / store.LATENCY_INTERVALS), target, slo.get(name))
        written.append(target)
    return [p for p in written if p.exists()]
