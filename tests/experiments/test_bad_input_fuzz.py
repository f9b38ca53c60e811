"""Bad input, fuzzed (issue 7): hypothesis writes malformed experiment YAMLs, trace files
and profiles (wrong types; negative, NaN, infinite and huge numbers; unsorted times;
missing, renamed and repeated columns; unknown names; empty, truncated and binary files;
YAML syntax errors, duplicate keys, deep nesting) and hands each to the CLI in this
process. Every one must end in exactly one line ``servesim: error: ...`` that names the
file and, where the mutation has them, the key or column and the bad value; exit status
2, no traceback, and for ``run`` nothing written. Each strategy builds a :class:`Bad`
that knows what it broke, so the assertion is specific.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import math
import os
import re
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from servesim.experiments import cli
from servesim.experiments.config import ExperimentConfig, ModelConfig, ResourceConfig, ServingConfig
from servesim.experiments.registry import BATCHING, NOISE, ROUTERS, TRACES
from servesim.experiments.specs import DynamicBatching, LogNormalNoise, PoissonTrace
from servesim.workloads import PROFILES_DIR
from servesim.workloads.profile import profiles_in

REPO = Path(__file__).resolve().parents[2]
ERROR = "servesim: error: "
LONGEST_LINE = 1500  # characters: a clear line, not a dump of the input

def fuzz(examples: int):
    """This suite's hypothesis settings: the same cases on every run (CI is
    deterministic), and no deadline (a case writes files and runs the CLI)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Bad:
    """One malformed file: the mutation (``kind``), the file's bytes, and what its error
    line must hold besides the file's path: each of ``names`` is a text, or a tuple of
    texts of which the line holds one (phrasings that are all right).
    ``sweep_point``: found in a sweep point, so the line "(in the sweep point ...)"
    follows it, as documented."""

    kind: str
    data: bytes
    names: tuple = ()
    sweep_point: bool = False


def servesim(*argv) -> tuple[int, str, str]:
    """``servesim ARGV`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's own errors
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


PYDANTIC_SPEAK = r"Input should|Input tag|Unable to extract tag|discriminator"


def assert_refused(result: tuple[int, str, str], bad: Bad, *files) -> None:
    rc, out, err = result
    assert "Traceback" not in err, err
    assert (rc, out) == (2, ""), (bad.kind, rc, out, err)
    lines = err.strip().splitlines()
    if bad.sweep_point:
        assert len(lines) == 2 and lines[1].startswith(ERROR) and "(in the sweep point " in lines[1], lines
        lines = lines[:1]
    assert len(lines) == 1, (bad.kind, lines)
    assert lines[0].startswith(ERROR) and len(lines[0]) < LONGEST_LINE, (bad.kind, lines[0][:LONGEST_LINE])
    # plain words, never pydantic's phrasing
    assert not re.search(PYDANTIC_SPEAK, lines[0]), (bad.kind, lines[0])
    for name in (*map(str, files), *bad.names):
        phrasings = name if isinstance(name, tuple) else (name,)
        assert any(p in lines[0] for p in phrasings), (bad.kind, phrasings, lines[0])


def assert_run_refused(yaml_path: Path, bad: Bad, *files) -> None:
    """``servesim run`` refuses the file before writing anything."""
    out = yaml_path.parent / "out"
    assert_refused(servesim("run", yaml_path, "--out", out, "--quiet"), bad, yaml_path, *files)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], sorted(out.rglob("*"))


@contextlib.contextmanager
def written(name: str, data: bytes):
    """A fresh temporary folder holding the file ``name`` with ``data``; yields the
    file's path (hypothesis cannot share a function-scoped tmp_path between examples)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        yield path


# --- values --------------------------------------------------------------------------

WORDS = st.text(alphabet=string.ascii_letters, min_size=1, max_size=10)  # never a number, but 'nan' / 'inf'
# names whose repr is the name in single quotes, whatever the YAML does with them
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_-. éß中", min_size=1, max_size=12)
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00\x7f"
SMALL = st.integers(-5, 5) | st.floats(-1e3, 1e3)


def bad_numbers(zero_ok: bool, whole: bool, most: int | None) -> st.SearchStrategy:
    """Values a number setting must refuse: below its range, NaN, ±inf, words, lists and
    mappings, fractions where it counts, numbers past its largest."""
    values = [st.floats(max_value=-1e-9, allow_infinity=False), st.integers(-10**12, -1),
              st.sampled_from([math.nan, math.inf, -math.inf]), WORDS,
              st.lists(st.integers(0, 9), min_size=1, max_size=3),
              st.dictionaries(WORDS, st.integers(0, 9), min_size=1, max_size=2)]
    if not zero_ok:
        values.append(st.sampled_from([0, 0.0]))
    if whole:
        values.append(st.floats(0.01, 1e6).filter(lambda x: x != int(x)))
    if most is not None:
        values.append(st.integers(most + 1, 10**30) | st.sampled_from([10**30, 1e308]))
    return st.one_of(values)


