"""Import a profile measured elsewhere: a generic per-stage timing CSV into a servesim
profile (``servesim profile import``).

A profiler of one's own (a script on a GPU machine, another project's harness) writes
one row per unit and batch size. What a servesim profile needs and such a file leaves
implicit is the *order* of the units and their *roles*, and guessing either silently
gives wrong latencies: a whole-model row read as a last stage doubles the model, and a
plain model that sums its ramp heads pays for exits it never takes. So the importer is
told both by the file, and writes each role as its own model.

Input (``docs/PROFILES.md`` has the full description), a CSV with ``# key: value``
lines allowed before the header:

* ``model``, ``stage``, ``kind`` (``stage``, ``ramp`` or ``full``), ``batch_size``;
* latency percentiles in ms: ``p50_ms`` (or ``median_ms``), ``p90_ms``, ``p99_ms``;
* optional: ``repeats`` (timed calls per point), ``dtype`` (one file may hold several;
  ``--dtype`` picks one), ``order`` (the position of a ``stage`` in the model, 1-based)
  and ``after`` (the stage a ``ramp`` reads). Without ``order``, stages are ordered by
  the number their name ends in (``stage1``, ``stage2``...); without ``after``, a ramp
  ``rampK`` reads the K-th stage. A name that gives neither is an error.

Output, per model M of the input, on hardware ``--hardware``:

* ``M``: the stages in order, and nothing else: a run without exits costs exactly the
  backbone;
* ``M_ee``: the stages with each ramp right after the stage it reads, for runs with
  ``exits.ramps: {stageK: rampK, ...}`` (only when the input has ramps);
* ``M_full``: stage ``forward``, the whole model timed in one call (only when the input
  has ``full`` rows): compare it with the stages' sum, never add it to them.

The metadata lines of the input come first, then ``source``, and the required keys
(``device``, ``dtype``, ``framework``, ``date``, ``execution_mode``) may be given or
overridden on the command line.

This is ``--format stages``, the default. The command's other formats, offline
latency-per-batch tables (perf_analyzer's CSV, published tables), are read by
``offline_tables.py``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .offline_tables import DEFAULT_TIME_UNIT, FORMATS, TIME_UNITS, import_offline_table, leading_metadata, read_text
from .profile import REQUIRED_METADATA, Profile, ProfileError, ProfileRow

KINDS = ("stage", "ramp", "full")
ALIASES = {"p50_ms": ("p50_ms", "median_ms", "latency_p50_ms"), "p90_ms": ("p90_ms", "latency_p90_ms"),
           "p99_ms": ("p99_ms", "latency_p99_ms")}
REQUIRED = ("model", "stage", "kind", "batch_size")
_NUMBERED = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class _Point:
    model: str
    stage: str
    kind: str
    batch_size: int
    p50: float
    p90: float
    p99: float
    repeats: int
    order: Optional[int]
    after: Optional[str]


def import_profile(path: Path | str, hardware: str, metadata: Optional[dict[str, str]] = None,
                   dtype: Optional[str] = None, models: Optional[Sequence[str]] = None) -> Profile:
    """The servesim profile of the generic CSV at ``path`` (see the module docstring);
    ``metadata`` adds to or overrides the file's own ``# key: value`` lines; ``dtype``
    keeps the rows of one dtype, ``models`` those of some models. Any problem is a
    :class:`ProfileError` naming the file, line, column and value."""
    name = str(path)
    found, points = _read(read_text(path), name, dtype, models)
    meta = {**found, "source": f"imported from {Path(path).name} by servesim profile import", **(metadata or {})}
    if dtype is not None:
        meta["dtype"] = dtype
    rows = []
    for model in dict.fromkeys(p.model for p in points):
        rows += _model_rows([p for p in points if p.model == model], model, hardware, name)
    return Profile.from_rows(rows, meta, source=name)


def _read(text: str, name: str, dtype: Optional[str], models: Optional[Sequence[str]]):
    lines = text.splitlines()
    metadata, start = leading_metadata(lines)
    reader = csv.DictReader(io.StringIO("\n".join(lines[start:])))
    header = reader.fieldnames or []
    columns = {want: next((c for c in aliases if c in header), None) for want, aliases in ALIASES.items()}
    missing = [c for c in REQUIRED if c not in header] + [a[0] for w, a in ALIASES.items() if columns[w] is None]
    if missing:
        raise ProfileError(f"{name} line {start + 1}: header has no column {missing[0]!r} (it has {header}); "
                           f"see docs/PROFILES.md")
    table = list(reader)
    dtypes = sorted({row.get("dtype") or "" for row in table} - {""})
    if dtype is None and len(dtypes) > 1:
        raise ProfileError(f"{name}: rows of several dtypes {dtypes}; choose one with --dtype")
    if dtype is not None and dtypes and dtype not in dtypes:
        raise ProfileError(f"{name}: no rows of dtype {dtype!r}; it has {dtypes}")
    if dtype is None and dtypes:
        metadata.setdefault("dtype", dtypes[0])
    points = []
    for number, row in enumerate(table, start + 2):
        if dtype is not None and row.get("dtype", dtype) != dtype or models and row["model"] not in models:
            continue
        points.append(_point(row, columns, f"{name} line {number}"))
    if not points:
        raise ProfileError(f"{name}: no rows to import" + (f" for models {list(models)}" if models else ""))
    return metadata, points


def _point(row: dict, columns: dict, where: str) -> _Point:
    kind = (row["kind"] or "").strip()
    if kind not in KINDS:
        raise ProfileError(f"{where}: column 'kind' is {kind!r}; expected one of {', '.join(KINDS)}")
    model, stage = (row["model"] or "").strip(), (row["stage"] or "").strip()
    for column, value in (("model", model), ("stage", stage)):
        if not value or not re.fullmatch(r"[\w.+-]+", value):
            raise ProfileError(f"{where}: column {column!r} is {value!r}; expected a name of letters, digits, "
                               f"'_', '.', '+' or '-'")
    p50, p90, p99 = (_number(row, columns[c], where) for c in ("p50_ms", "p90_ms", "p99_ms"))
    if not 0 < p50 <= p90 <= p99 < math.inf:
        raise ProfileError(f"{where}: latencies must satisfy 0 < p50 <= p90 <= p99 (ms), got {p50:g}, {p90:g}, "
                           f"{p99:g}")
    return _Point(model, stage, kind, _count(row, "batch_size", where), p50, p90, p99,
                  _count(row, "repeats", where, default=1), _count(row, "order", where, default=None),
                  (row.get("after") or "").strip() or None)


def _number(row: dict, column: str, where: str) -> float:
    text = (row.get(column) or "").strip()
    try:
        return float(text)
    except ValueError:
        raise ProfileError(f"{where}: column {column!r} is {text!r}; expected a latency in ms") from None


_REQUIRED = object()


def _count(row: dict, column: str, where: str, default=_REQUIRED) -> Optional[int]:
    """A whole number >= 1 from ``column``; ``default`` where the cell is empty or absent."""
    text = (row.get(column) or "").strip()
    if not text and default is not _REQUIRED:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise ProfileError(f"{where}: column {column!r} is {text!r}; expected a whole number >= 1")
    return int(value)


def _model_rows(points: list[_Point], model: str, hardware: str, name: str) -> list[ProfileRow]:
    stages = _stage_order([p for p in points if p.kind == "stage"], model, name)
    ramps = _ramp_places([p for p in points if p.kind == "ramp"], stages, model, name)

    def rows(of: Sequence[str], kind: str, as_model: str, rename: Optional[str] = None) -> list[ProfileRow]:
        chosen = [p for s in of for p in sorted((p for p in points if p.kind == kind and p.stage == s),
                                                key=lambda p: p.batch_size)]
        return [ProfileRow(hardware, as_model, rename or p.stage, p.batch_size, p.p50, p.p90, p.p99, p.repeats)
                for p in chosen]

    out = rows(stages, "stage", model)
    if ramps:
        for stage in stages:
            out += rows([stage], "stage", f"{model}_ee") + rows(ramps.get(stage, []), "ramp", f"{model}_ee")
    full = sorted({p.stage for p in points if p.kind == "full"})
    if len(full) > 1:
        raise ProfileError(f"{name}: model {model!r} has {len(full)} whole-model units {full}; keep one")
    if full:
        out += rows(full, "full", f"{model}_full", rename="forward")
    return out


def _stage_order(stages: list[_Point], model: str, name: str) -> list[str]:
    names = list(dict.fromkeys(p.stage for p in stages))
    if not names:
        raise ProfileError(f"{name}: model {model!r} has no rows of kind 'stage'; a model is a chain of stages")
    orders: dict[str, set] = {}
    for p in stages:
        orders.setdefault(p.stage, set()).add(p.order)
    for stage, values in orders.items():
        if len(values) > 1:
            raise ProfileError(f"{name}: stage {stage!r} of model {model!r} has several 'order' values "
                               f"{sorted(map(str, values))}; give one")
    position = {s: next(iter(v)) for s, v in orders.items()}
    if any(v is None for v in position.values()):
        if any(v is not None for v in position.values()):
            raise ProfileError(f"{name}: model {model!r} gives 'order' for some stages only")
        for s in names:
            match = _NUMBERED.search(s)
            if match is None:
                raise ProfileError(f"{name}: stage {s!r} of model {model!r} has no 'order' and its name ends in "
                                   f"no number; add an 'order' column (1 for the first stage)")
            position[s] = int(match.group(1))
    ranks = sorted(position.values())
    if ranks != list(range(ranks[0], ranks[0] + len(ranks))):
        raise ProfileError(f"{name}: the stages of model {model!r} are numbered {ranks}; expected consecutive "
                           f"positions (one stage each)")
    return sorted(names, key=position.__getitem__)


def _ramp_places(ramps: list[_Point], stages: list[str], model: str, name: str) -> dict[str, list[str]]:
    places: dict[str, list[str]] = {}
    for ramp in dict.fromkeys(p.stage for p in ramps):
        after = {p.after for p in ramps if p.stage == ramp} - {None}
        if len(after) > 1:
            raise ProfileError(f"{name}: ramp {ramp!r} of model {model!r} names several stages in 'after': "
                               f"{sorted(after)}")
        if after:
            stage = after.pop()
            if stage not in stages:
                raise ProfileError(f"{name}: ramp {ramp!r} of model {model!r} reads stage {stage!r}, which the "
                                   f"model does not have (it has {stages})")
        else:
            match = _NUMBERED.search(ramp)
            if match is None or not 1 <= int(match.group(1)) <= len(stages):
                raise ProfileError(f"{name}: ramp {ramp!r} of model {model!r} has no 'after' and its number does "
                                   f"not name one of its {len(stages)} stages; add an 'after' column")
            stage = stages[int(match.group(1)) - 1]
        if stage == stages[-1]:
            raise ProfileError(f"{name}: ramp {ramp!r} of model {model!r} reads the last stage {stage!r}; the "
                               f"last stage is the model's own exit")
        places.setdefault(stage, []).append(ramp)
    return places


def main(argv: Optional[list[str]] = None, prog: str = "servesim profile import") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Turn a timing table measured elsewhere into a servesim "
                                                            "profile (formats: docs/PROFILES.md).")
    parser.add_argument("file", help="the CSV (or, for the offline formats, Markdown table) to import")
    parser.add_argument("--format", choices=("stages", *FORMATS), default="stages",
                        help="stages (default): a per-stage timing CSV; perf-analyzer: perf_analyzer's -f CSV at "
                             "concurrency 1 with a batch column; offline-table: a published latency-per-batch table")
    parser.add_argument("--out", required=True, help="the servesim profile CSV to write")
    parser.add_argument("--hardware", required=True, help="the rows' hardware name, e.g. h100")
    parser.add_argument("--dtype", help="keep the rows of this dtype (a file may hold several); also metadata 'dtype'")
    parser.add_argument("--model", action="append", help="stages: keep this model (repeat for several; default all); "
                                                         "perf-analyzer, offline-table: the model's name (once)")
    parser.add_argument("--time-unit", choices=tuple(TIME_UNITS),
                        help="perf-analyzer, offline-table: the unit of times whose header and cells name none "
                             f"(default {DEFAULT_TIME_UNIT['perf-analyzer']} and "
                             f"{DEFAULT_TIME_UNIT['offline-table']}, as each is written)")
    for key in (k for k in REQUIRED_METADATA if k != "dtype"):
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key,
                            help=f"metadata '{key}' (overrides the file's own '# {key}:' line)")
    args = parser.parse_args(argv)
    metadata = {key: getattr(args, key) for key in REQUIRED_METADATA if getattr(args, key, None) is not None}
    if args.format == "stages":
        if args.time_unit:
            parser.error("--time-unit is for --format perf-analyzer or offline-table; stages are in ms")
        profile = import_profile(args.file, args.hardware, metadata, args.dtype, args.model)
    else:
        if not args.model or len(args.model) > 1:
            parser.error(f"--format {args.format} needs the model's name, once: --model NAME")
        profile = import_offline_table(args.file, args.format, args.hardware, args.model[0], metadata,
                                       args.time_unit)
    try:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        profile.save(args.out)
    except OSError as exc:
        raise ProfileError(f"--out {args.out}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {args.out}: models {', '.join(profile.models())} on {args.hardware}, {len(profile.rows)} rows")
    return 0
