"""`servesim perf-compare`: a simulated sweep's perf_analyzer.csv beside a measured online
table, matched by concurrency, with the simulator's relative error per figure."""

from __future__ import annotations

import pandas as pd
import pytest

from servesim.experiments.perf_compare import compare, mean_errors
from servesim.workloads.offline_tables import read_online_table

SWEEP = """\
name: pc
seeds: [1]
load: {kind: closed_loop, clients: 1, count: 300}
model: {profile: "builtin:cpu_mlp", name: mlp3}
serving:
  batching: {policy: dynamic, max_batch: 8, max_wait_ms: 0.5}
sweep:
  load.clients: [1, 4]
  serving.instances: [1, 2]
"""


@pytest.fixture
def simulated(write, servesim, tmp_path):
    out = tmp_path / "out"
    result = servesim("run", write("pc.yaml", SWEEP), "--out", out, "--quiet")
    assert result.rc == 0, result.err
    return out


def measured_from(table: pd.DataFrame, scale: dict, unit: float) -> str:
    """A perf_analyzer-like CSV of ``table``'s rows, each figure multiplied by ``scale``'s
    factor, times divided by ``unit`` (1: microseconds, as perf_analyzer writes)."""
    lines = ["Concurrency,Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency"]
    for _, row in table.iterrows():
        times = [row[c] * scale.get(c, 1.0) / unit for c in
                 ("p50 latency", "p90 latency", "p95 latency", "p99 latency", "Avg latency")]
        lines.append(",".join(str(v) for v in (row["Concurrency"], row["Inferences/Second"] * scale.get("thr", 1.0),
                                                *times)))
    return "\n".join(lines) + "\n"


def test_errors_are_the_simulated_over_the_measured_figure_at_each_concurrency(simulated, servesim, tmp_path):
    table = pd.read_csv(simulated / "perf_analyzer.csv")
    two = table[table["serving.instances"] == 2]
    # measured: throughput 25% above the simulated one, p50 20% below it, the rest equal
    (tmp_path / "measured.csv").write_text(measured_from(two, {"thr": 1.25, "p50 latency": 0.8}, unit=1.0))
    out = tmp_path / "cmp.csv"
    result = servesim("perf-compare", simulated, tmp_path / "measured.csv", "--where", "serving.instances=2",
                      "--out", out)
    assert result.rc == 0, result.err
    rows = pd.read_csv(out)
    assert rows["concurrency"].tolist() == [1, 4]
    assert rows["throughput_rel_error"].to_numpy() == pytest.approx(1 / 1.25 - 1, abs=1e-5)
    assert rows["p50_rel_error"].to_numpy() == pytest.approx(1 / 0.8 - 1, abs=1e-5)
    assert rows["p99_rel_error"].to_numpy() == pytest.approx(0.0, abs=1e-5)
    assert rows["sim_p50"].to_numpy() == pytest.approx(two["p50 latency"].to_numpy() / 1e3)  # us -> ms
    assert "mean |relative error|: throughput 20.0%, p50 25.0%" in result.out


def test_a_published_markdown_table_in_ms_and_rows_only_one_side_has(simulated, tmp_path):
    table = pd.read_csv(simulated / "perf_analyzer.csv")
    one = table[table["serving.instances"] == 1]
    p50_ms = one["p50 latency"].iloc[1] / 1e3
    (tmp_path / "online.md").write_text(
        "| Concurrent client requests | Inferences/second | P50 Latency | P99 Latency |\n|---:|---:|---:|---:|\n"
        f"| 4 | {one['Inferences/Second'].iloc[1]} | {p50_ms} | {2 * one['p99 latency'].iloc[1] / 1e3} |\n"
        "| 16 | 900 | 20 | 30 |\n")
    load, measured = read_online_table(tmp_path / "online.md", "ms")
    rows = compare(one, load, measured, "online.md").set_index("concurrency")
    assert rows.loc[4, "throughput_rel_error"] == pytest.approx(0.0, abs=1e-6)
    assert rows.loc[4, "p50_rel_error"] == pytest.approx(0.0, abs=1e-6)
    assert rows.loc[4, "p99_rel_error"] == pytest.approx(-0.5, abs=1e-6)
    assert pd.isna(rows.loc[4, "p90_rel_error"])  # the table has no p90
    assert pd.isna(rows.loc[16, "sim_throughput"]) and rows.loc[16, "measured_throughput"] == 900  # not simulated
    assert pd.isna(rows.loc[1, "measured_throughput"]) and rows.loc[1, "sim_throughput"] > 0  # not measured
    assert mean_errors(rows)["p90"] is None


def test_what_cannot_be_compared_is_one_line_naming_it(simulated, servesim, tmp_path):
    (tmp_path / "batch.csv").write_text("Batch,Inferences/Second,p50 latency\n1,100,900\n")
    result = servesim("perf-compare", simulated, tmp_path / "batch.csv")
    assert result.rc == 2 and "batch.csv line 1: no column 'Concurrency' or 'Request Rate'" in result.err
    (tmp_path / "m.csv").write_text("Concurrency,Inferences/Second,p50 latency\n4,100,nine\n")
    result = servesim("perf-compare", simulated, tmp_path / "m.csv", "--where", "serving.instances=1")
    assert result.rc == 2 and "m.csv line 2: column 'p50 latency' is 'nine'" in result.err
    (tmp_path / "ok.csv").write_text("Concurrency,Inferences/Second,p50 latency\n4,100,900\n")
    result = servesim("perf-compare", simulated, tmp_path / "ok.csv")
    assert result.rc == 2 and "several rows at concurrency 1" in result.err and "--where" in result.err
    result = servesim("perf-compare", simulated, tmp_path / "ok.csv", "--where", "serving.replicas=2")
    assert result.rc == 2 and "no column 'serving.replicas'" in result.err and "serving.instances" in result.err
    result = servesim("perf-compare", tmp_path / "nowhere", tmp_path / "ok.csv")
    assert result.rc == 2 and "nowhere: no such file or folder" in result.err
    result = servesim("perf-compare", tmp_path, tmp_path / "ok.csv")
    assert result.rc == 2 and "perf_analyzer.csv: no such file; `servesim run` writes it" in result.err
    assert "Traceback" not in result.err
