"""``load: {kind: closed_loop}`` in an experiment: a concurrency sweep in one file, what its
summary says in perf_analyzer's terms, and the one-line errors of what it cannot be."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from servesim.experiments.config import dumped, load

MODEL = 'model: {profile: "builtin:cpu_mlp", name: mlp3}\n'
LOAD = ("load: {kind: closed_loop, clients: 4, count: 600, think: {kind: exponential, mean_ms: 2}, "
        "client: {send_ms: 0.05, network_ms: 0.15, recv_ms: 0.05}}\n")
SWEEP = LOAD + MODEL + """\
serving: {batching: {policy: dynamic, max_batch: 8}}
sweep:
  load.clients: [1, 4, 16]
"""


def test_a_concurrency_sweep_reads_like_perf_analyzer(write, servesim, tmp_path):
    out = tmp_path / "out"
    result = servesim("run", write("sweep.yaml", SWEEP), "--out", out, "--quiet")
    assert result.rc == 0, result.err
    rows = pd.read_csv(out / "results.csv")
    assert rows["load.clients"].tolist() == [1, 4, 16]
    views = {}
    for run, clients in zip(rows["run"], rows["load.clients"]):
        summary = json.loads((out / run / "summary.json").read_text())
        view = views[clients] = summary["closed_loop"]
        assert summary["clients"] == view["clients"] == clients
        assert summary["trace"].startswith(f"closed loop: {clients} clients, 600 requests")
        split = view["split_ms"]
        assert (split["client_send"], split["network"], split["client_recv"]) == (0.05, 0.15, 0.05)
        # the client sees the server's latency plus its costs; the server's splits into queue and compute,
        # the compute not further (the shipped CPU profile measured no input / infer / output)
        assert view["latency_ms"]["mean"] == pytest.approx(summary["latency_ms"]["mean"] + 0.25, abs=1e-5)
        assert split["queue"] + split["compute"] == pytest.approx(summary["latency_ms"]["mean"], abs=1e-5)
        assert split["compute_input"] is split["compute_infer"] is split["compute_output"] is None
        assert view["throughput_rps"] == pytest.approx(summary["throughput_rps"])
        requests = pd.read_parquet(out / run / "requests.parquet")
        assert len(requests) == 600 and requests["arrival"].is_monotonic_increasing
    # more clients, more throughput and more queueing (1 client never queues)
    assert views[1]["throughput_rps"] < views[4]["throughput_rps"] < views[16]["throughput_rps"]
    assert views[1]["split_ms"]["queue"] == 0 < views[4]["split_ms"]["queue"] < views[16]["split_ms"]["queue"]


def test_the_console_answers_a_concurrency_sweep_with_its_throughput(write, servesim, tmp_path):
    result = servesim("run", write("sweep.yaml", SWEEP), "--out", tmp_path / "out")
    assert result.rc == 0, result.err
    header, *lines = result.out.splitlines()[1:5]
    assert header.split()[:6] == ["point", "p50", "ms", "p99", "ms", "req/s"]
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    for line, rate in zip(lines, rows["client_throughput_rps"]):  # one seed: the run's own figure
        assert line.split()[3] == format(rate, ".4g")


def test_same_config_and_seed_same_files(write, servesim, tmp_path):
    path = write("one.yaml", LOAD + MODEL)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert servesim("run", path, "--out", out, "--quiet").rc == 0
    run = pd.read_csv(outs[0] / "results.csv")["run"][0]
    for name in ("requests.parquet", "summary.json", "config.yaml"):
        assert (outs[0] / run / name).read_bytes() == (outs[1] / run / name).read_bytes()


def test_a_trace_config_is_written_as_before(write):
    config = load(write("t.yaml", "trace: {kind: poisson, rate: 100, count: 10}\n" + MODEL))
    assert "load" not in dumped(config)
    assert "trace" not in dumped(load(write("l.yaml", LOAD + MODEL)))


@pytest.mark.parametrize("text, fragment", [
    (MODEL, "trace: required key is missing (or, for clients that wait for their answers, give 'load')"),
    ("trace: {kind: poisson, rate: 100, count: 10}\n" + LOAD + MODEL, "give one of 'trace'"),
    (LOAD + MODEL + "serving: {drop_after_ms: 5}\n", "load: a closed loop is served by one plain model without "
                                                     "drops or a serving host; remove serving.drop_after_ms"),
    ("load: {kind: closed_loop, clients: 0, count: 10}\n" + MODEL, "load.clients:"),
    ("load: {kind: closed_loop, clients: 2}\n" + MODEL, "load: count: give one of count (requests in all) and "
                                                        "duration_s (seconds of sending)"),
    ("load: {kind: closed_loop, clients: 2, count: 10, duration_s: 1}\n" + MODEL, "duration_s (seconds of sending), "
                                                                               "not both"),
    ("load: {kind: closed_loop, clients: 2, duration_s: -1}\n" + MODEL, "load.duration_s:"),
    ("load: {kind: closed_loop, clients: 2, count: 10, client_overhead_ms: 1}\n" + MODEL, "load.client_overhead_ms"),
    ("load: {kind: closed_loop, clients: 2, count: 10, client: {send_ms: -1}}\n" + MODEL, "load.client.send_ms:"),
    ("load: {kind: closed_loop, clients: 2, count: 10, client: from_csv}\n" + MODEL,
     "load.client: expected 'from_profile', {send_ms, network_ms, recv_ms} or {samples: PATH}, got 'from_csv'"),
    ("load: {kind: closed_loop, clients: 2, count: 10, client: from_profile}\n" + MODEL,
     "load.client: from_profile: "),
    ("load: {kind: closed, clients: 2, count: 10}\n" + MODEL, "load: kind 'closed'"),
    ("load: {kind: request_rate, rate: 10, count: 10}\n" + MODEL, "load.max_outstanding: required key is missing"),
    ("load: {kind: request_rate, rate: 10, max_outstanding: 2, count: 10, arrival: gamma}\n" + MODEL,
     "load.arrival:"),
    ("load: {kind: closed_loop, clients: 2, count: 10, think: {kind: exponential}}\n" + MODEL,
     "load.think: mean_ms: think kind 'exponential' needs its mean_ms (> 0)"),
    ("load: {kind: closed_loop, clients: 2, count: 10, think: {kind: zero, mean_ms: 3}}\n" + MODEL,
     "load.think: mean_ms: think kind 'zero' takes no mean_ms"),
    ("load: {kind: closed_loop, clients: 2, count: 10, size: 4}\n" + MODEL,
     "load.size: requests of 4 items could never be served in batches of at most 1 items"),
    (LOAD + MODEL + "serving: {batching: {policy: fixed, batch_size: 8}}\n",
     "serving.batching.batch_size: 4 clients of 1 item(s) can never fill a fixed batch of 8 items"),
])
def test_what_a_closed_loop_cannot_be_is_one_line(text, fragment, write, servesim):
    path = write("bad.yaml", text)
    result = servesim("check", path)
    assert result.rc == 2 and "Traceback" not in result.err
    assert len(result.err_lines) == 1, result.err
    assert fragment in result.err_lines[0] and str(path) in result.err_lines[0]


RATE = """\
load: {kind: request_rate, rate: 300, arrival: poisson, max_outstanding: 2, count: 600, client: {send_ms: 0.5}}
serving: {batching: {policy: dynamic, max_batch: 8}}
sweep:
  load.rate: [50, 3000]
