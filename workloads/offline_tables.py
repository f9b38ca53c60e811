"""Import an offline latency-per-batch table as a profile (``servesim profile import
--format perf-analyzer | offline-table``): the CSV NVIDIA's perf_analyzer writes with
``-f FILE.csv``, or the plain offline table NVIDIA publishes for its models.

An *offline* table times requests of one batch size sent one at a time (concurrency 1):
nothing queues, so each row is what one batch costs. What that cost contains differs,
and a profile must hold only the model's own time per batch, or a simulated server
would pay the client's and the network's costs inside its batches:

* perf_analyzer splits the mean request into client send, network + server overhead,
  server queue, server compute (input, infer, output) and client receive. The server
  compute is the device's time per batch: it becomes the profile's p50. The rest are
  fixed per-request costs outside the model; they are kept, by batch size, as metadata
  lines (:data:`REQUEST_PARTS`, read back by :func:`request_costs`). perf_analyzer
  gives percentiles of the end-to-end latency only, so the service time's p90 and p99
  are its mean plus the end-to-end p90 and p99 minus the end-to-end p50: at
  concurrency 1 the other parts are assumed constant, so the whole measured spread is
  put on the compute (an upper bound on its spread).
* A published table gives only the latency the client saw (send, network and receive
  included, not separable). Its median is the p50 (or its mean, said so, when it has no
  median); a percentile the table lacks is set to the one below it and named in the
  metadata as not measured.

A throughput column, where there is one, checks the table: at concurrency 1 the
throughput times the mean latency over the batch size is 1 (within
:data:`OVERLAP_TOLERANCE`). Anything else means the requests overlapped (then the
latency is not a batch's cost) or a unit is wrong.

Input: ``# key: value`` lines, then a CSV or a Markdown (pipe) table, with one row per
batch size in increasing order. Column names are matched without case, spaces or
Markdown emphasis; a unit in brackets in a header (``P90 Latency (ms)``) or after a
number in a cell (``24.92 ms``, ``40 img/s``) is read. ``docs/PROFILES.md`` lists the
columns each format needs.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from .metadata_lines import metadata_entry
from .profile import Profile, ProfileError, ProfileRow

FORMATS = ("perf-analyzer", "offline-table")
DEFAULT_TIME_UNIT = {"perf-analyzer": "us", "offline-table": "ms"}  # what each writes without a unit
STAGE = "forward"  # the whole model per batch, as in `M_full`
OVERLAP_TOLERANCE = 0.2  # |throughput x mean latency / batch - 1| allowed at concurrency 1
# The per-request parts of a perf_analyzer row outside the model's service time, and the
# compute's own split, each kept as a metadata line "KEY: B:ms B:ms ..."
REQUEST_PARTS = {"client_send": "client_send_ms", "network": "network_server_ms", "queue": "server_queue_ms",
                 "client_recv": "client_recv_ms"}
COMPUTE_PARTS = {"compute_input": "compute_input_ms", "compute_infer": "compute_infer_ms",
                 "compute_output": "compute_output_ms"}
TIME_UNITS = {"us": 1e-3, "usec": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0, "msec": 1.0, "s": 1e3, "sec": 1e3}

# Header names, lower case with single spaces, by the column they mean.
ALIASES = {
    "batch": ("batch", "batch size", "batch_size", "client batch size", "bs"),
    "concurrency": ("concurrency", "concurrent client requests", "request concurrency"),
    "request_rate": ("request rate",),
    "throughput": ("inferences/second", "inferences/sec", "infer/sec", "throughput", "throughput avg",
                   "images/sec", "images/s", "img/s"),
    "client_send": ("client send",),
    "network": ("network+server send/recv",),
    "queue": ("server queue",),
    "compute_input": ("server compute input",),
    "compute_infer": ("server compute infer",),
    "compute_output": ("server compute output",),
    "cache_hit": ("server cache hit",),
    "client_recv": ("client recv",),
    "avg": ("avg latency", "latency avg", "average latency", "mean latency"),
    "latency": ("latency",),
}
_NAMES = {alias: column for column, aliases in ALIASES.items() for alias in aliases}
_PERCENTILE = re.compile(r"p(\d+) latency|latency p(\d+)|latency (\d+)%|p(\d+)")
TIMES = {"client_send", "network", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit",
         "client_recv", "avg", "latency", "p50", "p90", "p95", "p99"}
PERF_ANALYZER_NEEDS = ("batch", "concurrency", "throughput", "client_send", "network", "queue", "compute_input",
                       "compute_infer", "compute_output", "client_recv", "p50", "p90", "p99")
PERF_ANALYZER_NOTES = {
    "service_time": "perf_analyzer server compute per batch (compute input + infer + output, means) as p50; p90 and "
                    "p99 = p50 + end-to-end (pX - p50): at concurrency 1 the other parts of a request are taken as "
                    "constant, so the whole measured spread is put on the compute (an upper bound)",
    "per_request_costs": f"means per request at concurrency 1 by batch size (batch:ms), outside the service time: "
                         f"{', '.join(REQUEST_PARTS.values())}; the compute's split: "
                         f"{', '.join(COMPUTE_PARTS.values())}",
    "timed_calls": "not in the table (rows say repeats 1)",
}
_HEADER_UNIT = re.compile(r"(.*?)\s*[(\[]\s*([^()\[\]]+?)\s*[)\]]")
_CELL = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S.*)?")


def read_text(path: Path | str) -> str:
    """The text of a file to import; a missing, unreadable or binary file is a one-line
    :class:`ProfileError` naming it."""
    name = str(path)
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ProfileError(f"{name}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{name}: not UTF-8 text (byte {exc.start}); a profile to import is a CSV file") from None
    except OSError as exc:
        raise ProfileError(f"{name}: cannot read ({exc.strerror or exc})") from None


def leading_metadata(lines: list[str]) -> tuple[dict[str, str], int]:
    """The ``# key: value`` lines (and blank lines) that open a file, and the index of
    the first line after them."""
    metadata: dict[str, str] = {}
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].lstrip().startswith("#")):
        entry = metadata_entry(lines[start]) if lines[start].strip() else None
        if entry is not None:
            metadata[entry[0]] = entry[1]
        start += 1
    return metadata, start


@dataclass(frozen=True)
class Column:
    """A recognised column: its position, its header as written (for messages) and, for
    a time, the milliseconds in one of its unit."""

    index: int
    header: str
    ms: float = 1.0


@dataclass(frozen=True)
class Point:
    """One batch size's row, in ms: the service time's percentiles and, from
    perf_analyzer, the mean of each part of a request."""

    line: int
    batch_size: int
    p50: float
    p90: float
    p99: float
    parts: Mapping[str, float]


def import_offline_table(path: Path | str, fmt: str, hardware: str, model: str,
                         metadata: Optional[Mapping[str, str]] = None, time_unit: Optional[str] = None) -> Profile:
    """The profile of the offline table at ``path``: model ``model``, one stage
    (:data:`STAGE`) on ``hardware``, one row per batch size (see the module docstring).
    ``time_unit`` is the unit of times whose header and cells name none (default: what
    ``fmt`` writes, :data:`DEFAULT_TIME_UNIT`); ``metadata`` adds to or overrides the
    file's own ``# key: value`` lines. Any problem is a :class:`ProfileError` naming the
    file, line, column and value."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    name = str(path)
    unit = time_unit or DEFAULT_TIME_UNIT[fmt]
    if unit not in TIME_UNITS:
        raise ProfileError(f"--time-unit {unit!r}: expected one of {', '.join(TIME_UNITS)}")
    found, header_line, header, table = _read_table(read_text(path), name)
    columns = _columns(header, f"{name} line {header_line}", TIME_UNITS[unit])
    if fmt == "perf-analyzer":
        points = _perf_analyzer(columns, table, name, header_line)
        notes = {**PERF_ANALYZER_NOTES, **_parts_metadata(points)}
    else:
        points, notes = _offline_table(columns, table, name, header_line)
    _check_order(points, columns["batch"], name)
    meta = {**found, "source": f"imported from {Path(path).name} by servesim profile import --format {fmt}",
            **notes, **(metadata or {})}
    # rounded to 1e-9 ms, far below any table's resolution, so that sums of the table's own
    # decimals are written as such (2.2 - 2.1 + 5.95 is 6.1499999999999995 in floats)
    rows = [ProfileRow(hardware, model, STAGE, p.batch_size, *(round(v, 9) for v in (p.p50, p.p90, p.p99)), 1)
            for p in points]
    return Profile.from_rows(rows, meta, source=name)


