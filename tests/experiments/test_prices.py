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
     "cluster.resource: a cluster's replicas hold CPU cores; resource 'h100' is of kind 'gpu'"),
    (CLUSTER, ("hardware: cpu, price_per_s: 0.5", "hardware: cpu-9c, price_per_s: 0.5"),
     "cluster.resource: resource 'core' is hardware 'cpu-9c', but the profile measured"),
])
def test_resources_that_do_not_fit_are_named(write, servesim, text, change, message):
    result = servesim("check", write("bad.yaml", text.replace(*change)))
    assert result.rc == 2 and message in result.err, result.err
