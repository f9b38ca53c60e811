"""The profile table: measured latencies per (hardware, model, stage, batch size).

A profile is measured once, on real hardware, and then drives many simulated runs, so
the file has to say how it was measured and has to be trusted by everything downstream.
That is why it is a plain CSV (readable, diffable, writable from any profiler) that
opens with ``# key: value`` metadata lines (device, dtype, framework, date, execution
mode, plus any free keys) and is checked completely at load time: every problem is a
:class:`ProfileError` naming the file, the 1-based line (comment lines count), the
column and the offending value, so a bad table fails loudly before any run starts
instead of quietly skewing results.

Latencies in the table are in milliseconds, as profilers print them; the cost model
converts to the simulator's seconds.

Three percentiles cannot carry the rare stalls that set a real p99, so a profiler may
also keep each point's raw samples, in a sidecar beside the CSV (``X.csv`` ->
``X.samples.npz``, :data:`SAMPLES_SUFFIX`): numpy arrays ``keys`` (one
``hardware/model/stage/batch_size`` string per point, fields joined by
:data:`KEY_SEPARATOR`), ``counts`` and ``values_ms`` (every point's samples, one after
the other). It is loaded without pickle, and checked against the table: a sidecar
whose point is not a row, whose count is not the row's ``repeats`` or whose median is
not the row's p50 is stale, and refused. The ``measured`` noise (and ``per_batch``'s
whole-batch spread) draws from them.

Instances that share a device stretch one another's batches; how much is measured and
kept in a second sidecar, ``X.contention.csv`` (:mod:`workloads.contention`), read into
:attr:`Profile.contention`. A profile without it has no contention model, and a run with
more than one instance per device is refused.
"""

from __future__ import annotations

import csv
import math
import os
import reprlib
import tempfile
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import numpy as np

from servesim.workloads.client_samples import CLIENTS_SUFFIX
from servesim.workloads.metadata_lines import metadata_entry
from servesim.workloads.contention import (CONTENTION_SUFFIX, ContentionTable, contention_path, read_contention,
                                           tables_from_rows, write_contention)

COLUMNS = (
    "hardware",
    "model",
    "stage",
    "batch_size",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "repeats",
)
REQUIRED_METADATA = ("device", "dtype", "framework", "date", "execution_mode")
PROFILES_DIR = Path(__file__).with_name("profiles")
# Bounds on a measured point, far beyond any real one (the shipped profiles reach batch
# 64 and 40 s), so that a slip (extra digits, a wrong unit) fails here, with its line:
# the cost model tabulates every batch size up to the largest measured (100,000 sizes
# cost it about 15 MB a stage), and latencies near 1e308 ms add up to an infinite one.
MAX_BATCH_SIZE = 100_000
MAX_LATENCY_MS = 1e9  # 11.6 days
SAMPLES_SUFFIX = ".samples.npz"
KEY_SEPARATOR = "\x1f"  # the ASCII unit separator: in no model, stage or hardware name
PointKey = tuple[str, str, str, int]  # (hardware, model, stage, batch_size)

# A cell as an error message shows it: the repr of its text (control characters
# escaped, so the message stays one line), cut short.
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 60


def _shown(value: object) -> str:
    return _SHOWN.repr(str(value))


class ProfileError(ValueError):
    """A profile (file or in-code table) is malformed; the message names where and what."""


@dataclass(frozen=True)
class ProfileRow:
    """One measured point: the latency percentiles of one stage at one batch size."""

    hardware: str
    model: str
    stage: str
    batch_size: int
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    repeats: int


RowLike = Union[ProfileRow, Mapping[str, object], Sequence[object]]


