"""The executors behind ``servesim run``: wrong options are one clear line before anything
starts, and a run whose worker dies is recorded as lost while the others come back."""

from __future__ import annotations

import os
import sys

import pytest

from servesim.experiments import executors


def _die_on_three(n: int) -> int:
    if n == 3:
        os._exit(1)  # a worker killed under its run (out of memory, say)
    return n * n


def test_a_dead_worker_loses_its_runs_not_the_sweep():
    pool = executors.make_executor("local", jobs=2)
    with pool:
        got = list(pool.map(_die_on_three, [1, 2, 3], lambda n, exc: ("lost", n, type(exc).__name__)))
    assert ("lost", 3, "BrokenProcessPool") in got
    # the pool breaks for the runs still on it; those that finished before are kept
    assert all(g in (1, 4) or g[0] == "lost" for g in got) and len(got) == 3


def test_jobs_pick_the_local_executor():
    assert isinstance(executors.make_executor("local"), executors.InProcess)
    assert isinstance(executors.make_executor("local", jobs=1), executors.InProcess)
    assert executors.make_executor("local", jobs=4).jobs == 4
    assert isinstance(executors.make_executor("ray", jobs=2), executors.RayExecutor)


@pytest.mark.parametrize("argv, message", [
    (["--address", "127.0.0.1:9"], "--address: only the ray executor connects to a cluster (got '127.0.0.1:9' "
                                   "with --executor local)"),
    (["--jobs", "0"], "--jobs: must be at least 1 (got 0)"),
])
def test_bad_executor_options_are_one_line_and_write_nothing(argv, message, tiny_yaml, servesim, tmp_path):
    result = servesim("run", tiny_yaml, "--out", tmp_path / "out", "--quiet", *argv)
    assert result.rc == 2 and result.err_lines == [f"servesim: error: {message}"]
    assert not (tmp_path / "out").exists()


def test_an_address_nothing_answers_on_is_refused_at_once(tiny_yaml, servesim, tmp_path):
    pytest.importorskip("ray")
    result = servesim("run", tiny_yaml, "--out", tmp_path / "out", "--quiet", "--executor", "ray",
                      "--address", "127.0.0.1:9")
    assert result.rc == 2 and len(result.err_lines) == 1
    assert result.err_lines[0].startswith("servesim: error: --address 127.0.0.1:9: no Ray cluster answers there")
    assert not (tmp_path / "out").exists()


def test_ray_missing_says_how_to_install_it(tiny_yaml, servesim, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    result = servesim("run", tiny_yaml, "--out", tmp_path / "out", "--quiet", "--executor", "ray")
    assert result.rc == 2
    assert result.err_lines == ["servesim: error: --executor ray: Ray is not installed: pip install 'servesim[ray]'"]
