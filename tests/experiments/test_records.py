"""What a plain run keeps of its requests (``records``): ``full`` streams requests.parquet
as the run goes and summarises it exactly; ``summary`` keeps a latency sketch and
counters over time, its percentiles within the sketch's stated relative error of the
exact ones (the same seeds give the same requests, so the full runs beside them are the
exact reference); a sweep point's seeds pooled through their merged sketches; the
plots drawn from what a streamed run kept."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from servesim.experiments import store
from servesim.experiments.config import ConfigError, expand, load
from servesim.experiments.plots import plot_experiment
from servesim.experiments.runner import prepare, run_experiment
from servesim.sim import simulate
from servesim.policies.batching import DynamicBatcher
from servesim.policies.routing import JoinShortestQueue
from servesim.traces import poisson
from servesim.workloads import PROFILES_DIR, CostModel, Empirical, load_profile

ALPHA = 0.02
RECORDS = f"""\
name: records
slo_ms: 5
seeds: [1, 2, 3]
trace: {{kind: poisson, rate: 6000, duration: 4}}
model: {{profile: "builtin:cpu_mlp", name: mlp3, noise: {{kind: empirical}}}}
serving: {{replicas: 2, router: jsq, batching: {{policy: dynamic, max_batch: 8, max_wait_ms: 1}}, drop_after_ms: 4}}
sweep:
  records: [full, {{keep: summary, relative_accuracy: {ALPHA}, interval_s: 0.5}}]
"""
FIGURES = ("requests", "completed", "dropped", "rejected", "throughput_rps", "slo_violation_rate", "batches",
           "backlog_mid", "backlog_end", "overloaded", "duration_s", "cost")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    (folder / "records.yaml").write_text(RECORDS)
    outcome = run_experiment(folder / "records.yaml", folder / "out", jobs=1, show_progress=False)
    assert not outcome.failed
    return folder / "out"


SKETCHED = "summary-0.02-0.5"  # the summary point's folder name (its swept values)


def summary(out, keep: str, seed: int) -> dict:
    return json.loads((out / f"{SKETCHED if keep == 'summary' else keep}_seed-{seed}" / store.SUMMARY).read_text())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_summary_runs_percentiles_are_within_the_stated_error_of_the_exact_ones(swept, seed):
    exact, sketched = summary(swept, "full", seed), summary(swept, "summary", seed)
    assert (exact["records"], sketched["records"]) == ("full", "summary")
    assert sketched["latency_sketch"]["relative_accuracy"] == ALPHA
    for figure in FIGURES:  # counted, not sketched: equal
        assert sketched[figure] == exact[figure], figure
    assert exact["dropped"] > 0  # (drops and SLO misses are in the comparison)
    for q in ("p25", "p50", "p90", "p95", "p99"):
        # numpy interpolates between two ranks, the sketch answers a rank: within the error of one of them
        assert abs(sketched["latency_ms"][q] - exact["latency_ms"][q]) <= ALPHA * exact["latency_ms"][q] * 1.0001 + 1e-6
    assert sketched["latency_ms"]["mean"] == pytest.approx(exact["latency_ms"]["mean"], rel=1e-9)


def test_full_records_stream_the_table_the_engine_makes(swept):
    """requests.parquet, written a row group at a time as the run went, is the table of
    the same run made whole (sim.simulate without a sink), and its summary's figures."""
    table = pd.read_parquet(swept / "full_seed-1" / store.REQUESTS)
    config = load(swept / "full_seed-1" / store.CONFIG)
    assert len(table) == summary(swept, "full", 1)["requests"] and table["id"].tolist() == list(range(len(table)))
    run = prepare(config, swept)
    whole = simulate(run.trace, run.cost_model, run.batcher, replicas=2, router=run.router,
                     drop_after=0.004, rng=run.noise_rng).requests.columns()
    for name, column in whole.items():
        np.testing.assert_array_equal(table[name].to_numpy(), column, err_msg=name)
    assert not (swept / f"{SKETCHED}_seed-1" / store.REQUESTS).exists()


def test_counters_over_time_add_up_to_the_summary(swept):
    s = summary(swept, "summary", 2)
    counters = pd.read_parquet(swept / f"{SKETCHED}_seed-2" / store.INTERVALS)
    assert counters["start_s"].diff().dropna().eq(0.5).all()
    assert counters["arrivals"].sum() == s["requests"] and counters["completed"].sum() == s["completed"]
    assert counters["dropped"].sum() == s["dropped"]
    assert counters["slo_violations"].sum() == pytest.approx(s["slo_violation_rate"] * s["requests"], abs=0.5)
    latency = pd.read_parquet(swept / f"{SKETCHED}_seed-2" / store.LATENCY_INTERVALS)
    assert latency["completed"].sum() == s["completed"] and (latency["p50_ms"] <= latency["p99_ms"]).all()


