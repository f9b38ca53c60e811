"""``servesim profiles``: the profiles a config can name, as a table.

A config names a shipped profile as ``builtin:NAME``; which names exist, what each was
measured on and which models it holds is otherwise only found by opening the CSVs. This
lists them (or any profile files or folders given) from each file's own metadata and
rows: device, dtype, framework, date, hardware, and its models with their stage counts
(``--stages``: the stage names, as ``exits.ramps`` needs them).
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

from servesim.workloads import PROFILES_DIR, load_profile
from servesim.workloads.profile import profiles_in
from servesim.workloads.profile import Profile

from .files import BUILTIN

HEADINGS = ("profile", "device", "dtype", "framework", "date", "hardware", "models (stages)")
MODELS_MIN_WIDTH = 30  # the last column wraps, but never narrower than this


@dataclass(frozen=True)
class ProfileEntry:
    """One line of the table: where a profile is and what its metadata and rows say."""

    name: str  # builtin:NAME for a shipped one, else the path given
    device: str
    dtype: str
    framework: str
    date: str
    hardware: str
    models: tuple[str, ...]  # "name (stages)", or with --stages "name: stage stage ..."

    @classmethod
    def of(cls, name: str, profile: Profile, stages: bool) -> "ProfileEntry":
        meta = profile.metadata
        models = tuple(f"{m}: {' '.join(profile.stages(m))}" if stages else f"{m} ({len(profile.stages(m))})"
                       for m in profile.models())
        return cls(name, meta["device"], meta["dtype"], meta["framework"], meta["date"],
                   ", ".join(profile.hardware()), models)


def profile_files(paths: list[str]) -> list[tuple[str, Path]]:
    """(name, file) of each profile to list: the shipped ones when ``paths`` is empty, else
    each file given and every ``*.csv`` of each folder given, in order. A profile's
    contention table (``X.contention.csv``) sits beside it and is not a profile."""
    if not paths:
        return [(BUILTIN + p.stem, p) for p in profiles_in(PROFILES_DIR)]
    found = []
    for given in map(Path, paths):
        found += [(str(p), p) for p in profiles_in(given)] if given.is_dir() else [(str(given), given)]
    return found



def entries(paths: list[str], stages: bool = False) -> list[ProfileEntry]:
    """The table's lines; a file that is no valid profile is a ProfileError naming it."""
    return [ProfileEntry.of(name, load_profile(path), stages) for name, path in profile_files(paths)]


def table(rows: list[ProfileEntry], width: int) -> str:
    """``rows`` as aligned columns, the models column wrapped to fit ``width`` (a model
    is never split across lines unless it alone is wider)."""
    cells = [HEADINGS[:-1] + ((HEADINGS[-1],),)] + [tuple(vars(row).values()) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADINGS) - 1)]
    indent = sum(widths) + 2 * len(widths)
    wrap = max(MODELS_MIN_WIDTH, width - indent)
    lines = []
    for line in cells:
        parts = _pack(line[-1], wrap)
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + parts[0])
        lines += [" " * indent + part for part in parts[1:]]
    return "\n".join(line.rstrip() for line in lines)


def _pack(items: tuple[str, ...], width: int) -> list[str]:
    """``items`` joined by ", " into lines of at most ``width`` characters."""
    lines = [""]
    for k, item in enumerate(items):
        piece = item + ("," if k < len(items) - 1 else "")
        if lines[-1] and len(lines[-1]) + 1 + len(piece) > width:
            lines.append("")
        lines[-1] += (" " if lines[-1] else "") + piece
    return [part for line in lines for part in (textwrap.wrap(line, width) if len(line) > width else [line])]


def command(args) -> int:
    """``servesim profiles [PATH ...] [--stages]``."""
    rows = entries(args.paths, args.stages)
    print(table(rows, shutil.get_terminal_size((160, 24)).columns))
    if not args.paths:
        print(f"\n{len(rows)} shipped profiles, in workloads/profiles/ (its README.md says how each was measured); "
              f"a config names one as model.profile: builtin:NAME")
    return 0
