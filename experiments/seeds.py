"""Sweep points averaged over their seeds: the mean of each figure, the half-width of its
95% confidence interval (Student's t over the seeds) and its range.

A run's seed draws its arrivals, noise and samples; the same point under other seeds is
the same experiment again. One seed's figure is one draw, so a comparison reads the mean
with its interval. With common random numbers (the seeds of a sweep are shared by its
points) a difference between two points is tighter than their intervals suggest; pair
the seeds (as ``servesim fronts`` does) to test one.

Every ``servesim run`` writes this table as ``results_by_point.csv``;

    servesim seeds runs/exits_autoscaling      # prints it, and writes it again there
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pandas as pd
from scipy import stats

from servesim.sim.summary_stream import PERCENTILES
from servesim.sim.sketch import LatencySketch

from . import store
from .names import point_of

# the figures averaged, where results.csv has them
FIGURES = ("slo_violation_rate", "accuracy", "agreement", "latency_p50_ms", "latency_p99_ms", "throughput_rps",
           "dropped", "cost", "cost_money", "mean_cores", "peak_cores", "pipeline_accuracy", "mean_stages_paid",
           "client_throughput_rps", "client_p99_ms")


def ci_half_width(values: pd.Series | np.ndarray, level: float = 0.95) -> float:
    """Half-width of the ``level`` confidence interval of the mean of ``values`` (one per
    seed; Student's t), or NaN with fewer than two."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan")
    return float(stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))


def points_of(results: pd.DataFrame) -> pd.Series:
    """Each run's sweep point: results.csv's ``point`` column (in a folder written before
    it had one, the run's name less its seed)."""
    return results["point"] if "point" in results.columns else results["run"].map(point_of)


def by_point(results: pd.DataFrame, summaries: Optional[Mapping[str, dict]] = None) -> pd.DataFrame:
    """One row per sweep point of the finished runs (in results.csv's order): ``point``,
    ``seeds``, the point's swept values (results.csv's columns), then per figure
    ``<figure>`` (mean), ``<figure>_ci95``, ``<figure>_min``, ``<figure>_max``. A point
    is results.csv's ``point`` column (in a folder written before it had one, the run's
    name less its seed).

    With the runs' ``summaries`` (run name -> summary), where every run of a point has a
    latency sketch (a plain model's run), the point also gets ``latency_<q>_ms_pooled``:
    the quantiles of all its seeds' requests together, from their sketches merged
    (:func:`pooled_latency`), within the sketches' relative accuracy."""
    ok = results[results["status"] == "ok"]
    figures = [f for f in FIGURES if f in ok.columns and ok[f].notna().any()]
    swept = store.swept_columns(ok.columns)
    columns = ["point", "seeds", *swept,
               *(f"{figure}{part}" for figure in figures for part in ("", "_ci95", "_min", "_max"))]
    points = points_of(ok)
    rows = []
    for point, runs in ok.groupby(points, sort=False):
        row = {"point": point, "seeds": len(runs), **runs[swept].iloc[0].to_dict()}
        for figure in figures:
            values = runs[figure].astype(float)
            row.update({figure: values.mean(), f"{figure}_ci95": ci_half_width(values),
                        f"{figure}_min": values.min(), f"{figure}_max": values.max()})
        if summaries is not None:
            row.update(pooled_latency([summaries.get(name) or {} for name in runs["run"]]))
        rows.append(row)
    if any(key in row for row in rows for key in POOLED):
        columns += list(POOLED)
    table = pd.DataFrame(rows, columns=columns)
    for column in swept:  # as results.csv has them (a column of numbers and blanks is no column of floats)
        table[column] = pd.Series([row[column] for row in rows], index=table.index, dtype=object)
    return table


POOLED = tuple(f"latency_p{q}_ms_pooled" for q in PERCENTILES)


def pooled_latency(summaries: list[dict]) -> dict[str, float]:
    """The latency percentiles (ms) of the requests of all ``summaries``' runs together:
    their latency sketches merged (sim.sketch), which is what a mean of per-seed
    percentiles is not. Empty where a run has no sketch."""
    merged = LatencySketch.pooled(summaries)
    if merged is None:
        return {}
    values = merged.quantiles([q / 100 for q in PERCENTILES])
    return {key: (np.nan if v is None else v * 1e3) for key, v in zip(POOLED, values)}


def mean_ci(mean: float, half: float, spec: str = ".4g", half_spec: str = ".2g") -> str:
    """``mean ± half``, or ``mean`` alone where there is no interval (one seed) or its
    seeds agree exactly; large numbers in full, never as ``1.4e+03``."""
    if not np.isfinite(mean):
        return "n/a"
    return _number(mean, spec) + ("" if not np.isfinite(half) or half == 0 else f" ± {_number(half, half_spec)}")


def _number(value: float, spec: str) -> str:
    text = format(value, spec)
    return f"{float(text):.0f}" if "e+" in text else text


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table as read: per figure ``mean ± ci95``."""
    out = table[["point", "seeds"]].copy()
    for figure in (f for f in FIGURES if f in table.columns):
        out[figure] = [mean_ci(m, h) for m, h in zip(table[figure], table[f"{figure}_ci95"])]
    return out


def write_by_point(target: Path, table: pd.DataFrame) -> None:
    """:func:`by_point`'s table as a CSV, written atomically."""
    with store.atomic_path(target) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")  # the figures: far finer than any interval


def write_seeds(out_dir: Path | str) -> tuple[Path, pd.DataFrame]:
    """:func:`by_point` of an experiment folder's results.csv, written there as
    ``results_by_point.csv`` (a folder from before that file, or edited by hand, gets it)."""
    out_dir = Path(out_dir)
    results = store.read_folder(out_dir)
    table = by_point(results, store.read_summaries(out_dir, results.loc[results["status"] == "ok", "run"]))
    write_by_point(out_dir / store.RESULTS_BY_POINT, table)
    return out_dir / store.RESULTS_BY_POINT, table
