"""Contention between model instances that share one device: the measured slowdown.

A server may run k instances of a model on one accelerator (Triton's ``instance_group
count: k``); their batches then run at the same time and stretch one another. How much
is a property of the model, the device and the batch size, so it is *measured*, never
assumed: a profiler runs k concurrent streams (threads on a CPU, CUDA streams on a GPU),
each running batches back to back, and records how many times longer a batch takes than
when it runs alone (``workloads/profiler_cpu.py --instances K``).

The table lives beside the profile CSV, in ``X.contention.csv`` (:data:`CONTENTION_SUFFIX`),
one row per (hardware, model, instances, batch_size)::

    hardware,model,instances,batch_size,slowdown,repeats
    cpu,mlp3,2,1,1.31,200

``slowdown`` (> 0 and finite; a measured 0.97 is noise and is kept as measured) is the
factor by which a batch's time stretches while ``instances`` batches run at once on the
device, the batch itself included. ``instances`` 1 is implied (1, by definition) and
may be written only as exactly 1. Every instance count from 2 to the largest must have
the same batch sizes. Between measured sizes the factor is interpolated linearly; below
the smallest and above the largest the nearest measured one is used.

A seventh column, ``source``, says where a (hardware, model)'s figures came from, the
same on all its rows: ``measured`` (a profiler timed concurrent streams), or
``derived: <rule> from <profile>`` (computed from the profile's own batch curve where no
device was at hand to measure, :mod:`workloads.derived_contention`: an assumption, which
every run that uses it reports as such). A file without the column is the first
version's, all measured; :func:`write_contention` always writes it.

A profile without this file (or without rows for a model on a hardware) has **no**
contention model: a run with more than one instance per device is then refused
(:class:`NoContentionModel`), not treated as free.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

CONTENTION_SUFFIX = ".contention.csv"
CONTENTION_COLUMNS = ("hardware", "model", "instances", "batch_size", "slowdown", "repeats", "source")
LEGACY_COLUMNS = CONTENTION_COLUMNS[:-1]  # the first version's header: every table measured
MEASURED = "measured"
DERIVED = "derived: "  # how a derived table's source starts: "derived: <rule> from <profile>"
MAX_INSTANCES = 64  # far beyond a real server's instance count: a slip (a batch size there) fails


class NoContentionModel(ValueError):
    """More than one instance per device was asked for where no slowdown was measured."""


@dataclass(frozen=True)
class ContentionTable:
    """The slowdown of one model on one hardware: ``slowdown[k - 2][i]`` for ``k``
    batches running at once and batch size ``sizes[i]`` (k = 1 is 1, not stored);
    ``source`` says whether it was measured or derived (module docstring)."""

    hardware: str
    model: str
    sizes: tuple[int, ...]
    slowdown: tuple[tuple[float, ...], ...]
    repeats: tuple[tuple[int, ...], ...]
    source: str = MEASURED

    @property
    def derived(self) -> bool:
        return self.source != MEASURED

    @property
    def max_instances(self) -> int:
        return len(self.slowdown) + 1

    def factors(self) -> list[list[float]]:
        """``f[k][b]``: the factor for ``k`` batches running (1 <= k <= max_instances) and
        batch size ``b`` (0 <= b <= the largest measured size; a larger batch takes the
        last entry): a list lookup for the engine's hot path."""
        top = self.sizes[-1]
        rows = [[1.0] * (top + 1), [1.0] * (top + 1)]  # k = 0 (unused) and k = 1
        # linear between measured sizes, the nearest measured one outside them
        rows += [np.interp(np.arange(top + 1), self.sizes, measured).tolist() for measured in self.slowdown]
        return rows


def contention_path(profile_path) -> Path:
    """The contention table of the profile at ``profile_path`` (``X.csv`` -> ``X.contention.csv``)."""
    path = Path(profile_path)
    return path.with_name(path.name.removesuffix(".csv") + CONTENTION_SUFFIX)


def tables_from_rows(rows: Sequence[Mapping[str, object]], wheres: Sequence[str], source: str,
                     error: type[Exception] = ValueError) -> dict[tuple[str, str], ContentionTable]:
    """Check rows (mappings with the :data:`CONTENTION_COLUMNS` keys; ``source`` may be
    left out: measured) and build each (hardware, model)'s table; a problem raises
    ``error`` naming ``where`` the row is, the column and its value."""
    points: dict[tuple[str, str], dict[int, dict[int, tuple[float, int]]]] = {}
    first: dict[tuple[str, str], str] = {}
    sources: dict[tuple[str, str], str] = {}
    for values, where in zip(rows, wheres):
        hardware, model = str(values["hardware"]).strip(), str(values["model"]).strip()
        if not hardware or not model:
            raise error(f"{where}: hardware and model must not be empty")
        source = _source(values, where, error)
        if sources.setdefault((hardware, model), source) != source:
            raise error(f"{where}: source {source!r}, and an earlier row of {model!r} on {hardware!r} says "
                        f"{sources[hardware, model]!r}; a table is measured or derived as a whole")
        k = _whole(values, "instances", where, MAX_INSTANCES, error)
        b = _whole(values, "batch_size", where, math.inf, error)
        repeats = _whole(values, "repeats", where, math.inf, error)
        slowdown = _number(values, "slowdown", where, error)
        if k == 1 and slowdown != 1.0:
            raise error(f"{where}: slowdown {values['slowdown']!r} at instances 1; one batch alone is the "
                        f"profile's own time, so its slowdown is 1 by definition")
        by_k = points.setdefault((hardware, model), {})
        first.setdefault((hardware, model), where)
        if b in by_k.setdefault(k, {}):
            raise error(f"{where}: duplicate (hardware, model, instances, batch_size) "
                        f"{(hardware, model, k, b)!r}; keep one row per point")
        by_k[k][b] = (slowdown, repeats)
    tables = {}
    for (hardware, model), by_k in points.items():
        by_k.pop(1, None)
        if not by_k:
            raise error(f"{first[hardware, model]}: {model!r} on {hardware!r} has rows for instances 1 only; "
                        f"a contention table needs instances 2 and up")
        top = max(by_k)
        sizes = sorted(by_k[top])
        for k in range(2, top + 1):
            if sorted(by_k.get(k, {})) != sizes:
                raise error(f"{source}: {model!r} on {hardware!r} has instances up to {top} at batch sizes "
                            f"{sizes}, but instances {k} at {sorted(by_k.get(k, {}))}; every count from 2 up "
                            f"needs the same sizes")
        tables[hardware, model] = ContentionTable(
            hardware, model, tuple(sizes),
            tuple(tuple(by_k[k][b][0] for b in sizes) for k in range(2, top + 1)),
            tuple(tuple(by_k[k][b][1] for b in sizes) for k in range(2, top + 1)), sources[hardware, model])
    return tables