""" + MODEL


def test_a_request_rate_run_writes_what_its_clients_see_to_results_csv(write, servesim, tmp_path):
    out = tmp_path / "out"
    result = servesim("run", write("rate.yaml", RATE), "--out", out, "--quiet")
    assert result.rc == 0, result.err
    rows = pd.read_csv(out / "results.csv")
    for _, row in rows.iterrows():
        summary = json.loads((out / row["run"] / "summary.json").read_text())
        view = summary["closed_loop"]
        assert summary["trace"].startswith(f"request rate: poisson {row['load.rate']:g} req/s, at most 2 outstanding")
        assert view["request_rate"]["max_outstanding"] == summary["clients"] == 2
        # results.csv's client columns are the summary's closed_loop block, figure for figure
        assert row["client_throughput_rps"] == pytest.approx(view["throughput_rps"])
        for q in (50, 90, 95, 99):
            assert row[f"client_p{q}_ms"] == pytest.approx(view["latency_ms"][f"p{q}"])
        assert row["client_mean_ms"] == pytest.approx(row["latency_mean_ms"] + 0.5, abs=1e-5)
        assert row["queue_ms"] + row["compute_ms"] == pytest.approx(row["latency_mean_ms"], abs=1e-5)
        assert (row["client_send_ms"], row["network_ms"], row["client_recv_ms"]) == (0.5, 0, 0)
        assert row["request_rate"] == row["load.rate"] and row["clients"] == 2
    slow, fast = (json.loads((out / run / "summary.json").read_text())["closed_loop"] for run in rows["run"])
    # at 50 req/s two slots are never short; at 3000 req/s (above what 2 outstanding can carry) most sends wait
    assert slow["request_rate"]["delayed_share"] < 0.05 < 0.5 < fast["request_rate"]["delayed_share"]
    assert fast["throughput_rps"] < 3000 * 0.8


def test_an_open_loop_results_csv_has_no_client_columns(write, servesim, tmp_path):
    out = tmp_path / "out"
    assert servesim("run", write("t.yaml", "trace: {kind: poisson, rate: 100, count: 50}\n" + MODEL),
                    "--out", out, "--quiet").rc == 0
    columns = set(pd.read_csv(out / "results.csv").columns)
    assert "latency_p99_ms" in columns and not columns & {"client_throughput_rps", "client_p99_ms", "queue_ms"}