@dataclass(frozen=True)
class Profile:
    """A validated profile table: rows in file order, metadata in file order, and where
    it came from (``source``: a path or a description, used in every error message).

    Build one with :func:`load_profile` or :meth:`Profile.from_rows`, which check it;
    the plain constructor trusts its arguments.
    """

    rows: tuple[ProfileRow, ...]
    metadata: dict[str, str]
    source: str = "<memory>"
    # raw samples (ms) of some points, by (hardware, model, stage, batch_size): see the module docstring
    samples: Mapping[PointKey, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    # measured slowdowns of instances sharing a device, by (hardware, model): workloads.contention
    contention: Mapping[tuple[str, str], ContentionTable] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "samples", dict(self.samples))
        object.__setattr__(self, "contention", dict(self.contention))

    @classmethod
    def from_rows(
        cls, rows: Iterable[RowLike], metadata: Mapping[str, str], source: str = "<memory>",
        samples: Mapping[PointKey, Sequence[float]] | None = None,
        contention: Sequence[Mapping[str, object]] = (),
    ) -> "Profile":
        """Build and check a profile in code (tests, queueing validation, profilers).

        A row is a :class:`ProfileRow`, a mapping with exactly the :data:`COLUMNS` keys,
        or a sequence of values in :data:`COLUMNS` order. ``samples`` are raw samples
        (ms) of some of the points, checked against their rows. ``contention`` are rows of
        the contention table (mappings with :data:`workloads.contention.CONTENTION_COLUMNS` keys).
        """
        checked, wheres = [], []
        for i, values in enumerate(rows, 1):
            where = f"{source} row {i}"
            checked.append(_parse_row(_as_mapping(values, where), where))
            wheres.append(where)
        _check_metadata(metadata, source)
        _check_table(checked, wheres, source)
        kept = {key: np.asarray(v, dtype=np.float64) for key, v in (samples or {}).items()}
        _check_samples(checked, kept, f"{source} samples")
        tables = tables_from_rows(contention, [f"{source} contention row {i}" for i in range(1, len(contention) + 1)],
                                  f"{source} contention", ProfileError) if contention else {}
        _check_contention(checked, tables, f"{source} contention")
        return cls(tuple(checked), dict(metadata), source, kept, tables)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the table atomically: a temporary file in the same folder, then
        ``os.replace``, so a reader never sees half a profile; and its raw samples to the
        sidecar (first, so that a new table never meets an old sidecar), or remove a
        sidecar a table without samples would leave stale."""
        path = Path(path)
        sidecar, slowdowns = samples_path(path), contention_path(path)
        if self.samples:
            _atomic(sidecar, self._write_samples, binary=True)
        elif sidecar.exists():
            sidecar.unlink()
        if self.contention:
            _atomic(slowdowns, lambda f: write_contention(f, self.contention))
        elif slowdowns.exists():
            slowdowns.unlink()
        _atomic(path, self._write_table)

    def _write_table(self, f) -> None:
        for key, value in self.metadata.items():
            f.write(f"# {key}: {value}\n")
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        # repr() of a float round-trips exactly, so load(save(p)) == p.
        writer.writerows([repr(v) if isinstance(v, float) else v for v in astuple(row)] for row in self.rows)

    def _write_samples(self, f) -> None:
        keys = list(self.samples)
        np.savez_compressed(f, keys=np.array([KEY_SEPARATOR.join(map(str, k)) for k in keys]),
                            counts=np.array([self.samples[k].size for k in keys], dtype=np.int64),
                            values_ms=np.concatenate([self.samples[k] for k in keys]))

    def slowed(self, hardware: str, factor: float, keep: tuple[str, ...] = ()) -> "Profile":
        """This profile with every latency measured on ``hardware`` (percentiles and raw
        samples) multiplied by ``factor``, except the stages named in ``keep``: a device
        time-shared with others (MPS) runs the same kernels ``factor`` times slower, as
        measured beside its neighbours."""
        if not factor >= 1 or not math.isfinite(factor):
            raise ValueError(f"slowdown must be a finite number >= 1, got {factor!r}")

        def slow(row: ProfileRow) -> ProfileRow:
            if row.hardware != hardware or row.stage in keep:
                return row
            return replace(row, latency_p50_ms=row.latency_p50_ms * factor, latency_p90_ms=row.latency_p90_ms * factor,
                           latency_p99_ms=row.latency_p99_ms * factor)

        samples = {key: values * factor if key[0] == hardware and key[2] not in keep else values
                   for key, values in self.samples.items()}
        return Profile(tuple(map(slow, self.rows)), self.metadata, f"{self.source} (x{factor:g} on {hardware})",
                       samples, self.contention)

    def models(self) -> tuple[str, ...]:
        """Model names, in the order first seen."""
        return tuple(dict.fromkeys(row.model for row in self.rows))

    def hardware(self, model: str | None = None) -> tuple[str, ...]:
        """Hardware names (only those that ran ``model``, if given), in the order first seen."""
        return tuple(dict.fromkeys(
            row.hardware for row in self.rows if model is None or row.model == model
        ))

    def stages(self, model: str) -> tuple[str, ...]:
        """The stages of ``model`` in the order first seen in the table: that order is the
        order a request flows through them."""
        stages = tuple(dict.fromkeys(row.stage for row in self.rows if row.model == model))
        if not stages:
            raise ProfileError(
                f"{self.source}: no rows for model {model!r}; it profiles {_names(self.models())}"
            )
        return stages

    def rows_for(self, model: str, stage: str, hardware: str | None = None) -> tuple[ProfileRow, ...]:
        """The rows of one stage, sorted by batch size. ``hardware=None`` is allowed only
        when a single hardware profiled that stage (otherwise batch sizes would clash)."""
        rows = [r for r in self.rows if r.model == model and r.stage == stage]
        if not rows:
            raise ProfileError(
                f"{self.source}: no rows for model {model!r} stage {stage!r}; "
                f"its stages are {_names(self.stages(model))}"
            )
        found = tuple(dict.fromkeys(r.hardware for r in rows))
        if hardware is None and len(found) > 1:
            raise ProfileError(
                f"{self.source}: model {model!r} stage {stage!r} is profiled on {_names(found)}; "
                f"pass hardware= to pick one"
            )
        if hardware is not None:
            rows = [r for r in rows if r.hardware == hardware]
            if not rows:
                raise ProfileError(
                    f"{self.source}: model {model!r} stage {stage!r} has no rows for hardware "
                    f"{hardware!r}; it is profiled on {_names(found)}"
                )
        return tuple(sorted(rows, key=lambda r: r.batch_size))


def profiles_in(folder: Path) -> list[Path]:
    """The profile CSVs of ``folder``, sorted: every ``*.csv`` but the contention tables
    and client samples (:mod:`workloads.client_samples`) that sit beside them."""
    return sorted(p for p in Path(folder).glob("*.csv") if not p.name.endswith((CONTENTION_SUFFIX, CLIENTS_SUFFIX)))


def load_profile(path: Union[str, os.PathLike]) -> Profile:
    """Read and check a profile CSV; any problem raises :class:`ProfileError`."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # tolerate a BOM (spreadsheet exports)
    except FileNotFoundError:
        raise ProfileError(f"{name}: no such profile file") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{name}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                           f"a profile is a CSV file") from None
    except OSError as exc:
        raise ProfileError(f"{name}: cannot read profile ({exc.strerror or exc})") from None

    metadata: dict[str, str] = {}
    header: list[str] | None = None
    rows: list[ProfileRow] = []
    wheres: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{name} line {n}"
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            if header is not None:
                raise ProfileError(
                    f"{where}: comment after the header; '# key: value' metadata lines "
                    f"must all come before the header"
                )
            entry = metadata_entry(line)
            if entry is None:
                raise ProfileError(f"{where}: metadata line {_shown(line.strip())} must look like '# key: value'")
            key, value = entry
            if key in metadata:
                raise ProfileError(f"{where}: metadata key {key!r} appears twice")
            metadata[key] = value
            continue
        cells = next(csv.reader([line]))
        if header is None:
            _check_header(cells, where)
            header = cells
            continue
        if len(cells) != len(header):
            raise ProfileError(
                f"{where}: {len(cells)} values for {len(header)} columns ({','.join(header)})"
            )
        rows.append(_parse_row(dict(zip(header, cells)), where))
        wheres.append(where)

    if header is None:
        raise ProfileError(f"{name}: no header line; expected the columns {','.join(COLUMNS)}")
    _check_metadata(metadata, name)
    _check_table(rows, wheres, name)
    sidecar = samples_path(path)
    samples = _read_samples(sidecar) if sidecar.exists() else {}
    _check_samples(rows, samples, str(sidecar))
    slowdowns = contention_path(path)
    tables = read_contention(slowdowns, ProfileError) if slowdowns.exists() else {}
    _check_contention(rows, tables, str(slowdowns))
    return Profile(tuple(rows), metadata, name, samples, tables)


