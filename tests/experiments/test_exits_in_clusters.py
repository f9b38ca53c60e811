"""``cluster.exits``: a variant of a cluster served with exits, from the YAML on.

A tiny GPU profile written here (the ``classification_gpu`` menu: vgg13 and resnet50 on
``h100``, resnet50 also with one ramp as ``resnet50_ee``) keeps every run a second long.
The checks: a run with exits reports accuracy from the answers, agreement and where
requests left, and its per-request table has the exit columns; the exit-aware InfAdapter
plans fewer GPUs than InfAdapter on the same arrivals, behaviour and exits; a run
repeats exactly; every misuse of the new keys is one error line naming the key; T-Tamer,
Apparate's controller, BranchyNet's thresholds and a cascade each serve a variant.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from servesim.experiments import store

METADATA = "\n".join(f"# {k}: {v}" for k, v in {"device": "test GPU", "dtype": "fp16", "framework": "none",
                                                 "date": "2026-12-06", "execution_mode": "cudagraph"}.items())
# ms per stage at batch sizes 1, 2, 4
STAGES = {"vgg13": {"all": (0.5, 0.6, 0.8)},
          "resnet50": {"stage1": (0.3, 0.35, 0.45), "stage2": (0.7, 0.8, 1.0)},
          "resnet50_ee": {"stage1": (0.3, 0.35, 0.45), "ramp1": (0.05, 0.05, 0.06), "stage2": (0.7, 0.8, 1.0)}}


def profile_text(hardware: tuple[str, ...] = ("h100",)) -> str:
    rows = [f"{hw},{model},{stage},{b},{ms},{ms},{ms},10" for hw in hardware for model, stages in STAGES.items()
            for stage, times in stages.items() for b, ms in zip((1, 2, 4), times)]
    return METADATA + "\nhardware,model,stage,batch_size,latency_p50_ms,latency_p90_ms,latency_p99_ms,repeats\n" \
        + "\n".join(rows) + "\n"


EXITS = ("{model: resnet50_ee, ramps: {stage1: ramp1}, policy: {name: confidence, threshold: 0.8},\n"
         "              behaviour: {kind: synthetic, accuracy: [0.6, 0.7613], persistence: 0.9, n_classes: 1000}}")
EXPERIMENT = f"""\
name: gpu-exits
seeds: [1]
slo_ms: 20
trace: {{kind: poisson, rate: 1500, duration: 10}}
resources:
  h100: {{kind: gpu, hardware: h100, price_per_s: 0.001}}
cluster:
  pipeline: classification_gpu
  profile: profile.csv
  resource: h100
  load_times_s: {{vgg13: 2, resnet50: 2}}
  initial: {{classification: [{{variant: resnet50, cores: 3}}]}}
  adapter: {{name: infadapter, budget: 4, min_cores: 1, capacity_slo_ms: 20, interval_s: 10}}
  exits:
    resnet50: {EXITS}
"""


def _runs(out):
    results = pd.read_csv(out / "results.csv")
    return results, {r: json.loads((out / r / "summary.json").read_text()) for r in results["run"]}


def test_a_variant_with_exits_reports_its_answers_and_where_they_left(write, servesim, tmp_path):
    (tmp_path / "profile.csv").write_text(profile_text())
    path = write("e.yaml", EXPERIMENT.replace("{name: infadapter, budget: 4, min_cores: 1, capacity_slo_ms: 20, "
                                              "interval_s: 10}", "static"))
    result = servesim("run", path, "--out", tmp_path / "out", "--quiet")
    assert result.rc == 0, result.err
    results, summaries = _runs(tmp_path / "out")
    (summary,) = summaries.values()
    share = summary["exits"]["classification"]["resnet50"]["share"]
    assert set(share) == {"ramp1", "final"} and 0.05 < share["ramp1"] < 0.95
    assert sum(share.values()) == pytest.approx(1)
    requests = pd.read_parquet(tmp_path / "out" / results["run"][0] / store.REQUESTS)
    left = requests["exit_stage_classification"]
    assert (left >= 0).all() and set(left) == {0, 1}
    # accuracy and agreement are the answers' own; only early answers can disagree with the final exit
    assert results["accuracy"][0] == pytest.approx(requests["correct_classification"].mean())
    assert results["agreement"][0] == pytest.approx(requests["agrees_classification"].mean())
    assert requests.loc[left == 1, "agrees_classification"].all()
    assert 0.5 < requests.loc[left == 0, "agrees_classification"].mean() < 1


def test_the_exit_aware_infadapter_plans_fewer_gpus_on_the_same_arrivals_and_exits(write, servesim, tmp_path):
    (tmp_path / "profile.csv").write_text(profile_text())
    path = write("e.yaml", EXPERIMENT.replace("duration: 10", "duration: 20") + """\
