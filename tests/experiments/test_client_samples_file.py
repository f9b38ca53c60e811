"""``load.client: {samples: PATH}``: a closed loop's client costs drawn from a file of
measured requests (workloads/client_samples.py), its one-line errors, and the shipped one."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from servesim.workloads import PROFILES_DIR
from servesim.workloads.client_samples import (CLIENT_COLUMNS, clients_path, read_client_samples,
                                               write_client_samples)
from servesim.workloads.profile import profiles_in

MODEL = 'model: {profile: "builtin:cpu_mlp", name: mlp3}\n'
SERVING = "serving: {batching: {policy: dynamic, max_batch: 8, max_wait_ms: 1}}\n"
SAMPLES = """\
# measured: by hand, for a test
send_ms,network_ms,recv_ms
0.010,0.020,0.030
0.020,0.040,3.000
0.000,0.030,0.050
"""
SHIPPED = clients_path(PROFILES_DIR / "cpu_resnet18_32_whole.csv")


def config(client: str = "{samples: clients.csv}", kind: str = "kind: closed_loop, clients: 4, count: 600") -> str:
    return f"load: {{{kind}, client: {client}}}\n" + MODEL + SERVING


def test_written_samples_read_back_to_the_nanosecond(tmp_path):
    path = tmp_path / "x.clients.csv"
    columns = {"send_ms": [0.0012345678, 0.0], "network_ms": [0.04, 1.5], "recv_ms": [4.0359681, 0.05]}
    write_client_samples(path, columns, {"measured": "by a test", "date": "today"})
    read, metadata = read_client_samples(path)
    assert metadata == {"measured": "by a test", "date": "today"}
    for name in CLIENT_COLUMNS:
        assert np.allclose(read[name], columns[name], rtol=0, atol=5e-7), name
    assert not list(tmp_path.glob(".*"))  # written atomically: nothing half-written left


def test_a_run_draws_its_clients_costs_from_the_file_and_is_the_same_each_time(write, servesim, tmp_path):
    write("clients.csv", SAMPLES)
    path = write("run.yaml", config())
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert servesim("run", path, "--out", out, "--quiet").rc == 0
    run = pd.read_csv(outs[0] / "results.csv")["run"][0]
    for name in ("requests.parquet", "summary.json"):
        assert (outs[0] / run / name).read_bytes() == (outs[1] / run / name).read_bytes()
    split = json.loads((outs[0] / run / "summary.json").read_text())["closed_loop"]["split_ms"]
    # each request drew one of the three rows: the means lie within the rows' range, and
    # one in three draws the 3 ms receive (600 draws: within 5 standard errors of 1.027 ms)
    assert 0 <= split["client_send"] <= 0.02 and 0.02 <= split["network"] <= 0.04
    assert split["client_recv"] == pytest.approx((0.03 + 3.0 + 0.05) / 3, abs=5 * 1.4 / 600 ** 0.5)


@pytest.mark.parametrize("text, fragment", [
    (SAMPLES.replace("3.000", "-3"), "clients.csv line 4, column recv_ms: '-3' is not a finite number >= 0 (ms)"),
    (SAMPLES.replace("0.040", "fast"), "clients.csv line 4, column network_ms: 'fast' is not a finite number >= 0"),
    (SAMPLES.replace("0.000,0.030,0.050", "0.000,0.030"), "clients.csv line 5: 2 values for the 3 columns"),
    (SAMPLES.replace("send_ms,", "sent_ms,"), "clients.csv line 2: the header must be send_ms,network_ms,recv_ms"),
    ("send_ms,network_ms,recv_ms\n", "clients.csv: no measured requests after the header"),
    ("# only: a comment\n", "clients.csv: no header line"),
])
def test_a_bad_samples_file_is_one_line_naming_file_line_column_and_value(text, fragment, write, servesim):
    write("clients.csv", text)
    path = write("bad.yaml", config())
    result = servesim("check", path)
    assert result.rc == 2 and "Traceback" not in result.err and len(result.err_lines) == 1, result.err
    assert str(path) in result.err and "load.client: " in result.err and fragment in result.err, result.err


@pytest.mark.parametrize("client, kind, fragment", [
    ("{samples: nowhere.csv}", None, "nowhere.csv: cannot read client samples ([Errno 2] No such file"),
    ("{samples: clients.csv, recv_ms: 0.1}", None, "recv_ms: the costs come from samples or are given, not both"),
    ("{samples: clients.csv, from_profile: true}", None,
     "samples: the costs come from the profile (from_profile) or from samples, not both"),
    (None, "kind: request_rate, rate: 100, max_outstanding: 2, count: 50",
     "a request rate's client costs are fixed (constants or from_profile)"),
])
def test_what_samples_cannot_be_is_one_line(client, kind, fragment, write, servesim):
    write("clients.csv", SAMPLES)
    path = write("bad.yaml", config(client or "{samples: clients.csv}", kind or "kind: closed_loop, clients: 2, "
                                                                              "count: 10"))
    result = servesim("check", path)
    assert result.rc == 2 and len(result.err_lines) == 1 and fragment in result.err, result.err


def test_the_shipped_samples_are_a_measurement_and_no_profile():
    columns, metadata = read_client_samples(SHIPPED)
    # profile-served --repeats 50 measures 20 x 50 requests of one client alone, less the first tenth
    assert len(columns["recv_ms"]) == 900
    assert {"measured", "how", "date", "device", "load_average"} <= set(metadata)
    assert "profile-served --model resnet18_32 --whole" in metadata["how"]
    assert SHIPPED not in profiles_in(PROFILES_DIR) and SHIPPED.with_name(SHIPPED.name.replace(".clients", "")) \
        in profiles_in(PROFILES_DIR)