def read_online_table(path: Path | str, time_unit: str = "us") -> tuple[str, list[dict[str, float]]]:
    """A measured online table (perf_analyzer's ``-f`` CSV over a concurrency or request-rate
    range, or a published one, CSV or Markdown): the name of its load column
    (``concurrency`` or ``request_rate``) and one ``{column: value}`` per row, times in ms,
    for every recognised column (:data:`ALIASES`, percentiles) the table has. ``time_unit``
    is the unit of times whose header and cells name none. What it is compared with is
    :mod:`experiments.perf_compare`'s business; here a bad cell is a :class:`ProfileError`
    naming the file, line, column and value."""
    name = str(path)
    if time_unit not in TIME_UNITS:
        raise ProfileError(f"--time-unit {time_unit!r}: expected one of {', '.join(TIME_UNITS)}")
    _, header_line, header, table = _read_table(read_text(path), name)
    columns = _columns(header, f"{name} line {header_line}", TIME_UNITS[time_unit])
    load = next((c for c in ("concurrency", "request_rate") if c in columns), None)
    if load is None:
        raise ProfileError(f"{name} line {header_line}: no column 'Concurrency' or 'Request Rate'; an online table "
                           f"has one row per concurrency (or request rate)")
    _missing(columns, ("throughput",), name, header_line, "perf-analyzer")
    rows = []
    for line, cells in table:
        where = f"{name} line {line}"
        rows.append({column: _value(cells, spec, column, where, positive=column in (load, "throughput"))
                     for column, spec in columns.items() if column not in ("batch", "cache_hit")})
    return load, rows


