"""A sweep killed with SIGKILL, then resumed: no finished run is lost or run twice, and
the final results.csv is byte for byte an uninterrupted sweep's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from servesim.experiments import store

# 16 runs of 60,000 requests, a few tenths of a second each: long enough for the kill to
# land mid-sweep, short enough for the suite.
SWEEP = """\
name: crash
slo_ms: 5
trace: {kind: poisson, rate: 2500, count: 60000}
model: {profile: "builtin:cpu_mlp", name: mlp3}
serving:
  replicas: 2
  batching: {policy: dynamic, max_batch: 4, max_wait_ms: 1}
seeds: [1, 2, 3, 4]
sweep:
  serving.replicas: [2, 3]
  serving.batching.max_batch: [4, 8]
"""
RUNS = 16


def _finished(out) -> dict[str, dict]:
    try:
        runs = json.loads((out / store.MANIFEST).read_text())["runs"]
    except (OSError, ValueError):
        return {}
    return {name: entry for name, entry in runs.items() if entry["status"] == "ok"}


def _kill_mid_sweep(path, out, after: int) -> dict[str, dict]:
    """Start the sweep on a pool of 2, SIGKILL its whole process group once ``after``
    runs are listed as finished; returns what the manifest listed at the kill."""
    sweep = subprocess.Popen([sys.executable, "-m", "servesim.experiments.cli", "run", str(path), "--out", str(out),
                              "--jobs", "2", "--quiet"], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while len(_finished(out)) < after:
            assert sweep.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.02)
        os.killpg(sweep.pid, signal.SIGKILL)
    finally:
        sweep.wait()
    assert sweep.returncode == -signal.SIGKILL
    return _finished(out)


def test_sigkill_then_resume_loses_and_repeats_nothing(write, servesim, tmp_path):
    path = write("crash.yaml", SWEEP)
    killed = tmp_path / "killed"
    at_kill = _kill_mid_sweep(path, killed, after=3)
    assert 3 <= len(at_kill) < RUNS, "the kill must land mid-sweep"
    kept = {name: (killed / name / store.SUMMARY).stat().st_mtime_ns for name in at_kill}

    resumed = servesim("run", path, "--out", killed, "--resume", "--jobs", "2", "--quiet")
    assert resumed.rc == 0, resumed.err
    assert f"{RUNS} of {RUNS} runs finished ({len(at_kill)} kept from an earlier run)" in resumed.out

    # every run listed at the kill was kept as it was, not run again
    assert {name: (killed / name / store.SUMMARY).stat().st_mtime_ns for name in at_kill} == kept
    assert sorted(_finished(killed)) == sorted(p.name for p in killed.iterdir() if p.is_dir() and p.name != "plots")
    assert len(_finished(killed)) == RUNS
    assert not list(killed.glob(f"**/.*{store.TEMPORARY}"))  # nothing half-written is left

    whole = tmp_path / "whole"
    assert servesim("run", path, "--out", whole, "--quiet").rc == 0
    assert (killed / store.RESULTS).read_bytes() == (whole / store.RESULTS).read_bytes()
    results = pd.read_csv(killed / store.RESULTS)
    assert len(results) == RUNS and results["run"].is_unique and (results["status"] == "ok").all()
    for name in results["run"]:
        assert (killed / name / store.REQUESTS).read_bytes() == (whole / name / store.REQUESTS).read_bytes(), name


def test_resume_says_when_the_file_changed_since_its_runs_finished(write, servesim, tmp_path):
    """--resume keeps the finished runs of the file as it is; after an edit that changes
    every run (the trace's rate) it keeps none, and says so instead of silently
    recomputing everything."""
    small = SWEEP.replace("count: 60000", "count: 2000").replace("seeds: [1, 2, 3, 4]", "seeds: [1]")
    out = tmp_path / "out"
    assert servesim("run", write("s.yaml", small), "--out", out, "--quiet").rc == 0
    again = servesim("run", write("s.yaml", small), "--out", out, "--resume", "--quiet")
    assert again.rc == 0 and "4 of 4 runs finished (4 kept from an earlier run)" in again.out
    assert "--resume" not in again.err
    edited = servesim("run", write("s.yaml", small.replace("rate: 2500", "rate: 2400")), "--out", out, "--resume",
                      "--quiet")
    assert edited.rc == 0, edited.err
    assert f"warning: --resume kept 0 finished run(s) of {out}, not 4 other(s) there" in edited.err
