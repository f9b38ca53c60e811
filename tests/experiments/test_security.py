"""docs/SECURITY.md, tested (issue 21): every file a config can name, every string parsed
back from an output folder, ``--resume`` and the Ray executor. A config or a data file
must never run code: each payload here would create a marker file if it ran, and it
never does; each refusal is one error line naming the file."""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from servesim.experiments import store
from servesim.experiments.executors import RayExecutor

ERROR = "servesim: error: "


class Reduces:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payload(marker: Path) -> bytes:
    return pickle.dumps(Reduces(os.system, f"touch {shlex.quote(str(marker))}"))


def npz_payload(marker: Path) -> bytes:
    """An .npz whose members are all there, one an object array holding a payload: it
    runs only if np.load is allowed to unpickle."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, value in {"format_version": np.int64(1), "exit_names": np.array(["a", "final"]),
                           "confidence": np.array([[Reduces(os.system, f"touch {marker}"), 1.0]], dtype=object),
                           "correct": np.ones((1, 2), bool), "agrees": np.ones((1, 2), bool)}.items():
            member = io.BytesIO()
            np.save(member, value, allow_pickle=True)
            archive.writestr(f"{key}.npy", member.getvalue())
    return buffer.getvalue()


TRACE = {"kind": "poisson", "rate": 100.0, "count": 50}
SINGLE = {"trace": TRACE, "model": {"profile": "builtin:cpu_mlp", "name": "mlp3"}}
EXITS = {"trace": TRACE, "model": {"profile": "builtin:cpu_digits_ee", "name": "digits_ee"},
         "exits": {"ramps": {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"},
                   "behaviour": {"kind": "builtin", "name": "digits_ee"}, "policy": "never"}}
CLUSTER = {"trace": TRACE, "slo_ms": 750,
           "cluster": {"pipeline": "classification", "profile": "builtin:cpu_video",
                       "initial": {"classification": [{"variant": "resnet18", "cores": 2}]}, "adapter": "static"}}


def with_file(config: dict, key: str, value) -> dict:
    config = json.loads(json.dumps(config))
    node = config
    *parents, last = key.split(".")
    for parent in parents:
        node = node[parent]
    node[last] = value
    return config


FILE = "data.bin"
# every place a config names a file: (the config, what the error line names)
FILES = {
    **{f"trace ({fmt})": with_file(SINGLE, "trace", {"kind": "file", "path": FILE, "format": fmt})
       for fmt in ("timestamps", "twitter", "azure-llm", "azure-functions")},
    "model.profile": with_file(SINGLE, "model.profile", FILE),
    "served profile (model.profile with exits.host)": with_file(
        with_file(EXITS, "model.profile", FILE), "exits.host", "digits_ee_host"),
    "behaviour (npz)": with_file(EXITS, "exits.behaviour", {"kind": "file", "path": FILE}),
    "behaviour (apparate-pickle)": with_file(EXITS, "exits.behaviour",
                                             {"kind": "file", "path": FILE, "format": "apparate-pickle"}),
    "cluster.profile": with_file(CLUSTER, "cluster.profile", FILE),
    "LSTM training trace": with_file(CLUSTER, "cluster.adapter", {
        "name": "infadapter", "budget": 4, "predictor": {
            "kind": "lstm", "train": {"kind": "file", "path": FILE, "format": "twitter"}}}),
}


@pytest.mark.parametrize("what", sorted(FILES))
@pytest.mark.parametrize("content", ["pickle", "npz holding a pickle"])
def test_no_file_a_config_names_runs_code(servesim, tmp_path, what, content):
    marker = tmp_path / "marker"
    (tmp_path / FILE).write_bytes(payload(marker) if content == "pickle" else npz_payload(marker))
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(FILES[what]))
    for command in (["check", path], ["run", path, "--out", tmp_path / "out", "--quiet"]):
        rc, out, err = servesim(*command)
        lines = err.strip().splitlines()
        assert rc == 2 and out == "" and len(lines) == 1, (what, command[0], rc, out, err)
        assert lines[0].startswith(ERROR) and FILE in lines[0] and "Traceback" not in err, lines
    assert not marker.exists()


def test_a_text_pickle_is_no_trace_profile_or_table_either(servesim, tmp_path):
    """Protocol 0 is printable text, so it passes the UTF-8 check of the text formats
    and reaches their parsers, which read it as data and refuse it."""
    marker = tmp_path / "marker"
    (tmp_path / FILE).write_bytes(pickle.dumps(Reduces(os.system, f"touch {marker}"), protocol=0))
    for what, config in sorted(FILES.items()):
        path = tmp_path / "x.yaml"
        path.write_text(yaml.safe_dump(config))
        rc, out, err = servesim("check", path)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and FILE in err, (what, err)
    assert not marker.exists()


# --- the output folder: results.csv, plots, --resume ------------------------------------

@pytest.fixture(scope="module")
def sweep(servesim, tmp_path_factory) -> Path:
    """A finished sweep of exit policies (whose plots parse swept values back) at two
    rates, run once: its folder holds the YAML and ``out``."""
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "x.yaml").write_text(yaml.safe_dump({**EXITS, "name": "x", "sweep": {
        "trace.rate": [100.0, 200.0], "exits.policy": ["never", {"name": "confidence", "threshold": 0.9}]}}))
    assert servesim("run", folder / "x.yaml", "--out", folder / "out", "--quiet").rc == 0
    return folder


@pytest.fixture
def finished(sweep, tmp_path) -> tuple[Path, Path]:
    """A copy of :func:`sweep` for one test: (its YAML, its output folder)."""
    shutil.copytree(sweep, tmp_path / "sweep")
    return tmp_path / "sweep" / "x.yaml", tmp_path / "sweep" / "out"


def _edit_results(out: Path, column: str, value: str) -> None:
    """Set ``column`` of results.csv's first row to ``value``."""
    results = pd.read_csv(out / store.RESULTS, dtype=str, keep_default_na=False)
    results.loc[0, column] = value
    results.to_csv(out / store.RESULTS, index=False)


