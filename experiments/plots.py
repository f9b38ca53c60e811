"""Plots of an experiment folder, drawn from results.csv and the per-run request tables.

* ``latency_cdf.png``: the latency CDF of every run, on one set of axes;
* ``timeseries-<run>.png``: per run, latency (p50, p99) and throughput over time;
* ``comparison.png``: p50/p99 latency and throughput of every run side by side;
* ``pareto.png`` (runs with exits): accuracy against p50 and p99 latency, one front per
  exit policy (with several seeds, a 95% confidence band), one row of panels per
  combination of the other swept keys;
* ``latency_cdf_by_policy.png`` (runs with exits): one latency CDF per exit policy
  (seeds pooled), panels as in the Pareto plot;
* ``controller-<run>.png`` (runs whose exit policy adapts online, e.g. Apparate): its
  thresholds and its active ramps over time, from the run's ``controller.csv``.

Per-run time series are drawn for the first :data:`MAX_TIMESERIES` runs only: a large
sweep is read through its comparison and Pareto plots.
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
from scipy import stats  # noqa: E402

from . import store  # noqa: E402
from .config import label as folder_label  # noqa: E402

MAX_CDF_POINTS = 2000
MAX_TIMESERIES = 24
PLOTTED = ["arrival", "finish", "status"]  # the only request columns the plots read


def _completed(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == 0]


def _latencies_ms(tables: list[pd.DataFrame]) -> np.ndarray:
    """Sorted latencies (ms) of the completed requests of ``tables``, pooled."""
    done = [_completed(t) for t in tables]
    return np.sort(np.concatenate([(t["finish"] - t["arrival"]).to_numpy() for t in done] or [np.empty(0)]) * 1e3)


def cdf_line(ax, lat: np.ndarray, **style) -> None:
    if lat.size:
        pick = np.unique(np.linspace(0, lat.size - 1, min(lat.size, MAX_CDF_POINTS)).astype(int))
        ax.plot(lat[pick], (pick + 1) / lat.size, lw=1.4, **style)


def latency_cdf(tables: dict[str, pd.DataFrame], target: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, table in tables.items():
        cdf_line(ax, _latencies_ms([table]), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of completed requests")
    ax.set_title("Latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines and len(tables) <= 12:
        ax.legend(fontsize=7)
    save_figure(fig, target)


def timeseries(name: str, table: pd.DataFrame, target: Path, bins: int = 120) -> None:
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
    p50 = grouped.quantile(0.5).reindex(range(bins))
    p99 = grouped.quantile(0.99).reindex(range(bins))
    served = np.bincount(which, minlength=bins) / width
    offered = np.histogram(table["arrival"], edges)[0] / width
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(mids, p50, label="p50")
    top.plot(mids, p99, label="p99")
    top.set_ylabel("latency (ms)")
    top.set_yscale("log")
    top.legend(fontsize=8)
    top.grid(True, alpha=0.3)
    bottom.plot(mids, offered, label="offered (arrivals/s)", color="grey", lw=1)
    bottom.plot(mids, served, label="throughput (completed/s)")
    bottom.set_ylabel("requests / s")
    bottom.set_xlabel("time (s)")
    bottom.legend(fontsize=8)
    bottom.grid(True, alpha=0.3)
    fig.suptitle(name, fontsize=9)
    save_figure(fig, target)


def run_labels(names: list[str]) -> list[str]:
    """Run names as bar labels: without the ``key=value`` parts every run shares (the
    seed of a one-seed sweep, say), which tell the bars nothing apart."""
    parts = [name.split(",") for name in names]
    common = set.intersection(*map(set, parts)) if len(parts) > 1 else set()
    return [",".join(p for p in ps if p not in common) or name for ps, name in zip(parts, names)]


def _label_room(labels: list[str]) -> float:
    """Inches below the axes that labels rotated by 60 degrees at 7 points need."""
    return 0.06 * max((len(label) for label in labels), default=0)


def comparison(results: pd.DataFrame, target: Path) -> None:
    ok = results[results["status"] == "ok"]
    if ok.empty:
        return
    names = run_labels(ok["run"].tolist())
    x = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 0.6 * len(names) + 4), 4.5 + _label_room(names)))
    left.bar(x - 0.2, ok["latency_p50_ms"], width=0.4, label="p50")
    left.bar(x + 0.2, ok["latency_p99_ms"], width=0.4, label="p99")
    left.set_ylabel("latency (ms)")
    left.set_yscale("log")
    left.legend(fontsize=8)
    right.bar(x, ok["throughput_rps"], color="tab:green")
    right.set_ylabel("throughput (requests/s)")
    for ax in (left, right):
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Runs compared")
    save_figure(fig, target)


def cluster_timeseries(name: str, series: pd.DataFrame, target: Path) -> None:
    """A cluster run over time: the offered load, the cores provisioned per task, and
    per task the cores of each variant (stacked): what the adapter did and when."""
    tasks = [c.split(":", 1)[1] for c in series.columns if c.startswith("cores:") and "/" not in c]
    fig, axes = plt.subplots(2 + len(tasks), 1, figsize=(8, 2.2 * (2 + len(tasks))), sharex=True)
    t = series["time_s"]
    axes[0].plot(t, series["load_rps"], color="grey", lw=1)
    axes[0].set_ylabel("load (req/s)")
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


def cluster_comparison(results: pd.DataFrame, target: Path) -> None:
    """SLO violations, cost and accuracy of each cluster run, side by side."""
    ok = results[results["status"] == "ok"]
    if ok.empty:
        return
    names = run_labels(ok["run"].tolist())
    x = np.arange(len(names))
    figures = (("slo_violation_rate", "SLO violation rate", "tab:red"), ("cost", "cost (core-seconds)", "tab:blue"),
               ("accuracy", "average accuracy", "tab:green"))
    fig, axes = plt.subplots(1, 3, figsize=(max(10, 0.7 * len(names) + 6), 4.5 + _label_room(names)))
    for ax, (column, title, colour) in zip(axes, figures):
        ax.bar(x, ok[column], color=colour)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    lo = np.nanmin(ok["accuracy"]) if ok["accuracy"].notna().any() else None
    if lo is not None:
        axes[2].set_ylim(max(0.0, lo - 0.05), min(1.0, np.nanmax(ok["accuracy"]) + 0.02))
    fig.suptitle("Cluster runs compared")
    save_figure(fig, target)


def cluster_tasks(summaries: dict[str, dict], target: Path) -> None:
    """Where each cluster run's time goes: per task, the mean time a served request spent
    queued there and in its batch (``summary.json``'s ``tasks``), stacked in task order,
    so the bar is the mean time through the pipeline."""
    runs = {name: s["tasks"] for name, s in summaries.items() if s.get("tasks")}
    if not runs:
        return
    names = list(runs)
    labels = run_labels(names)
    tasks = list(next(iter(runs.values())))
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(names) + 4), 4.5 + _label_room(labels)))
    bottom = np.zeros(len(names))
    for k, task in enumerate(tasks):
        wait = np.array([runs[n][task]["wait_ms"]["mean"] or 0.0 for n in names])
        total = np.array([runs[n][task]["latency_ms"]["mean"] or 0.0 for n in names])
        colour = plt.cm.tab10(k % 10)
        ax.bar(x, wait, bottom=bottom, color=colour, alpha=0.4, hatch="//", label=f"{task}: queued")
        ax.bar(x, total - wait, bottom=bottom + wait, color=colour, label=f"{task}: in its batch")
        bottom += total
    ax.set_ylabel("mean time of a served request (ms)")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("Where the time goes, task by task")
    save_figure(fig, target)


def panel_keys(results: pd.DataFrame) -> list[str]:
    """The swept keys of results.csv other than the exit policy (panels of the Pareto plot)."""
    fixed = {"run", "status", "seed", "policy", *store.SUMMARY_COLUMNS}
    return [c for c in results.columns if c not in fixed and not c.endswith("_change")
            and not c.startswith("policy_") and not c.startswith("exits.policy")]


def point_keys(results: pd.DataFrame) -> list[str]:
    """Columns that tell one exit-policy setting from another: its name and the swept
    ``exits.policy...`` keys (not the fitted ``policy_*`` values, which differ by seed)."""
    return ["policy"] + [c for c in results.columns if c.startswith("exits.policy")]


LONGEST_LABEL = 120  # characters of a legend entry: a legend longer than the plot is no use


def _label(values) -> str:
    """A legend entry: the policy name, then its swept parameters."""
    name, *rest = values if isinstance(values, tuple) else (values,)
    params = []
    for value in rest:
        spec = _swept_value(value)
        if isinstance(spec, dict):
            params += [f"{k}={v}" for k, v in spec.items() if k != "name"]
        elif pd.notna(spec) and spec != name:
            params.append(str(spec))
    text = name + (f" ({', '.join(params)})" if params else "")
    return text if len(text) <= LONGEST_LABEL else text[:LONGEST_LABEL - 1] + "…"


def ci_half_width(values: pd.Series | np.ndarray, level: float = 0.95) -> float:
    """Half-width of the ``level`` confidence interval of the mean of ``values`` (one per
    seed; Student's t), or NaN with fewer than two."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan")
    return float(stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))


def front(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both (lower latency, higher accuracy), by latency."""
    order = np.lexsort((-accuracy, latency))
    best, keep = -np.inf, []
    for i in order:
        if accuracy[i] > best:
            keep.append(i)
            best = accuracy[i]
    return np.array(keep, dtype=int)


def panels(ok: pd.DataFrame) -> tuple[list[pd.DataFrame], list[str], dict[str, str]]:
    """The runs split into one panel per combination of the swept keys other than the
    exit policy, each panel's title, and one colour per policy name (the same in all)."""
    panels = panel_keys(ok)
    groups = list(ok.groupby(panels, dropna=False, sort=False)) if panels else [((), ok)]
    titles = []
    for key, _ in groups:
        values = key if isinstance(key, tuple) else (key,)
        titles.append(", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in zip(panels, values)) or "all runs")
    colours = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(ok["policy"]))}
    return [frame for _, frame in groups], titles, colours


def pareto(results: pd.DataFrame, target: Path) -> None:
    """Accuracy vs p50 and p99 latency, one front per policy (points averaged over seeds;
    with two seeds or more, a band of each front point's 95% confidence interval of
    accuracy, from the spread over seeds)."""
    ok = results[(results["status"] == "ok") & results["accuracy"].notna()]
    if ok.empty or "policy" not in ok:
        return
    groups, titles, colours = panels(ok)
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.6 * len(groups)), squeeze=False)
    for frame, title, row in zip(groups, titles, axes):
        points = frame.groupby(point_keys(frame), dropna=False, sort=False)
        means = points[["accuracy", "latency_p50_ms", "latency_p99_ms"]].mean().reset_index()
        means["band"] = points["accuracy"].agg(ci_half_width).to_numpy()
        for ax, column, label in ((row[0], "latency_p50_ms", "p50"), (row[1], "latency_p99_ms", "p99")):
            for name, pts in means.groupby("policy", sort=False):
                lat, acc, band = (pts[c].to_numpy() for c in (column, "accuracy", "band"))
                on = front(lat, acc)
                ax.scatter(lat, acc, s=12, alpha=0.35, color=colours[name])
                ax.plot(lat[on], acc[on], marker="o", ms=4, lw=1.4, color=colours[name], label=name)
                if np.isfinite(band[on]).any():
                    ax.fill_between(lat[on], acc[on] - band[on], acc[on] + band[on],
                                    color=colours[name], alpha=0.15, lw=0)
            ax.set_xlabel(f"{label} latency (ms)")
            ax.set_ylabel("accuracy")
            ax.grid(True, alpha=0.3)
        row[0].set_title(title, fontsize=8, loc="left")
        row[0].legend(fontsize=7)
    fig.suptitle("Accuracy against latency: Pareto front per exit policy")
    save_figure(fig, target)