sweep:
  cluster.adapter:
    - {name: infadapter, budget: 4, min_cores: 1, capacity_slo_ms: 20, interval_s: 10}
    - {name: infadapter_exits, budget: 4, min_cores: 1, capacity_slo_ms: 20, interval_s: 10}
""")
    result = servesim("run", path, "--out", tmp_path / "out", "--quiet")
    assert result.rc == 0, result.err
    results, _ = _runs(tmp_path / "out")
    plain, aware = results.set_index("adapter").loc[["infadapter", "infadapter_exits"]].to_dict("records")
    assert aware["cost"] < plain["cost"]  # GPU-seconds: the exits' freed capacity is planned away
    assert plain["slo_violation_rate"] == aware["slo_violation_rate"] == 0


def test_a_run_with_exits_repeats_exactly(write, servesim, tmp_path):
    (tmp_path / "profile.csv").write_text(profile_text())
    path = write("e.yaml", EXPERIMENT)
    for out in ("a", "b"):
        assert servesim("run", path, "--out", tmp_path / out, "--quiet").rc == 0
    first, second = (pd.read_parquet(next((tmp_path / out).glob("*/" + store.REQUESTS))) for out in ("a", "b"))
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("change, message", [
    (("    resnet50: {model", "    resnet18: {model"),
     "cluster.exits.resnet18: pipeline 'classification_gpu' has no variant 'resnet18'; its variants: vgg13, resnet50"),
    (("model: resnet50_ee", "model: resnet50_xx"), "cluster.exits.resnet50.model: 'resnet50_xx' is not in"),
    (("ramps: {stage1: ramp1}", "ramps: {stage1: ramp9}"), "cluster.exits.resnet50.ramps: "),
    (("accuracy: [0.6, 0.7613]", "accuracy: [0.6, 0.9]"),
     "cluster.exits.resnet50.behaviour: its final exit scores 0.8950 on 20000 samples, but the menu gives "
     "'resnet50' 0.7613"),
    (("accuracy: [0.6, 0.7613]", "accuracy: [0.6, 0.7613, 0.8]"),
     "cluster.exits.resnet50.behaviour: the table synthetic"),
    (("name: infadapter,", "name: infadapter_exits,"), None),
])
def test_cluster_exit_errors_name_the_key(write, servesim, tmp_path, change, message):
    (tmp_path / "profile.csv").write_text(profile_text())
    result = servesim("check", write("bad.yaml", EXPERIMENT.replace(*change)))
    if message is None:  # a well-formed change: it checks
        assert result.rc == 0, result.err
        return
    assert result.rc == 2 and len(result.err_lines) == 1 and message in result.err, result.err


def test_the_exit_aware_infadapter_needs_a_variant_with_exits(write, servesim, tmp_path):
    (tmp_path / "profile.csv").write_text(profile_text())
    text = EXPERIMENT.replace("  exits:\n    resnet50: " + EXITS + "\n", "").replace("name: infadapter,",
                                                                                  "name: infadapter_exits,")
    result = servesim("check", write("bad.yaml", text))
    assert result.rc == 2 and "cluster.adapter: adapter 'infadapter_exits' plans for exits, and no variant" in result.err


def test_a_variant_with_exits_serves_on_lanes(write, servesim, tmp_path):
    """On CPU cores a replica may run its cores as threads of one lane; exits are costed on
    one unit, so a cluster with exits must serve lanes."""
    (tmp_path / "profile.csv").write_text(profile_text(("cpu-1c", "cpu-2c")))
    text = EXPERIMENT.replace("  resource: h100\n", "  core_mode: threads\n").replace(
        "{name: infadapter, budget: 4, min_cores: 1, capacity_slo_ms: 20, interval_s: 10}", "static")
    result = servesim("check", write("bad.yaml", text))
    assert result.rc == 2 and "cluster.exits.resnet50: a variant with exits serves on lanes of one unit each " \
        "(core_mode: lanes), got core_mode 'threads'" in result.err, result.err
    lanes = servesim("check", write("good.yaml", text.replace("  core_mode: threads\n", "")))
    assert lanes.rc == 0, lanes.err


@pytest.mark.parametrize("policy, semantics", [("{name: ttamer, lam: 0.9}", "compute_saving"),
                                               ("apparate", "latency_only"),
                                               ("{name: branchynet}", "compute_saving")])
def test_any_exit_policy_serves_a_cluster_variant(write, servesim, tmp_path, policy, semantics):
    """T-Tamer (fitted offline), Apparate's online controller and BranchyNet's thresholds
    each serve the variant: every request answered at some exit, accuracy from the answers."""
    (tmp_path / "profile.csv").write_text(profile_text())
    text = EXPERIMENT.replace("{name: confidence, threshold: 0.8}", f"{policy}, semantics: {semantics}").replace(
        "{name: infadapter, budget: 4, min_cores: 1, capacity_slo_ms: 20, interval_s: 10}", "static")
    result = servesim("run", write("p.yaml", text), "--out", tmp_path / "out", "--quiet")
    assert result.rc == 0, result.err
    results, summaries = _runs(tmp_path / "out")
    assert results["status"][0] == "ok" and results["completed"][0] == results["requests"][0]
    share = summaries[results["run"][0]]["exits"]["classification"]["resnet50"]
    assert sum(share["share"].values()) == pytest.approx(1)
    assert share["mean_stages_paid"] == (2 if semantics == "latency_only" else pytest.approx(1 + share["share"]["final"]))
    assert 0.6 < results["accuracy"][0] < 0.8


def test_a_cascade_serves_a_cluster_variant(write, servesim, tmp_path):
    """The resnet50 variant served as a cascade: VGG-13 first, ResNet-50 only for the
    requests it is unsure of. Those answered by VGG-13 pay its time alone."""
    (tmp_path / "profile.csv").write_text(profile_text())
    cascade = ("{cascade: [vgg13, resnet50], policy: {name: confidence, threshold: 0.8},\n"
               "              behaviour: {kind: synthetic, accuracy: [0.69928, 0.7613], persistence: 0.9, n_classes: 1000}}")
    text = EXPERIMENT.replace(EXITS, cascade).replace(
        "{name: infadapter, budget: 4, min_cores: 1, capacity_slo_ms: 20, interval_s: 10}", "static")
    result = servesim("run", write("c.yaml", text), "--out", tmp_path / "out", "--quiet")
    assert result.rc == 0, result.err
    results, summaries = _runs(tmp_path / "out")
    exits = summaries[results["run"][0]]["exits"]["classification"]["resnet50"]
    assert set(exits["share"]) == {"vgg13", "resnet50"} and 0.05 < exits["share"]["vgg13"] < 0.95
    requests = pd.read_parquet(tmp_path / "out" / results["run"][0] / store.REQUESTS)
    first = requests["exit_stage_classification"] == 0
    assert (requests.loc[first, "stages_paid_classification"] == 1).all()
    assert (requests.loc[~first, "stages_paid_classification"] == 2).all()