def request_costs(profile: Profile) -> dict[str, dict[int, float]]:
    """The per-request parts a perf_analyzer import recorded (metadata keys of
    :data:`REQUEST_PARTS` and :data:`COMPUTE_PARTS`): ``{key: {batch_size: ms}}``; empty
    for any other profile."""
    out = {}
    for key in (*REQUEST_PARTS.values(), *COMPUTE_PARTS.values()):
        if key in profile.metadata:
            pairs = (item.split(":") for item in profile.metadata[key].split())
            out[key] = {int(batch): float(ms) for batch, ms in pairs}
    return out


def _read_table(text: str, name: str) -> tuple[dict[str, str], int, list[str], list[tuple[int, list[str]]]]:
    """Metadata, the header's line number and cells, and (line number, cells) of each
    row: a Markdown table when the first line starts with '|', else CSV."""
    lines = text.splitlines()
    metadata, start = leading_metadata(lines)
    if start < len(lines) and lines[start].lstrip().startswith("|"):
        rows = [(n, [c.strip() for c in line.strip().strip("|").split("|")])
                for n, line in enumerate(lines[start:], start + 1) if line.strip()]
        rows = [(n, cells) for n, cells in rows if not all(re.fullmatch(r":?-+:?", c) for c in cells)]
    else:
        rows = [(n, cells) for n, cells in zip(range(start + 1, len(lines) + 1),
                                               csv.reader(io.StringIO("\n".join(lines[start:])))) if cells]
    if not rows:
        raise ProfileError(f"{name}: no header line; see docs/PROFILES.md for the columns")
    (header_line, header), table = rows[0], rows[1:]
    for n, cells in table:
        if len(cells) != len(header):
            raise ProfileError(f"{name} line {n}: {len(cells)} values for {len(header)} columns")
    if not table:
        raise ProfileError(f"{name}: a header and no rows; an offline table needs one row per batch size")
    return metadata, header_line, header, table


def _columns(header: list[str], where: str, default_ms: float) -> dict[str, Column]:
    """The recognised columns by meaning; other columns are ignored."""
    found: dict[str, Column] = {}
    for index, cell in enumerate(header):
        text = " ".join(cell.strip().strip("*`_").strip().lower().split())
        match = _HEADER_UNIT.fullmatch(text)
        text, unit = (match.group(1), match.group(2)) if match else (text, None)
        percentile = _PERCENTILE.fullmatch(text)
        column = _NAMES.get(text) or (f"p{next(g for g in percentile.groups() if g)}" if percentile else None)
        if column is None:
            continue
        if column in found:
            raise ProfileError(f"{where}: columns {found[column].header!r} and {cell!r} both give {column}; "
                               f"keep one")
        ms = default_ms
        if column in TIMES and unit is not None:
            if unit not in TIME_UNITS:
                raise ProfileError(f"{where}: column {cell!r} is in {unit!r}; expected a time unit, one of "
                                   f"{', '.join(TIME_UNITS)}")
            ms = TIME_UNITS[unit]
        found[column] = Column(index, cell.strip(), ms)
    return found


