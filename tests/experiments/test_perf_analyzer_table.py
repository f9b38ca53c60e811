"""A sweep with clients reads like perf_analyzer: each request's time split as perf_analyzer
splits it (client costs measured, from the config or an imported perf_analyzer profile; the
compute apportioned by that profile's input / infer / output shares), perf_analyzer.csv with
its own columns in microseconds, the same figures on the console, and closed loops that end
by time."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from servesim.experiments import load_specs, runner
from servesim.experiments.perf_table import PERF_COLUMNS
from servesim.sim.client_view import ComputeSplit

FLAGS = ["--hardware", "t4", "--model", "r50", "--device", "NVIDIA T4", "--dtype", "fp16",
         "--framework", "tensorrt 8.6", "--date", "2026-12-01", "--execution-mode", "triton"]
# perf_analyzer -b B --concurrency-range 1 -f, one row per batch size, in microseconds
PA_CSV = """\
Batch,Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency
1,1,350.2,40,600,50,120,2000,30,10,2840,2900,2950,3100
4,1,1010.5,60,700,55,300,2800,60,12,3980,4100,4150,4300
16,1,2250.0,150,900,60,1000,4800,150,20,7100,7300,7400,7700
"""
# (input, infer, output) ms by batch size, as measured above
COMPUTE = {1: (0.12, 2.0, 0.03), 4: (0.3, 2.8, 0.06), 16: (1.0, 4.8, 0.15)}
PREPARE = runner.prepare
PARTS = ("client_send_ms", "network_ms", "queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms",
         "client_recv_ms")


@pytest.fixture
def profile(tmp_path, servesim):
    (tmp_path / "pa.csv").write_text(PA_CSV)
    result = servesim("profile", "import", "--format", "perf-analyzer", tmp_path / "pa.csv",
                      "--out", tmp_path / "profile.csv", *FLAGS)
    assert result.rc == 0, result.err
    return tmp_path / "profile.csv"


def sweep(size: int, extra: str = "") -> str:
    return f"""\
name: pa
seeds: [1, 2, 3]
load: {{kind: closed_loop, clients: 1, count: 400, size: {size}, client: from_profile}}
model: {{profile: profile.csv, name: r50}}
serving:
  batching: {{policy: dynamic, max_batch: 16, max_wait_ms: 0.5}}
