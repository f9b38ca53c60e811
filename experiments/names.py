"""Run names: short, readable, shell-safe folder names for the points of a sweep.

A run's folder is named after its sweep point and its seed, ``dynamic-max_batch-8_seed-1``:
only ``[A-Za-z0-9._-]`` (a shell and every file system take it as it is), never starting
with ``-`` or ``.``, at most :data:`MAX_POINT` characters before the seed. A name is for
people; the point itself is kept whole in the run's ``config.yaml`` and in results.csv's
columns, and nothing reads a swept value back out of a name. Only the seed is: the
point's name is the run's name less its last part (:func:`point_of`).

Each swept key gives the point's name one part (parts are joined by ``_``), its value's
*label*, chosen among the values the sweep lists for that key:

* a number, a boolean or null: the key's last part and the value (``rate-2460``);
* a string: itself (a path: its file's stem; ``builtin:NAME``: ``NAME``);
* a group (a value with ``label``): its label;
* a mapping: its tag (``name``, ``policy`` or ``kind``), then the fields in which the
  key's mappings differ (all of a lone mapping's), numbers with their field's name
  (``dynamic-max_batch-8-max_wait_ms-1``), nested structures left out.

Where a label is longer than :data:`MAX_LABEL`, or two values of one key would share
it (case ignored, as some file systems do), that value tries, in turn: its fields
without their names, then with nested fields too (named, then not), and last its
place in the sweep's list (``fa2-v3``). A point whose parts together are longer than
:data:`MAX_POINT`, or whose name another point took already (two labels that join
alike), is numbered instead (``p007``).
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from pathlib import PurePosixPath
from typing import Any

GROUP_LABEL = "label"  # in a group's value: its name in run folders, results and plots, set nowhere
TAGS = (GROUP_LABEL, "name", "policy", "kind")  # the key that says what a mapping is, first found
MAX_LABEL = 40  # characters of one swept value's part of a name
MAX_POINT = 100  # characters of a point's name (the seed comes on top)
SEED = "seed-"
ALONE = "all runs"  # the one point of an experiment that sweeps nothing (its runs are named by seed alone)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# the seed part of a run's name; also of the names servesim gave before (``key=value,...,seed=N``)
_SEED_PART = re.compile(r"(?:^|[_,])seed[-=]\d+$")
_ABSENT = "\0absent"  # a field a mapping does not have, as its siblings' values are compared


def run_name(point: str, seed: int) -> str:
    """The folder of ``point``'s run under ``seed``."""
    return f"{SEED}{seed}" if point == ALONE else f"{point}_{SEED}{seed}"


def point_of(run: str) -> str:
    """A run's sweep point: its name without its seed."""
    return _SEED_PART.sub("", run) or ALONE


def identity(value: Any) -> str:
    """Equal swept values, equal text (mappings compared whatever their keys' order)."""
    return json.dumps(value, sort_keys=True, default=str)


def short_names(keys: list[str]) -> dict[str, str]:
    """The last part of each swept key, or the whole key where two would clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _atom(value: Any) -> str:
    """One scalar as name characters."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "none"}[value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    if not isinstance(value, str):
        return _UNSAFE.sub("", str(value))  # '1e+20' -> '1e20'
    if "/" in value or "\\" in value:
        value = PurePosixPath(value.replace("\\", "/")).stem
    return _UNSAFE.sub("-", value.rsplit(":", 1)[-1]).strip("-._")


def _words(field: str, value: Any, named: bool, nested: bool) -> list[str]:
    """A (field, value)'s words in a label: a string as itself, another scalar after its
    field's name (where ``named``), a structure's scalars (where ``nested``)."""
    if isinstance(value, dict):
        return [w for k, v in value.items() if k != GROUP_LABEL
                for w in _words(str(k).rsplit(".", 1)[-1], v, named, nested)] if nested else []
    if isinstance(value, list):
        if not nested:
            return []
        if any(isinstance(v, (dict, list)) for v in value):
            return [w for v in value for w in _words(field, v, named, nested)]
        atoms = [_atom(v) for v in value]
        return ["-".join(([field] if named and field else []) + atoms)]
    if isinstance(value, str):
        return [_atom(value)]
    return [f"{field}-{_atom(value)}" if named and field else _atom(value)]


def _tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((value[t] for t in TAGS if isinstance(value.get(t), str)), None)
    return None


def _label_at(level: int, short: str, value: Any, fields: set[str]) -> str:
    """``value``'s label at ``level``: 0 its differing scalar fields named, 1 unnamed,
    2 with nested fields too named, 3 unnamed."""
    if not isinstance(value, dict):
        words = _words(short, value, True, True)
    elif level == 0 and isinstance(value.get(GROUP_LABEL), str):
        words = [_atom(value[GROUP_LABEL])]
    else:
        tag = _tag(value)
        words = [] if tag is None else [_atom(tag)]
        for field, setting in value.items():
            if field in fields and not (field in TAGS and setting == tag):
                words += _words(str(field).rsplit(".", 1)[-1], setting, level in (0, 2), level >= 2)
    return "-".join(w for w in words if w)


@functools.lru_cache(maxsize=64)
def _labels(short: str, listed: str) -> dict[str, str]:
    """Each distinct value's label (by :func:`identity`) among ``listed`` (the JSON of a
    swept key's values), ``short`` being the key's short name."""
    values = {identity(v): v for v in json.loads(listed)}
    mappings = [v for v in values.values() if isinstance(v, dict)]
    keys = dict.fromkeys(k for m in mappings for k in m)
    fields = {k for k in keys if len(mappings) == 1 or len({identity(m.get(k, _ABSENT)) for m in mappings}) > 1}
    labels: dict[str, str] = {}
    pending = list(values)
    for level in range(4):
        found = {i: _label_at(level, short, values[i], fields) for i in pending}
        count = Counter(text.lower() for text in found.values())
        taken = {text.lower() for text in labels.values()}
        for i in pending:
            text = found[i]
            if text and len(text) <= MAX_LABEL and count[text.lower()] == 1 and text.lower() not in taken:
                labels[i] = text
        pending = [i for i in pending if i not in labels]
    for i in pending:
        labels[i] = f"{_atom(_tag(values[i]) or '') or short}-v{list(values).index(i) + 1}"
    return labels


def label(value: Any, listed: list | None = None, key: str = "") -> str:
    """``value``'s part of a run name among the values ``listed`` for its swept key
    (``key``: the key's short name), or alone."""
    listed = [value] if listed is None else listed
    labels = _labels(key, json.dumps(listed, default=str))
    if identity(value) not in labels:  # a value the sweep does not list (a refinement's midpoint)
        labels = _labels(key, json.dumps(listed + [value], default=str))
    return labels[identity(value)]


def point_name(params: dict[str, Any], sweep: dict[str, list], taken: dict[str, str]) -> str:
    """The name of the sweep point ``params`` (a value per swept key; ``sweep``: the
    values listed per key). ``taken`` maps each point name already given (lower case)
    to its point's :func:`identity`: a name another point holds is not given again (the
    same point listed twice keeps its name, for the caller to refuse)."""
    short = short_names(list(params))
    name = "_".join(label(v, sweep.get(k, [v]), short[k]) for k, v in params.items()).lstrip("-.") or ALONE
    mine, number = identity(params), len(taken)
    while len(name) > MAX_POINT or taken.get(name.lower(), mine) != mine:
        number += 1
        name = f"p{number:03d}"
    return name