def test_a_points_seeds_pool_through_their_merged_sketches(swept):
    """results_by_point.csv's pooled percentiles: all the point's requests together,
    within the sketch's error of the exact percentile of the full runs' pooled tables."""
    points = pd.read_csv(swept / store.RESULTS_BY_POINT).set_index("point")
    latencies = []
    for seed in (1, 2, 3):
        table = pd.read_parquet(swept / f"full_seed-{seed}" / store.REQUESTS)
        done = table[table["status"] == 0]
        latencies.append((done["finish"] - done["arrival"]).to_numpy() * 1e3)
    pooled = np.sort(np.concatenate(latencies))
    for q in (50, 90, 99):
        rank = q / 100 * (pooled.size - 1)
        low, high = pooled[int(np.floor(rank))], pooled[int(np.ceil(rank))]
        for point, accuracy in (("full", 0.01), (SKETCHED, ALPHA)):
            value = points.loc[point, f"latency_p{q}_ms_pooled"]
            assert low * (1 - accuracy) - 1e-9 <= value <= high * (1 + accuracy) + 1e-9, (point, q)
    for q in (50, 99):  # a pooled percentile is not the mean of the seeds' percentiles
        assert points.loc["full", f"latency_p{q}_ms_pooled"] != points.loc["full", f"latency_p{q}_ms"]


def test_the_plots_of_streamed_runs_come_from_what_they_kept(swept, monkeypatch):
    def unread(*args, **kwargs):
        raise AssertionError("a streamed run's request table was read for its plots")
    monkeypatch.setattr(store, "read_requests", unread)
    plots = {path.name for path in plot_experiment(swept)}
    assert "latency_cdf.png" in plots
    assert {f"timeseries-{point}_seed-{s}.png" for point in ("full", SKETCHED) for s in (1, 2, 3)} <= plots


def test_summary_records_are_for_plain_runs(write):
    text = RECORDS.replace("trace: {kind: poisson, rate: 6000, duration: 4}",
                           "load: {kind: closed_loop, clients: 4, count: 100}").replace(", drop_after_ms: 4", "")
    with pytest.raises(ConfigError, match="records: summary keeps sketches of plain requests' latencies; load runs"):
        expand(load(write("bad.yaml", text)), "bad.yaml")


def test_a_week_is_drawn_as_it_is_read_under_summary_records():
    """records: summary with a generated trace: the run never holds its arrivals (a
    streamed trace, traces.streamed) and gives the run of the array."""
    cost = CostModel(load_profile(PROFILES_DIR / "cpu_mlp.csv"), "mlp3", noise=Empirical())
    tables = []
    for lazy in (False, True):
        chunks = []
        simulate(poisson(5000.0, duration=3.0, rng=np.random.default_rng(2), lazy=lazy), cost,
                 DynamicBatcher(8, 0.001), replicas=2, router=JoinShortestQueue(), rng=np.random.default_rng(3),
                 sink=chunks.append)
        tables.append(np.concatenate([c.finish for c in chunks]))
    np.testing.assert_array_equal(tables[0], tables[1])


def test_the_table_is_written_in_row_groups_of_a_million_rows(tmp_path, monkeypatch):
    """Chunks of any size are written as row groups of ROW_GROUP rows (here 1,000), the
    last one shorter, and read back as the rows given, in order."""
    import pyarrow.parquet as pq
    from servesim.sim.records import RequestTable
    monkeypatch.setattr(store, "ROW_GROUP", 1000)
    writer = store.RequestsWriter(tmp_path, "run")
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 700, 12)
    for n in sizes:
        writer(RequestTable(np.sort(rng.random(n)), np.ones(n, dtype=np.int32), np.zeros(n), np.ones(n),
                            np.zeros(n, dtype=np.int32), np.ones(n, dtype=np.int32), np.zeros(n, dtype=np.int8)))
    path = writer.close()
    groups = pq.ParquetFile(path).metadata
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == \
        [1000] * (sizes.sum() // 1000) + ([sizes.sum() % 1000] if sizes.sum() % 1000 else [])
    assert pd.read_parquet(path)["id"].tolist() == list(range(sizes.sum()))