@pytest.mark.parametrize("name", ["../../escaped", "..", "/tmp/absolute", "a/b", "a\\b"])
def test_plots_take_no_path_from_results_csv(servesim, finished, name):
    """A run name in results.csv names a folder of the experiment, never a path: else a
    results.csv from elsewhere could make `plot` read, or write a PNG, outside it."""
    _, out = finished
    _edit_results(out, "run", name)
    before = {p for p in out.parent.rglob("*")}
    rc, _, err = servesim("plot", out)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{out / store.RESULTS}: line 2: column 'run' is {name!r}" in err
    assert {p for p in out.parent.rglob("*")} == before


@pytest.mark.parametrize("value", ["(" * 50_000, "-" * 100_000 + "1", "(1,)" * 100_000, "[" * 300 + "]" * 300,
                                   "__import__('os').system('true')", "1" * 5_000])
def test_plots_read_swept_values_as_data_only(servesim, finished, value):
    """Swept values are parsed back with ast.literal_eval (literals only, nothing called);
    values that would exhaust the parser stay text, and the plots are drawn."""
    _, out = finished
    for column in ("trace.rate", "exits.policy"):  # a panel title, a legend entry
        _edit_results(out, column, value)
    rc, printed, err = servesim("plot", out)
    assert rc == 0 and err == "", err
    assert all(Path(line).is_file() for line in printed.splitlines())


def test_results_csv_that_is_not_one(servesim, finished):
    _, out = finished
    (out / store.RESULTS).write_bytes(b"\x80\x04\x95garbage")
    rc, _, err = servesim("plot", out)
    assert rc == 2 and err.startswith(f"{ERROR}{out / store.RESULTS}: ") and len(err.strip().splitlines()) == 1


def test_resume_recomputes_a_summary_edited_since(servesim, finished):
    """--resume keeps a run only if its summary.json is the one the manifest recorded:
    an edited, forged or malformed summary is recomputed, never a traceback."""
    path, out = finished
    runs = sorted(p.parent for p in out.glob("*/summary.json"))
    original = (runs[0] / "summary.json").read_text()
    for forged in ('{"requests": 1, "latency_ms": 5}', "[1, 2]", json.dumps({**json.loads(original), "requests": 7})):
        (runs[0] / "summary.json").write_text(forged)
        rc, printed, err = servesim("run", path, "--out", out, "--quiet", "--resume")
        assert rc == 0 and "Traceback" not in err, err
        assert "(3 kept from an earlier run)" in printed
        assert (runs[0] / "summary.json").read_text() == original  # recomputed: same config, same seed


def test_resume_recomputes_a_run_whose_manifest_entry_is_forged(servesim, finished):
    """A manifest forged to match a forged summary: the summary still has to make a
    results row, or the run is recomputed."""
    path, out = finished
    manifest = json.loads((out / store.MANIFEST).read_text())
    run = sorted(manifest["runs"])[0]
    forged = '{"latency_ms": 5, "cost": [1]}'
    (out / run / "summary.json").write_text(forged)
    manifest["runs"][run]["summary_sha256"] = store.digest(forged)
    (out / store.MANIFEST).write_text(json.dumps(manifest))
    rc, printed, err = servesim("run", path, "--out", out, "--quiet", "--resume")
    assert rc == 0 and "Traceback" not in err and "(3 kept from an earlier run)" in printed, (printed, err)


# --- YAML and the executor ----------------------------------------------------------------

def test_a_yaml_alias_bomb_is_refused_quickly(servesim, tmp_path):
    """Aliases share one object instead of copying it, and each alias lands where a
    nested list is refused at its first element: 9**8 leaves cost nothing."""
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    config = yaml.safe_dump(SINGLE) + "\n".join(lines) + "\ndescription: *a8\nsweep: {trace.rate: *a8}\n"
    (tmp_path / "bomb.yaml").write_text(config)
    rc, _, err = servesim("check", tmp_path / "bomb.yaml")
    assert rc == 2 and "a8: unknown key" in err and all(len(line) < 1500 for line in err.splitlines())


@pytest.mark.parametrize("key", ["executor", "address"])
def test_a_config_cannot_choose_where_it_runs(servesim, tmp_path, key):
    """The executor and a Ray cluster's address come from the command line only."""
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({**SINGLE, key: "ray"}))
    rc, _, err = servesim("check", tmp_path / "x.yaml")
    assert rc == 2 and f"{key}: unknown key" in err


def test_a_local_ray_instance_ignores_ray_address(monkeypatch):
    """Without --address the sweep starts its own Ray instance: $RAY_ADDRESS (or a Ray
    cluster already running here) is not followed, since the driver unpickles what the
    cluster sends back and must trust it."""
    ray = pytest.importorskip("ray")
    calls = []
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setattr(ray, "init", lambda **options: calls.append(options))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with RayExecutor(jobs=2):
        pass
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2