# key path -> (0 allowed, whole numbers only, the largest allowed)
NUMBERS = {
    "seed": (True, True, None),
    "slo_ms": (False, False, None),
    "trace.rate": (False, False, None),
    "trace.count": (False, True, 10**9),
    "trace.max_requests": (False, True, None),
    "trace.compress_time": (False, False, None),
    "model.noise.cv": (False, False, None),
    "serving.replicas": (False, True, 100_000),
    "serving.batching.max_batch": (False, True, None),
    "serving.batching.max_wait_ms": (True, False, None),
    "serving.drop_after_ms": (False, False, None),
    "resources.cpu-core.price_per_s": (True, False, None),
}


# --- experiment YAML -----------------------------------------------------------------

BASE = {
    "name": "fuzz",
    "description": "bad input, fuzzed: é",
    "seed": 0,
    "slo_ms": 5.0,
    "trace": {"kind": "poisson", "rate": 2000.0, "count": 200},
    "model": {"profile": "builtin:cpu_mlp", "name": "mlp3", "noise": {"kind": "lognormal", "cv": 0.5}},
    "serving": {"replicas": 2, "router": "jsq", "batching": {"policy": "dynamic", "max_batch": 4, "max_wait_ms": 1.0},
                "drop_after_ms": 200.0, "resource": "cpu-core"},
    "resources": {"cpu-core": {"kind": "cores", "hardware": "cpu", "price_per_s": 0.01}},
}
EXITS = {"trace": BASE["trace"], "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
         "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                   "behaviour": {"kind": "builtin", "name": "digits_ee"}, "policy": "never"}}
CLUSTER = {"trace": BASE["trace"],
           "cluster": {"pipeline": "classification", "profile": "builtin:cpu_video",
                       "initial": {"classification": [{"variant": "resnet18"}]}, "adapter": "static"}}
CLUSTER_EXITS = {"ramps": {"forward": "ramp1"}, "policy": "never",
                 "behaviour": {"kind": "synthetic", "accuracy": [0.5, 0.69758], "n_classes": 1000}}
# the mappings of BASE and the model that says which keys each may hold
MAPPINGS = {"": ExperimentConfig, "trace.": PoissonTrace, "model.": ModelConfig, "model.noise.": LogNormalNoise,
            "serving.": ServingConfig, "serving.batching.": DynamicBatching, "resources.cpu-core.": ResourceConfig}


def dump(config) -> bytes:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode()


def _at(config: dict, path: str) -> tuple[dict, dict, str]:
    """A deep copy of ``config``, the mapping in it that holds the dotted key ``path``, and the key."""
    config = copy.deepcopy(config)
    *parents, key = path.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    return config, node, key


def put(config: dict, path: str, value) -> dict:
    config, node, key = _at(config, path)
    node[key] = value
    return config


def drop(config: dict, path: str) -> dict:
    config, node, key = _at(config, path)
    del node[key]
    return config


@st.composite
def bad_value(draw) -> Bad:
    path = draw(st.sampled_from(sorted(NUMBERS)))
    value = draw(bad_numbers(*NUMBERS[path]))
    return Bad(f"bad value of {path}", dump(put(BASE, path, value)), (f"{path}:", f"(got {value!r})"))


@st.composite
def bad_value_in_a_sweep(draw) -> Bad:
    path = draw(st.sampled_from(sorted(set(NUMBERS) - {"seed"})))
    value = draw(bad_numbers(*NUMBERS[path]))
    config = {**BASE, "sweep": {path: [1, value]}}  # the first point is fine, the second not
    return Bad(f"bad swept value of {path}", dump(config), (f"{path}:", f"(got {value!r})"), sweep_point=True)


@st.composite
def bad_cluster_batch_size(draw) -> Bad:
    """A cluster's batch sizes (``preferred``, ``allowed_sizes``) hold whole numbers >= 1:
    the line names the key and the element."""
    path = draw(st.sampled_from(["cluster.batching.preferred", "cluster.batching.allowed_sizes"]))
    value = draw(st.sampled_from([0, -3, 1.5, None]) | WORDS)
    config = put(CLUSTER, "cluster.batching", {path.rsplit(".", 1)[1]: [4, value]})
    return Bad(f"bad {path}", dump(config), (f"{path}.1:", f"(got {value!r})"))


@st.composite
def bad_threshold(draw) -> Bad:
    """A value of a union (one threshold, or one per exit) that fits no member: one line,
    not one per member pydantic tried."""
    value = draw(st.sampled_from([math.nan, math.inf, None]) | WORDS
                 | st.dictionaries(WORDS, st.integers(0, 9), min_size=1, max_size=2))
    config = put(EXITS, "exits.policy", {"name": "confidence", "threshold": value})
    return Bad("bad threshold", dump(config), ("exits.policy.threshold:", f"(got {value!r})"))


@st.composite
def unknown_name(draw) -> Bad:
    """An unknown trace kind, noise kind, batching policy, router, out_of_range mode,
    model, hardware, built-in profile, trace format, exit policy or semantics, behaviour
    kind or table, ramp stage, pipeline, adapter or variant."""
    cases = {  # what is named -> (the names it knows, the config naming `name`, the texts the line holds)
        "trace kind": (TRACES.names(), lambda n: put(BASE, "trace.kind", n), ("trace:",)),
        "noise kind": (NOISE.names(), lambda n: put(BASE, "model.noise.kind", n), ("model.noise:",)),
        "batching policy": (BATCHING.names(), lambda n: put(BASE, "serving.batching.policy", n),
                            ("serving.batching:",)),
        "router": (ROUTERS.names(), lambda n: put(BASE, "serving.router", n), ("serving.router:",)),
        "cluster router": (ROUTERS.names(), lambda n: put(CLUSTER, "cluster.router", n), ("cluster.router:",)),
        "out_of_range": (["extrapolate", "clamp", "error"], lambda n: put(BASE, "model.out_of_range", n),
                         ("model.out_of_range:",)),
        "model": (["mlp3"], lambda n: put(BASE, "model.name", n), ("model.name:", "it has: mlp3")),
        "hardware": (["cpu"], lambda n: put(BASE, "model.hardware", n), ("no rows for hardware",)),
        "built-in profile": ([p.stem for p in profiles_in(PROFILES_DIR)] + [p.name for p in profiles_in(PROFILES_DIR)],
                             lambda n: put(BASE, "model.profile", f"builtin:{n}"), ("model.profile: no built-in profile",)),
        "trace format": (["timestamps", "twitter", "azure-llm", "azure-functions"],
                         lambda n: put(BASE, "trace", {"kind": "file", "path": "t.txt", "format": n}),
                         ("trace:", "unknown trace format")),
        "exit policy": (["never"], lambda n: put(EXITS, "exits.policy", n), ("exits.policy:",)),
        "semantics": (["compute_saving", "latency_only"], lambda n: put(EXITS, "exits.semantics", n),
                      ("exits.semantics:",)),
        "behaviour kind": (["synthetic", "builtin", "file", "video_drift", "topic_drift"],
                           lambda n: put(EXITS, "exits.behaviour.kind", n), ("exits.behaviour:",)),
        "behaviour table": (["digits_ee", "digits_torch_ee"], lambda n: put(EXITS, "exits.behaviour.name", n),
                            ("exits.behaviour:", "no built-in behaviour table")),
        "ramp head": (["ramp1", "ramp2", "ramp3"], lambda n: put(EXITS, "exits.ramps.block2", n),
                      ("exits.ramps:", "has no stage")),
        "ramp position": (["block1", "block2", "block3", "block4"],
                          lambda n: put(EXITS, "exits.ramps", {"block1": "ramp1", n: "ramp2"}),
                          ("exits.ramps:", "has no stage")),
        "resource": (["cpu-core"], lambda n: put(BASE, "serving.resource", n), ("serving.resource:", "no resource")),
        "resource kind": (["cores", "gpu", "mig"], lambda n: put(BASE, "resources.cpu-core.kind", n),
                          ("resources.cpu-core.kind:",)),
        "resource hardware": (["cpu"], lambda n: put(BASE, "resources.cpu-core.hardware", n),
                              ("serving.resource:", "own hardware's profile")),
        "refined key": (["serving.replicas"], lambda n: {**BASE, "sweep": {"serving.replicas": [1, 2]},
                                                         "refine": {"key": n, "fields": ["lam"]}},
                        ("refine.key:", "is not swept")),
        "pipeline": (["classification"], lambda n: put(CLUSTER, "cluster.pipeline", n),
                     ("cluster.pipeline:", "unknown pipeline")),
        "adapter": (["static"], lambda n: put(CLUSTER, "cluster.adapter", n), ("cluster.adapter:",)),
        "variant": (["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
                    lambda n: put(CLUSTER, "cluster.initial.classification", [{"variant": n}]),
                    ("cluster.initial.classification.0.variant:",)),
        "variant with exits": (["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
                               lambda n: put(CLUSTER, "cluster.exits", {n: CLUSTER_EXITS}),
                               ("cluster.exits.", "pipeline 'classification' has no variant")),
        "model with exits": (["resnet18"], lambda n: put(CLUSTER, "cluster.exits", {"resnet18": {**CLUSTER_EXITS, "model": n}}),
                             ("cluster.exits.resnet18.model:", "is not in")),
    }
    what = draw(st.sampled_from(sorted(cases)))
    known, config, names = cases[what]
    name = draw(NAMES.filter(lambda n: n not in known))
    return Bad(f"unknown {what}", dump(config(name)), (*names, repr(name)[1:-1]))


@st.composite
def name_breaking_the_line(draw) -> Bad:
    """An unknown name with a line break or control character inside: still one line."""
    name = draw(NAMES) + draw(st.sampled_from(LINE_BREAKS)) + draw(NAMES)
    path, where = draw(st.sampled_from([("trace.kind", "trace:"), ("serving.router", "serving.router:"),
                                        ("model.name", "model.name:"), ("serving.batching.policy", "serving.batching:")]))
    return Bad(f"line break in {path}", dump(put(BASE, path, name)), (where,))


@st.composite
def unknown_key(draw) -> Bad:
    prefix = draw(st.sampled_from(sorted(MAPPINGS)))
    key = draw(NAMES.filter(lambda k: k not in MAPPINGS[prefix].model_fields and "." not in k))
    value = draw(st.integers(0, 9))
    return Bad(f"unknown key under {prefix or 'the top'}", dump(put(BASE, prefix + key, value)),
               (f"{prefix}{key}: unknown key", f"(got {value!r})"))


# key path -> the texts the line holds when it is missing
REQUIRED = {
    "trace": ("trace: required key is missing",),
    "model": ("model: required key is missing",),
    "trace.kind": ("trace:", "needs a 'kind' key saying which one"),
    "trace.rate": ("trace.rate: required key is missing",),
    "trace.count": ("trace:", "give exactly one of 'duration' (seconds) or 'count' (requests)"),
    "model.profile": ("model.profile: required key is missing",),
    "model.name": ("model.name: required key is missing",),
    "model.noise.cv": ("model.noise.cv: required key is missing",),
    "serving.batching.max_batch": ("serving.batching.max_batch: required key is missing",),
}


@st.composite
def missing_key(draw) -> Bad:
    path = draw(st.sampled_from(sorted(REQUIRED)))
    return Bad(f"missing {path}", dump(drop(BASE, path)), REQUIRED[path])


NOT_A_MAPPING = SMALL | WORDS | st.lists(st.integers(0, 3), max_size=3) | st.none()
# a section -> the values it must refuse in its place
SHAPES = {**dict.fromkeys(["trace", "serving", "serving.batching", "model.noise", "sweep"], NOT_A_MAPPING),
          "model": NOT_A_MAPPING.filter(lambda v: v is not None),  # null: no model, a missing key
          "seeds": SMALL | WORDS,
          "name": SMALL | st.lists(st.integers(0, 3), max_size=3) | st.none(),
          "description": SMALL | st.lists(WORDS, max_size=3) | st.none()}


@st.composite
def wrong_shape(draw) -> Bad:
    path = draw(st.sampled_from(sorted(SHAPES)))
    value = draw(SHAPES[path])
    return Bad(f"wrong shape of {path}", dump(put(BASE, path, value)), (f"{path}:", f"(got {value!r})"))


@st.composite
def bad_trace_parameters(draw) -> Bad:
    """Generated traces whose parameters their generator refuses: caught by `check`,
    before any arrival is made."""
    what = draw(st.sampled_from(["window", "windows", "step times", "step lengths", "mmpp2 rate",
                                 "too many arrivals", "rate scaled too far"]))
    if what in ("window", "windows"):
        t0 = draw(st.floats(-1e6, 1e6))
        t1 = draw(st.floats(-1e6, 1e6).filter(lambda t: not 0 <= t0 < t))
        value = [t0, t1] if what == "window" else [[0.0, 1.0], [t0, t1]]
        return Bad(f"bad {what}", dump(put(BASE, f"trace.{what}", value)), (f"trace.{what}:", "0 <= t0 < t1"))
    if what == "step times":
        times = draw(st.lists(st.floats(0, 1e3), min_size=2, max_size=5).filter(
            lambda ts: any(b <= a for a, b in zip(ts, ts[1:]))))
        trace = {"kind": "step", "rates": [10.0] * (len(times) + 1), "change_times": times, "count": 200}
        return Bad(what, dump(put(BASE, "trace", trace)), ("trace:", "change_times must increase"))
    if what == "step lengths":
        rates, times = draw(st.integers(1, 5)), draw(st.integers(0, 5))
        trace = {"kind": "step", "rates": [10.0] * rates, "change_times": [float(t + 1) for t in range(times)],
                 "count": 200}
        if rates == times + 1:
            trace["rates"].append(10.0)
        return Bad(what, dump(put(BASE, "trace", trace)), ("trace:", "len(rates) == len(change_times) + 1"))
    if what == "mmpp2 rate":
        state, rate = draw(st.integers(0, 1)), draw(st.floats(-1e6, -1e-6))
        rates = [rate, 5.0] if state == 0 else [5.0, rate]
        trace = {"kind": "mmpp2", "rates": rates, "mean_sojourn": [1.0, 1.0], "count": 200}
        return Bad(what, dump(put(BASE, "trace", trace)), ("trace:", f"rates[{state}] must be a finite number >= 0"))
    if what == "too many arrivals":
        rate = draw(st.floats(1e3, 1e6))
        trace = {"kind": "poisson", "rate": rate, "duration": draw(st.floats(1.01e9 / rate, 1e300))}
    else:
        trace = {**BASE["trace"], "scale_rate": draw(st.floats(5.1e6, 1e300))}
    return Bad(what, dump(put(BASE, "trace", trace)), ("trace:", "arrivals, more than the 1,000,000,000"))


@st.composite
def broken_yaml(draw) -> Bad:
    """Files that are no experiment at all: empty or blank, binary, a character YAML
    forbids, a list or scalar on top, a syntax error, a key given twice, nesting too
    deep, an anchor bomb, truncated."""
    text = dump(BASE).decode()
    what = draw(st.sampled_from(["blank", "binary", "forbidden character", "not a mapping", "syntax error",
                                 "duplicate key", "deep nesting", "anchor bomb", "truncated"]))
    if what == "blank":
        data = draw(st.text(alphabet=" \n\r\t", max_size=20)) + draw(st.sampled_from(["", "# only a comment\n"]))
        return Bad(what, data.encode(), (("the file is empty", "invalid YAML"),))
    if what == "binary":
        raw = draw(st.binary(max_size=64))
        at = draw(st.integers(0, len(raw)))
        return Bad(what, raw[:at] + draw(st.sampled_from([b"\xff", b"\xfe", b"\xc3(", b"\x80", b"\xed\xa0\x80"])) + raw[at:],
                   ("not UTF-8 text (byte",))
    if what == "forbidden character":
        char = draw(st.sampled_from([chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), 127]]))
        at = draw(st.integers(0, len(text)))
        return Bad(what, (text[:at] + char + text[at:]).encode(), ("invalid YAML", f"#x{ord(char):04x}", "line "))
    if what == "not a mapping":
        top = draw(st.lists(st.integers(), min_size=1, max_size=3) | st.integers() | WORDS | st.floats(allow_nan=False)
                   | st.booleans())
        return Bad(what, dump(top), ("the top level must be a mapping",))
    if what == "syntax error":
        lines = text.splitlines()
        at = draw(st.integers(1, len(lines)))
        junk = draw(st.sampled_from(["\tkind: poisson", "trace: {kind: [poisson", "  : :", "model: 'unclosed",
                                     "- listed: item", "seed: 1: 2", "name: !!python/object/apply:os.system ['true']",
                                     "  badly:\n indented: 1", "@reserved: 1", "`backtick: 1"]))
        return Bad(what, "\n".join(lines[:at] + [junk] + lines[at:]).encode(), ("invalid YAML", "line "))
    if what == "duplicate key":
        lines = text.splitlines()
        at = draw(st.sampled_from([i for i, line in enumerate(lines) if not line.endswith(":")]))
        key = lines[at].split(":")[0].strip()
        return Bad(what, "\n".join(lines[:at + 1] + lines[at:]).encode(),
                   ("invalid YAML", f"line {at + 2} ", f"duplicate key {key!r} (first given on line {at + 1})"))
    if what == "deep nesting":
        depth = draw(st.integers(1, 5000))
        return Bad(what, put_text(text, "description", "[" * depth + "]" * depth),
                   (("description: must be a valid string", "nested too deeply"),))
    if what == "anchor bomb":
        width, levels = draw(st.integers(2, 9)), draw(st.integers(1, 12))
        anchors = [f"&a0 [{', '.join(['1'] * width)}]"] + [
            f"&a{k} [{', '.join([f'*a{k - 1}'] * width)}]" for k in range(1, levels)]
        return Bad(what, put_text(text, "description", f"[{', '.join(anchors)}]"),
                   ("description: must be a valid string",))
    flow = "{" + ", ".join(f"{k}: {yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in BASE.items()) + "}"
    data = flow.encode()
    return Bad(what, data[:draw(st.integers(1, len(data) - 1))], (("invalid YAML", "not UTF-8 text"),))


def put_text(text: str, key: str, value: str) -> bytes:
    """The YAML ``text`` with the top-level ``key``'s line replaced by ``key: value``."""
    return "\n".join(f"{key}: {value}" if line.startswith(f"{key}:") else line for line in text.splitlines()).encode()


BAD_CONFIGS = st.one_of(bad_value(), bad_value_in_a_sweep(), bad_cluster_batch_size(), bad_threshold(), unknown_name(),
                        name_breaking_the_line(), unknown_key(), missing_key(), wrong_shape(), bad_trace_parameters(),
                        broken_yaml())


@fuzz(300)
@given(bad=BAD_CONFIGS)
def test_check_refuses_a_bad_experiment_in_one_line(bad: Bad):
    with written("bad.yaml", bad.data) as path:
        assert_refused(servesim("check", path), bad, path)


@fuzz(80)
@given(bad=BAD_CONFIGS)
def test_run_refuses_a_bad_experiment_before_writing_anything(bad: Bad):
    with written("bad.yaml", bad.data) as path:
        assert_run_refused(path, bad)


# --- trace files ---------------------------------------------------------------------

TRACE_FILES = {"timestamps": "arrivals.txt", "twitter": "counts.txt", "azure-llm": "llm.csv",
               "azure-functions": "functions.csv"}
LLM_HEADER = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
START = datetime.datetime(2023, 11, 16, 18, 17, 3)
MINUTES = [str(m) for m in range(1, 1441)]
FUNCTIONS_HEADER = ["HashOwner", "HashApp", "HashFunction", "Trigger", *MINUTES]
BAD_COUNTS = (st.integers(-10**6, -1).map(str) | st.floats(0.01, 1e6).filter(lambda x: x != int(x)).map(repr)
              | st.sampled_from(["nan", "inf", "1e3", "", "0x10", str(10**30), str(2**63)]) | WORDS)
BAD_TIMES = (st.floats(max_value=-1e-9, allow_infinity=False).map(repr)
             | st.sampled_from(["nan", "inf", "-inf", "1e400", "0x1F", "1;5", "--1", "1.2.3"]) | WORDS)


CSV_MUTATIONS = ["blank", "binary", "bad value", "missing column", "renamed column", "repeated column", "long row",
                 "header only", "truncated"]
MUTATIONS = {"timestamps": ["blank", "binary", "bad value", "unsorted"], "twitter": ["blank", "binary", "bad value"],
             "azure-llm": CSV_MUTATIONS + ["unsorted"], "azure-functions": CSV_MUTATIONS}


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(",".join(row) for row in [header, *rows]) + "\n"


@st.composite
def arrival_times(draw) -> list[str]:
    gaps = draw(st.lists(st.floats(1e-3, 100.0), min_size=3, max_size=30))
    return [repr(round(sum(gaps[:i + 1]), 6)) for i in range(len(gaps))]


@st.composite
def bad_trace_file(draw) -> tuple[str, Bad]:
    """A trace file of one format with one mutation; the file's format and the Bad."""
    fmt = draw(st.sampled_from(sorted(TRACE_FILES)))
    what = draw(st.sampled_from(MUTATIONS[fmt]))
    if what == "blank":
        data = draw(st.text(alphabet=" \n\r\t", max_size=20)) + ("# nothing\n" if fmt == "timestamps" else "")
        return fmt, Bad(what, data.encode(), (("no arrival times", "no counts", "the file is empty"),))
    if what == "binary":
        raw = draw(st.binary(max_size=64))
        return fmt, Bad(what, raw + b"\xff" + raw, ("not UTF-8 text (byte",))
    if fmt == "timestamps":
        times = draw(arrival_times())
        i = draw(st.integers(1, len(times) - 1))
        if what == "unsorted":
            times[i] = repr(float(times[i - 1]) / 2)
            return fmt, Bad(what, ("\n".join(times) + "\n").encode(),
                            (f"line {i + 1}: {times[i]!r} is earlier than the arrival before it",))
        times[i] = draw(BAD_TIMES.filter(lambda t: t.strip() == t and not t.startswith("#")))
        return fmt, Bad(what, ("\n".join(times) + "\n").encode(),
                        (f"line {i + 1}: {times[i]!r} is not a finite number >= 0",))
    if fmt == "twitter":
        counts = [str(c) for c in draw(st.lists(st.integers(0, 500), min_size=2, max_size=40))]
        i = draw(st.integers(0, len(counts) - 1))
        counts[i] = draw(BAD_COUNTS.filter(lambda c: c.strip() and " " not in c))
        return fmt, Bad(what, (" ".join(counts) + "\n").encode(),
                        (f"line 1, value {i + 1}: {counts[i]!r} is not a whole number >= 0",))
    if fmt == "azure-llm":
        header = LLM_HEADER
        gaps = draw(st.lists(st.integers(1, 10**9), min_size=2, max_size=20))  # microseconds
        rows = [[str(START + datetime.timedelta(microseconds=sum(gaps[:k + 1]))), str(draw(st.integers(1, 4096))),
                 str(draw(st.integers(1, 512)))] for k in range(len(gaps))]
    else:
        header = FUNCTIONS_HEADER
        step = draw(st.integers(1, 97))  # a day of counts per row, cheap to draw
        rows = [[f"owner{k}", f"app{k}", f"fn{k}", "http", *(str(step * (k + m) % 100) for m in range(1440))]
                for k in range(draw(st.integers(1, 3)))]
    return fmt, draw(bad_csv(what, header, rows, fmt))


@st.composite
def bad_csv(draw, what: str, header: list[str], rows: list[list[str]], fmt: str) -> Bad:
    """One mutation of a CSV trace (``header``, ``rows``: a good file of format ``fmt``)."""
    needed = LLM_HEADER if fmt == "azure-llm" else ["HashFunction", *MINUTES]
    r = draw(st.integers(0, len(rows) - 1))
    line = r + 2
    if what == "bad value":
        c = draw(st.sampled_from([1, 2] if fmt == "azure-llm" else range(4, len(header))))
        rows[r][c] = draw(BAD_COUNTS.filter(lambda v: v.strip() == v and "," not in v))
        column = header[c] if fmt == "azure-llm" else f"minute {header[c]}"
        if fmt == "azure-llm" and draw(st.booleans()):
            rows[r][0] = "x" + draw(WORDS)
            column, c = "TIMESTAMP", 0
        return Bad(what, csv_text(header, rows).encode(), (f"line {line}: {column} {rows[r][c]!r} is not a",))
    if what == "unsorted":  # azure-llm, which has at least two rows
        r = draw(st.integers(1, len(rows) - 1))
        rows[r][0] = rows[r - 1][0].replace("2023", "2022")
        return Bad(what, csv_text(header, rows).encode(), (f"line {r + 2}: TIMESTAMP", "is earlier than"))
    if what in ("missing column", "renamed column"):
        name = draw(st.sampled_from(needed))
        c = header.index(name)
        if what == "missing column":
            header, rows = header[:c] + header[c + 1:], [row[:c] + row[c + 1:] for row in rows]
        else:
            header = header[:c] + [draw(NAMES.filter(lambda n: n not in header and "," not in n))] + header[c + 1:]
        return Bad(what, csv_text(header, rows).encode(), (f"missing column(s) {name}", "the header (line 1)"))
    if what == "repeated column":
        name = draw(st.sampled_from(needed))
        header, rows = header + [name], [row + [row[header.index(name)]] for row in rows]
        return Bad(what, csv_text(header, rows).encode(), (f"line 1: column {name!r} appears 2 times",))
    if what == "long row":
        rows[r] = rows[r] + ["5"] * draw(st.integers(1, 3))
        return Bad(what, csv_text(header, rows).encode(),
                   (f"line {line}: {len(rows[r])} values for the {len(header)} columns",))
    if what == "header only":
        return Bad(what, csv_text(header, []).encode(), (("no requests (only a header)", "no functions (only a header)"),))
    text = csv_text(header, rows).rstrip("\n")
    last = text.rfind("\n") + 1
    cut = draw(st.integers(last + 1, text.rfind(",")))  # inside the last row, before its last value
    return Bad(what, text[:cut].encode(), (f"line {len(rows) + 1}:",))


def experiment_on(path: Path, section: str, value: dict) -> Path:
    """An experiment beside ``path`` that reads it: BASE with ``section`` set to ``value``."""
    experiment = path.with_name("bad.yaml")
    experiment.write_bytes(dump(put(BASE, section, value)))
    return experiment


def trace_yaml(trace: Path, fmt: str) -> Path:
    return experiment_on(trace, "trace", {"kind": "file", "path": trace.name, "format": fmt})


@fuzz(160)
@given(case=bad_trace_file())
def test_trace_stats_refuses_a_bad_trace_file_in_one_line(case):
    fmt, bad = case
    with written(TRACE_FILES[fmt], bad.data) as trace:
        assert_refused(servesim("trace-stats", trace, "--format", fmt), bad, trace)


@fuzz(80)
@given(case=bad_trace_file())
def test_check_refuses_an_experiment_on_a_bad_trace_file(case):
    fmt, bad = case
    with written(TRACE_FILES[fmt], bad.data) as trace:
        path = trace_yaml(trace, fmt)
        assert_refused(servesim("check", path), bad, path, "trace.path:", trace)


@fuzz(40)
@given(case=bad_trace_file())
def test_run_refuses_an_experiment_on_a_bad_trace_file(case):
    fmt, bad = case
    with written(TRACE_FILES[fmt], bad.data) as trace:
        assert_run_refused(trace_yaml(trace, fmt), bad, "trace.path:", trace)


@fuzz(25)
@given(count=st.integers(10**9 + 1, 2**63 - 1), at=st.integers(0, 9))
def test_trace_stats_refuses_counts_past_what_a_trace_may_hold(count, at):
    counts = ["3"] * 10
    counts[at] = str(count)
    bad = Bad("too many arrivals", " ".join(counts).encode(), ("the counts would make", "arrivals, more than the"))
    with written("counts.txt", bad.data) as trace:
        assert_refused(servesim("trace-stats", trace, "--format", "twitter"), bad, trace)


# --- profiles ------------------------------------------------------------------------

METADATA = ["device: cpu", "dtype: float32", "framework: numpy", "date: 2026-01-01", "execution_mode: eager"]
PROFILE_HEADER = ["hardware", "model", "stage", "batch_size", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
                  "repeats"]
PROFILE_ROWS = [["cpu", "m", stage, str(b), f"{0.5 * b:g}", f"{0.6 * b:g}", f"{0.7 * b:g}", "20"]
                for stage in ("s1", "s2") for b in (1, 2, 4)]
FIRST_ROW = len(METADATA) + 2  # the file line of PROFILE_ROWS[0]
BAD_CELLS = {  # column -> the values it must refuse
    "latency": (st.floats(max_value=0, allow_infinity=False).map(repr) | st.floats(1.01e9, 1e308).map(repr)
                | st.sampled_from(["nan", "inf", "-inf", "", "1e400", "0x10"]) | WORDS),
    "batch_size": (st.integers(-10**6, 0).map(str) | st.integers(100_001, 10**30).map(str)
                   | st.floats(0.01, 1e3).filter(lambda x: x != int(x)).map(repr) | st.sampled_from(["", "nan", "1e20"])
                   | WORDS),
    "repeats": st.integers(-10**6, 0).map(str) | st.floats(0.01, 1e3).filter(lambda x: x != int(x)).map(repr) | WORDS,
    "name": st.text(alphabet=" \t", max_size=3),
}


def profile_text(metadata: list[str], header: list[str], rows: list[list[str]], after: str = "") -> str:
    return "".join(f"# {m}\n" for m in metadata) + csv_text(header, rows) + after


@st.composite
def bad_profile(draw) -> Bad:
    what = draw(st.sampled_from(["bad cell", "percentiles out of order", "missing column", "renamed column",
                                 "extra column", "repeated column", "short or long row", "missing metadata",
                                 "repeated metadata", "comment after the header", "duplicate row", "header only",
                                 "blank", "binary", "NUL", "truncated"]))
    rows = copy.deepcopy(PROFILE_ROWS)
    r = draw(st.integers(0, len(rows) - 1))
    line = f"line {FIRST_ROW + r}:"
    header = PROFILE_HEADER
    if what in ("bad cell", "NUL"):
        c = draw(st.sampled_from(range(len(header))))
        column = header[c]
        if what == "NUL":
            rows[r][c] = rows[r][c][:1] + "\x00" + rows[r][c][1:]
        else:
            rows[r][c] = draw(BAD_CELLS[column if column in ("batch_size", "repeats") else
                                        "latency" if column.startswith("latency") else "name"])
        text = profile_text(METADATA, header, rows)
        if column in ("hardware", "model", "stage") and not rows[r][c].strip():
            return Bad(what, text.encode(), (line, f"{column} is empty"))
        return Bad(what, text.encode(), (line, f"{column} {rows[r][c]!r}"))
    if what == "percentiles out of order":
        low, high = draw(st.sampled_from([(4, 5), (5, 6), (4, 6)]))
        rows[r][high] = repr(float(rows[r][low]) * draw(st.floats(0.01, 0.99)))
        return Bad(what, profile_text(METADATA, header, rows).encode(),
                   (line, f"{header[high]} {rows[r][high]!r} is below", "p50 <= p90 <= p99"))
    if what in ("missing column", "renamed column", "extra column", "repeated column"):
        c = draw(st.sampled_from(range(len(header))))
        if what == "missing column":
            header, rows = header[:c] + header[c + 1:], [row[:c] + row[c + 1:] for row in rows]
            names = (f"missing column(s) {PROFILE_HEADER[c]!r}",)
        elif what == "renamed column":
            new = draw(NAMES.filter(lambda n: n not in header and n.strip() == n))
            header = header[:c] + [new] + header[c + 1:]
            names = (f"missing column(s) {PROFILE_HEADER[c]!r}", f"unexpected column(s) {new!r}")
        elif what == "extra column":
            new = draw(NAMES.filter(lambda n: n not in header and n.strip() == n))
            header, rows = header + [new], [row + ["1"] for row in rows]
            names = (f"unexpected column(s) {new!r}",)
        else:
            header, rows = header + [header[c]], [row + [row[c]] for row in rows]
            names = (f"header column(s) {PROFILE_HEADER[c]!r} appear more than once",)
        return Bad(what, profile_text(METADATA, header, rows).encode(), (f"line {FIRST_ROW - 1}:", *names))
    if what == "short or long row":
        n = draw(st.integers(1, 12).filter(lambda k: k != len(header)))
        rows[r] = (rows[r] * 2)[:n]
        return Bad(what, profile_text(METADATA, header, rows).encode(), (line, f"{n} values for 8 columns"))
    if what == "missing metadata":
        k = draw(st.integers(0, len(METADATA) - 1))
        key = METADATA[k].split(":")[0]
        return Bad(what, profile_text(METADATA[:k] + METADATA[k + 1:], header, rows).encode(),
                   (f"metadata is missing {key!r}",))
    if what == "repeated metadata":
        k = draw(st.integers(0, len(METADATA) - 1))
        key = METADATA[k].split(":")[0]
        return Bad(what, profile_text(METADATA + [f"{key}: {draw(NAMES)}"], header, rows).encode(),
                   (f"line {len(METADATA) + 1}:", f"metadata key {key!r} appears twice"))
    if what == "comment after the header":
        comment = f"# {draw(NAMES)}: {draw(NAMES)}\n"
        return Bad(what, profile_text(METADATA, header, rows, comment).encode(),
                   (f"line {FIRST_ROW + len(rows)}:", "comment after the header"))
    if what == "duplicate row":
        rows.insert(r + 1, rows[r])
        return Bad(what, profile_text(METADATA, header, rows).encode(),
                   (f"line {FIRST_ROW + r + 1}:", "duplicate (hardware, model, stage, batch_size)"))
    if what == "header only":
        return Bad(what, profile_text(METADATA, header, []).encode(), ("no data rows",))
    if what == "blank":
        return Bad(what, draw(st.text(alphabet=" \n\r\t", max_size=20)).encode(), ("no header line",))
    if what == "binary":
        raw = draw(st.binary(max_size=64))
        return Bad(what, raw + b"\xff" + raw, ("not UTF-8 text (byte",))
    text = profile_text(METADATA, header, rows).rstrip("\n")
    cut = draw(st.integers(text.rfind("\n") + 2, text.rfind(",")))  # inside the last row, before its last value
    return Bad(what, text[:cut].encode(), (f"line {FIRST_ROW + len(rows) - 1}:", "values for 8 columns"))


def profile_yaml(profile: Path) -> Path:
    return experiment_on(profile, "model", {"profile": profile.name, "name": "m"})


@fuzz(120)
@given(bad=bad_profile())
def test_check_refuses_an_experiment_on_a_bad_profile(bad: Bad):
    with written("prof.csv", bad.data) as profile:
        path = profile_yaml(profile)
        assert_refused(servesim("check", path), bad, path, profile)


@fuzz(40)
@given(bad=bad_profile())
def test_run_refuses_an_experiment_on_a_bad_profile(bad: Bad):
    with written("prof.csv", bad.data) as profile:
        assert_run_refused(profile_yaml(profile), bad, profile)


# --- the real entry point, in a process of its own -------------------------------------

NAN_ROW = ["cpu", "m", "s1", "8", "nan", "1", "1", "20"]


@pytest.mark.parametrize("files, argv, names", [
    ({"bad.yaml": b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage"}, ["check", "bad.yaml"], ["bad.yaml", "not UTF-8 text"]),
    ({"empty.txt": b""}, ["trace-stats", "empty.txt", "--format", "timestamps"], ["empty.txt", "no arrival times"]),
    ({"prof.csv": profile_text(METADATA, PROFILE_HEADER, PROFILE_ROWS + [NAN_ROW]).encode(),
      "bad.yaml": dump(put(BASE, "model", {"profile": "prof.csv", "name": "m"}))},
     ["check", "bad.yaml"], ["bad.yaml", f"prof.csv line {FIRST_ROW + len(PROFILE_ROWS)}: latency_p50_ms 'nan'"]),
])
def test_the_command_prints_one_line_and_no_traceback(files, argv, names, tmp_path):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "servesim.experiments.cli", *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stdout) == (2, "")
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), lines
    assert all(name in lines[0] for name in names), lines
