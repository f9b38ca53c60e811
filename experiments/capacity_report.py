"""What ``servesim capacity`` prints and writes: the answer per sweep point, the table of
probes, ``probes.csv``, ``capacity.json`` and ``capacity.png`` (the search drawn: the
figure against the varied value with each probe's 95% interval, the SLO, the answer and
its band).

    servesim capacity experiments/quickstart.yaml --slo p99<=10ms
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from . import store  # noqa: E402
from .capacity_search import COUNT, RATE, Outcome, Probe, Search, Slo, parse_slo, run_capacity  # noqa: E402
from .figures import plain_log, save_figure, unit  # noqa: E402

PROBES, ANSWERS, PLOT = "probes.csv", "capacity.json", "capacity.png"
VERDICT_COLOURS = {"met": "tab:green", "met on average": "tab:olive", "missed on average": "tab:orange",
                   "missed": "tab:red", "overloaded": "tab:red"}


def _value(search: Search, value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if search.axis.kind == COUNT or value >= 1000 else f"{value:.4g}"


def answer_line(name: str, search: Search) -> str:
    """The answer of one search, in one line."""
    axis, slo = search.axis, search.slo
    low, high = search.band
    at = search.at(search.answer)
    what = f"highest {axis.key}" if axis.kind == RATE else f"fewest {axis.key}"
    rate = f" (offered {at.offered_rps:.4g} req/s)" if axis.key == "trace.scale_rate" else ""
    cost = "" if axis.kind == RATE or at.cost is None else f"; cost {at.cost:.4g} {_cost_unit(search)}" + (
        "" if at.cost_money is None else f" ({at.cost_money:.4g} money)")
    return (f"{name}: {what} meeting {slo}: {_value(search, search.answer)}{rate}, 95% band "
            f"{_edge(search, low, below=True)} .. {_edge(search, high, below=False)}; there {figure_text(at, slo)}"
            f"{cost}; {len(search.probes)} probes")


def _edge(search: Search, value: Optional[float], below: bool) -> str:
    """A band edge; where the search never bracketed it, the side of the probed range it lies on."""
    if value is not None:
        return _value(search, value)
    values = [p.value for p in search.probes]
    return f"<{_value(search, min(values))}" if below else f">{_value(search, max(values))}"


def _cost_unit(search: Search) -> str:
    return "core-s" if search.axis.path.startswith("cluster.") else "accelerator-s"


def probe_rows(name: str, search: Search, seeds: list[int]) -> list[dict]:
    """One row per probe, in the order they were run."""
    slo = search.slo
    rows = []
    for probe in search.probes:
        row = {"point": name, "probe": probe.order, "key": search.axis.key, "value": probe.value,
               "figure": slo.figure, "mean": probe.mean, "ci95": probe.half_width,
               "verdict": probe.verdict(slo.limit), "overloaded_seeds": probe.overloaded,
               "unbounded_seeds": sum(not math.isfinite(f) for f in probe.figures),
               "offered_rps": round(probe.offered_rps, 6), "cost": probe.cost, "cost_money": probe.cost_money}
        row.update({f"seed_{s}": f for s, f in zip(seeds, probe.figures)})
        rows.append(row)
    return rows


def answers(outcome: Outcome) -> dict:
    """``capacity.json``: the SLO, the seeds, and per sweep point the answer and band."""
    def finite(value):
        return value if value is None or math.isfinite(value) else None

    points = {}
    for name, search in outcome.searches.items():
        at = search.at(search.answer)
        low, high = search.band
        points[name] = {"key": search.axis.key, "path": search.axis.path, "answer": search.answer,
                        "band_low": low, "band_high": high, "figure_at_answer": finite(at.mean),
                        "ci95_at_answer": finite(at.half_width), "cost_at_answer": at.cost,
                        "offered_rps_at_answer": at.offered_rps, "probes": len(search.probes)}
    return {"slo": str(outcome.slo), "seeds": outcome.seeds, "rel_tol": outcome.rel_tol, "points": points}


def plot_search(outcome: Outcome, target: Path) -> None:
    """Per sweep point two panels, the whole search above and the ground near the answer
    below: every probe's mean with its 95% interval, coloured by verdict and numbered in
    the order run; probes with no finite figure (overloaded, or more unanswered requests
    than the quantile allows) as crosses on the top edge, finite ones above the scale as
    triangles; the SLO dashed, the answer solid and its band shaded."""
    searches = list(outcome.searches.items())
    cols = min(len(searches), 3)
    rows = math.ceil(len(searches) / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(5.2 * cols, 6.6 * rows), squeeze=False)
    for k, (name, search) in enumerate(searches):
        row, col = 2 * (k // cols), k % cols
        _panel(axes[row][col], name, search)
        _panel(axes[row + 1][col], f"{name}: near the answer", search, _near(search))
    for k in range(len(searches), rows * cols):
        for ax in (axes[2 * (k // cols)][k % cols], axes[2 * (k // cols) + 1][k % cols]):
            ax.set_visible(False)
    save_figure(fig, target)


def _near(search: Search) -> tuple[float, float]:
    """The stretch of the axis around the answer and its band (a little beyond)."""
    edges = [v for v in (*search.band, search.answer) if v is not None]
    if search.axis.kind == COUNT:
        return min(edges) - 1.5, max(edges) + 1.5
    return min(edges) / 1.06, max(edges) * 1.06


def _panel(ax, name: str, search: Search, xlim: Optional[tuple[float, float]] = None) -> None:
    slo, limit = search.slo, search.slo.limit
    scale = 100 if slo.unit == "" else 1  # violations in %
    top = 2.5 * limit * scale
    for probe in search.probes:
        if xlim is not None and not xlim[0] <= probe.value <= xlim[1]:
            continue
        colour = VERDICT_COLOURS[probe.verdict(limit)]
        if probe.finite and probe.mean * scale <= top:
            y = probe.mean * scale
            ax.errorbar(probe.value, y, yerr=probe.half_width * scale, fmt="o", color=colour, ms=4, capsize=3)
        else:  # unbounded, or off the scale: marked at the top edge
            y = top * 0.96
            ax.plot(probe.value, y, "^" if probe.finite else "x", color=colour, ms=6)
        ax.annotate(str(probe.order), (probe.value, y), textcoords="offset points", xytext=(4, 3), fontsize=7,
                    color="0.35")
    ax.axhline(limit * scale, ls="--", color="0.3", lw=1, label=f"SLO {slo}")
    low, high = search.band
    if low is not None and high is not None and high > low:
        ax.axvspan(low, high, color="tab:blue", alpha=0.12, label=f"95% band {_value(search, low)} .. "
                                                                    f"{_value(search, high)}")
    ax.axvline(search.answer, color="tab:blue", lw=1.5, label=f"answer {_value(search, search.answer)}")
    if search.axis.kind == RATE and xlim is None:
        plain_log(ax, "x")
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"{search.axis.key} ({unit(search.axis.key) or 'times the trace file rate'})")
    ax.set_ylabel(f"{slo.figure} ({'%' if scale == 100 else 'ms'}), seeds' mean ±95%")
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def write_outputs(outcome: Outcome, out: Path) -> tuple[list[Path], pd.DataFrame]:
    """``probes.csv``, ``capacity.json`` and ``capacity.png`` in ``out`` (each written
    atomically); returns them and the probes' table."""
    rows = [row for name, search in outcome.searches.items() for row in probe_rows(name, search, outcome.seeds)]
    store.write_rows(out / PROBES, rows)
    store.write_json(out / ANSWERS, answers(outcome))
    plot_search(outcome, out / PLOT)
    return [out / PROBES, out / ANSWERS, out / PLOT], pd.DataFrame(rows)


