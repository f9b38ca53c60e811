"""Results on disk, written so that a crash never leaves a half-written file.

Every file is written to a temporary name in the same folder and then renamed over the
target (``os.replace`` is atomic on POSIX and Windows). A run's ``summary.json`` is
written last, so its presence means the run finished and its other files are whole.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

SUMMARY = "summary.json"
CONFIG = "config.yaml"
REQUESTS = "requests.parquet"
ERROR = "error.txt"
RESULTS = "results.csv"
CONTROLLER = "controller.csv"   # an online exit policy's state over time (Apparate)
# results.csv: "run", "status", "seed", the swept keys, with exits "policy" and its
# "policy_<param>" columns, then these (the flattened summary), then with exits the
# changes against the vanilla run of the same point (VERSUS_VANILLA):
TIMESERIES = "timeseries.csv"  # a cluster run: load and cores over time
PLANS = "plans.csv"  # a cluster run: every plan its adapter made
SUMMARY_COLUMNS = (
    "requests", "completed", "latency_p25_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms",
    "latency_p99_ms", "latency_mean_ms",
    "throughput_rps", "dropped", "rejected", "slo_violation_rate", "accuracy", "agreement",
    "mean_stages_paid", "cost", "cost_busy_s", "utilisation", "mean_batch_items", "out_of_range_lookups", "error",
)
VERSUS_VANILLA = ("latency_p25_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_rps")

# mkstemp creates files readable by their owner only; results get the usual permissions.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path to write; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: Path, data) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_requests(target: Path, columns: dict[str, np.ndarray]) -> None:
    with atomic_path(target) as tmp:
        pd.DataFrame(columns).to_parquet(tmp, index=False)


def write_columns(target: Path, columns: dict[str, list]) -> None:
    """Equal-length named columns as a CSV."""
    with atomic_path(target) as tmp:
        pd.DataFrame(columns).to_csv(tmp, index=False)


def read_requests(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def write_rows(target: Path, rows: list[dict]) -> None:
    """A CSV with the union of the rows' keys as columns, in first-seen order."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(target) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
