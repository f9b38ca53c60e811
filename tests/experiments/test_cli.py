"""The other subcommands (check, plot, trace-stats) and the shipped quickstart."""

from __future__ import annotations

import importlib.metadata

import json
import shutil
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from servesim.experiments import store

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"


def test_check_prints_ok_and_the_number_of_runs(sweep, servesim):
    result = servesim("check", sweep.yaml)
    assert result.rc == 0, result.err
    assert result.err == ""
    assert result.out.splitlines() == [
        f"{sweep.yaml}: OK, 8 run(s): replicas-1_max_batch-1_seed-1, replicas-1_max_batch-1_seed-2, "
        "replicas-1_max_batch-8_seed-1, replicas-1_max_batch-8_seed-2, replicas-2_max_batch-1_seed-1, "
        "replicas-2_max_batch-1_seed-2, replicas-2_max_batch-8_seed-1, replicas-2_max_batch-8_seed-2"]


def test_check_lists_at_most_ten_runs(write, tiny_yaml_text, servesim):
    path = write("many.yaml", tiny_yaml_text + "seeds: [0, 1, 2]\nsweep: {serving.replicas: [1, 2, 3, 4]}\n")
    result = servesim("check", path)
    assert result.rc == 0, result.err
    assert result.out.startswith(f"{path}: OK, 12 run(s): replicas-1_seed-0, ")
    assert result.out.rstrip().endswith(" ...")
    assert result.out.count("_seed-") == 10


def test_check_writes_nothing(tiny_yaml, servesim, tmp_path):
    before = sorted(tmp_path.rglob("*"))
    assert servesim("check", tiny_yaml).rc == 0
    assert sorted(tmp_path.rglob("*")) == before


def test_plot_regenerates_the_plots(sweep, servesim, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(sweep.out, out)
    shutil.rmtree(out / "plots")
    result = servesim("plot", out)
    assert result.rc == 0, result.err
    runs = pd.read_csv(out / store.RESULTS)["run"]
    expected = [out / "plots" / "latency_cdf.png", out / "plots" / "comparison.png"] + [
        out / "plots" / f"timeseries-{name}.png" for name in runs]
    assert result.out.splitlines() == [str(p) for p in expected]
    assert sorted((out / "plots").iterdir()) == sorted(expected)
    for path in expected:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(path).shape[0] > 100
    # and it draws the same pictures the run drew
    for name in ("latency_cdf.png", "comparison.png"):
        assert np.array_equal(matplotlib.image.imread(out / "plots" / name),
                              matplotlib.image.imread(sweep.out / "plots" / name))


def test_plot_of_a_folder_without_results(servesim, tmp_path):
    result = servesim("plot", tmp_path)
    assert result.rc == 2
    assert "Traceback" not in result.err
    assert result.err_lines == [
        f"servesim: error: {tmp_path / store.RESULTS}: no results.csv here; "
        f"is {tmp_path} an experiment output folder?"]


def test_trace_stats_of_a_timestamps_file(servesim, tmp_path):
    times = np.round(np.cumsum(np.full(250, 0.004)), 6)  # 250 arrivals, 4 ms apart
    path = tmp_path / "arrivals.txt"
    path.write_text("# one arrival per line, seconds\n" + "\n".join(f"{t:.6f}" for t in times) + "\n")
    result = servesim("trace-stats", path, "--format", "timestamps")
    assert result.rc == 0, result.err
    stats = json.loads(result.out)
    assert stats["requests"] == 250
    assert stats["duration_s"] == pytest.approx(1.0)
    assert stats["mean_rate_rps"] == pytest.approx(250.0)
    assert stats["interarrival_mean_s"] == pytest.approx(0.004)
    assert stats["interarrival_cv"] == pytest.approx(0.0, abs=1e-6)


def test_trace_stats_of_a_bad_file(servesim, tmp_path):
    path = tmp_path / "arrivals.txt"
    path.write_text("0.1\n0.2\nsoon\n")
    result = servesim("trace-stats", path, "--format", "timestamps")
    assert result.rc == 2
    assert "Traceback" not in result.err
    assert result.err_lines == [f"servesim: error: {path} line 3: 'soon' is not a finite number >= 0"]
    missing = servesim("trace-stats", tmp_path / "nope.txt", "--format", "timestamps")
    assert missing.rc == 2 and missing.err_lines == [f"servesim: error: {tmp_path / 'nope.txt'}: no such file"]


def test_trace_stats_refuses_an_unknown_format(servesim, tmp_path):
    result = servesim("trace-stats", tmp_path / "x.txt", "--format", "csvv")
    assert result.rc == 2  # argparse's own usage error
    assert "invalid choice: 'csvv'" in result.err and "Traceback" not in result.err


def test_version_and_every_argument_has_help(servesim):
    result = servesim("--version")
    assert result.rc == 0 and result.out.strip() == f"servesim {importlib.metadata.version('servesim')}"
    for command in ("check", "plot"):
        result = servesim(command, "--help")
        assert result.rc == 0 and "positional arguments:" in result.out
        positional = result.out.split("positional arguments:")[1].split("options:")[0].strip().splitlines()
        assert all(len(line.split(None, 1)) == 2 for line in positional), (command, positional)  # name, then help


def test_profile_served_help_is_plain_text(servesim):
    pytest.importorskip("torch")
    result = servesim("profile-served", "--help")
    assert result.rc == 0 and "as the real executor serves it" in result.out
    assert "``" not in result.out and ":func:" not in result.out  # no reST markup


def test_quickstart_checks(servesim):
    result = servesim("check", QUICKSTART)
    assert result.rc == 0, result.err
    assert f"{QUICKSTART}: OK, 8 run(s): " in result.out


def test_quickstart_shows_batching_beats_batch_size_one(servesim, tmp_path):
    """The quickstart's question: at 3,200 req/s two CPU replicas cannot keep up one
    request at a time (~0.7 ms each, ~2,800 req/s), so queues fill to the 200 ms drop
    limit; every batching setting keeps up, well inside the 10 ms SLO."""
    out = tmp_path / "quickstart"
    result = servesim("run", QUICKSTART, "--out", out, "--jobs", "1", "--quiet")
    assert result.rc == 0, result.err
    # --quiet: no line per run, only the closing one
    assert result.out.splitlines() == [f"8 of 8 runs finished; results in {out / store.RESULTS} "
                                       f"(by point: {store.RESULTS_BY_POINT}), plots in {out / 'plots'}"]
    results = pd.read_csv(out / store.RESULTS)
    assert len(results) == 8 and (results["status"] == "ok").all()
    unbatched = results["serving.batching.max_batch"] == 1
    assert unbatched.sum() == 2
    for seed in (1, 2):
        rows = results[results["seed"] == seed]
        one = rows[unbatched[rows.index]].iloc[0]
        batched = rows[~unbatched[rows.index]]
        assert len(batched) == 3
        assert (batched["latency_p99_ms"] < one["latency_p99_ms"] / 10).all()
        assert (batched["latency_p99_ms"] < 10).all()
        assert one["latency_p99_ms"] > 150
        assert one["dropped"] > 0 and (batched["dropped"] == 0).all()
        assert (batched["throughput_rps"] > one["throughput_rps"]).all()
        assert (batched["slo_violation_rate"] < 0.01).all() and one["slo_violation_rate"] > 0.5
        assert (rows["requests"] == rows["requests"].iloc[0]).all()  # same arrivals for every policy
        assert rows["requests"].iloc[0] == pytest.approx(32000, rel=0.05)
    assert (out / "plots" / "comparison.png").exists()
