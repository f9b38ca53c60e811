"""Sweep points averaged over their seeds: the mean of each figure, the half-width of its
95% confidence interval (Student's t over the seeds) and its range.

A run's seed draws its arrivals, noise and samples; the same point under other seeds is
the same experiment again. One seed's figure is one draw, so a comparison reads the mean
with its interval. With common random numbers (the seeds of a sweep are shared by its
points) a difference between two points is tighter than their intervals suggest; pair
the seeds (as ``servesim fronts`` does) to test one.

    servesim seeds runs/exits_autoscaling      # prints the table, writes seeds.csv there
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import store
from .plots import ci_half_width, read_results

SEEDS = "seeds.csv"
# the figures averaged, where results.csv has them
FIGURES = ("slo_violation_rate", "accuracy", "agreement", "latency_p50_ms", "latency_p99_ms", "throughput_rps",
           "dropped", "cost", "cost_money", "mean_cores", "peak_cores", "pipeline_accuracy", "mean_stages_paid")


def point_of(run: str) -> str:
    """A run's sweep point: its name without its seed."""
    return ",".join(part for part in run.split(",") if not part.startswith("seed=")) or "all runs"


def by_point(results: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep point of the finished runs (in results.csv's order): ``seeds``,
    then per figure ``<figure>`` (mean), ``<figure>_ci95``, ``<figure>_min``, ``<figure>_max``."""
    ok = results[results["status"] == "ok"]
    figures = [f for f in FIGURES if f in ok.columns and ok[f].notna().any()]
    rows = []
    for point, runs in ok.groupby(ok["run"].map(point_of), sort=False):
        row = {"point": point, "seeds": len(runs)}
        for figure in figures:
            values = runs[figure].astype(float)
            row.update({figure: values.mean(), f"{figure}_ci95": ci_half_width(values),
                        f"{figure}_min": values.min(), f"{figure}_max": values.max()})
        rows.append(row)
    return pd.DataFrame(rows)


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table as read: per figure ``mean ± ci95``."""
    out = table[["point", "seeds"]].copy()
    for figure in (f for f in FIGURES if f in table.columns):
        out[figure] = [f"{m:.4g}" if not np.isfinite(h) else f"{m:.4g} ± {h:.2g}"
                       for m, h in zip(table[figure], table[f"{figure}_ci95"])]
    return out


def write_seeds(out_dir: Path | str) -> tuple[Path, pd.DataFrame]:
    """:func:`by_point` of an experiment folder's results.csv, written there as ``seeds.csv``."""
    out_dir = Path(out_dir)
    path = out_dir / store.RESULTS
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results.csv here; is {out_dir} an experiment output folder?")
    table = by_point(read_results(path))
    target = out_dir / SEEDS
    with store.atomic_path(target) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return target, table
