"""A run that fails at run time fails alone: the others are kept, the failure is written
down, the exit status is 1; a rerun with --resume keeps finished runs, --force recomputes
them, and a rerun with neither is refused."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from servesim.experiments import runner, store

# Fixed batches of 100 need a batch size the profile does not cover (it stops at 64), and
# out_of_range: error refuses to extrapolate. Validation cannot know whether such a batch
# will ever form, so it passes; simulating the 100-point fails on its first batch.
FAILING = """\
name: fails
trace: {kind: poisson, rate: 2000, count: 300}
model: {profile: "builtin:cpu_mlp", name: mlp3, out_of_range: error}
serving:
  batching: {policy: fixed, batch_size: 4}
sweep:
  serving.batching.batch_size: [4, 100, 16]
"""
OK_RUNS = ["batch_size-4_seed-0", "batch_size-16_seed-0"]
BAD_RUN = "batch_size-100_seed-0"
OLD = 1_000_000_000  # an mtime in 2001: a file still this old was not rewritten


@pytest.fixture
def failing(write):
    return write("fails.yaml", FAILING)


def _age(path):
    os.utime(path, (OLD, OLD))


def _is_old(path) -> bool:
    return path.stat().st_mtime == OLD


def _assert_failed_sweep(result, out):
    assert result.rc == 1, (result.out, result.err)
    assert "Traceback" not in result.err
    failed = [line for line in result.err_lines if "FAILED" in line]
    assert failed == [line for line in result.err_lines if line.startswith(BAD_RUN)]
    assert len(failed) == 1
    assert "batch size 100 is outside the profiled range [1, 64]" in failed[0]
    assert "2 of 3 runs finished" in result.out

    results = pd.read_csv(out / store.RESULTS)
    assert list(results["run"]) == ["batch_size-4_seed-0", BAD_RUN, "batch_size-16_seed-0"]
    assert list(results["status"]) == ["ok", "failed", "ok"]
    bad = results[results["run"] == BAD_RUN].iloc[0]
    assert bad["serving.batching.batch_size"] == 100
    assert "batch size 100 is outside the profiled range" in bad["error"]
    assert pd.isna(bad["latency_p99_ms"]) and pd.isna(bad["requests"])
    assert results.loc[results["status"] == "ok", "error"].isna().all()
    # the finished runs are whole: 300 requests in fixed batches (the remainder runs at the end)
    by = results.set_index("run")
    assert by.loc["batch_size-4_seed-0", "mean_batch_items"] == 4.0
    assert by.loc["batch_size-16_seed-0", "mean_batch_items"] == pytest.approx(300 / 19, abs=1e-6)
    assert (by.loc[OK_RUNS, "completed"] == 300).all()

    error = (out / BAD_RUN / store.ERROR).read_text()
    assert "batch size 100 is outside the profiled range [1, 64]" in error
    manifest = json.loads((out / store.MANIFEST).read_text())
    assert manifest["experiment"] == "fails"
    assert {name: entry["status"] for name, entry in manifest["runs"].items()} == {
        **{name: "ok" for name in OK_RUNS}, BAD_RUN: "failed"}
    assert "batch size 100 is outside the profiled range" in manifest["runs"][BAD_RUN]["error"]
    assert not (out / BAD_RUN / store.SUMMARY).exists()
    for name in OK_RUNS:
        assert json.loads((out / name / store.SUMMARY).read_text())["completed"] == 300
        assert len(pd.read_parquet(out / name / store.REQUESTS)) == 300
        assert not (out / name / store.ERROR).exists()
    plots = {p.name for p in (out / "plots").iterdir()}
    assert plots == {"latency_cdf.png", "comparison.png"} | {f"timeseries-{n}.png" for n in OK_RUNS}


def test_validation_lets_the_failing_point_through(failing, servesim):
    result = servesim("check", failing)
    assert result.rc == 0, result.err
    assert "OK, 3 run(s)" in result.out


def test_one_failing_run_keeps_the_others_then_reuse_then_force(failing, servesim, tmp_path):
    out = tmp_path / "out"
    _assert_failed_sweep(servesim("run", failing, "--out", out, "--quiet"), out)

    # a rerun with neither --resume nor --force would overwrite finished runs: refused, nothing written
    kept = [out / name / f for name in OK_RUNS for f in (store.SUMMARY, store.REQUESTS, store.CONFIG)]
    for path in kept + [out / BAD_RUN / store.ERROR, out / store.RESULTS]:
        _age(path)
    refused = servesim("run", failing, "--out", out, "--quiet")
    assert refused.rc == 2 and refused.err_lines == [
        f"servesim: error: {out}: holds 2 finished run(s) of an earlier sweep (manifest.json); "
        f"--resume keeps them and runs the rest, --force recomputes all"]
    assert _is_old(out / store.RESULTS) and all(_is_old(path) for path in kept)
    both = servesim("run", failing, "--out", out, "--quiet", "--resume", "--force")
    assert both.rc == 2 and "--resume and --force contradict each other" in both.err

    # --resume keeps the two finished runs (their files are not rewritten) and retries the failed one
    again = servesim("run", failing, "--out", out, "--quiet", "--resume")
    _assert_failed_sweep(again, out)
    assert "(2 kept from an earlier run)" in again.out
    assert all(_is_old(path) for path in kept)
    assert not _is_old(out / BAD_RUN / store.ERROR)

    # --force recomputes everything, on a process pool this time, to the same numbers
    before = {name: json.loads((out / name / store.SUMMARY).read_text()) for name in OK_RUNS}
    forced = servesim("run", failing, "--out", out, "--quiet", "--force", "--jobs", "2")
    _assert_failed_sweep(forced, out)
    assert "kept" not in forced.out
    assert not any(_is_old(path) for path in kept)
    assert {name: json.loads((out / name / store.SUMMARY).read_text()) for name in OK_RUNS} == before


def _counting(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = runner.run_one

    def counted(run, *args, **kwargs):
        calls.append(run.name)
        return real(run, *args, **kwargs)

    monkeypatch.setattr(runner, "run_one", counted)
    return calls


def test_reuse_counts_simulations(write, tiny_yaml_text, monkeypatch, tmp_path):
    path = write("two.yaml", tiny_yaml_text + "seeds: [3, 4]\n")
    out = tmp_path / "out"
    calls = _counting(monkeypatch)

    first = runner.run_experiment(path, out, show_progress=False)
    assert sorted(calls) == ["seed-3", "seed-4"] and first.reused == 0 and not first.failed

    calls.clear()
    second = runner.run_experiment(path, out, show_progress=False, resume=True)
    assert calls == [] and second.reused == 2
    assert second.rows == first.rows

    calls.clear()
    forced = runner.run_experiment(path, out, show_progress=False, force=True)
    assert sorted(calls) == ["seed-3", "seed-4"] and forced.reused == 0
    assert forced.rows == first.rows

    # a changed config is not a finished run, even in a folder of the same name
    calls.clear()
    path.write_text(tiny_yaml_text.replace("slo_ms: 5", "slo_ms: 2") + "seeds: [3, 4]\n")
    changed = runner.run_experiment(path, out, show_progress=False, resume=True)
    assert sorted(calls) == ["seed-3", "seed-4"] and changed.reused == 0
    assert all(row["slo_violation_rate"] >= old["slo_violation_rate"] for row, old in zip(changed.rows, first.rows))
    assert json.loads((out / "seed-3" / store.SUMMARY).read_text())["slo_ms"] == 2.0

    # a run folder without summary.json (interrupted before it was written) is recomputed
    calls.clear()
    (out / "seed-4" / store.SUMMARY).unlink()
    runner.run_experiment(path, out, show_progress=False, resume=True)
    assert calls == ["seed-4"]


def test_internal_error_is_isolated_and_keeps_its_traceback(write, tiny_yaml_text, servesim, monkeypatch, tmp_path):
    """A bug (not a user error) in one run: the others finish, error.txt has the traceback,
    results.csv says 'internal error', the CLI exits 1 without printing a traceback."""
    path = write("two.yaml", tiny_yaml_text + "seeds: [3, 4]\n")
    real = runner.simulate_config

    def broken(config, *args, **kwargs):
        if config.seed == 4:
            raise ZeroDivisionError("boom")
        return real(config, *args, **kwargs)

    monkeypatch.setattr(runner, "simulate_config", broken)
    out = tmp_path / "out"
    result = servesim("run", path, "--out", out, "--quiet", "--jobs", "1")
    assert result.rc == 1
    assert "Traceback" not in result.err
    failures = [line for line in result.err_lines if not line.startswith("warning: ")]  # the profile's, not ours
    assert failures == ["seed-4: FAILED: internal error: ZeroDivisionError: boom"]
    results = pd.read_csv(out / store.RESULTS)
    assert list(results["status"]) == ["ok", "failed"]
    assert results["error"].iloc[1] == "internal error: ZeroDivisionError: boom"
    error = (out / "seed-4" / store.ERROR).read_text()
    assert error.startswith("Traceback") and "ZeroDivisionError: boom" in error and "broken" in error
    assert json.loads((out / "seed-3" / store.SUMMARY).read_text())["completed"] == 500

    # fixed: the rerun retries only the failed run and clears its error.txt
    monkeypatch.setattr(runner, "simulate_config", real)
    calls = _counting(monkeypatch)
    fixed = servesim("run", path, "--out", out, "--quiet", "--resume")
    assert fixed.rc == 0, fixed.err
    assert calls == ["seed-4"]
    assert not (out / "seed-4" / store.ERROR).exists()
    assert list(pd.read_csv(out / store.RESULTS)["status"]) == ["ok", "ok"]


def test_out_of_range_extrapolation_runs_and_is_counted(write, servesim, tmp_path):
    """The same sweep with out_of_range: extrapolate finishes; the 100-point's three
    batches of 100 look up each of the model's three stages outside the profile once per
    batch (9 look-ups), which the CLI reports on stderr and summary.json lists."""
    path = write("extrapolates.yaml", FAILING.replace("out_of_range: error", "out_of_range: extrapolate"))
    out = tmp_path / "out"
    result = servesim("run", path, "--out", out, "--quiet")
    assert result.rc == 0, result.err
    assert "3 of 3 runs finished" in result.out
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith(f"{BAD_RUN}: warning: 9 stage-latency look-ups fell outside")
    summary = json.loads((out / BAD_RUN / store.SUMMARY).read_text())
    assert summary["profile_out_of_range"] == {"block1@100": 3, "block2@100": 3, "block3@100": 3}
    assert summary["batches"] == 3 and summary["mean_batch_items"] == 100.0
    results = pd.read_csv(out / store.RESULTS).set_index("run")
    assert results.loc[BAD_RUN, "out_of_range_lookups"] == 9
    assert (results.loc[OK_RUNS, "out_of_range_lookups"] == 0).all()


def test_a_run_that_crashes_while_writing_leaves_no_stale_summary(write, tiny_yaml_text, monkeypatch, tmp_path):
    """summary.json marks a finished run. If a rerun with a changed config dies after
    writing the new config.yaml, the old summary.json must be gone, or the next rerun
    would take the old numbers for the new config."""
    path = write("one.yaml", tiny_yaml_text)
    out = tmp_path / "out"
    runner.run_experiment(path, out, show_progress=False)
    assert json.loads((out / "seed-0" / store.SUMMARY).read_text())["slo_ms"] == 5.0

    path.write_text(tiny_yaml_text.replace("slo_ms: 5", "slo_ms: 2"))
    real, real_move = store.write_bytes, store.move_file

    def disk_full(target, data):
        if target.name == store.REQUESTS:
            raise OSError(28, "No space left on device")
        real(target, data)

    def move_disk_full(source, target):  # the table the run streamed, moved into place
        if target.name == store.REQUESTS:
            raise OSError(28, "No space left on device")
        real_move(source, target)

    monkeypatch.setattr(store, "write_bytes", disk_full)
    monkeypatch.setattr(store, "move_file", move_disk_full)
    crashed = runner.run_experiment(path, out, show_progress=False, resume=True)
    assert [row["status"] for row in crashed.rows] == ["failed"]
    assert "No space left on device" in crashed.rows[0]["error"]
    assert not (out / "seed-0" / store.SUMMARY).exists()
    assert "slo_ms: 2" in (out / "seed-0" / store.CONFIG).read_text()

    monkeypatch.setattr(store, "write_bytes", real)
    monkeypatch.setattr(store, "move_file", real_move)
    assert not list(out.glob(f"**/.*{store.TEMPORARY}"))  # nothing half-written left behind
    calls = _counting(monkeypatch)
    rerun = runner.run_experiment(path, out, show_progress=False, resume=True)
    assert calls == ["seed-0"] and rerun.reused == 0
    assert json.loads((out / "seed-0" / store.SUMMARY).read_text())["slo_ms"] == 2.0
    assert not (out / "seed-0" / store.ERROR).exists()