def policy_cdf(results: pd.DataFrame, tables: dict[str, pd.DataFrame], target: Path) -> None:
    """Latency CDF per exit policy (seeds pooled), one panel per combination of the other
    swept keys, as the Pareto plot's rows."""
    ok = results[(results["status"] == "ok") & results["run"].isin(list(tables))]
    if ok.empty or "policy" not in ok:
        return
    groups, titles, colours = panels(ok)
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.4 * len(groups)), squeeze=False)
    for frame, title, (ax,) in zip(groups, titles, axes):
        for values, runs in frame.groupby(point_keys(frame), dropna=False, sort=False):
            name = values[0] if isinstance(values, tuple) else values
            cdf_line(ax, _latencies_ms([tables[r] for r in runs["run"]]), color=colours[name], label=_label(values))
        ax.set_title(title, fontsize=8, loc="left")
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of requests")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle("Latency CDF per exit policy")
    save_figure(fig, target)


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


def _short(value) -> str:
    """A swept value as a panel title shows it: as in the run folders' names."""
    return folder_label(_swept_value(value))


LONGEST_SWEPT_VALUE = 2000  # characters: far more than any config's value, far less than parsing can choke on


def _swept_value(value):
    """A swept value as results.csv spells it (a Python literal: ``{'policy': 'dynamic'}``)
    read back as data, or the text itself where it is none. ``ast.literal_eval`` builds
    literals only, never calls anything; a hostile results.csv can still make it exhaust
    the parser (deep nesting: RecursionError, MemoryError), so long texts stay text."""
    if not isinstance(value, str) or len(value) > LONGEST_SWEPT_VALUE:
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return value