def figure_text(probe: Probe, slo: Slo) -> str:
    """A probe's figure as the seeds' mean ± the 95% half-width, or why it has none."""
    if probe.finite:
        return f"{slo.figure} {slo.shown(probe.mean)} ± {slo.shown(probe.half_width).removesuffix(' ms')}"
    why = [f"{probe.overloaded} overloaded"] if probe.overloaded else []
    unbounded = sum(not math.isfinite(f) for f in probe.figures)
    if unbounded:
        why.append(f"{unbounded} with too many unanswered requests" if slo.quantile is not None or slo.figure ==
                   "mean" else f"{unbounded} with no figure")
    return f"{slo.figure} unbounded ({', '.join(why)} of {len(probe.figures)} seeds)"


def _progress(name: str, probe: Probe, slo: Slo) -> None:
    print(f"{name}: probe {probe.order}: {probe.value:.6g}: {figure_text(probe, slo)} -> {probe.verdict(slo.limit)}",
          file=sys.stderr, flush=True)


def command(args) -> int:
    """``servesim capacity``: search, print the answers and the table, write the files."""
    slo = parse_slo(args.slo)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.file).stem}-capacity"
    started = time.perf_counter()
    outcome = run_capacity(args.file, slo, args.vary, args.seeds, args.tol, args.jobs,
                           progress=lambda name, probe: None if args.quiet else _progress(name, probe, slo))
    paths, table = write_outputs(outcome, out)
    shown = table[["point", "probe", "value", "mean", "ci95", "verdict", "offered_rps"]
                  + (["cost"] if table["cost"].notna().any() else [])]
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 50):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for name, search in outcome.searches.items():
        print(answer_line(name, search))
    print(f"seeds {outcome.seeds}; {time.perf_counter() - started:.1f} s; written: "
          + ", ".join(str(p) for p in paths))
    return 0