def read_contention(path: Path, error: type[Exception] = ValueError) -> dict[tuple[str, str], ContentionTable]:
    """The tables in the contention file at ``path``; any problem raises ``error`` naming its line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read contention table ({exc})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    header = next(csv.reader([lines[0][1]])) if lines else []
    if header not in (list(CONTENTION_COLUMNS), list(LEGACY_COLUMNS)):
        raise error(f"{path} line {lines[0][0] if lines else 1}: the header must be {','.join(CONTENTION_COLUMNS)} "
                    f"(or, all measured, without source)")
    rows, wheres = [], []
    for n, line in lines[1:]:
        cells = next(csv.reader([line]))
        if len(cells) != len(header):
            raise error(f"{path} line {n}: {len(cells)} values for {len(header)} columns")
        rows.append(dict(zip(header, cells)))
        wheres.append(f"{path} line {n}")
    if not rows:
        raise error(f"{path}: no data rows; remove the file if no contention was measured")
    return tables_from_rows(rows, wheres, str(path), error)


def write_contention(f, tables: Mapping[tuple[str, str], ContentionTable]) -> None:
    """Write ``tables`` as the contention CSV to the open text file ``f``."""
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(CONTENTION_COLUMNS)
    for table in tables.values():
        for k, (row, counts) in enumerate(zip(table.slowdown, table.repeats), 2):
            writer.writerows((table.hardware, table.model, k, b, repr(s), n, table.source)
                             for b, s, n in zip(table.sizes, row, counts))


def _source(values: Mapping[str, object], where: str, error: type[Exception]) -> str:
    """A row's ``source``: measured where the column is absent (the first version's file)."""
    source = " ".join(str(values.get("source", MEASURED)).split())
    if source != MEASURED and not (source.startswith(DERIVED) and source[len(DERIVED):].strip()):
        raise error(f"{where}: source {values.get('source')!r} must be {MEASURED!r} or {DERIVED.strip()!r} "
                    f"followed by how (e.g. 'derived: merged-batch from X.csv')")
    return source


def _float(values: Mapping[str, object], column: str) -> float:
    try:
        return float(values[column])
    except (TypeError, ValueError):
        return math.nan


def _number(values: Mapping[str, object], column: str, where: str, error: type[Exception]) -> float:
    number = _float(values, column)
    if not (math.isfinite(number) and number > 0):
        raise error(f"{where}: {column} {values[column]!r} must be a finite number > 0")
    return number


def _whole(values: Mapping[str, object], column: str, where: str, most: float, error: type[Exception]) -> int:
    number = _float(values, column)
    if not (1 <= number <= most and number == int(number)):
        raise error(f"{where}: {column} {values[column]!r} must be a whole number from 1"
                    + ("" if most == math.inf else f" to {most}"))
    return int(number)


def contention_for(tables: Mapping[tuple[str, str], ContentionTable], hardware: str, model: str, instances: int,
                   where: str, source: str) -> ContentionTable | None:
    """The table for ``instances`` instances of ``model`` on ``hardware``: None for one
    instance (no contention by definition); for more, the measured table, or
    :class:`NoContentionModel` naming ``where`` (a config key) and ``source`` (the profile)
    when none was measured or it stops short."""
    if instances == 1:
        return None
    table = tables.get((hardware, model))
    if table is None:
        raise NoContentionModel(
            f"{where}: {instances} instances of {model!r} share one {hardware!r} device, and the profile {source} has "
            f"no measured contention for them ({CONTENTION_SUFFIX} beside it; measure it with "
            f"'python -m servesim.workloads.profiler_cpu --instances {instances}' or your GPU profiler, or, "
            f"labelled as an assumption, derive it from the profile's batch curve with 'servesim profile "
            f"contention PROFILE --derive merged-batch --instances {instances}'); "
            f"instances are never assumed not to contend")
    if instances > table.max_instances:
        how = "derived" if table.derived else "measured"
        raise NoContentionModel(f"{where}: {instances} instances of {model!r} on {hardware!r}, and {source} "
                                f"{how} contention up to {table.max_instances} instances only")
    return table
