"""Experiments with exits: YAML keys, the policy columns of results.csv, common samples
across policies, the Pareto plot, and the errors a wrong exits section gets."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from servesim.experiments import cli, store

EXITS = """\
name: exits
trace: {kind: poisson, rate: 20000, count: 3000}
model: {profile: "builtin:cpu_digits_ee", name: digits_ee}
serving:
  batching: {policy: dynamic, max_batch: 16}
exits:
  ramps: {block1: ramp1, block2: ramp2, block3: ramp3}
  behaviour: {kind: synthetic, accuracy: [0.6, 0.7, 0.8, 0.9], samples: 4000}
  policy: never
"""

POLICIES = """\
sweep:
  exits.semantics: [compute_saving, latency_only]
  exits.policy:
    - never
    - oracle
    - {name: confidence, threshold: 0.8}
    - {name: ttamer, lam: 0.9, bins: 50}
    - {name: optimal_no_recall, lam: 0.9, bins: 50}
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    base = tmp_path_factory.mktemp("exits")
    path = base / "exits.yaml"
    path.write_text(EXITS + POLICIES)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["run", str(path), "--out", str(base / "out"), "--quiet"]) == 0
    return base / "out"


def test_results_csv_has_the_policy_and_its_parameters(swept):
    results = pd.read_csv(swept / store.RESULTS)
    assert len(results) == 10 and (results["status"] == "ok").all()
    assert set(results["policy"]) == {"never", "oracle", "confidence", "ttamer", "optimal_no_recall"}
    ttamer = results[results["policy"] == "ttamer"].iloc[0]
    assert ttamer["policy_lam"] == 0.9 and ttamer["policy_bins"] == 50
    assert results["accuracy"].between(0, 1).all() and results["agreement"].between(0, 1).all()
    never = results[results["policy"] == "never"]
    assert (never["agreement"] == 1.0).all() and (never["mean_stages_paid"] == 4).all()
    oracle = results[results["policy"] == "oracle"]
    assert (oracle["accuracy"].to_numpy() >= results["accuracy"].max() - 1e-12).all()


def test_every_policy_meets_the_same_requests_and_samples(swept):
    tables = [store.read_requests(p) for p in sorted(swept.glob("*/requests.parquet"))]
    assert len(tables) == 10
    for table in tables[1:]:
        np.testing.assert_array_equal(table["arrival"], tables[0]["arrival"])
        np.testing.assert_array_equal(table["sample"], tables[0]["sample"])


def test_latency_only_keeps_throughput_and_compute_saving_saves_compute(swept):
    results = pd.read_csv(swept / store.RESULTS).set_index(["exits.semantics", "policy"])
    lo = results.loc["latency_only"]
    # the accelerator's work never depends on who leaves where; vanilla runs no ramp at all
    assert lo.drop(index="never")["cost_busy_s"].nunique() == 1
    assert lo.loc["never", "cost_busy_s"] < lo.loc["oracle", "cost_busy_s"]
    cs = results.loc["compute_saving"]
    assert cs.loc["confidence", "cost_busy_s"] < cs.loc["never", "cost_busy_s"]
    assert cs.loc["confidence", "latency_p50_ms"] < lo.loc["confidence", "latency_p50_ms"]


def test_summary_and_plots(swept):
    run = next(p for p in swept.iterdir() if p.name.startswith("compute_saving_ttamer-"))
    summary = json.loads((run / store.SUMMARY).read_text())
    assert summary["policy"]["name"] == "ttamer" and summary["policy"]["lam"] == 0.9
    assert sum(summary["exits"]["share"].values()) == pytest.approx(1.0)
    assert list(summary["exits"]["share"]) == ["ramp1", "ramp2", "ramp3", "final"]
    assert (swept / "plots" / "pareto.png").stat().st_size > 10_000


@pytest.mark.parametrize("change, message", [
    ("  cascade: [digits_ee, digits_ee]\n", "exits: give exactly one of 'ramps'"),
    ("  semantics: sometimes\n", "exits.semantics: must be 'compute_saving' or 'latency_only'"),
    ("  fit_fraction: 1.5\n", "exits.fit_fraction: must be less than 1"),
])
def test_bad_exits_keys_are_named(write, servesim, change, message):
    path = write("bad.yaml", EXITS + change)
    result = servesim("check", path)
    assert result.rc == 2 and "Traceback" not in result.err
    assert message in result.err, result.err


