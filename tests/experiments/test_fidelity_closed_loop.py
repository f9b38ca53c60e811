"""``servesim fidelity`` of a closed loop end to end, on the torch digits MLP served whole
(batches of a fraction of a millisecond): a profile measured in isolation by
``servesim profile-served --whole``, then real clients against 1 and 2 real instances
beside the simulation of the same, a few hundred requests each."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("torch")

from servesim.workloads import load_profile  # noqa: E402
from servesim.workloads.client_samples import clients_path, read_client_samples  # noqa: E402
from servesim.workloads.contention import contention_path  # noqa: E402

CONFIG = """\
name: fidcl
warmup_s: 0.01
load: {{kind: closed_loop, clients: 4, count: 240, client: {{send_ms: 0.002, network_ms: 0.02, recv_ms: 0.03}}}}
model: {{profile: "{profile}", name: digits_torch_ee}}
serving:
  batching: {{policy: dynamic, max_batch: 4, max_wait_ms: 0.5}}
real: {{model: digits_torch_ee, threads: 1{real}}}
sweep:
  serving.instances: [1, 2]
"""
FIGURES = ("p50", "p90", "p99", "mean", "throughput", "client_send_ms", "queue_ms", "compute_ms", "client_recv_ms",
           "mean_batch")


@pytest.fixture(scope="module")
def whole_profile(tmp_path_factory):
    """The digits model's whole-model profile and contention table, measured in isolation."""
    from servesim.experiments.profile_served import main

    out = tmp_path_factory.mktemp("profile") / "digits_whole.csv"
    assert main(["--model", "digits_torch_ee", "--whole", "--instances", "2", "--batch-sizes", "1,2,3,4",
                 "--repeats", "5", "--warmup", "1", "--out", str(out)]) == 0
    return out


def test_the_whole_profile_has_the_model_its_contention_and_the_clients_costs(whole_profile):
    profile = load_profile(whole_profile)
    assert profile.models() == ("digits_torch_ee",)
    assert sorted(row.batch_size for row in profile.rows) == [1, 2, 3, 4]
    table = profile.contention[("cpu", "digits_torch_ee")]
    assert table.max_instances == 2 and table.sizes == (1, 2, 3, 4)
    assert "send_ms" in profile.metadata["client"] and contention_path(whole_profile).exists()
    columns, metadata = read_client_samples(clients_path(whole_profile))  # every measured request beside it
    # 200 requests of one client alone against the model (20 per timed call, at least 200), less the first tenth
    assert len(columns["recv_ms"]) == 180 and "--whole --instances 2" in metadata["how"]
    assert "one instance of the model, alone" in metadata["measured"]


def test_a_closed_loop_fidelity_row_has_every_figure(write, servesim, tmp_path, whole_profile):
    path = write("fidcl.yaml", CONFIG.format(profile=whole_profile, real=", repeats: 2"))
    result = servesim("fidelity", path, "--out", tmp_path / "out")
    assert result.rc == 0, result.err
    table = pd.read_csv(tmp_path / "out" / "fidelity.csv")
    assert list(table["serving.instances"]) == [1, 2]
    for _, row in table.iterrows():
        for name in FIGURES:
            assert row[f"sim_{name}"] >= 0 and row[f"real_{name}"] > 0, name  # (no queue in the sim: 0)
            assert row[f"real_{name}_min"] <= row[f"real_{name}"] <= row[f"real_{name}_max"]
            assert row[f"{name}_rel_error"] == pytest.approx(row[f"sim_{name}"] / row[f"real_{name}"] - 1, abs=1e-6)
        # the simulation's client costs are the config's
        assert row["sim_client_send_ms"] == pytest.approx(0.002) and row["sim_client_recv_ms"] == pytest.approx(0.03)
        run = tmp_path / "out" / row["run"]
        real = pd.read_parquet(run / "real_requests_2.parquet")
        assert len(real) == 240 and {"client", "sent", "received"} <= set(real.columns)
        assert len(pd.read_parquet(run / "sim_requests.parquet")) == 240
        assert (run / "latency_cdf_sim_vs_real.png").stat().st_size > 10_000


def test_calibrate_measures_the_point_in_isolation_before_its_real_runs(write, servesim, tmp_path, whole_profile):
    config = CONFIG.format(profile=whole_profile, real=", calibrate: true, calibrate_rounds: 3")
    result = servesim("fidelity", write("cal.yaml", config.replace("[1, 2]", "[2]")), "--out", tmp_path / "out")
    assert result.rc == 0, result.err
    row = pd.read_csv(tmp_path / "out" / "fidelity.csv").iloc[0]
    served = tmp_path / "out" / row["run"] / "served_profile.csv"
    profile = load_profile(served)
    assert sorted(row.batch_size for row in profile.rows) == [1, 2, 3, 4]  # 1..max_batch
    assert ("cpu", "digits_torch_ee") in profile.contention
    # the simulation's client costs are drawn from the requests measured then, not the config's
    assert row["sim_client_send_ms"] != pytest.approx(0.002)
    measured, _ = read_client_samples(served.with_name("served_profile.clients.csv"))
    assert min(measured["send_ms"]) <= row["sim_client_send_ms"] <= max(measured["send_ms"])


@pytest.mark.parametrize("old, new, message", [
    ("clients: 4, count: 240", "clients: 4, duration_s: 1", "load.duration_s: the real clients send a count of requests"),
    ("model: digits_torch_ee,", "model: digits_torch_ee_json,", "real.model: a closed loop's instances serve a whole model"),
    ("policy: dynamic, max_batch: 4, max_wait_ms: 0.5", "policy: fixed, batch_size: 4",
     "serving.batching.policy: the real instances batch dynamically"),
    ("kind: closed_loop, clients: 4, count: 240,", "kind: request_rate, rate: 100, max_outstanding: 4, count: 240,",
     "load.kind: the real clients run a closed loop, not 'request_rate'"),
])
def test_what_the_real_closed_loop_cannot_serve_is_one_line(write, servesim, whole_profile, old, new, message):
    config = CONFIG.format(profile=whole_profile, real=", repeats: 1")
    assert old in config
    result = servesim("fidelity", write("bad.yaml", config.replace(old, new)))
    assert result.rc == 2 and message in result.err and len(result.err.strip().splitlines()) == 1, result.err


def test_a_whole_only_model_is_refused_for_a_trace(write, servesim):
    config = """\
    name: t
    trace: {kind: poisson, rate: 100, duration: 0.1}
    model: {profile: "builtin:cpu_digits_torch_ee", name: digits_torch_ee}
    exits:
      ramps: {block1: ramp1, block2: ramp2, block3: ramp3}
      behaviour: {kind: builtin, name: digits_torch_ee}
      policy: {name: never}
    real: {model: resnet18_32}
    """
    result = servesim("fidelity", write("trace.yaml", config))
    assert result.rc == 2 and "real.model: 'resnet18_32' is served whole by a closed loop's instances only" in result.err


def test_contention_is_measured_for_whole_models_only(servesim, tmp_path):
    result = servesim("profile-served", "--model", "digits_torch_ee", "--instances", "2", "--out", tmp_path / "x.csv")
    assert result.rc == 2 and "--instances 2: contention is measured for whole models (--whole)" in result.err
