"""`servesim profile import --format perf-analyzer | offline-table`: offline latency-per-batch
tables (perf_analyzer's CSV at concurrency 1, published tables) become profiles whose
batch latency is the model's own time, that a run can serve; bad tables are one line."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from servesim.workloads import CostModel, Deterministic, load_profile
from servesim.workloads.offline_tables import request_costs

FLAGS = ["--hardware", "t4", "--model", "r50", "--device", "NVIDIA T4", "--dtype", "fp16",
         "--framework", "tensorrt 8.6", "--date", "2026-12-01", "--execution-mode", "triton"]
PA_HEADER = ("Batch,Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
             "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,"
             "p95 latency,p99 latency")
# perf_analyzer -b B --concurrency-range 1 -f, one row per batch size, in microseconds:
# the parts add up to the mean latency, and throughput x mean / B is about 1.
PA_ROWS = {1: "1,1,350.2,40,600,50,120,2000,30,10,2840,2900,2950,3100",
           4: "4,1,1010.5,60,700,55,300,2800,60,12,3980,4100,4150,4300",
           16: "16,1,2250.0,150,900,60,1000,4800,150,20,7100,7300,7400,7700"}
COMPUTE_MS = {1: 0.120 + 2.000 + 0.030, 4: 0.300 + 2.800 + 0.060, 16: 1.000 + 4.800 + 0.150}
# The offline table of a published page (Markdown, times in ms, no p50)
PUBLISHED = """\
| Precision | Client Batch Size | Inferences/second | P90 Latency | P95 Latency | P99 Latency | Avg Latency |
|:----------|------------------:|------------------:|------------:|------------:|------------:|------------:|
| FP16      |                 1 |             332.4 |       3.065 |       3.093 |       3.189 |       3.003 |
| FP16      |                 8 |               888 |       9.039 |        9.05 |       9.065 |       8.998 |
| FP16      |               128 |              1280 |     102.466 |     102.825 |     103.177 |     100.155 |
"""


@pytest.fixture
def imported(tmp_path, servesim):
    """``imported(text, fmt, name, *flags)``: the profile ``servesim profile import``
    makes of ``text`` written to ``name`` (tmp_path / profile.csv)."""
    def _imported(text: str, fmt: str, name: str = "table.csv", *extra):
        (tmp_path / name).write_text(text)
        out = tmp_path / "profile.csv"
        rc, _, err = servesim("profile", "import", "--format", fmt, tmp_path / name, "--out", out, *FLAGS, *extra)
        assert rc == 0, err
        return load_profile(out)
    return _imported


def perf_analyzer_csv(rows=PA_ROWS.values(), header=PA_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def test_perf_analyzer_batch_latency_is_the_server_compute(tmp_path, imported):
    profile = imported(perf_analyzer_csv(), "perf-analyzer")
    assert profile.models() == ("r50",) and profile.stages("r50") == ("forward",)
    rows = profile.rows_for("r50", "forward")
    assert [r.batch_size for r in rows] == [1, 4, 16]
    # p50 = compute input + infer + output; the tail = the end-to-end tail above its p50
    e2e = {1: (2.840, 2.900, 3.100), 4: (3.980, 4.100, 4.300), 16: (7.100, 7.300, 7.700)}
    for r in rows:
        p50, p90, p99 = e2e[r.batch_size]
        c = COMPUTE_MS[r.batch_size]
        assert (r.latency_p50_ms, r.latency_p90_ms, r.latency_p99_ms) == pytest.approx((c, c + p90 - p50,
                                                                                       c + p99 - p50), abs=1e-9)
    cost = CostModel(profile, "r50", noise=Deterministic())
    assert cost.batch_latency(4) == pytest.approx(COMPUTE_MS[4] / 1e3, abs=1e-12)
    # the request's other parts are kept, by batch size, in ms
    costs = request_costs(load_profile(tmp_path / "profile.csv"))
    assert costs["client_send_ms"] == {1: 0.04, 4: 0.06, 16: 0.15}
    assert costs["network_server_ms"] == {1: 0.6, 4: 0.7, 16: 0.9}
    assert costs["server_queue_ms"][16] == 0.06 and costs["client_recv_ms"][1] == 0.01
    assert costs["compute_infer_ms"] == {1: 2.0, 4: 2.8, 16: 4.8}
    assert "spread is put on the compute" in profile.metadata["service_time"]
    assert profile.metadata["source"].endswith("--format perf-analyzer")


def test_published_table_latency_is_the_end_to_end_one(imported):
    profile = imported(PUBLISHED, "offline-table", "table.md")
    rows = profile.rows_for("r50", "forward")
    assert [(r.batch_size, r.latency_p50_ms, r.latency_p90_ms, r.latency_p99_ms) for r in rows] == [
        (1, 3.003, 3.065, 3.189), (8, 8.998, 9.039, 9.065), (128, 100.155, 102.466, 103.177)]
    assert "mean latency, taken as the median" in profile.metadata["service_time"]
    assert "not_measured" not in profile.metadata and request_costs(profile) == {}


def test_a_missing_percentile_is_said_to_be_unmeasured(imported):
    text = ("Batch Size,Throughput Avg,Latency Avg,Latency 99%\n"
            "1,40 img/s,24.92 ms,31.12 ms\n" "2,80 img/s,24.89 ms,30.81 ms\n" "4,127 img/s,31.58ms,39.64ms\n")
    profile = imported(text, "offline-table")
    assert [(r.latency_p50_ms, r.latency_p90_ms, r.latency_p99_ms) for r in profile.rows_for("r50", "forward")] == [
        (24.92, 24.92, 31.12), (24.89, 24.89, 30.81), (31.58, 31.58, 39.64)]
    assert profile.metadata["not_measured"].startswith("p90: the table does not give")


def test_times_in_another_unit(imported):
    """The same perf_analyzer rows in ms (a page's transcription): by header or --time-unit."""
    in_ms = [",".join([*row.split(",")[:3], *(f"{int(v) / 1000:g}" for v in row.split(",")[3:])])
             for row in PA_ROWS.values()]
    by_flag = imported(perf_analyzer_csv(in_ms), "perf-analyzer", "ms.csv", "--time-unit", "ms")
    header = ",".join(h if i < 3 else f"{h} (ms)" for i, h in enumerate(PA_HEADER.split(",")))
    by_header = imported(perf_analyzer_csv(in_ms, header), "perf-analyzer", "ms2.csv")
    for profile in (by_flag, by_header):
        assert [r.latency_p50_ms for r in profile.rows_for("r50", "forward")] == pytest.approx(
            list(COMPUTE_MS.values()), abs=1e-9)


@pytest.mark.parametrize("fmt, text", [("perf-analyzer", perf_analyzer_csv()), ("offline-table", PUBLISHED)])
def test_a_run_serves_the_imported_profile(tmp_path, imported, servesim, fmt, text):
    """Fixed batches of 8 at deterministic service: each batch takes the profile's
    batch-8 latency, interpolated (perf_analyzer, between 4 and 16) or measured."""
    profile = imported(text, fmt, "table.md" if fmt == "offline-table" else "table.csv")
    expected_ms = CostModel(profile, "r50", noise=Deterministic()).batch_latency(8) * 1e3
    if fmt == "perf-analyzer":
        assert expected_ms == pytest.approx(COMPUTE_MS[4] + (COMPUTE_MS[16] - COMPUTE_MS[4]) * 4 / 12)
    else:
        assert expected_ms == pytest.approx(8.998)
    config = {"name": "offline", "seed": 0, "trace": {"kind": "poisson", "rate": 5000.0, "count": 64},
              "model": {"profile": "profile.csv", "name": "r50", "noise": {"kind": "deterministic"}},
              "serving": {"batching": {"policy": "fixed", "batch_size": 8}}}
    (tmp_path / "offline.yaml").write_text(yaml.safe_dump(config))
    rc, out, err = servesim("run", tmp_path / "offline.yaml", "--out", tmp_path / "runs", "--quiet")
    assert rc == 0, err
    requests = pd.read_parquet(next((tmp_path / "runs").rglob("requests.parquet")))
    assert len(requests) == 64 and (requests["batch_size"] == 8).all()
    assert ((requests["finish"] - requests["start"]) * 1e3).to_numpy() == pytest.approx(expected_ms, rel=1e-9)


def bad_pa(line: int, old: str, new: str) -> str:
    """The perf_analyzer table with ``old`` replaced by ``new`` on file line ``line``."""
    lines = perf_analyzer_csv().splitlines()
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("fmt, text, message", [
    ("perf-analyzer", perf_analyzer_csv(header=PA_HEADER.replace("Server Queue,", "Queue,")),
     "line 1: no column 'server queue'"),
    ("perf-analyzer", perf_analyzer_csv(header=PA_HEADER.replace("Batch,", "Model,")), "line 1: no column 'batch'"),
    ("perf-analyzer", perf_analyzer_csv([PA_ROWS[1], PA_ROWS[4], PA_ROWS[4]]),
     "line 4: column 'Batch' is 4 again (line 3); one row per batch size"),
    ("perf-analyzer", perf_analyzer_csv([PA_ROWS[1], PA_ROWS[16], PA_ROWS[4]]),
     "line 4: column 'Batch' is 4 after 16; rows must be in increasing batch size"),
    ("perf-analyzer", bad_pa(2, ",2000,", ",-2000,"), "line 2: column 'Server Compute Infer' is '-2000'; expected"),
    ("perf-analyzer", bad_pa(3, ",3980,", ",0,"), "line 3: column 'p50 latency' is '0'; expected a number > 0"),
    ("perf-analyzer", bad_pa(2, "1,1,", "1,4,"), "line 2: column 'Concurrency' is '4'; an offline table is measured "
                                                 "at concurrency 1"),
    ("perf-analyzer", bad_pa(2, "1,1,", "0,1,"), "line 2: column 'Batch' is '0'; expected a whole number >= 1"),
    ("perf-analyzer", bad_pa(3, ",4100,", ",3900,"), "line 3: latencies out of order: p50 3.98 ms, p90 3.9 ms"),
    ("perf-analyzer", bad_pa(3, "1010.5", "4010.5"), "line 3: throughput x mean latency / batch size is 4, not 1"),
    ("perf-analyzer", bad_pa(3, ",12,", ",12,7,"), "line 3: 15 values for 14 columns"),
    ("perf-analyzer", perf_analyzer_csv([]), "a header and no rows"),
    ("perf-analyzer", "", "no header line"),
    ("perf-analyzer", perf_analyzer_csv(header=PA_HEADER.replace("Concurrency", "Request Rate")),
     "line 1: a request-rate table ('Request Rate'); only rows measured at concurrency 1"),
    ("perf-analyzer", PUBLISHED, "line 1: no server-side columns"),
    ("perf-analyzer", perf_analyzer_csv(header=PA_HEADER.replace("p90 latency", "p90 latency (min)")),
     "line 1: column 'p90 latency (min)' is in 'min'; expected a time unit"),
    ("offline-table", "Batch Size,Throughput\n1,100\n", "line 1: no latency column"),
    ("offline-table", PUBLISHED.replace(PUBLISHED.splitlines()[4], PUBLISHED.splitlines()[3]),
     "line 5: column 'Client Batch Size' is 8 again (line 4)"),
    ("offline-table", PUBLISHED.replace("9.039", "nan"), "line 4: column 'P90 Latency' is 'nan'; expected a number"),
    ("offline-table", PUBLISHED.replace("3.189", "3.0"), "line 3: latencies out of order"),
    ("offline-table", PUBLISHED.replace("3.189", "3.2 min"), "line 3: column 'P99 Latency' is '3.2 min'"),
    ("offline-table", PUBLISHED.replace("332.4", "332.4 ms"), "line 3: column 'Inferences/second' is '332.4 ms'"),
    ("offline-table", "|---|---|\n", "no header line"),
])
def test_bad_tables_are_one_precise_line(tmp_path, servesim, fmt, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    rc, out, err = servesim("profile", "import", "--format", fmt, path, "--out", tmp_path / "out.csv", *FLAGS)
    lines = err.strip().splitlines()
    assert (rc, out) == (2, "") and len(lines) == 1, (rc, out, err)
    assert "Traceback" not in err and str(path) in lines[0] and message in lines[0], lines[0]
    assert not (tmp_path / "out.csv").exists()


def test_an_offline_format_needs_one_model_name(tmp_path, servesim):
    (tmp_path / "t.csv").write_text(perf_analyzer_csv())
    flags = [f for f in FLAGS if f not in ("--model", "r50")]
    rc, _, err = servesim("profile", "import", "--format", "perf-analyzer", tmp_path / "t.csv", "--out",
                          tmp_path / "o.csv", *flags)
    assert rc == 2 and "--model NAME" in err and not (tmp_path / "o.csv").exists()