def _missing(columns: Mapping[str, Column], needed, name: str, line: int, fmt: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        names = [ALIASES[c][0] if c in ALIASES else f"{c} latency" for c in missing]
        raise ProfileError(f"{name} line {line}: no column {names[0]!r} (missing: {', '.join(map(repr, names))}); "
                           f"docs/PROFILES.md lists what --format {fmt} needs")


def _value(cells: list[str], column: Column, column_name: str, where: str, positive: bool = True) -> float:
    """The cell of ``column`` in ms (a time), items/s (a throughput) or a count; a
    negative, zero (where ``positive``), non-finite or unreadable value is an error."""
    text = cells[column.index].strip().replace(",", "")
    match = _CELL.fullmatch(text)
    unit = (match.group(2) or "").lower() if match else ""
    value = math.nan
    if match and column_name in TIMES and (not unit or unit in TIME_UNITS):
        value = float(match.group(1)) * (TIME_UNITS[unit] if unit else column.ms)
    elif match and (not unit or column_name == "throughput" and re.fullmatch(r"\S*/s(ec(ond)?)?", unit)):
        value = float(match.group(1))
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        rule = "a number > 0" if positive else "a number >= 0"
        raise ProfileError(f"{where}: column {column.header!r} is {cells[column.index]!r}; expected {rule}"
                           + (" (a time, optionally with its unit)" if column_name in TIMES else ""))
    return value


def _whole(cells: list[str], column: Column, where: str) -> int:
    text = cells[column.index].strip()
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise ProfileError(f"{where}: column {column.header!r} is {text!r}; expected a whole number >= 1")
    return int(text)


def _perf_analyzer(columns: dict[str, Column], table, name: str, header_line: int) -> list[Point]:
    if "request_rate" in columns and "concurrency" not in columns:
        raise ProfileError(f"{name} line {header_line}: a request-rate table ({columns['request_rate'].header!r}); "
                           f"only rows measured at concurrency 1 (perf_analyzer --concurrency-range 1) time one "
                           f"batch at a time")
    if "compute_infer" not in columns:
        raise ProfileError(f"{name} line {header_line}: no server-side columns ('Server Compute Infer', ...); "
                           f"without them the model's time cannot be told from the client's: import the table with "
                           f"--format offline-table (its end-to-end latency as the service time)")
    _missing(columns, PERF_ANALYZER_NEEDS, name, header_line, "perf-analyzer")
    points = []
    for line, cells in table:
        where = f"{name} line {line}"
        _at_concurrency_one(cells, columns, where)
        batch = _whole(cells, columns["batch"], where)
        parts = {c: _value(cells, columns[c], c, where, positive=False) for c in (*REQUEST_PARTS, *COMPUTE_PARTS)}
        if "cache_hit" in columns and _value(cells, columns["cache_hit"], "cache_hit", where, positive=False) > 0:
            raise ProfileError(f"{where}: column {columns['cache_hit'].header!r} is "
                               f"{cells[columns['cache_hit'].index]!r}; responses served from Triton's cache do "
                               f"not time the model: measure with the response cache off")
        compute = sum(parts[c] for c in COMPUTE_PARTS)
        if compute <= 0:
            raise ProfileError(f"{where}: the server compute columns (input, infer, output) add up to 0; the "
                               f"model's time per batch must be > 0")
        p50, p90, p99 = (_value(cells, columns[c], c, where) for c in ("p50", "p90", "p99"))
        _check_ordered(p50, p90, p99, where)
        mean = _value(cells, columns["avg"], "avg", where) if "avg" in columns else sum(parts.values())
        if compute > mean * (1 + OVERLAP_TOLERANCE):
            raise ProfileError(f"{where}: the server compute ({compute:g} ms) exceeds the mean end-to-end latency "
                               f"({mean:g} ms); are the columns in the same unit? (--time-unit)")
        _check_overlap(cells, columns, batch, mean, where)
        points.append(Point(line, batch, compute, compute + p90 - p50, compute + p99 - p50, parts))
    return points


def _offline_table(columns: dict[str, Column], table, name: str, header_line: int):
    latency = next((c for c in ("p50", "latency", "avg") if c in columns), None)
    if latency is None:
        raise ProfileError(f"{name} line {header_line}: no latency column; an offline table needs 'Batch Size' "
                           f"and one of 'P50 Latency', 'Latency' or 'Avg Latency' (docs/PROFILES.md)")
    _missing(columns, ("batch",), name, header_line, "offline-table")
    given = [c for c in ("p90", "p99") if c in columns]
    points = []
    for line, cells in table:
        where = f"{name} line {line}"
        if "concurrency" in columns:
            _at_concurrency_one(cells, columns, where)
        batch = _whole(cells, columns["batch"], where)
        p50 = _value(cells, columns[latency], latency, where)
        p90 = _value(cells, columns["p90"], "p90", where) if "p90" in columns else p50
        p99 = _value(cells, columns["p99"], "p99", where) if "p99" in columns else p90
        _check_ordered(p50, p90, p99, where)
        mean = _value(cells, columns["avg"], "avg", where) if "avg" in columns else p50
        _check_overlap(cells, columns, batch, mean, where)
        points.append(Point(line, batch, p50, p90, p99, {}))
    taken = {"p50": "the table's p50", "latency": "the table's latency",
             "avg": "the table's mean latency, taken as the median (the table gives no p50)"}[latency]
    notes = {"service_time": f"end-to-end latency per batch as the client saw it, one request at a time (client "
                             f"send, network and receive included: the table does not separate them); p50 = {taken}",
             "timed_calls": "not in the table (rows say repeats 1)"}
    unmeasured = [c for c in ("p90", "p99") if c not in given]
    if unmeasured:
        notes["not_measured"] = (f"{' and '.join(unmeasured)}: the table does not give them; each is set to the "
                                 f"percentile below it, so the profile has no spread above that")
    return points, notes


def _check_ordered(p50: float, p90: float, p99: float, where: str) -> None:
    if not p50 <= p90 <= p99:
        raise ProfileError(f"{where}: latencies out of order: p50 {p50:g} ms, p90 {p90:g} ms, p99 {p99:g} ms; "
                           f"expected p50 <= p90 <= p99")


def _at_concurrency_one(cells, columns, where) -> None:
    column = columns["concurrency"]
    if not re.fullmatch(r"1(\.0*)?", cells[column.index].strip()):
        raise ProfileError(f"{where}: column {column.header!r} is {cells[column.index]!r}; an offline table is "
                           f"measured at concurrency 1 (one batch at a time, nothing queued)")


def _check_overlap(cells, columns, batch: int, mean_ms: float, where: str) -> None:
    """At concurrency 1, throughput x mean latency / batch size is 1."""
    if "throughput" not in columns:
        return
    throughput = _value(cells, columns["throughput"], "throughput", where)
    outstanding = throughput * mean_ms / 1e3 / batch
    if abs(outstanding - 1) > OVERLAP_TOLERANCE:
        raise ProfileError(f"{where}: throughput x mean latency / batch size is {outstanding:.3g}, not 1 "
                           f"({columns['throughput'].header!r} {throughput:g}/s, {mean_ms:g} ms, batch {batch}): "
                           f"either the requests overlapped, so a row is not one batch's time, or a time unit is "
                           f"wrong (--time-unit)")


def _check_order(points: list[Point], column: Column, name: str) -> None:
    for before, point in zip(points, points[1:]):
        if point.batch_size == before.batch_size:
            raise ProfileError(f"{name} line {point.line}: column {column.header!r} is {point.batch_size} again "
                               f"(line {before.line}); one row per batch size")
        if point.batch_size < before.batch_size:
            raise ProfileError(f"{name} line {point.line}: column {column.header!r} is {point.batch_size} after "
                               f"{before.batch_size}; rows must be in increasing batch size")


def _parts_metadata(points: list[Point]) -> dict[str, str]:
    """The per-request parts of perf_analyzer rows as metadata lines ``KEY: B:ms ...``."""
    return {key: " ".join(f"{p.batch_size}:{p.parts[part]:.10g}" for p in points)
            for part, key in {**REQUEST_PARTS, **COMPUTE_PARTS}.items()}