def samples_path(path: Union[str, os.PathLike]) -> Path:
    """The raw-samples sidecar of the profile at ``path`` (``X.csv`` -> ``X.samples.npz``)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".csv") + SAMPLES_SUFFIX)


def _atomic(path: Path, write, binary: bool = False) -> None:
    """``write(f)`` into a temporary file in ``path``'s folder, then ``os.replace``: a
    reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a profile is shared project data
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _read_samples(path: Path) -> dict[PointKey, np.ndarray]:
    """The sidecar's samples by point; any problem with the file is a ProfileError naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, counts, values = data["keys"], data["counts"], data["values_ms"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ProfileError(f"{path}: not a raw-samples sidecar (numpy arrays keys, counts, values_ms): {exc}") from None
    if keys.ndim != 1 or keys.dtype.kind != "U" or counts.shape != keys.shape or counts.dtype.kind != "i" \
            or values.ndim != 1 or values.dtype.kind != "f" or (counts < 1).any() or counts.sum() != values.size:
        raise ProfileError(f"{path}: keys, counts and values_ms do not fit together ({keys.size} keys, "
                           f"{int(counts.sum()) if counts.dtype.kind == 'i' else '?'} counted, {values.size} values)")
    samples, start = {}, 0
    for key, count in zip(keys.tolist(), counts.tolist()):
        fields = key.split(KEY_SEPARATOR)
        if len(fields) != 4 or not fields[3].isdigit():
            raise ProfileError(f"{path}: key {_shown(key)} is not hardware, model, stage and batch size")
        samples[(fields[0], fields[1], fields[2], int(fields[3]))] = values[start:start + count]
        start += count
    return samples


def _check_samples(rows: Sequence[ProfileRow], samples: Mapping[PointKey, np.ndarray], where: str) -> None:
    """Raw samples belong to the table: each to a row, as many as its ``repeats``, all
    finite and positive, with the row's median (to its 4 printed decimals)."""
    by_key = {(r.hardware, r.model, r.stage, r.batch_size): r for r in rows}
    for key, values in samples.items():
        row = by_key.get(key)
        if row is None:
            raise ProfileError(f"{where}: samples of {key!r}, which is not a row of the profile (stale sidecar?)")
        if values.ndim != 1 or values.size != row.repeats:
            raise ProfileError(f"{where}: {values.size} samples of {key!r}, whose row says {row.repeats} repeats "
                               f"(stale sidecar?)")
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise ProfileError(f"{where}: samples of {key!r} must be finite and > 0 ms")
        median = float(np.median(values))
        if abs(median - row.latency_p50_ms) > 1e-4 + 1e-9 * median:
            raise ProfileError(f"{where}: the samples of {key!r} have median {median:.6g} ms, its row p50 "
                               f"{row.latency_p50_ms!r} ms (stale sidecar?)")


