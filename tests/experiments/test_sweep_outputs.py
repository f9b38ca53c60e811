"""What a finished sweep leaves on disk (the session's 8-run `sweep` fixture: replicas
1|2 x max_batch 1|8 x seeds 1|2, 500 Poisson requests at 2,000 req/s): results.csv, one
folder per run whose files agree with each other and with numpy, and the plots."""

from __future__ import annotations

import itertools
import json
import shutil

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from servesim.experiments import config as config_mod, store

REPLICAS, MAX_BATCH, SEEDS = [1, 2], [1, 8], [1, 2]
POINTS = {(r, b): f"replicas-{r}_max_batch-{b}" for r, b in itertools.product(REPLICAS, MAX_BATCH)}
RUN_NAMES = [f"{POINTS[r, b]}_seed-{s}" for r, b, s in itertools.product(REPLICAS, MAX_BATCH, SEEDS)]
REQUIRED_COLUMNS = ["run", "serving.replicas", "serving.batching.max_batch", "latency_p50_ms", "latency_p90_ms",
                    "latency_p99_ms", "latency_mean_ms", "throughput_rps", "dropped", "slo_violation_rate",
                    "accuracy", "cost"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SLO_S = 0.005


@pytest.fixture(scope="module")
def results(sweep) -> pd.DataFrame:
    return pd.read_csv(sweep.out / store.RESULTS)


def _summary(sweep, name) -> dict:
    return json.loads((sweep.out / name / store.SUMMARY).read_text())


def _table(sweep, name) -> pd.DataFrame:
    return pd.read_parquet(sweep.out / name / store.REQUESTS)


def _row(results, name) -> pd.Series:
    rows = results[results["run"] == name]
    assert len(rows) == 1
    return rows.iloc[0]


def test_cli_reports_every_run(sweep, servesim, tmp_path):
    # the session's sweep ran --quiet: the closing line alone
    assert sweep.result.rc == 0
    quiet = sweep.result.out.splitlines()
    assert len(quiet) == 1 and quiet[0].startswith("8 of 8 runs finished; results in "), quiet
    # without --quiet, the answer: a line per sweep point (here for runs kept from it, in a copy of its folder)
    out = tmp_path / "out"
    shutil.copytree(sweep.out, out)
    again = servesim("run", sweep.yaml, "--out", out, "--resume")
    assert again.rc == 0, again.err
    lines = again.out.splitlines()
    assert lines[0] == "4 sweep point(s), mean ± 95% CI over 2 seeds:"
    assert lines[1].split() == ["point", "p50", "ms", "p99", "ms", "SLO", "viol.", "%", "accel-s", "dropped"]
    for point in POINTS.values():
        assert sum(line.startswith(f"{point} ") for line in lines) == 1
    assert len(lines) == 7
    assert lines[-1].startswith("8 of 8 runs finished (8 kept from an earlier run); results in ")


def test_results_csv_has_one_row_per_run_and_the_documented_columns(results):
    assert len(results) == 8
    assert list(results["run"]) == RUN_NAMES  # the sweep's order: product of the sweep lists, then seeds
    for column in REQUIRED_COLUMNS:
        assert column in results.columns, column
    assert list(results.columns[:6]) == ["run", "status", "seed", "point", "serving.replicas",
                                         "serving.batching.max_batch"]
    assert list(results["point"]) == [POINTS[r, b] for r, b, _ in itertools.product(REPLICAS, MAX_BATCH, SEEDS)]
    assert (results["status"] == "ok").all()
    assert results["error"].isna().all()
    assert results["accuracy"].isna().all()  # no early exits yet
    got = set(zip(results["serving.replicas"], results["serving.batching.max_batch"], results["seed"]))
    assert got == set(itertools.product(REPLICAS, MAX_BATCH, SEEDS))
    assert (results["requests"] == 500).all()


def test_results_csv_rows_repeat_each_summary(sweep, results):
    for name in RUN_NAMES:
        row, s = _row(results, name), _summary(sweep, name)
        assert row["latency_p50_ms"] == pytest.approx(s["latency_ms"]["p50"], abs=1e-9)
        assert row["latency_p90_ms"] == pytest.approx(s["latency_ms"]["p90"], abs=1e-9)
        assert row["latency_p99_ms"] == pytest.approx(s["latency_ms"]["p99"], abs=1e-9)
        assert row["latency_mean_ms"] == pytest.approx(s["latency_ms"]["mean"], abs=1e-9)
        assert row["throughput_rps"] == pytest.approx(s["throughput_rps"], abs=1e-9)
        assert row["slo_violation_rate"] == pytest.approx(s["slo_violation_rate"], abs=1e-12)
        assert row["cost"] == pytest.approx(s["cost"]["provisioned_accelerator_s"], abs=1e-12)
        assert row["cost_busy_s"] == pytest.approx(s["cost"]["busy_accelerator_s"], abs=1e-12)
        assert row["utilisation"] == pytest.approx(s["cost"]["utilisation"], abs=1e-12)
        assert row["mean_batch_items"] == pytest.approx(s["mean_batch_items"], abs=1e-12)
        for key in ("requests", "completed", "dropped", "rejected"):
            assert row[key] == s[key], key
        assert row["seed"] == s["seed"]


def test_each_run_folder_holds_config_summary_and_requests(sweep):
    folders = sorted(p.name for p in sweep.out.iterdir() if p.is_dir() and p.name != "plots")
    assert folders == sorted(RUN_NAMES)
    for name in RUN_NAMES:
        files = sorted(p.name for p in (sweep.out / name).iterdir())
        # no temporaries, no error.txt: the table and the counters over time it streamed
        assert files == sorted([store.CONFIG, store.SUMMARY, store.REQUESTS, store.INTERVALS, store.LATENCY_INTERVALS])


def test_config_yaml_loads_back_to_the_runs_config(sweep):
    runs = config_mod.expand(config_mod.load(sweep.yaml), str(sweep.yaml))
    assert [r.name for r in runs] == RUN_NAMES
    for run in runs:
        saved = config_mod.load(sweep.out / run.name / store.CONFIG)
        assert saved == run.config
        r, b, s = run.params["serving.replicas"], run.params["serving.batching.max_batch"], run.seed
        assert (saved.serving.replicas, saved.serving.batching.max_batch, saved.seed) == (r, b, s)
        # what the sweep did not touch comes from the file's head
        assert saved.serving.batching.max_wait_ms == 1.0
        assert saved.slo_ms == 5.0 and saved.trace.count == 500 and saved.trace.rate == 2000
        # resolved: every default is written out
        assert saved.model.out_of_range == "extrapolate" and saved.model.noise.kind == "empirical"


def test_summary_json_has_the_required_keys(sweep):
    for name in RUN_NAMES:
        s = _summary(sweep, name)
        for key in ("requests", "completed", "dropped", "throughput_rps", "latency_ms", "slo_violation_rate",
                    "accuracy", "cost"):
            assert key in s, key
        assert set(s["latency_ms"]) >= {"mean", "p50", "p90", "p99"}
        assert s["accuracy"] is None
        assert s["requests"] == 500
        assert s["run"] == name
        assert s["slo_ms"] == 5.0
        assert s["completed"] + s["dropped"] + s["rejected"] == s["requests"]


def test_requests_parquet_agrees_with_summary(sweep):
    for name in RUN_NAMES:
        s, t = _summary(sweep, name), _table(sweep, name)
        assert len(t) == s["requests"] == 500
        assert list(t["id"]) == list(range(500))
        assert np.all(np.diff(t["arrival"]) >= 0)
        counts = t["status"].value_counts().to_dict()
        assert counts.get(0, 0) == s["completed"]
        assert counts.get(1, 0) == s["dropped"]
        assert counts.get(2, 0) == s["rejected"]
        assert s["completed"] + s["dropped"] + s["rejected"] == s["requests"]

        done = t[t["status"] == 0]
        latency_ms = (done["finish"] - done["arrival"]).to_numpy() * 1e3
        for q in (50, 90, 99):
            assert s["latency_ms"][f"p{q}"] == pytest.approx(np.percentile(latency_ms, q), abs=2e-6)
        assert s["latency_ms"]["mean"] == pytest.approx(latency_ms.mean(), abs=2e-6)
        span = done["finish"].max() - t["arrival"].min()
        assert s["throughput_rps"] == pytest.approx(len(done) / span, rel=1e-8)
        late = (latency_ms > SLO_S * 1e3).sum() + (len(t) - len(done))
        assert s["slo_violation_rate"] == pytest.approx(late / len(t), abs=1e-9)

        # every request waited, then was served in a batch no larger than max_batch
        replicas, max_batch = s["params"]["serving.replicas"], s["params"]["serving.batching.max_batch"]
        assert (done["start"] >= done["arrival"]).all() and (done["finish"] > done["start"]).all()
        assert done["batch_size"].between(1, max_batch).all()
        assert set(done["replica"]) == set(range(replicas))
        assert s["mean_batch_items"] == pytest.approx(500 / s["batches"], rel=1e-6)

        batches = done.groupby(["replica", "start", "finish"])["batch_size"].agg(["size", "first"])
        assert len(batches) == s["batches"]
        assert (batches["size"] == batches["first"]).all()  # batch_size counts the batch's requests
        busy = float(np.sum(batches.index.get_level_values("finish").to_numpy()
                            - batches.index.get_level_values("start").to_numpy()))

        cost = s["cost"]
        assert cost["busy_accelerator_s"] == pytest.approx(busy, abs=2e-6)
        assert cost["provisioned_accelerator_s"] == pytest.approx(replicas * s["duration_s"], abs=2e-6)
        assert 0 < cost["busy_accelerator_s"] <= cost["provisioned_accelerator_s"]
        # (both terms are rounded to the microsecond in the file, hence the tolerance)
        assert cost["utilisation"] == pytest.approx(cost["busy_accelerator_s"] / cost["provisioned_accelerator_s"],
                                                    rel=1e-4)


def test_runs_with_the_same_seed_see_the_same_arrivals(sweep):
    """Common random numbers: the swept serving settings never change the trace."""
    for seed in SEEDS:
        names = [n for n in RUN_NAMES if n.endswith(f"_seed-{seed}")]
        first = _table(sweep, names[0])
        for other in names[1:]:
            pd.testing.assert_series_equal(first["arrival"], _table(sweep, other)["arrival"])
    a, b = _table(sweep, RUN_NAMES[0]), _table(sweep, RUN_NAMES[1])
    assert not np.allclose(a["arrival"], b["arrival"])


def test_the_numbers_show_what_the_sweep_varies(sweep, results):
    """2,000 req/s on one replica at ~0.72 ms per batch-1 request overloads it (capacity
    ~1,390 req/s); batching to 8 or a second replica keeps up."""
    by = results.set_index("run")
    for seed in SEEDS:
        overloaded = by.loc[f"replicas-1_max_batch-1_seed-{seed}"]
        batched = by.loc[f"replicas-1_max_batch-8_seed-{seed}"]
        two = by.loc[f"replicas-2_max_batch-1_seed-{seed}"]
        assert 1200 < overloaded["throughput_rps"] < 1500
        assert overloaded["utilisation"] > 0.95
        assert overloaded["latency_p99_ms"] > 50
        assert overloaded["slo_violation_rate"] > 0.5
        assert overloaded["mean_batch_items"] == 1.0
        for ok in (batched, two):
            assert ok["throughput_rps"] > 1800
            assert ok["latency_p99_ms"] < overloaded["latency_p99_ms"] / 5
            assert ok["slo_violation_rate"] < 0.1
        assert batched["mean_batch_items"] > 2
        # one replica costs about half of two over the same trace
        assert batched["cost"] < by.loc[f"replicas-2_max_batch-8_seed-{seed}"]["cost"]
    assert (results["dropped"] == 0).all() and (results["rejected"] == 0).all()


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # something was drawn


def test_plots_exist_and_are_valid_pngs(sweep):
    plots = sweep.out / "plots"
    expected = {"latency_cdf.png", "comparison.png"} | {f"timeseries-{n}.png" for n in RUN_NAMES}
    assert {p.name for p in plots.iterdir()} == expected
    for name in expected:
        _assert_png(plots / name)
