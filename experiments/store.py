"""Results on disk, written so that a crash never leaves a half-written file.

Every file is written to a temporary name (``.NAME.XXXX.tmp``) in the same folder and
then renamed over the target (``os.replace`` is atomic on POSIX and Windows). A run's
``summary.json`` is written last, so its presence means the run's other files are whole;
the sweep's ``manifest.json`` then lists the run as finished, with a digest of its
config, and that is what ``--resume`` trusts. Only the sweep's own process writes here:
runs, wherever they execute, send their files back as bytes (:class:`RunFiles`), except
a run's request table, which a run on this machine writes as it goes to a temporary
file beside the run folders (:class:`RequestsWriter`), and which is then renamed into
place.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .names import GROUP_LABEL

SUMMARY = "summary.json"
CONFIG = "config.yaml"
REQUESTS = "requests.parquet"
ERROR = "error.txt"
RESULTS = "results.csv"
RESULTS_BY_POINT = "results_by_point.csv"  # one row per sweep point: each figure's mean and 95% CI over seeds
CONTROLLER = "controller.csv"   # an online exit policy's state over time (Apparate)
# results.csv: RUN_COLUMNS, the swept values (swept_values), with exits "policy" and its
# "policy_<param>" columns, for a cluster CLUSTER_COLUMNS, then these (the flattened
# summary), for a ``load`` CLIENT_COLUMNS, then with exits the changes against the vanilla run of the same point
# (VERSUS_VANILLA, as "<figure>_change"):
TIMESERIES = "timeseries.csv"  # a cluster run: load and cores over time
PLANS = "plans.csv"  # a cluster run: every plan its adapter made
MANIFEST = "manifest.json"  # the sweep: its finished and failed runs
INTERVALS = "intervals.parquet"  # a plain run: its counters per interval of arrival time (sim.summary_stream)
LATENCY_INTERVALS = "latency_intervals.parquet"  # a plain run: its latency percentiles per minute of arrival time
TEMPORARY = ".tmp"  # the suffix of a file being written (see atomic_path)
# files some runs have and others not: a rewritten run folder must not keep a stale one
OPTIONAL = (CONTROLLER, TIMESERIES, PLANS, ERROR, REQUESTS, INTERVALS, LATENCY_INTERVALS)
SUMMARY_COLUMNS = (
    "requests", "completed", "latency_p25_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms",
    "latency_p99_ms", "latency_mean_ms",
    "throughput_rps", "overloaded", "dropped", "rejected", "slo_violation_rate", "accuracy", "agreement",
    "mean_stages_paid", "cost", "cost_busy_s", "cost_money", "utilisation", "mean_batch_items", "out_of_range_lookups",
    "interpolated_batches", "error",
)
VERSUS_VANILLA = ("latency_p25_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_rps")
RUN_COLUMNS = ("run", "status", "seed", "point")  # point: the run's sweep point, named as its folder less the seed
CLUSTER_COLUMNS = ("adapter", "pipeline_accuracy", "mean_cores", "peak_cores")
# a run of closed-loop or request-rate clients (``load:``): what the clients see, as
# perf_analyzer prints it (summary.json's ``closed_loop``), after the summary's columns;
# open-loop runs have none of them. ``clients``: the concurrency (a request rate's cap);
# ``request_rate``: a request-rate load's rate (empty for a closed loop); then the
# throughput, the latency clients see, and the mean request's parts (ms), which add up to
# ``client_mean_ms`` (``compute_ms`` is input + infer + output, those empty where the
# profile measured no split)
CLIENT_COLUMNS = ("clients", "request_rate", "client_throughput_rps", "client_throughput_items_per_s",
                  "client_p50_ms", "client_p90_ms", "client_p95_ms", "client_p99_ms", "client_mean_ms",
                  "client_send_ms", "network_ms", "queue_ms", "compute_ms", "compute_input_ms", "compute_infer_ms",
                  "compute_output_ms", "client_recv_ms")
PERF_ANALYZER = "perf_analyzer.csv"  # a sweep with clients, as perf_analyzer writes it (experiments.perf_table)


class ResultsError(ValueError):
    """An output folder's own files (results.csv) are not what servesim writes."""


