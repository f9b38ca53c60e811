"""A client's measured costs per request, one row per measured request: ``X.clients.csv``.

A closed loop's clients spend time outside the server on every request (serialising it,
the handoff to the server, reading the answer). Their *mean* is not enough: a real
client's rare slow wake-up (a few milliseconds against a mean of tens of microseconds)
is what moves clients that send in step out of step, and the simulation reproduces that
only if it draws each request's costs from what was measured. ``servesim profile-served
--whole`` writes the requests it measured beside the profile (``X.csv`` ->
``X.clients.csv``, :data:`CLIENTS_SUFFIX`), and an experiment names the file in
``load.client: {samples: PATH}``::

    # measured: one client against an instance that answers at once (...)
    # date: 2026-12-09T10:00:00
    send_ms,network_ms,recv_ms
    0.000812,0.027104,0.031377
    0.000790,0.026455,4.512003

``# key: value`` metadata lines first (how, when and on what it was measured), then the
header, then one row per measured request, each value a finite number >= 0 in ms:
``send_ms`` (the client begins to send -> the request is queued), ``network_ms`` (queued
-> an instance has it: the network and the server's receive, or in one process the
handoff between threads) and ``recv_ms`` (the answer handed back -> the client holds it).
This module reads and writes the file only; what a run draws from it is
:class:`sim.closed_loop.ClientSamples`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from .metadata_lines import metadata_entry

CLIENTS_SUFFIX = ".clients.csv"
CLIENT_COLUMNS = ("send_ms", "network_ms", "recv_ms")
MAX_ROWS = 10_000_000  # far beyond any measurement: a larger file is not one
DECIMALS = 6  # ms to 1 ns: finer than the clock a client's costs are read on


def clients_path(profile_path) -> Path:
    """The client samples beside the profile at ``profile_path`` (``X.csv`` -> ``X.clients.csv``)."""
    path = Path(profile_path)
    return path.with_name(path.name.removesuffix(".csv") + CLIENTS_SUFFIX)


def read_client_samples(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The columns (ms, by :data:`CLIENT_COLUMNS` name) and metadata of the file at
    ``path``; any problem is a ValueError of one line naming the file, the line, the
    column and the value."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:  # missing, a folder, not text: each says so
        raise ValueError(f"{path}: cannot read client samples ({exc})") from None
    metadata: dict[str, str] = {}
    header = None
    rows: list[tuple[float, ...]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("#") and header is None:
            entry = metadata_entry(line)
            if entry is None:
                raise ValueError(f"{path} line {n}: metadata line {line.strip()[:60]!r} must look like '# key: value'")
            metadata[entry[0]] = entry[1]
            continue
        cells = next(csv.reader([line]))
        if header is None:
            if [cell.strip() for cell in cells] != list(CLIENT_COLUMNS):
                raise ValueError(f"{path} line {n}: the header must be {','.join(CLIENT_COLUMNS)}, "
                                 f"got {line.strip()[:60]!r}")
            header = CLIENT_COLUMNS
            continue
        if len(cells) != len(CLIENT_COLUMNS):
            raise ValueError(f"{path} line {n}: {len(cells)} values for the {len(CLIENT_COLUMNS)} columns "
                             f"{','.join(CLIENT_COLUMNS)}")
        if len(rows) == MAX_ROWS:
            raise ValueError(f"{path} line {n}: more than {MAX_ROWS} measured requests")
        rows.append(tuple(_ms(cell, column, f"{path} line {n}") for cell, column in zip(cells, CLIENT_COLUMNS)))
    if header is None:
        raise ValueError(f"{path}: no header line; expected the columns {','.join(CLIENT_COLUMNS)}")
    if not rows:
        raise ValueError(f"{path}: no measured requests after the header")
    table = np.array(rows, dtype=np.float64)
    return {column: table[:, i] for i, column in enumerate(CLIENT_COLUMNS)}, metadata


def write_client_samples(path, columns: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write ``columns`` (ms, by :data:`CLIENT_COLUMNS` name, one value per measured
    request) with ``metadata`` to ``path``, atomically (a reader never sees half a file)."""
    from servesim.workloads.profile import _atomic  # (here: profile imports this module)

    values = np.round(np.column_stack([np.asarray(columns[c], dtype=np.float64) for c in CLIENT_COLUMNS]), DECIMALS)

    def write(f) -> None:
        for key, value in metadata.items():
            f.write(f"# {key}: {' '.join(str(value).split())}\n")
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CLIENT_COLUMNS)
        writer.writerows([f"{v:.{DECIMALS}f}" for v in row] for row in values.tolist())
    _atomic(Path(path), write)


def _ms(cell: str, column: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{where}, column {column}: {cell.strip()[:40]!r} is not a finite number >= 0 (ms)")
    return value