sweep:
  load.clients: [1, 6]
{extra}"""


def test_the_split_comes_from_the_profile_and_adds_up_to_what_clients_see(profile, write, servesim, tmp_path):
    out = tmp_path / "out"
    result = servesim("run", write("sweep.yaml", sweep(2)), "--out", out, "--quiet")
    assert result.rc == 0, result.err
    rows = pd.read_csv(out / "results.csv")
    for _, row in rows.iterrows():
        # requests of 2 items: the client's parts a third of the way from batch 1's to batch 4's (ms)
        assert row["client_send_ms"] == pytest.approx(0.04 + (0.06 - 0.04) / 3, abs=1e-6)
        assert row["network_ms"] == pytest.approx(0.6 + 0.1 / 3, abs=1e-6)
        assert row["client_recv_ms"] == pytest.approx(0.01 + 0.002 / 3, abs=1e-6)
        # the parts add up to the mean clients see (each rounded to 1e-6 ms: 7 parts, < 4e-6 ms off)
        assert sum(row[p] for p in PARTS) == pytest.approx(row["client_mean_ms"], abs=4e-6)
        assert row["compute_input_ms"] + row["compute_infer_ms"] + row["compute_output_ms"] == pytest.approx(
            row["compute_ms"], abs=3e-6)
        assert row["client_mean_ms"] == pytest.approx(row["latency_mean_ms"] + 0.04 + 0.02 / 3 + 0.6 + 0.1 / 3
                                                      + 0.01 + 0.002 / 3, abs=1e-5)
    # one client of 2 items: every batch holds 2, so the compute splits by batch 2's shares, exactly
    alone = rows[rows["load.clients"] == 1].iloc[0]
    shares = [np.interp(2, [1, 4], [COMPUTE[1][k] / sum(COMPUTE[1]), COMPUTE[4][k] / sum(COMPUTE[4])])
              for k in range(3)]
    for part, share in zip(("compute_input_ms", "compute_infer_ms", "compute_output_ms"), shares):
        assert alone[part] == pytest.approx(alone["compute_ms"] * share, abs=2e-6)


def test_perf_analyzer_csv_has_its_columns_in_microseconds_and_the_console_the_same(profile, write, servesim,
                                                                                      tmp_path):
    out = tmp_path / "out"
    result = servesim("run", write("sweep.yaml", sweep(1)), "--out", out)
    assert result.rc == 0, result.err
    table = pd.read_csv(out / "perf_analyzer.csv")
    assert list(table.columns) == ["Concurrency", *PERF_COLUMNS, "point", "seeds", "seed", "load.clients"]
    rows = pd.read_csv(out / "results.csv")
    for (_, line), (clients, runs) in zip(table.iterrows(), rows.groupby("load.clients", sort=False)):
        assert line["Concurrency"] == clients and line["seeds"] == 3
        median = runs[runs["seed"] == line["seed"]].iloc[0]  # the seed whose mean latency is the median
        assert median["client_mean_ms"] == runs["client_mean_ms"].median()
        for name, (column, scale) in PERF_COLUMNS.items():  # its figures, ms as us (to 1 ns)
            assert line[name] == pytest.approx(median[column] * scale, abs=5e-4), name
        # throughput counts items (inferences), one per request here
        assert line["Inferences/Second"] == pytest.approx(median["client_throughput_rps"], abs=5e-4)
        parts = ["Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
                 "Server Compute Infer", "Server Compute Output", "Client Recv"]
        assert line[parts].sum() == pytest.approx(line["Avg latency"], abs=8 * 5e-4)  # 8 cells rounded to 1 ns
    console = result.out.splitlines()
    start = next(i for i, text in enumerate(console) if text.startswith("perf_analyzer's figures per point"))
    header, *lines = console[start + 1:start + 3]
    assert header.split() == ["point", "conc.", "infer/s", "send", "network", "queue", "input", "infer", "output",
                              "recv", "p50", "p90", "p95", "p99", "avg"]
    for text, (_, line) in zip(lines, table.iterrows()):
        assert text.split()[1:] == [format(line[c], ".5g") for c in ["Concurrency", *PERF_COLUMNS]]


def test_without_a_measured_split_the_compute_is_infer_and_input_output_are_empty(write, servesim, tmp_path):
    out = tmp_path / "out"
    text = ('load: {kind: request_rate, rate: 500, max_outstanding: 4, count: 300, client: {send_ms: 0.1, '
            'recv_ms: 0.2}}\nmodel: {profile: "builtin:cpu_mlp", name: mlp3}\nsweep: {load.rate: [200, 400]}\n')
    assert servesim("run", write("rate.yaml", text), "--out", out, "--quiet").rc == 0
    table = pd.read_csv(out / "perf_analyzer.csv", keep_default_na=False)
    assert table.columns[0] == "Request Rate" and table["Request Rate"].tolist() == [200, 400]
    assert (table["Server Compute Input"] == "").all() and (table["Server Compute Output"] == "").all()
    rows = pd.read_csv(out / "results.csv")
    assert table["Server Compute Infer"].tolist() == pytest.approx((rows["compute_ms"] * 1e3).tolist(), abs=1e-3)
    assert table["Client Send"].tolist() == [100, 100] and table["Network+Server Send/Recv"].tolist() == [0, 0]


def test_compute_shares_are_interpolated_between_measured_sizes_and_held_beyond():
    split = ComputeSplit((1, 4), ((1.0, 1.0), (2.0, 8.0), (1.0, 1.0)))
    shares = split.shares(np.array([1, 2.5, 4, 64]))
    assert shares[0] == pytest.approx([0.25, 0.5, 0.25]) and shares[2] == pytest.approx([0.1, 0.8, 0.1])
    assert shares[1] == pytest.approx([0.175, 0.65, 0.175])  # halfway in size, halfway in share
    assert shares[3] == pytest.approx(shares[2]) and np.allclose(shares.sum(axis=1), 1.0)


def test_from_profile_outside_the_measured_sizes_is_one_line(profile, write, servesim):
    path = write("big.yaml", sweep(32).replace("max_batch: 16", "max_batch: 32"))
    result = servesim("check", path)
    assert result.rc == 2 and len(result.err_lines) == 1, result.err
    assert (f"{path}: run clients-1_seed-1: load.client: from_profile: the profile's client_send_ms is measured at "
            f"batch sizes 1-16, not at load.size 32") in result.err_lines[0]


DURATION = """\
load: {kind: closed_loop, clients: 3, duration_s: 0.4, think: {kind: exponential, mean_ms: 1}}
model: {profile: "builtin:cpu_mlp", name: mlp3}
serving: {batching: {policy: dynamic, max_batch: 8, max_wait_ms: 0.5}}
"""


def test_a_loop_that_ends_by_time_is_the_same_run_with_any_first_room(write, servesim, tmp_path, monkeypatch):
    """Given room for 16 sends, the run sends more, is run again with the room its rate
    needs, and comes out as the run given room enough at once."""
    path = write("timed.yaml", DURATION)
    assert servesim("run", path, "--out", tmp_path / "a", "--quiet", "--jobs", "1").rc == 0
    monkeypatch.setattr(load_specs, "FIRST_ROOM", 16)
    prepared = []
    monkeypatch.setattr(runner, "prepare", lambda *args: prepared.append(args[2]) or PREPARE(*args))
    assert servesim("run", path, "--out", tmp_path / "b", "--quiet", "--jobs", "1").rc == 0
    assert prepared[0] is None and prepared[1] > 100  # run again, given room from the first try's rate
    run = pd.read_csv(tmp_path / "a" / "results.csv")["run"][0]
    first, second = (pd.read_parquet(tmp_path / d / run / "requests.parquet") for d in "ab")
    pd.testing.assert_frame_equal(first, second)
    assert 100 < len(first) and first["arrival"].max() < 0.4 and (first["status"] == 0).all()
    summary = json.loads((tmp_path / "a" / run / "summary.json").read_text())
    assert summary["trace"].startswith("closed loop: 3 clients, sending for 0.4 s")
