"""``servesim perf-compare``: a simulated concurrency sweep beside a measured one, row by row.

A closed-loop or request-rate sweep writes ``perf_analyzer.csv`` (:mod:`experiments.perf_table`);
a real server measured with perf_analyzer gives the same table (``-f FILE.csv``), and vendors
publish such *online* tables for their models. This puts the two side by side at every
concurrency (or request rate) both have, with the simulator's relative error
``sim / measured - 1`` for the throughput and for each latency figure the measured table
gives, so that a prediction is judged by the numbers a user would have measured.

Rows are matched on the load column's value; a measured row the sweep did not simulate
(or the other way round) is listed with its side empty, never interpolated. A sweep that
varied more than the load (instances, say) has several rows per concurrency: ``--where
KEY=VALUE`` picks one of them by its swept column.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from servesim.workloads.offline_tables import TIME_UNITS, read_online_table
from servesim.workloads.profile import ProfileError

from . import store
from .perf_table import CONCURRENCY, REQUEST_RATE

PERF_FILE = "perf_analyzer.csv"
LOADS = {"concurrency": CONCURRENCY, "request_rate": REQUEST_RATE}
# (figure, perf_analyzer.csv's column, its factor to the figure's unit: items/s or ms)
FIGURES = (("throughput", "Inferences/Second", 1.0), ("p50", "p50 latency", 1e-3), ("p90", "p90 latency", 1e-3),
           ("p95", "p95 latency", 1e-3), ("p99", "p99 latency", 1e-3), ("avg", "Avg latency", 1e-3))


class CompareError(ValueError):
    """What the two tables cannot be compared on, in one line."""


def simulated_table(path: Path, where: dict[str, str]) -> pd.DataFrame:
    """The sweep's perf_analyzer table (``path``: the table or its output folder), its
    rows limited to those whose swept columns equal ``where``'s values."""
    file = path / PERF_FILE if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise CompareError(f"{file}: no such file; `servesim run` writes it for a sweep with a load: section")
    if not file.is_file():
        raise CompareError(f"{path}: no such file or folder")
    table = pd.read_csv(file)
    for key, value in where.items():
        if key not in table.columns:
            swept = [c for c in table.columns if "." in c]
            raise CompareError(f"--where {key}={value}: {file} has no column {key!r}; swept: "
                               f"{', '.join(swept) or 'none'}")
        table = table[table[key].astype(str) == value]
    return table


def compare(simulated: pd.DataFrame, load: str, measured: list[dict[str, float]], source: str) -> pd.DataFrame:
    """One row per load value of either table: each figure measured, simulated and the
    relative error, where both have it."""
    column = LOADS[load]
    if column not in simulated.columns:
        other = next((c for c in LOADS.values() if c in simulated.columns), "no load column")
        raise CompareError(f"{source} has one row per {column.lower()}; the simulated table's rows are by "
                           f"{other}")
    repeated = simulated[column][simulated[column].duplicated()]
    if len(repeated):
        raise CompareError(f"the simulated table has several rows at {column.lower()} {repeated.iloc[0]:g} (the "
                           f"sweep varied more than the load); choose one with --where KEY=VALUE")
    sim_rows = {float(row[column]): row for _, row in simulated.iterrows()}
    measured_rows = {row[load]: row for row in measured}
    rows = []
    for value in sorted(set(sim_rows) | set(measured_rows)):
        sim, real = sim_rows.get(value), measured_rows.get(value)
        row = {load: int(value) if value == int(value) else value}
        for figure, perf_column, factor in FIGURES:
            s = None if sim is None or pd.isna(sim[perf_column]) else float(sim[perf_column]) * factor
            r = None if real is None else real.get("throughput" if figure == "throughput" else figure)
            row.update({f"measured_{figure}": r, f"sim_{figure}": s,
                        f"{figure}_rel_error": None if s is None or not r else round(s / r - 1, 6)})
        rows.append(row)
    return pd.DataFrame(rows)


def mean_errors(table: pd.DataFrame) -> dict[str, Optional[float]]:
    """The mean absolute relative error of each figure over the rows that have one."""
    out = {}
    for figure, _, _ in FIGURES:
        errors = pd.to_numeric(table[f"{figure}_rel_error"], errors="coerce").dropna()
        out[figure] = None if errors.empty else round(float(np.abs(errors).mean()), 4)
    return out


def _where(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. serving.instances=2")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``servesim perf-compare``'s options (experiments/cli.py)."""
    parser.add_argument("simulated", help="a sweep's output folder (its perf_analyzer.csv) or that file")
    parser.add_argument("measured", help="the measured online table: perf_analyzer's -f CSV, or a published "
                                         "table (CSV or Markdown) with a concurrency or request-rate column")
    parser.add_argument("--time-unit", default="us", choices=tuple(TIME_UNITS),
                        help="the unit of the measured table's times where its header and cells name none "
                             "(default us, as perf_analyzer writes; published pages are mostly ms)")
    parser.add_argument("--where", action="append", type=_where, default=[], metavar="KEY=VALUE",
                        help="keep the simulated rows whose swept column KEY is VALUE (repeatable)")
    parser.add_argument("--out", help="also write the comparison to this CSV")


def command(args) -> int:
    """Print the comparison (and write it with ``--out``)."""
    try:
        load, measured = read_online_table(args.measured, args.time_unit)
        table = compare(simulated_table(Path(args.simulated), dict(args.where)), load, measured, args.measured)
    except CompareError as exc:
        raise ProfileError(str(exc)) from None
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(table.round(3).to_string(index=False))
    print("mean |relative error|: " + ", ".join(f"{k} {'-' if v is None else f'{v:.1%}'}"
                                               for k, v in mean_errors(table).items()))
    if args.out:
        with store.atomic_path(Path(args.out)) as tmp:
            table.to_csv(tmp, index=False)
        print(f"wrote {args.out}")
    return 0
