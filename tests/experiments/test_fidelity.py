"""``servesim fidelity`` end to end on the torch digits model (a fraction of a second of
real serving): both runs happen on the same requests, and the table and plots exist."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("torch")

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
