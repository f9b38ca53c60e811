"""The same file and seed give the same requests and numbers: run twice, on a process
pool, or with the seed given on the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from servesim.experiments import executors, store

# summary.json keys that name where and how a run was made rather than what happened
NUMBERS = ("requests", "completed", "dropped", "rejected", "throughput_rps", "latency_ms", "slo_violation_rate",
           "accuracy", "cost", "batches", "mean_batch_items", "duration_s", "rejections", "profile_out_of_range")


def _table(run_dir) -> pd.DataFrame:
    return pd.read_parquet(run_dir / store.REQUESTS)


def _summary(run_dir) -> dict:
    return json.loads((run_dir / store.SUMMARY).read_text())


def _run(servesim, *argv):
    result = servesim("run", *argv, "--quiet")
    assert result.rc == 0, result.err
    return result


def _run_dirs(out):
    return sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "plots")


def test_same_file_same_seed_twice_gives_identical_runs(tiny_yaml, servesim, tmp_path):
    _run(servesim, tiny_yaml, "--out", tmp_path / "a")
    _run(servesim, tiny_yaml, "--out", tmp_path / "b")
    a, b = tmp_path / "a" / "seed-0", tmp_path / "b" / "seed-0"
    ta, tb = _table(a), _table(b)
    assert len(ta) == 500
    assert ta.equals(tb)
    assert list(ta.dtypes) == list(tb.dtypes)
    assert _summary(a) == _summary(b)
    assert (a / store.CONFIG).read_text() == (b / store.CONFIG).read_text()
    assert pd.read_csv(tmp_path / "a" / store.RESULTS).equals(pd.read_csv(tmp_path / "b" / store.RESULTS))


def _same_files(out, reference, names) -> None:
    """Each run's per-request table and summary byte for byte, and results.csv."""
    for name in names:
        for file in (store.REQUESTS, store.SUMMARY, store.CONFIG):
            assert (out / name / file).read_bytes() == (reference / name / file).read_bytes(), (name, file)
    # rows in the sweep's order, not in the order the runs finished
    assert (out / store.RESULTS).read_bytes() == (reference / store.RESULTS).read_bytes()


@pytest.mark.parametrize("jobs", [2, 3])
def test_process_pool_gives_the_same_bytes_as_one_process(jobs, sweep, servesim, tmp_path, monkeypatch):
    pools = []

    class Recorded(executors.ProcessPoolExecutor):
        def __init__(self, max_workers=None, **kwargs):
            super().__init__(max_workers=max_workers, **kwargs)
            pools.append(max_workers)

    monkeypatch.setattr(executors, "ProcessPoolExecutor", Recorded)
    out = tmp_path / "pool"
    result = _run(servesim, sweep.yaml, "--out", out, "--jobs", str(jobs))
    assert pools == [jobs]  # the runs really went to a pool of that many processes
    assert "8 of 8 runs finished" in result.out
    names = _run_dirs(sweep.out)
    assert len(names) == 8 and _run_dirs(out) == names
    _same_files(out, sweep.out, names)


def test_ray_gives_the_same_bytes_as_one_process(sweep, servesim, tmp_path):
    """On a local Ray instance of 2 CPUs (as CI has), the runs are Ray tasks in Ray's own
    worker processes, and every file is the same as in one process."""
    ray = pytest.importorskip("ray")
    out = tmp_path / "ray"
    result = _run(servesim, sweep.yaml, "--out", out, "--executor", "ray", "--jobs", "2")
    assert not ray.is_initialized()  # the local instance it started is shut down
    assert "8 of 8 runs finished" in result.out
    names = _run_dirs(sweep.out)
    assert _run_dirs(out) == names
    _same_files(out, sweep.out, names)


def test_seed_on_the_command_line_replaces_the_files_seeds(write, tiny_yaml_text, tiny_yaml, servesim, tmp_path):
    seeded = write("seeded.yaml", tiny_yaml_text + "seed: 7\n")
    _run(servesim, seeded, "--out", tmp_path / "file")
    _run(servesim, tiny_yaml, "--out", tmp_path / "flag", "--seed", "7")
    _run(servesim, tiny_yaml, "--out", tmp_path / "zero")
    assert _run_dirs(tmp_path / "flag") == ["seed-7"]
    from_flag, from_file = tmp_path / "flag" / "seed-7", tmp_path / "file" / "seed-7"
    assert _table(from_flag).equals(_table(from_file))
    assert {k: _summary(from_flag)[k] for k in NUMBERS} == {k: _summary(from_file)[k] for k in NUMBERS}
    assert _summary(from_flag)["seed"] == 7
    # and seed 7 is not seed 0
    zero = _table(tmp_path / "zero" / "seed-0")
    assert len(zero) == 500 and not np.allclose(zero["arrival"], _table(from_flag)["arrival"])


def test_seed_flag_overrides_a_seeds_list(sweep, servesim, tmp_path):
    out = tmp_path / "s7"
    _run(servesim, sweep.yaml, "--out", out, "--seed", "7")
    results = pd.read_csv(out / store.RESULTS)
    assert len(results) == 4  # 2 x 2 sweep points, one seed instead of [1, 2]
    assert (results["seed"] == 7).all()
    assert all(name.endswith("_seed-7") for name in results["run"])
    arrivals = [_table(out / name)["arrival"] for name in results["run"]]
    for other in arrivals[1:]:
        pd.testing.assert_series_equal(arrivals[0], other)
    assert not np.allclose(arrivals[0], _table(sweep.out / "replicas-1_max_batch-1_seed-1")["arrival"])
