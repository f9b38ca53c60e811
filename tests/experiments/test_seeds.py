"""``servesim seeds``: each sweep point of a finished sweep averaged over its seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from servesim.experiments import store
from servesim.experiments.seeds import point_of


def test_each_point_is_its_seeds_mean_interval_and_range(sweep, servesim):
    written = sweep.out / store.RESULTS_BY_POINT
    written.unlink()  # `servesim run` wrote it; `servesim seeds` writes it again from results.csv
    result = servesim("seeds", sweep.out)
    assert result.rc == 0, result.err
    table = pd.read_csv(written)
    results = pd.read_csv(sweep.out / "results.csv")
    assert len(table) == 4 and (table["seeds"] == 2).all()  # 2 x 2 points, 2 seeds each
    assert (results["run"].map(point_of) == results["point"]).all()  # a run's point: its name less the seed
    for _, row in table.iterrows():
        runs = results[results["point"] == row["point"]]
        p99 = runs["latency_p99_ms"].to_numpy()
        assert row["latency_p99_ms"] == pytest.approx(p99.mean(), rel=1e-5)
        assert row["latency_p99_ms_ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * p99.std(ddof=1) / np.sqrt(2),
                                                           rel=1e-5)
        assert (row["latency_p99_ms_min"], row["latency_p99_ms_max"]) == pytest.approx((p99.min(), p99.max()),
                                                                                      rel=1e-5)
        assert "seed" not in row["point"]
    assert row["point"] in result.out and "±" in result.out


def test_a_folder_without_results_is_one_error_line(servesim, tmp_path):
    result = servesim("seeds", tmp_path)
    assert result.rc == 2 and result.err.count("\n") == 1 and "no results.csv here" in result.err


def test_a_point_is_its_run_name_without_the_seed():
    assert point_of("replicas-2_max_batch-8_seed-3") == "replicas-2_max_batch-8"
    assert point_of("seed-1") == "all runs"
    assert point_of("rate-2_seed-11_seed-3") == "rate-2_seed-11"  # only the last part is the seed
    # and the names of folders servesim wrote before
    assert point_of("replicas=2,max_batch=8,seed=3") == "replicas=2,max_batch=8"
    assert point_of("seed=1") == "all runs"