def save_figure(fig, target: Path) -> None:
    with warnings.catch_warnings():  # a crowded figure keeps its default margins: say nothing
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    with store.atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def read_results(path: Path) -> pd.DataFrame:
    """results.csv, checked before any of its values names a file: each run is a folder
    of this experiment (a plain name, no path), so a results.csv from elsewhere can
    neither make the plots read outside the folder nor write a plot outside ``plots/``."""
    try:
        results = pd.read_csv(path, dtype={"run": str, "status": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise store.ResultsError(f"{path}: not a results table ({' '.join(str(exc).split())})") from None
    missing = [c for c in ("run", "status") if c not in results.columns]
    if missing:
        raise store.ResultsError(f"{path}: no column {missing[0]!r}; is this a servesim results.csv?")
    for row, name in enumerate(results["run"], 2):
        if not store.is_run_name(name):
            raise store.ResultsError(f"{path}: line {row}: column 'run' is {name!r}; a run is a folder name "
                                     f"of this experiment (no path, no '..')")
    return results


def plot_experiment(out_dir: Path | str) -> list[Path]:
    """Draw every plot of an experiment folder into ``out_dir/plots``; returns the files."""
    out_dir = Path(out_dir)
    results_path = out_dir / store.RESULTS
    if not results_path.exists():
        raise FileNotFoundError(f"{results_path}: no results.csv here; is {out_dir} an experiment output folder?")
    results = read_results(results_path)
    plots = out_dir / "plots"
    tables = {}
    for name in results.loc[results["status"] == "ok", "run"]:
        path = out_dir / name / store.REQUESTS
        if path.exists():
            tables[name] = store.read_requests(path, PLOTTED)
    if "adapter" in results.columns:  # cluster runs: latency, then what each adapter did
        written = [plots / "latency_cdf.png", plots / "cluster_comparison.png", plots / "cluster_tasks.png"]
        latency_cdf(tables, written[0])
        cluster_comparison(results, written[1])
        summaries = {name: json.loads((out_dir / name / store.SUMMARY).read_text(encoding="utf-8"))
                     for name in tables if (out_dir / name / store.SUMMARY).exists()}
        cluster_tasks(summaries, written[2])
        for name in tables:
            path = out_dir / name / store.TIMESERIES
            if path.exists():
                written.append(plots / f"cluster-{name}.png")
                cluster_timeseries(name, pd.read_csv(path), written[-1])
        return [p for p in written if p.exists()]
    written = [plots / "latency_cdf.png", plots / "comparison.png", plots / "pareto.png",
               plots / "latency_cdf_by_policy.png"]
    latency_cdf(tables, written[0])
    comparison(results, written[1])
    pareto(results, written[2])
    policy_cdf(results, tables, written[3])
    for name, table in tables.items():
        path = out_dir / name / store.CONTROLLER
        if path.exists():
            target = plots / f"controller-{name}.png"
            controller(name, pd.read_csv(path, dtype={"active_ramps": str}), float(np.nanmax(table["finish"])), target)
            written.append(target)
    for name, table in list(tables.items())[:MAX_TIMESERIES]:
        target = plots / f"timeseries-{name}.png"
        timeseries(name, table, target)
        written.append(target)
    return [p for p in written if p.exists()]
