"""docs/FORMATS.md documents every file format the code reads, its examples load as the
code reads them, and the command line points users to it.

An example is the fenced block after a ``<!-- example: ... -->`` line: ``trace FORMAT``,
``profile FILE``, ``profile-import``, ``perf-analyzer`` and ``offline-table`` blocks are
file contents; ``python WHAT ... FILE`` blocks are run (in a fresh folder, in page order)
and write FILE."""

from __future__ import annotations

import re
import runpy
import typing
from pathlib import Path

import numpy as np
import pytest

from servesim import traces
from servesim.experiments.specs import FileBehaviour
from servesim.workloads import load_profile
from servesim.workloads.behaviour import REQUIRED_KEYS, OPTIONAL_KEYS, from_apparate_pickle, load_table
from servesim.workloads.client_samples import CLIENT_COLUMNS, CLIENTS_SUFFIX, read_client_samples
from servesim.workloads.contention import CONTENTION_COLUMNS, CONTENTION_SUFFIX
from servesim.workloads.profile import COLUMNS, REQUIRED_METADATA, SAMPLES_SUFFIX
from servesim.workloads.offline_tables import FORMATS as OFFLINE_FORMATS, import_offline_table
from servesim.workloads.profile_import import import_profile

DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMATS.md"
EXAMPLE = re.compile(r"<!-- example: ([^>]*?) -->\n```(\w+)\n(.*?)```", re.S)


def examples() -> list[tuple[list[str], str, str]]:
    return [(marker.split(), language, body) for marker, language, body in EXAMPLE.findall(DOC.read_text())]


def test_every_format_the_code_reads_is_documented_with_an_example():
    text = DOC.read_text()
    markers = [" ".join(words) for words, _, _ in examples()]
    for name in traces.FORMATS:
        assert f"### `{name}`" in text and any(f"trace {name}" in m for m in markers), name
    for name in typing.get_args(FileBehaviour.model_fields["format"].annotation):  # npz, apparate-pickle
        assert f"format: {name}" in text, name
    assert any(m.startswith("python behaviour") for m in markers)
    assert any(m.startswith("python apparate-pickle") for m in markers)
    assert any(m.startswith("profile ") for m in markers) and "profile-import" in markers
    assert any(m.startswith("python samples") for m in markers) and SAMPLES_SUFFIX in text
    for name in OFFLINE_FORMATS:  # servesim profile import --format NAME
        assert f"### `{name}`" in text and name in markers, name
    assert any(m.startswith("contention ") for m in markers) and CONTENTION_SUFFIX in text
    assert any(m.startswith("clients ") for m in markers) and CLIENTS_SUFFIX in text
    # every column, key and array
    for word in COLUMNS + REQUIRED_METADATA + REQUIRED_KEYS + OPTIONAL_KEYS + CONTENTION_COLUMNS + CLIENT_COLUMNS:
        assert f"`{word}`" in text, word


def test_every_example_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    loaded = []
    for k, (words, language, body) in enumerate(examples()):
        if language == "python":
            runpy.run_path(str(_write(tmp_path / f"example{k}.py", body)))
            kind, file = words[1], words[-1]
        else:
            kind = words[0]
            file = words[1] if kind in ("profile", "contention", "clients") else f"example{k}.txt"
            _write(tmp_path / file, body)
        if kind == "trace":
            trace = traces.load(file, words[words.index("trace") + 1], rng=rng)
            assert len(trace.times) > 0
        elif kind == "profile":
            assert load_profile(file).models() == ("mlp3",)
        elif kind == "contention":  # the sidecar of the profile example above
            assert load_profile(file.removesuffix(CONTENTION_SUFFIX) + ".csv").contention["cpu", "mlp3"].sizes == (1, 8)
        elif kind == "clients":
            assert len(read_client_samples(file)[0]["recv_ms"]) == 3
        elif kind == "samples":
            assert load_profile(file.removesuffix(SAMPLES_SUFFIX) + ".csv").samples  # the sidecar was read
        elif kind == "profile-import":
            profile = import_profile(file, "h100", {"dtype": "fp16", "date": "2026-11-22", "execution_mode": "eager"})
            assert profile.models() == ("resnet50", "resnet50_ee", "resnet50_full")
        elif kind in OFFLINE_FORMATS:
            profile = import_offline_table(file, kind, "t4", "resnet50", {
                "device": "NVIDIA T4", "dtype": "fp16", "framework": "tensorrt", "date": "2026-12-01",
                "execution_mode": "triton"})
            assert profile.stages("resnet50") == ("forward",) and len(profile.rows) == 3
        elif kind == "behaviour":
            assert load_table(file).exit_names == ("ramp1", "final")
        elif kind == "apparate-pickle":
            assert from_apparate_pickle(file).exit_names == ("ramp0", "ramp1", "final")
        else:
            pytest.fail(f"unknown example kind {words}")
        loaded.append(kind)
    assert len(loaded) >= 10, loaded


def test_the_twitter_example_is_what_the_page_says():
    (words, _, body), = [e for e in examples() if e[0] == ["trace", "twitter"]]
    counts = np.array(body.split(), dtype=np.int64)
    assert counts.sum() == 74 and counts.size == 7  # "74 requests over 7 s"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_help_points_to_the_formats(servesim):
    top = servesim("--help")
    assert top.rc == 0 and "docs/FORMATS.md" in top.out
    stats = servesim("trace-stats", "--help")
    assert stats.rc == 0 and "docs/FORMATS.md" in stats.out
    flat = " ".join(stats.out.split())
    for name, spec in traces.FORMATS.items():
        assert name in flat and " ".join(spec.description.split()) in flat, name