@pytest.mark.parametrize("old, new, message", [
    ("policy: never", "policy: {name: ttamer, lam: 0}", "exits.policy.lam: must be greater than 0"),
    ("policy: never", "policy: sometimes", "exits.policy: name 'sometimes' is not one of 'never', "),
    ("accuracy: [0.6, 0.7, 0.8, 0.9]", "accuracy: [0.6, 0.9]", "exits.behaviour: the table has 2 exits but the model has 4"),
    ("accuracy: [0.6, 0.7, 0.8, 0.9]", "accuracy: [0.6, 0.7, 0.8, 1.9]", "accuracy values must lie in [0, 1], got 1.9"),
    ("block3: ramp3", "block3: ramp9", "no stage 'ramp9'"),
    ("{kind: synthetic, accuracy: [0.6, 0.7, 0.8, 0.9], samples: 4000}", "{kind: builtin, name: nope}",
     "no built-in behaviour table 'nope'; known: digits_ee"),
    ("{kind: synthetic, accuracy: [0.6, 0.7, 0.8, 0.9], samples: 4000}", "{kind: file, path: missing.npz}",
     "exits.behaviour.path: no such file"),
])
def test_bad_exit_values_are_named(write, servesim, old, new, message):
    path = write("bad.yaml", EXITS.replace(old, new))
    result = servesim("check", path)
    assert result.rc == 2 and "Traceback" not in result.err
    assert message in result.err, result.err
    assert len(result.err_lines) == 1, result.err


def test_same_exit_run_twice_and_on_a_pool_is_identical(swept, tmp_path):
    """A fitted policy, the behaviour split and the samples all come from the run's seed:
    rerunning the sweep (on a pool of two) gives the same tables and summaries."""
    path = tmp_path / "exits.yaml"
    path.write_text(EXITS + POLICIES)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["run", str(path), "--out", str(tmp_path / "again"), "--quiet", "--jobs", "2"]) == 0
    for first in sorted(p for p in swept.iterdir() if (p / store.SUMMARY).exists()):
        second = tmp_path / "again" / first.name
        assert store.read_requests(first / store.REQUESTS).equals(store.read_requests(second / store.REQUESTS))
        a, b = (json.loads((d / store.SUMMARY).read_text()) for d in (first, second))
        assert a == b


def test_changes_against_the_vanilla_run_of_the_same_point(swept):
    results = pd.read_csv(swept / store.RESULTS)
    for _, row in results.iterrows():
        never = results[(results["policy"] == "never") & (results["exits.semantics"] == row["exits.semantics"])].iloc[0]
        for key in ("latency_p25", "latency_p50", "latency_p95", "latency_p99", "throughput_rps"):
            column = key if key == "throughput_rps" else f"{key}_ms"
            assert row[f"{key}_change"] == pytest.approx(row[column] / never[column] - 1, abs=1e-8)
    saving = results[(results["policy"] == "confidence") & (results["exits.semantics"] == "compute_saving")]
    assert (saving["latency_p50_change"] < 0).all()


def test_long_swept_values_get_short_unique_folder_names(write):
    from servesim.experiments.config import expand, load

    regimes = [
        "[{name: a, accuracy: [0.9, 0.91, 0.92, 0.99]}, {name: b, accuracy: [0.5, 0.6, 0.7, 0.9]}]",
        "[{name: a, accuracy: [0.9, 0.91, 0.92, 0.99]}, {name: b, accuracy: [0.5, 0.6, 0.7, 0.8]}]",
    ]
    sweep = "sweep:\n  exits.behaviour:\n" + "".join(
        f"    - {{kind: video_drift, duration_s: 10, regimes: {r}}}\n" for r in regimes)
    path = write("long.yaml", EXITS + sweep)
    runs = expand(load(path), str(path))
    # they differ only deep inside, and every readable form is too long: numbered by their place in the sweep
    assert [run.name for run in runs] == ["video_drift-v1_seed-0", "video_drift-v2_seed-0"]
