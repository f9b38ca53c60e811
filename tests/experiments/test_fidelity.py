"""``servesim fidelity`` end to end on the torch digits model (a fraction of a second of
real serving): both runs happen on the same requests, and the table and plots exist."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("torch")

from servesim.sim.real import RUN  # noqa: E402
from servesim.workloads import load_profile  # noqa: E402

FIDELITY = """\
name: fid
trace: {kind: poisson, rate: 800, duration: 0.4}
model: {profile: "builtin:cpu_digits_torch_ee", name: digits_torch_ee}
serving:
  batching: {policy: dynamic, max_batch: 4}
exits:
  ramps: {block1: ramp1, block2: ramp2, block3: ramp3}
  behaviour: {kind: builtin, name: digits_torch_ee}
  policy: {name: confidence, threshold: 0.9}
real: {model: digits_torch_ee}
"""


def test_fidelity_runs_both_on_the_same_requests(write, servesim, tmp_path):
    path = write("fid.yaml", FIDELITY)
    result = servesim("fidelity", path, "--out", tmp_path / "out")
    assert result.rc == 0, result.err
    table = pd.read_csv(tmp_path / "out" / "fidelity.csv")
    assert len(table) == 1
    row = table.iloc[0]
    for name in ("p50", "p90", "p99", "throughput"):
        assert row[f"real_{name}"] > 0 and row[f"sim_{name}"] > 0
        assert row[f"{name}_rel_error"] == pytest.approx(row[f"sim_{name}"] / row[f"real_{name}"] - 1, abs=1e-6)
    run = tmp_path / "out" / row["run"]
    sim, real = (pd.read_parquet(run / f"{k}_requests.parquet") for k in ("sim", "real"))
    assert sim["arrival"].equals(real["arrival"]) and sim["sample"].equals(real["sample"])
    # the same policy on the same confidences: the same exits in both
    assert (sim["exit_stage"] == real["exit_stage"]).mean() > 0.99
    assert (run / "latency_cdf_sim_vs_real.png").stat().st_size > 10_000


def test_fidelity_needs_a_real_section(write, servesim):
    path = write("nofid.yaml", FIDELITY.replace("real: {model: digits_torch_ee}\n", ""))
    result = servesim("fidelity", path)
    assert result.rc == 2 and "real: a fidelity run needs a 'real:' section" in result.err


def test_calibrate_costs_each_point_by_a_profile_measured_around_its_real_run(write, servesim, tmp_path):
    config = (FIDELITY.replace("builtin:cpu_digits_torch_ee", "builtin:cpu_digits_torch_ee_served")
              .replace("real: {model: digits_torch_ee}",
                       "  host: digits_torch_ee_host\n"
                       "real: {model: digits_torch_ee, calibrate: true, calibrate_rounds: 3, repeats: 2}"))
    result = servesim("fidelity", write("cal.yaml", config), "--out", tmp_path / "out")
    assert result.rc == 0, result.err
    row = pd.read_csv(tmp_path / "out" / "fidelity.csv").iloc[0]
    run = tmp_path / "out" / row["run"]
    # two real runs: the error is against their median, and their range is reported
    assert (run / "real_requests.parquet").exists() and (run / "real_requests_2.parquet").exists()
    for name in ("p50", "p99"):
        assert row[f"real_{name}_min"] <= row[f"real_{name}"] <= row[f"real_{name}_max"]
    profile = load_profile(run / "served_profile.csv")
    assert set(profile.models()) == {"digits_torch_ee", "digits_torch_ee_host"}
    assert "just before and as many just after each of the 2 real run(s)" in profile.metadata["repeats"]
    # four halves pooled, each 3 rounds of RUN bursts per size (those that came out clean),
    # the sizes drawn in the proportions of the simulated batches, so most are of 1. A
    # loaded machine spoils bursts that overrun (at load 4 on 2 cores, once every burst of
    # 3): the pooled count has a ceiling, and only the commonest size a floor. A replay with
    # fewer than half its bursts clean runs again and its clean bursts are added, so a half
    # keeps fewer than 1.5 times its scheduled bursts (measure_served).
    totals = {r.batch_size: r.repeats for r in profile.rows if r.model == "digits_torch_ee_host" and r.stage == "total"}
    assert set(totals) <= {1, 2, 3, 4} and totals.get(1) == max(totals.values())
    assert sum(totals.values()) < 4 * 1.5 * (3 * 4 * RUN)