def is_run_name(name) -> bool:
    """Whether ``name`` can be a run's folder: one plain path component. Names read back
    from an output folder's files are checked with this before they name a path."""
    return (isinstance(name, str) and name not in ("", ".", "..")
            and not any(c in name for c in ("/", "\\", "\0")))


# mkstemp creates files readable by their owner only; results get the usual permissions.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path to write; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMPORARY, dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporaries(folder: Path) -> int:
    """Delete what a killed sweep left half-written under ``folder``; returns how many."""
    stale = list(Path(folder).glob(f"**/.*{TEMPORARY}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def move_file(source: Path, target: Path) -> None:
    """Put a finished file (written under a temporary name on the same disk) at ``target``,
    atomically; it is removed if it cannot be."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    except BaseException:
        Path(source).unlink(missing_ok=True)
        raise


def write_text(target: Path, text: str) -> None:
    write_bytes(target, text.encode())


def json_text(data) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def write_json(target: Path, data) -> None:
    write_text(target, json_text(data))


def requests_bytes(columns: dict[str, np.ndarray]) -> bytes:
    """A per-request table as Parquet, straight from the columns (a DataFrame on the way
    would double the peak memory of a run of millions of requests)."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({name: pa.array(values) for name, values in columns.items()}), sink)
    return sink.getvalue().to_pybytes()


def write_requests(target: Path, columns: dict[str, np.ndarray]) -> None:
    write_bytes(target, requests_bytes(columns))


ROW_GROUP = 1 << 20  # rows per row group of a streamed requests.parquet (pyarrow's default for a whole table)


class RequestsWriter:
    """``requests.parquet`` written a row group at a time, as a run hands over its table
    in chunks (:data:`sim.row_stream.RecordSink`), so that a run's memory does not grow
    with its length. It writes to a temporary file under ``spool`` (a folder on the
    sweep's disk: :meth:`close` returns the file's path for :func:`write_run` to move into
    place), or, without one (a worker on another machine), to memory (bytes).

    ``extra(columns)`` adds columns to each chunk's (the warm-up flag)."""

    def __init__(self, spool: Optional[Path], name: str, extra=None):
        self.path: Optional[Path] = None
        if spool is not None:
            Path(spool).mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.{REQUESTS}.", suffix=TEMPORARY, dir=spool)
            os.close(fd)
            os.chmod(tmp, 0o666 & ~_UMASK)
            self.path = Path(tmp)
        self.target = pa.BufferOutputStream() if self.path is None else str(self.path)
        self.extra = extra
        self.writer: Optional[pq.ParquetWriter] = None
        self.rows = 0
        self.pending: list[pa.Table] = []  # chunks not yet written, pending_rows rows in all
        self.pending_rows = 0

    def __call__(self, table) -> None:
        columns = table.columns(first=self.rows)
        if self.extra is not None:
            columns.update(self.extra(columns))
        self.pending.append(pa.table({name: pa.array(values) for name, values in columns.items()}))
        self.rows += len(table)
        self.pending_rows += len(table)
        if self.pending_rows >= ROW_GROUP:
            self._write(ROW_GROUP * (self.pending_rows // ROW_GROUP))

    def _write(self, rows: int) -> None:
        """Write the first ``rows`` rows held as row groups of :data:`ROW_GROUP` rows, and
        keep the rest (chunks of tens of thousands of rows each would make a file slow to
        read and poorly compressed)."""
        batch = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [batch.slice(rows)], batch.num_rows - rows
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.target, batch.schema)
        self.writer.write_table(batch.slice(0, rows), row_group_size=ROW_GROUP)

    def close(self) -> Path | bytes:
        """The whole file: its path under ``spool``, or its bytes."""
        if self.pending_rows or self.writer is None and self.pending:
            self._write(self.pending_rows)
        if self.writer is None:
            raise ValueError("no request rows were written")
        self.writer.close()
        return self.path if self.path is not None else self.target.getvalue().to_pybytes()

    def discard(self) -> None:
        """Let go of a file that will not be used (its run failed)."""
        if self.writer is not None:
            self.writer.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def columns_bytes(columns: dict[str, list]) -> bytes:
    """Equal-length named columns as a CSV."""
    return pd.DataFrame(columns).to_csv(index=False).encode()


def write_columns(target: Path, columns: dict[str, list]) -> None:
    write_bytes(target, columns_bytes(columns))


def digest(text: str) -> str:
    """What the manifest keeps of a run's config: equal digests, equal configs."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class RunFiles:
    """What one run sends back to the sweep: its folder's files and its summary, or its
    error (``error``: one line for results.csv and the terminal; ``detail``: all of it,
    a bug's traceback included, for ``error.txt``)."""

    name: str
    config: str  # the run's config as YAML (config.yaml)
    summary: Optional[dict] = None
    # summary.json and config.yaml excluded; a file written as the run went (RequestsWriter) is its path
    files: dict[str, bytes | Path] = field(default_factory=dict)
    error: Optional[str] = None
    detail: Optional[str] = None


def write_run(run_dir: Path, run: RunFiles) -> None:
    """Write a run's folder: summary.json first removed and last written, so that a crash
    in between leaves a folder that reads as unfinished; a file an earlier run of the
    folder had and this one has not is removed."""
    (run_dir / SUMMARY).unlink(missing_ok=True)
    write_text(run_dir / CONFIG, run.config)
    files = dict(run.files)
    if run.error is not None:
        files[ERROR] = (run.detail or run.error).rstrip("\n").encode() + b"\n"
    for name, data in files.items():
        if isinstance(data, Path):  # written already, on the same disk: moved into place
            move_file(data, run_dir / name)
        else:
            write_bytes(run_dir / name, data)
    for name in OPTIONAL:
        if name not in files:
            (run_dir / name).unlink(missing_ok=True)
    if run.error is None:
        write_json(run_dir / SUMMARY, run.summary)


class Manifest:
    """``manifest.json``: each run of the sweep that finished or failed, with its config's
    digest, rewritten atomically after every run. A run counts as finished for
    ``--resume`` only if the manifest says so for the same config and its summary reads."""

    def __init__(self, out_dir: Path, experiment: str):
        self.path = Path(out_dir) / MANIFEST
        self.experiment = experiment
        self.runs: dict[str, dict] = {}

    @classmethod
    def read(cls, out_dir: Path, experiment: str) -> "Manifest":
        """The folder's manifest; an empty one where there is none or it cannot be read
        (it is only ever replaced whole, so unreadable means not ours)."""
        manifest = cls(out_dir, experiment)
        try:
            data = json.loads(manifest.path.read_text())
            manifest.runs = {str(k): dict(v) for k, v in data["runs"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return manifest

    def finished(self) -> list[str]:
        return [name for name, entry in self.runs.items() if entry.get("status") == "ok"]

    def summary(self, name: str, config: str) -> Optional[dict]:
        """The summary of run ``name`` if it finished with this very config and its
        summary.json is the one written then (same digest), else None: a summary edited
        or damaged since is recomputed, not trusted. ``name`` is the sweep's own run
        name, never one read from the manifest, so no manifest can point outside."""
        entry = self.runs.get(name)
        if entry is None or entry.get("status") != "ok" or entry.get("config_sha256") != digest(config):
            return None
        try:
            text = (self.path.parent / name / SUMMARY).read_text(encoding="utf-8")
            summary = json.loads(text)
        except (OSError, ValueError):
            return None
        if entry.get("summary_sha256") != digest(text) or not isinstance(summary, dict):
            return None
        return summary

    def record(self, run: RunFiles) -> None:
        entry = {"status": "ok" if run.error is None else "failed", "config_sha256": digest(run.config)}
        if run.error is None:
            entry["summary_sha256"] = digest(json_text(run.summary))
        else:
            entry["error"] = run.error
        self.runs[run.name] = entry
        write_json(self.path, {"experiment": self.experiment, "runs": self.runs})


def read_folder(out_dir: Path | str) -> pd.DataFrame:
    """The results.csv of an experiment's output folder (:func:`read_results`), or an
    error saying the folder is none."""
    path = Path(out_dir) / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results.csv here; is {out_dir} an experiment output folder?")
    return read_results(path)


def read_results(path: Path) -> pd.DataFrame:
    """results.csv, checked before any of its values names a file: each run is a folder
    of this experiment (a plain name, no path), so a results.csv from elsewhere can
    neither make the plots read outside the folder nor write a plot outside ``plots/``."""
    try:
        results = pd.read_csv(path, dtype={"run": str, "status": str, "point": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not a results table ({' '.join(str(exc).split())})") from None
    missing = [c for c in ("run", "status") if c not in results.columns]
    if missing:
        raise ResultsError(f"{path}: no column {missing[0]!r}; is this a servesim results.csv?")
    for row, name in enumerate(results["run"], 2):
        if not is_run_name(name):
            raise ResultsError(f"{path}: line {row}: column 'run' is {name!r}; a run is a folder name "
                               f"of this experiment (no path, no '..')")
    return results


def read_summaries(out_dir: Path, names) -> dict[str, dict]:
    """The ``summary.json`` of each of the runs ``names`` of a sweep folder that has one."""
    out_dir = Path(out_dir)
    return {name: json.loads((out_dir / name / SUMMARY).read_text(encoding="utf-8")) for name in names
            if (out_dir / name / SUMMARY).exists()}


def read_requests(path: Path, columns: Optional[list[str]] = None) -> pd.DataFrame:
    return pd.read_parquet(path, columns=columns)


def _cell(value):
    """A swept value as one CSV cell: a structure as JSON, a boolean as JSON's, null as
    an empty cell, a number or a string as itself."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _fields(column: str, mapping: dict) -> dict:
    """``column.field`` for every field of a swept mapping, nested ones too (a group's
    ``label`` is its own column's value)."""
    cells = {}
    for key, value in mapping.items():
        if key != GROUP_LABEL:
            cells[f"{column}.{key}"] = _cell(value)
            if isinstance(value, dict):
                cells.update(_fields(f"{column}.{key}", value))
    return cells


def swept_values(params: dict) -> dict:
    """A sweep point's columns of results.csv: each swept key's value (a group's label,
    or the value: a mapping or list as JSON), then, for a mapping, each of its fields in
    a column of its own (``serving.batching.max_batch``). A field's column never hides a
    swept key of the same name (sweeping ``trace`` and ``trace.rate``, say)."""
    cells = {}
    for key, value in params.items():
        labelled = isinstance(value, dict) and isinstance(value.get(GROUP_LABEL), str)
        cells[key] = value[GROUP_LABEL] if labelled else _cell(value)
        if isinstance(value, dict):
            cells.update((column, cell) for column, cell in _fields(key, value).items() if column not in params)
    return cells


def swept_columns(columns) -> list[str]:
    """The columns of a results table that hold swept values (:func:`swept_values`),
    in its order: every column but the run's, the exit policy's (``policy``,
    ``policy_<param>``), a cluster's, the summary's and the changes against vanilla."""
    other = {*RUN_COLUMNS, *CLUSTER_COLUMNS, *SUMMARY_COLUMNS, *CLIENT_COLUMNS, "policy"}
    return [c for c in columns if c not in other and not c.startswith("policy_") and not c.endswith("_change")]


def swept_keys(columns) -> list[str]:
    """The swept keys among a results table's columns: its swept columns less the
    fields split off a swept mapping (``serving.batching``, not ``serving.batching.max_batch``)."""
    swept = swept_columns(columns)
    return [c for c in swept if not any(c.startswith(f"{k}.") for k in swept if k != c)]


def results_columns(rows: list[dict]) -> list[str]:
    """results.csv's columns for ``rows``: the run's, then the swept values, each key's
    fields after it (a field only some values have is found in later rows), then the
    rest in first-seen order."""
    seen = list(dict.fromkeys(k for row in rows for k in row))
    swept = swept_columns(seen)
    ordered = [c for k in swept_keys(seen) for c in swept if c == k or c.startswith(f"{k}.")]
    first = [c for c in RUN_COLUMNS if c in seen] + list(dict.fromkeys(ordered))
    return first + [c for c in seen if c not in first]


def write_rows(target: Path, rows: list[dict], fields: Optional[list[str]] = None) -> None:
    """A CSV with ``fields`` as columns, by default the union of the rows' keys in
    first-seen order."""
    fields = fields or list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(target) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
