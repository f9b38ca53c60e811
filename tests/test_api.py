"""The Python API (`import servesim`): docs/api_example.py runs, a config given as a
mapping runs as its YAML file does, output folders read back, and a policy registered
from user code is a name configs may use."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

import servesim

ROOT = Path(__file__).resolve().parents[1]
SMALL = """\
name: small
seeds: [1, 2, 3]
slo_ms: 10
trace: {kind: poisson, rate: 3000, count: 3000}
model: {profile: "builtin:cpu_mlp", name: mlp3}
serving: {replicas: 2, router: jsq}
sweep:
  serving.batching:
    - {policy: dynamic, max_batch: 4, max_wait_ms: 1}
    - {policy: dynamic, max_batch: 16, max_wait_ms: 2}
"""


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """A fresh interpreter: what a script registers stays out of this test session."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True)


def test_the_notebook_example_runs_and_its_own_policy_competes(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "api_example.py")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "in code: p50" in done.stdout and "most_confident" in done.stdout.strip().splitlines()[-1]
    exits = servesim.read(tmp_path / "runs" / "api_example" / "exits")
    assert len(exits.results) == 9 and (exits.results["status"] == "ok").all()
    assert list(exits.results["policy"].unique()) == ["never", "confidence", "most_confident"]
    assert len(exits.by_point) == 3 and (exits.by_point["seeds"] == 3).all()
    ours = exits.results[exits.results["policy"] == "most_confident"]
    assert ours["policy_threshold"].tolist() == [0.9] * 3  # its params() reach results.csv


def test_a_mapping_runs_as_its_yaml_file_does(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    from_file = servesim.run(path, tmp_path / "file", plots=False)
    from_dict = servesim.run(yaml.safe_load(SMALL), tmp_path / "dict", base_dir=tmp_path, plots=False)
    figures = ["run", "seed", "requests", "completed", "latency_p50_ms", "latency_p99_ms", "slo_violation_rate"]
    pd.testing.assert_frame_equal(from_file.results[figures], from_dict.results[figures])
    assert len(from_file.results) == 6 and len(from_file.by_point) == 2
    assert (from_file.by_point["seeds"] == 3).all()


def test_a_sweep_reads_back_as_dataframes(tmp_path):
    out = tmp_path / "out"
    servesim.run(yaml.safe_load(SMALL), out, plots=False, seed=1)
    sweep = servesim.read(out)
    assert len(sweep.runs) == 2 and sweep.failed.empty
    first = sweep.runs[0]
    assert sweep[first.name].folder == first.folder
    requests = first.requests
    assert isinstance(requests, pd.DataFrame) and len(requests) == first.summary["requests"] == 3000
    assert (requests["finish"] >= requests["start"]).all() and (requests["start"] >= requests["arrival"]).all()
    assert first.config["serving"]["batching"]["max_batch"] == 4
    assert first.summary["latency_ms"]["p50"] == pytest.approx(sweep.results["latency_p50_ms"].iloc[0], rel=1e-6)
    with pytest.raises(KeyError, match="no run 'nope'"):
        sweep["nope"]
    with pytest.raises(FileNotFoundError, match="no results.csv here"):
        servesim.read(tmp_path)


def test_a_bad_mapping_is_a_config_error_naming_the_key(tmp_path):
    bad = yaml.safe_load(SMALL)
    bad["serving"]["router"] = "jsqq"
    with pytest.raises(servesim.ConfigError, match=r"<config>: serving.router: name 'jsqq' is not one of"):
        servesim.run(bad, tmp_path / "out")


def test_a_name_registered_from_user_code_is_valid_in_a_config_file(tmp_path):
    (tmp_path / "e.yaml").write_text(SMALL.replace("router: jsq", "router: {name: every_other}")
                                     .split("sweep:")[0])
    done = _python("""
        from typing import Literal
        import servesim
        from servesim.policies.routing import RoundRobin

        try:
            servesim.load_config("e.yaml")
        except servesim.ConfigError as exc:
            print("before:", exc)

        @servesim.ROUTERS.register
        class EveryOther(servesim.Spec):
            name: Literal["every_other"]
            def build(self, rng):
                return RoundRobin()

        print("after:", servesim.load_config("e.yaml").serving.router.name)
        try:
            servesim.ROUTERS.register(EveryOther)
        except ValueError as exc:
            print("twice:", exc)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    before, after, twice = done.stdout.splitlines()
    assert "name 'every_other' is not one of" in before
    assert after == "after: every_other"
    assert twice.startswith("twice: router 'every_other' is registered twice")


def test_the_engine_alone_does_not_load_the_experiment_layer_and_registries_come_filled(tmp_path):
    done = _python("""
        import sys
        import servesim.sim
        print(sorted(m for m in sys.modules if m.startswith("servesim.experiments")))
        import servesim
        print(servesim.__version__, servesim.simulate is servesim.sim.simulate)
        print("dynamic" in servesim.BATCHING.names(), "closed_loop" in servesim.LOADS.names())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    # a registry asked for first comes with the shipped entries
    assert done.stdout.splitlines() == ["[]", f"{servesim.__version__} True", "True True"]