def _check_contention(rows: Sequence[ProfileRow], tables: Mapping[tuple[str, str], ContentionTable],
                      where: str) -> None:
    """A contention table belongs to a (hardware, model) the profile measured."""
    profiled = {(r.hardware, r.model) for r in rows}
    for key in tables:
        if key not in profiled:
            raise ProfileError(f"{where}: contention of model {key[1]!r} on {key[0]!r}, which the profile has no "
                               f"rows for (stale sidecar?)")


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names) or "nothing"


def _check_header(cells: Sequence[str], where: str, what: str = "header") -> None:
    repeated = sorted({c for c in cells if cells.count(c) > 1})
    if repeated:
        raise ProfileError(f"{where}: {what} column(s) {_names(repeated)} appear more than once")
    missing = [c for c in COLUMNS if c not in cells]
    extra = [c for c in cells if c not in COLUMNS]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing column(s) {_names(missing)}")
        if extra:
            problems.append(f"unexpected column(s) {_names(extra)}")
        raise ProfileError(
            f"{where}: {what} has {' and '.join(problems)}; the columns must be exactly "
            f"{','.join(COLUMNS)}"
        )


def _as_mapping(values: RowLike, where: str) -> Mapping[str, object]:
    if isinstance(values, ProfileRow):
        return dict(zip(COLUMNS, astuple(values)))
    if isinstance(values, Mapping):
        _check_header(list(values), where, "row")
        return values
    values = list(values)
    if len(values) != len(COLUMNS):
        raise ProfileError(f"{where}: {len(values)} values for {len(COLUMNS)} columns ({','.join(COLUMNS)})")
    return dict(zip(COLUMNS, values))


