"""A closed-loop or request-rate sweep as perf_analyzer writes it: ``perf_analyzer.csv``.

perf_analyzer's ``-f FILE.csv`` has one row per concurrency (or request rate) with its own
column names, times in microseconds. A sweep with ``load:`` writes the same table beside
results.csv, so that it can be put next to a real perf_analyzer CSV column for column:
one row per sweep point, its **median run** (the seed whose mean latency seen is the
median of the point's, the lower middle one with an even number of seeds), then the
point's name, its seeds, the median run's seed and its swept values (columns perf_analyzer
does not have, last). A row is thus one simulated measurement, as a perf_analyzer row is
one measurement, whose parts add up to its latency; one odd seed does not move it, as it
would move a mean (results_by_point.csv has the means and their intervals).

Times are in microseconds, as perf_analyzer writes them; ``Inferences/Second`` counts
items (requests times their size), as perf_analyzer counts inferences. Where the profile
measured no compute input / infer / output split, ``Server Compute Infer`` holds the whole
compute and the input and output cells are empty (not 0: unknown). The parts of a row add
up to its ``Avg latency`` (each rounded to 1 ns in results.csv first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import store
from .seeds import points_of

CONCURRENCY, REQUEST_RATE = "Concurrency", "Request Rate"
# perf_analyzer's columns after the first, in its order, by results.csv's client column
# (sim.client_view's figures) and the factor to its unit
PERF_COLUMNS = {
    "Inferences/Second": ("client_throughput_items_per_s", 1.0),
    "Client Send": ("client_send_ms", 1e3),
    "Network+Server Send/Recv": ("network_ms", 1e3),
    "Server Queue": ("queue_ms", 1e3),
    "Server Compute Input": ("compute_input_ms", 1e3),
    "Server Compute Infer": ("compute_infer_ms", 1e3),
    "Server Compute Output": ("compute_output_ms", 1e3),
    "Client Recv": ("client_recv_ms", 1e3),
    "p50 latency": ("client_p50_ms", 1e3),
    "p90 latency": ("client_p90_ms", 1e3),
    "p95 latency": ("client_p95_ms", 1e3),
    "p99 latency": ("client_p99_ms", 1e3),
    "Avg latency": ("client_mean_ms", 1e3),
}
DECIMALS = 3  # of a microsecond (1 ns, as results.csv's ms) and of an inference per second


def client_columns(view: dict) -> dict:
    """results.csv's client columns (:data:`store.CLIENT_COLUMNS`) from a summary's
    ``closed_loop`` block (:func:`sim.client_view.client_view`)."""
    seen, split = view.get("latency_ms") or {}, view.get("split_ms") or {}
    values = (view.get("clients"), (view.get("request_rate") or {}).get("rate"), view.get("throughput_rps"),
              view.get("throughput_items_per_s"), seen.get("p50"), seen.get("p90"), seen.get("p95"), seen.get("p99"),
              seen.get("mean"), split.get("client_send"), split.get("network"), split.get("queue"),
              split.get("compute"), split.get("compute_input"), split.get("compute_infer"),
              split.get("compute_output"), split.get("client_recv"))
    return dict(zip(store.CLIENT_COLUMNS, values))


def perf_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep point of the finished runs with clients (results.csv's order),
    from its median run: perf_analyzer's columns (see the module docstring), then
    ``point``, ``seeds``, ``seed`` (the median run's) and the swept columns. Empty where
    no run had a ``load``."""
    if "client_throughput_rps" not in results.columns:
        return pd.DataFrame()
    ok = results[(results["status"] == "ok") & results["client_throughput_rps"].notna()]
    swept = store.swept_columns(ok.columns)
    rows = []
    for point, runs in ok.groupby(points_of(ok), sort=False):
        order = np.argsort(pd.to_numeric(runs["client_mean_ms"]).to_numpy(dtype=float), kind="stable")
        median = runs.iloc[order[(len(runs) - 1) // 2]]
        figure = {column: _number(median[column]) for column in store.CLIENT_COLUMNS}
        rate = figure["request_rate"]
        first = {REQUEST_RATE: _cell(rate)} if np.isfinite(rate) else {CONCURRENCY: _cell(figure["clients"])}
        if not np.isfinite(figure["compute_infer_ms"]):  # no split measured: the whole compute is shown as infer
            figure["compute_infer_ms"] = figure["compute_ms"]
        rows.append({**first, **{name: _cell(figure[column] * scale)
                                 for name, (column, scale) in PERF_COLUMNS.items()},
                     "point": point, "seeds": len(runs), "seed": median["seed"], **median[swept].to_dict()})
    if not rows:
        return pd.DataFrame()
    leading = [c for c in (CONCURRENCY, REQUEST_RATE) if any(c in row for row in rows)]
    # objects, so that whole numbers are written as perf_analyzer writes them (not 4.0)
    return pd.DataFrame(rows, columns=[*leading, *PERF_COLUMNS, "point", "seeds", "seed", *swept], dtype=object)


def write_perf_table(target: Path, table: pd.DataFrame) -> None:
    """:func:`perf_table` as a CSV, written atomically (an empty cell: not measured)."""
    with store.atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)


def _number(value) -> float:
    """A results.csv cell as a float, NaN where it is empty."""
    return float("nan") if value is None or pd.isna(value) else float(value)


def _cell(value: float):
    """A figure rounded to :data:`DECIMALS`, a whole number as one (perf_analyzer writes
    integers), or ``None`` (an empty cell) where there is none."""
    if not np.isfinite(value):
        return None
    value = round(value, DECIMALS)
    return int(value) if value == int(value) else value
