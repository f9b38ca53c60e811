"""The price table (``resources:``): a replica holds units of a named resource, is costed
only by its own hardware's profile rows, and a run reports resource-seconds and money."""

from __future__ import annotations

import json

import pandas as pd
import pytest

PRICED = """\
name: priced
trace: {kind: poisson, rate: 500, count: 300}
model: {profile: "builtin:cpu_mlp", name: mlp3}
resources:
  cpu-core: {kind: cores, hardware: cpu, price_per_s: 0.25}
  h100: {kind: gpu, hardware: h100, price_per_s: 0.001}
serving: {replicas: 2, resource: cpu-core}
"""

CLUSTER = """\
name: priced-cluster
trace: {kind: poisson, rate: 5, duration: 30}
resources:
  core: {kind: cores, hardware: cpu, price_per_s: 0.5}
  h100: {kind: gpu, hardware: h100, price_per_s: 0.001}
cluster:
  pipeline: classification
  profile: builtin:cpu_video
  initial: {classification: [{variant: resnet18, replicas: 2, cores: 2}]}
  adapter: static
  resource: core
"""


def _summary(out):
    [path] = list(out.glob("*/summary.json"))
    return json.loads(path.read_text())


def test_a_single_model_run_costs_its_replicas_resource_seconds(write, servesim, tmp_path):
    rc, _, err = servesim("run", write("p.yaml", PRICED), "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err
    cost = _summary(tmp_path / "out")["cost"]
    assert cost["resource"] == "cpu-core"
    assert cost["resource_s"] == pytest.approx(cost["provisioned_accelerator_s"])  # one unit per replica
    assert cost["money"] == pytest.approx(0.25 * cost["resource_s"], rel=1e-6)
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert results["cost_money"].iloc[0] == pytest.approx(cost["money"])


def test_a_cluster_run_costs_its_core_seconds(write, servesim, tmp_path):
    rc, _, err = servesim("run", write("c.yaml", CLUSTER), "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err
    cost = _summary(tmp_path / "out")["cost"]
    assert cost["resource_s"] == pytest.approx(cost["core_s"])
    assert cost["money"] == pytest.approx(0.5 * cost["core_s"], rel=1e-6)
    assert cost["peak_cores"] == 4


@pytest.mark.parametrize("text, change, message", [
    (PRICED, ("resource: cpu-core", "resource: h100"),
     "serving.resource: resource 'h100' is hardware 'h100', but the profile measured 'mlp3' on cpu; a replica's "
     "service time must come from its own hardware's profile"),
    (PRICED, ("resource: cpu-core", "resource: a100"),
     "serving.resource: no resource 'a100' in the price table 'resources' (it has: cpu-core, h100)"),
    (PRICED, ("price_per_s: 0.25", "price_per_s: -1"), "resources.cpu-core.price_per_s"),
    (CLUSTER, ("resource: core", "resource: h100"),
     "cluster.resource: resource 'h100' is hardware 'h100', but the profile measured 'resnet18' on cpu-1c, cpu-2c"),
    (CLUSTER, ("hardware: cpu, price_per_s: 0.5", "hardware: cpu-9c, price_per_s: 0.5"),
     "cluster.resource: resource 'core' is hardware 'cpu-9c', but the profile measured"),
])
def test_resources_that_do_not_fit_are_named(write, servesim, text, change, message):
    result = servesim("check", write("bad.yaml", text.replace(*change)))
    assert result.rc == 2 and message in result.err, result.err


# A GPU-costed ResNet family, by hand: every variant on one H100 (2 ms + 0.5 ms per item)
# and on one CPU core (100 times slower), so the rows a run used are plain to see.
GPU_MS = {"resnet18": 1.0, "resnet34": 1.5, "resnet50": 2.0, "resnet101": 3.0, "resnet152": 4.0}


def gpu_profile() -> str:
    rows = ["hardware,model,stage,batch_size,latency_p50_ms,latency_p90_ms,latency_p99_ms,repeats"]
    for model, ms in GPU_MS.items():
        for b in (1, 2, 4, 8):
            for hardware, scale in (("h100", 1), ("cpu-1c", 100)):
                lat = scale * ms * (1 + 0.25 * (b - 1))
                rows.append(f"{hardware},{model},forward,{b},{lat},{lat},{lat},20")
        rows.append(f"h100,{model}_load,load,1,2000,2000,2000,3")
    return "# device: test\n# dtype: float16\n# framework: none\n# date: 2026-12-06\n# execution_mode: eager\n" \
        + "\n".join(rows) + "\n"


GPU_CLUSTER = """\
name: gpus
slo_ms: 100
trace: {kind: poisson, rate: 20, duration: 60}
resources:
  h100: {kind: gpu, hardware: h100, price_per_s: 0.002}
cluster:
  pipeline: classification
  profile: profile.csv
  initial: {classification: [{variant: resnet50, replicas: 1, cores: 2}]}
  adapter: static
  resource: h100
"""


def test_a_cluster_of_gpus_is_costed_by_the_gpu_rows_and_priced_per_gpu_second(write, servesim, tmp_path):
    (tmp_path / "profile.csv").write_text(gpu_profile())
    rc, _, err = servesim("run", write("g.yaml", GPU_CLUSTER), "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err
    summary = _summary(tmp_path / "out")
    # 20 req/s on two H100 lanes at 2 ms: requests rarely queue, so the median is the
    # GPU's batch-1 time, not the CPU row's 200 ms
    assert summary["latency_ms"]["p50"] == pytest.approx(2.0, rel=0.05)
    cost = summary["cost"]
    assert cost["peak_cores"] == 2 and cost["resource_s"] == pytest.approx(2 * summary["duration_s"], rel=1e-6)
    assert cost["money"] == pytest.approx(0.002 * cost["resource_s"], rel=1e-6)


def test_gpus_serve_as_lanes(write, servesim, tmp_path):
    (tmp_path / "profile.csv").write_text(gpu_profile())
    result = servesim("check", write("g.yaml", GPU_CLUSTER.replace("  resource: h100", "  resource: h100\n"
                                                                                       "  core_mode: threads")))
    assert result.rc == 2
    assert "cluster.core_mode: a replica's gpu devices serve as lanes, one batch per device" in result.err


SHARED = GPU_CLUSTER.replace("h100: {kind: gpu, hardware: h100, price_per_s: 0.002}",
                             "h100: {kind: gpu, hardware: h100, price_per_s: 0.002}\n"
                             "  h100-mps: {kind: share, hardware: h100, slowdown: 1.5, price_per_s: 0.0007}")


def test_a_time_shared_gpu_runs_the_gpu_rows_its_measured_slowdown_slower(write, servesim, tmp_path):
    """A replica on an MPS share of an H100 measured 1.5 times slower: the cluster's
    median is 1.5 x the H100's 2 ms, and so is a single model's; its load time is not slowed."""
    (tmp_path / "profile.csv").write_text(gpu_profile())
    rc, _, err = servesim("run", write("c.yaml", SHARED.replace("resource: h100", "resource: h100-mps")),
                          "--out", tmp_path / "cluster", "--quiet")
    assert rc == 0, err
    assert _summary(tmp_path / "cluster")["latency_ms"]["p50"] == pytest.approx(3.0, rel=0.05)
    single = """\
name: one
trace: {kind: poisson, rate: 20, count: 400}
model: {profile: profile.csv, name: resnet50, hardware: h100}
resources:
  h100-mps: {kind: share, hardware: h100, slowdown: 1.5, price_per_s: 0.0007}
serving: {resource: h100-mps}
"""
    rc, _, err = servesim("run", write("s.yaml", single), "--out", tmp_path / "single", "--quiet")
    assert rc == 0, err
    summary = _summary(tmp_path / "single")
    assert summary["latency_ms"]["p50"] == pytest.approx(3.0, rel=0.02)
    assert summary["cost"]["money"] == pytest.approx(0.0007 * summary["cost"]["resource_s"], rel=1e-6)


@pytest.mark.parametrize("entry", ["{kind: share, hardware: h100, price_per_s: 0.001}",
                                   "{kind: gpu, hardware: h100, slowdown: 2, price_per_s: 0.001}",
                                   "{kind: share, hardware: h100, slowdown: 0.5, price_per_s: 0.001}"])
def test_a_share_and_only_a_share_has_a_measured_slowdown(write, servesim, tmp_path, entry):
    (tmp_path / "profile.csv").write_text(gpu_profile())
    result = servesim("check", write("c.yaml", GPU_CLUSTER.replace(
        "h100: {kind: gpu, hardware: h100, price_per_s: 0.002}", f"h100: {entry}")))
    assert result.rc == 2 and "resources.h100" in result.err and "slowdown" in result.err, result.err