def _parse_row(values: Mapping[str, object], where: str) -> ProfileRow:
    """Convert one row (text from a file, or Python values) and check each value."""
    names = {}
    for column in ("hardware", "model", "stage"):
        text = str(values[column]).strip()
        if not text:
            raise ProfileError(f"{where}: {column} is empty; every row must name its {column}")
        if not text.isprintable():  # a NUL or a line break: a name no one-line message could show
            raise ProfileError(f"{where}: {column} {_shown(text)} holds a control character; names must be printable")
        names[column] = text
    p50, p90, p99 = (_positive(values, c, where) for c in COLUMNS[4:7])
    for (low_col, low), (high_col, high) in ((("latency_p50_ms", p50), ("latency_p90_ms", p90)),
                                               (("latency_p90_ms", p90), ("latency_p99_ms", p99))):
        if high < low:
            raise ProfileError(
                f"{where}: {high_col} {_shown(values[high_col])} is below {low_col} {_shown(values[low_col])}; "
                f"percentiles must satisfy p50 <= p90 <= p99"
            )
    return ProfileRow(
        batch_size=_whole(values, "batch_size", where, f"must be a positive integer, at most {MAX_BATCH_SIZE:,}",
                          MAX_BATCH_SIZE),
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        repeats=_whole(values, "repeats", where, "must be an integer >= 1 (how many timed runs)"),
        **names,
    )


def _number(values: Mapping[str, object], column: str) -> float | None:
    value = values[column]
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive(values: Mapping[str, object], column: str, where: str) -> float:
    number = _number(values, column)
    if number is None or not 0 < number <= MAX_LATENCY_MS:
        raise ProfileError(f"{where}: {column} {_shown(values[column])} must be a positive number "
                           f"(of milliseconds, at most {MAX_LATENCY_MS:g})")
    return number


def _whole(values: Mapping[str, object], column: str, where: str, rule: str, most: float = math.inf) -> int:
    number = _number(values, column)
    if number is None or not 1 <= number <= most or number != int(number):
        raise ProfileError(f"{where}: {column} {_shown(values[column])} {rule}")
    return int(number)


def _check_metadata(metadata: Mapping[str, str], where: str) -> None:
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.strip() or ":" in key or "\n" in key:
            raise ProfileError(f"{where}: metadata key {key!r} must be a non-empty string without ':' or newlines")
        if not isinstance(value, str) or "\n" in value:
            raise ProfileError(f"{where}: metadata {key!r} value {value!r} must be a one-line string")
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ProfileError(
            f"{where}: metadata is missing {_names(missing)}; add a line like "
            f"'# {missing[0]}: ...' before the header for each"
        )


def _check_table(rows: Sequence[ProfileRow], wheres: Sequence[str], source: str) -> None:
    if not rows:
        raise ProfileError(f"{source}: no data rows; a profile needs at least one measured point")
    first_seen: dict[tuple[str, str, str, int], str] = {}
    for row, where in zip(rows, wheres):
        key = (row.hardware, row.model, row.stage, row.batch_size)
        if key in first_seen:
            raise ProfileError(
                f"{where}: duplicate (hardware, model, stage, batch_size) {key!r}, "
                f"already at {first_seen[key].removeprefix(source + ' ')}; keep one row per batch size"
            )
        first_seen[key] = where
