"""A cluster experiment end to end through the CLI: ``servesim run`` on a ``cluster:``
YAML sweeping adapters over one trace, then ``servesim plot``; and its config errors.

The profile is written here, by hand, so that every number is known: five ResNet
variants whose 1-core batch-1 time grows with depth, each with a 3 s cold start."""

from __future__ import annotations

import json

from pathlib import Path

import pandas as pd
import pytest

from servesim.experiments import store

# ms per request on one core (batch 1..8) and the variants' cold start
MS = {"resnet18": 20.0, "resnet34": 35.0, "resnet50": 60.0, "resnet101": 100.0, "resnet152": 140.0}
HEADER = """\
# device: cpu:test
# dtype: float32
# framework: none
# date: 2026-12-02
# execution_mode: eager
hardware,model,stage,batch_size,latency_p50_ms,latency_p90_ms,latency_p99_ms,repeats
"""


def profile_text() -> str:
    rows = []
    for model, ms in MS.items():
        for b in (1, 2, 4, 8):
            lat = ms * (0.6 + 0.4 * b)
            rows.append(f"cpu-1c,{model},forward,{b},{lat},{1.1 * lat},{1.3 * lat},50")
        rows.append(f"cpu-1c,{model}_load,load,1,3000,3100,3200,5")
    return HEADER + "\n".join(rows) + "\n"


EXPERIMENT = """\
name: cluster
slo_ms: 750
seeds: [3]
trace: {kind: step, rates: [40, 160, 60], change_times: [40, 100], duration: 160}
cluster:
  pipeline: classification
  profile: profile.csv
  initial: {classification: [{variant: resnet152, cores: 6}]}
  drop_after_ms: 3000
  adapter: {name: infadapter, budget: 12, capacity_slo_ms: 750, probe_cores: [1, 2, 4, 8]}
sweep:
  cluster.adapter:
    - {name: infadapter, budget: 12, capacity_slo_ms: 750, probe_cores: [1, 2, 4, 8]}
    - {name: ms, budget: 12, capacity_slo_ms: 750, probe_cores: [1, 2, 4, 8]}
    - {name: vpa, variant: resnet152, max_cores: 12}
    - static
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from servesim.experiments.cli import main  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("cluster")
    (folder / "profile.csv").write_text(profile_text())
    (folder / "cluster.yaml").write_text(EXPERIMENT)
    assert main(["run", str(folder / "cluster.yaml"), "--out", str(folder / "out"), "--quiet"]) == 0
    assert main(["plot", str(folder / "out")]) == 0
    return folder / "out"


def test_peak_cores_are_reported_and_bound_the_mean(finished):
    results = pd.read_csv(finished / store.RESULTS).set_index("adapter")
    assert (results["peak_cores"] >= results["mean_cores"]).all()
    assert results.loc["static", "peak_cores"] == 6
    # the budget bounds InfAdapter's plans, not its rollouts: old and new replicas overlap
    assert results.loc["infadapter", "peak_cores"] > 12


def test_every_adapter_ran_on_the_same_arrivals(finished):
    results = pd.read_csv(finished / store.RESULTS)
    assert results["status"].eq("ok").all() and sorted(results["adapter"]) == ["infadapter", "ms", "static", "vpa"]
    requests = {row.adapter: pd.read_parquet(finished / row.run / store.REQUESTS) for row in results.itertuples()}
    arrivals = [r["arrival"].to_numpy() for r in requests.values()]
    assert all((a == arrivals[0]).all() for a in arrivals)


def test_infadapter_serves_the_step_with_fewer_violations_than_vpa_at_a_fraction_of_static_cost(finished):
    results = pd.read_csv(finished / store.RESULTS).set_index("adapter")
    ours, vpa, static = (results.loc[a] for a in ("infadapter", "vpa", "static"))
    # 160 req/s needs ~23 cores of resnet152 (140 ms) and 12 is the budget: only a mix
    # with lighter variants carries the step, at a lower average accuracy
    assert ours["slo_violation_rate"] < 0.5 * vpa["slo_violation_rate"]
    assert ours["slo_violation_rate"] < 0.5 * static["slo_violation_rate"]
    assert ours["accuracy"] < static["accuracy"] == pytest.approx(0.78312)
    plans = pd.read_csv(finished / results.loc["infadapter", "run"] / store.PLANS)
    assert plans["variant"].nunique() > 1 and (plans.groupby("time_s")["cores"].sum() <= 12).all()


def test_time_series_and_plots_are_written(finished):
    results = pd.read_csv(finished / store.RESULTS)
    series = pd.read_csv(finished / results["run"][0] / store.TIMESERIES)
    assert {"time_s", "load_rps", "cores:classification"} <= set(series.columns)
    # the load column is the step: about 40, 160 and 60 req/s in its three phases
    assert series.loc[series["time_s"].between(60, 100), "load_rps"].mean() == pytest.approx(160, rel=0.15)
    for name in ["cluster_comparison.png", "latency_cdf.png", "cluster_tasks.png",
                 *(f"cluster-{r}.png" for r in results["run"])]:
        assert (finished / "plots" / name).stat().st_size > 10_000, name


@pytest.mark.parametrize("change, message", [
    (("pipeline: classification", "pipeline: imagenet"), "cluster.pipeline: unknown pipeline 'imagenet'"),
    (("{variant: resnet152, cores: 6}", "{variant: resnet999, cores: 6}"),
     "cluster.initial.classification.0.variant: task 'classification' has no variant 'resnet999'"),
    (("- static\n", "- {name: fa2, sla_ms: 500, variants: {detection: yolov5n}}\n"),
     "adapter 'fa2': variants must name one variant for each task ['classification']"),
    (("{name: vpa, variant: resnet152, max_cores: 12}", "{name: vpa, variant: resnet18}"),
     "adapter 'vpa': variant 'resnet18' must run in the start plan of 'classification'"),
    (("drop_after_ms: 3000", "drop_after_ms: {detection: 3000}"),
     "cluster.drop_after_ms: no task 'detection' in the pipeline; its tasks: classification"),
    (("drop_after_ms: 3000", "batching: {policy: deadline, max_wait_ms: 5}"),
     "cluster.batching: max_wait_ms: the deadline policy has no batching window; it takes no max_wait_ms"),
    (("drop_after_ms: 3000", "batching: {slo_ms: 50}"),
     "cluster.batching: slo_ms: only the deadline policy plans by an SLO; the dynamic policy takes no slo_ms"),
    (("drop_after_ms: 3000", "host: {intake_assumed_ms: 0.1}"),
     "cluster: host: the serving host models one server process under a plan that never changes; adapter is "
     "'infadapter' (use 'static')"),
    (("drop_after_ms: 3000\n  adapter: {name: infadapter, budget: 12, capacity_slo_ms: 750, probe_cores: [1, 2, 4, 8]}",
      "host: {intake_assumed_ms: 0.1}\n  adapter: static"),
     "cluster: host: the serving host models one server process with one lane, which every request reaches; "
     "the start plan has 1 task(s) and 6 lane(s)"),
])
def test_cluster_config_errors_name_the_key(write, servesim, tmp_path, change, message):
    (tmp_path / "profile.csv").write_text(profile_text())
    path = write("bad.yaml", EXPERIMENT.replace(*change))
    result = servesim("check", path)
    assert result.rc == 2 and message in result.err, result.err


def test_deadline_batching_needs_an_slo(write, servesim, tmp_path):
    """Every deployment's deadline is counted against cluster.batching.slo_ms, else the
    experiment's slo_ms; with neither, check says which keys to set."""
    (tmp_path / "profile.csv").write_text(profile_text())
    text = EXPERIMENT.replace("drop_after_ms: 3000", "batching: {policy: deadline}")
    assert servesim("check", write("top.yaml", text)).rc == 0
    result = servesim("check", write("none.yaml", text.replace("slo_ms: 750\nseeds", "seeds")))
    assert result.rc == 2 and ("cluster.batching.slo_ms: the deadline policy needs an SLO; set "
                               "cluster.batching.slo_ms or the top-level slo_ms (got neither)") in result.err


def test_adapters_compared_on_different_ceilings_are_warned_of(write, servesim, tmp_path):
    """InfAdapter and MS+ on a 12-core budget, VPA up to 12 cores, static on its start
    plan's 6: the comparison is unfair to whoever has less, and check says so."""
    (tmp_path / "profile.csv").write_text(profile_text())
    result = servesim("check", write("c.yaml", EXPERIMENT))
    assert result.rc == 0
    assert result.err.count("warning: ") == 1
    assert ("the compared adapters may provision different amounts of their resource (infadapter: 12 cores (budget); "
            "ms: 12 cores (budget); vpa: 12 cores (max_cores); static: 6 cores (the start plan's cores))") in result.err
    fair = servesim("check", write("d.yaml", EXPERIMENT.replace("    - static\n", "")))
    assert fair.rc == 0 and "warning" not in fair.err


def test_adapters_set_in_a_group_are_compared_and_warned_of_too(write, servesim, tmp_path):
    """Adapters swept inside a group (with other keys the compared runs share) are still
    the compared adapters: only the label and the adapter keys tell the runs apart."""
    (tmp_path / "profile.csv").write_text(profile_text())
    grouped = EXPERIMENT[:EXPERIMENT.index("sweep:")] + """\
sweep:
  arm:
    - {label: adaptive, cluster.adapter: {name: infadapter, budget: 12, probe_cores: [1, 2, 4]}, cluster.sample_s: 2}
    - {label: fixed, cluster.adapter: static, cluster.sample_s: 2}
    - {label: alone, cluster.adapter: static, cluster.sample_s: 5}
"""
    result = servesim("check", write("g.yaml", grouped))
    assert result.rc == 0 and result.err.count("warning: ") == 1, result.err
    assert "(infadapter: 12 cores (budget); static: 6 cores (the start plan's cores))" in result.err


def test_a_batching_window_holds_requests_for_company_at_low_load(write, servesim, tmp_path):
    """5 req/s on a batch of 4 with a 50 ms window: batches seldom fill, so nearly every
    request waits its window out: the median grows by about 50 ms."""
    (tmp_path / "profile.csv").write_text(profile_text())
    config = EXPERIMENT.split("sweep:")[0].replace("[40, 160, 60]", "[5, 5, 5]").replace(
        "{variant: resnet152, cores: 6}", "{variant: resnet18, cores: 1, batch: 4}").replace(
        "  adapter: {name: infadapter, budget: 12, capacity_slo_ms: 750, probe_cores: [1, 2, 4, 8]}",
        "  adapter: static")
    p50 = {}
    for wait in (0, 50):
        text = config + f"  batching: {{max_wait_ms: {wait}}}\n"
        rc, _, err = servesim("run", write(f"w{wait}.yaml", text), "--out", tmp_path / f"w{wait}", "--quiet")
        assert rc == 0, err
        p50[wait] = pd.read_csv(tmp_path / f"w{wait}" / store.RESULTS)["latency_p50_ms"].iloc[0]
    assert p50[0] == pytest.approx(20.0, rel=0.1)  # resnet18's 20 ms at batch 1
    assert 40 < p50[50] - p50[0] < 60


DETECTOR_MS = {"yolov5n": 25.0, "yolov5s": 55.0, "yolov5m": 130.0, "yolov5l": 250.0, "yolov5x": 500.0}
PIPELINE = """\
name: video
slo_ms: 3000
seeds: [2]
trace: {kind: poisson, rate: 12, duration: 120}
cluster:
  pipeline: video
  profile: profile.csv
  core_mode: threads
  drop_after_ms: 10000
  initial:
    detection: [{variant: yolov5s, replicas: 2}]
    classification: [{variant: resnet50, replicas: 2}]
  adapter: {name: ipa, sla_ms: 3000}
sweep:
  cluster.adapter:
    - {name: ipa, sla_ms: 3000, alpha: 10, beta: 0.5}
    - {name: fa2, sla_ms: 3000, variants: {detection: yolov5n, classification: resnet18}}
    - {name: rim, sla_ms: 3000, replicas: 3}
"""


def test_ipa_fa2_and_rim_run_the_video_pipeline_as_their_programs_say(tmp_path):
    from servesim.experiments.cli import main  # noqa: PLC0415

    MS.update(DETECTOR_MS)
    try:
        (tmp_path / "profile.csv").write_text(profile_text())
    finally:
        for key in DETECTOR_MS:
            MS.pop(key)
    (tmp_path / "video.yaml").write_text(PIPELINE)
    assert main(["run", str(tmp_path / "video.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    results = pd.read_csv(tmp_path / "out" / store.RESULTS).set_index("adapter")
    plans = {a: pd.read_csv(tmp_path / "out" / results.loc[a, "run"] / store.PLANS) for a in results.index}
    later = {a: p[p["time_s"] > 0] for a, p in plans.items()}  # the adapters' own plans
    fa2, rim = later["fa2"], later["rim"]
    assert set(fa2["variant"]) == {"yolov5n", "resnet18"}  # pinned variants, scaled replicas
    assert (rim["replicas"] == 3).all()  # pinned replicas, switched variants
    requests = pd.read_parquet(tmp_path / "out" / results.loc["fa2", "run"] / store.REQUESTS)
    done = requests[requests["status"] == 0]
    assert {"variant_detection", "variant_classification"} <= set(requests.columns) and len(done) > 0.99 * len(requests)
    # each request's pipeline accuracy is the product of its two stages' accuracies
    assert results.loc["fa2", "pipeline_accuracy"] < results.loc["fa2", "accuracy"] ** 2 * 1.01
    assert results.loc["ipa", "accuracy"] > results.loc["fa2", "accuracy"]  # alpha 10: accuracy is worth cores


SHIPPED = Path(__file__).resolve().parents[2] / "experiments"
TWITTER = SHIPPED.parent.parent / "shared" / "data" / "twitter-trace" / "workload.txt"


@pytest.mark.parametrize("name", ["infadapter", "ipa", "ipa_nlp", "infadapter_twitter", "ipa_twitter"])
def test_the_shipped_cluster_experiments_are_valid(servesim, name):
    if name.endswith("_twitter") and not TWITTER.exists():
        pytest.skip(f"the real Twitter trace is not at {TWITTER}")
    result = servesim("check", SHIPPED / f"{name}.yaml")
    assert result.rc == 0, result.err


def test_an_lstm_predictor_trains_on_its_own_trace_and_drives_the_adapter(tmp_path):
    pytest.importorskip("torch")
    from servesim.experiments.cli import main  # noqa: PLC0415

    (tmp_path / "profile.csv").write_text(profile_text())
    lstm = ("{kind: lstm, epochs: 2, train: {kind: diurnal, mean_rate: 60, amplitude: 0.5, period: 600, "
            "duration: 3600}}")
    config = (EXPERIMENT.split("sweep:")[0]
              .replace("probe_cores: [1, 2, 4, 8]}", f"probe_cores: [1, 2, 4, 8], predictor: {lstm}}}"))
    (tmp_path / "lstm.yaml").write_text(config)
    assert main(["run", str(tmp_path / "lstm.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    results = pd.read_csv(tmp_path / "out" / store.RESULTS)
    plans = pd.read_csv(tmp_path / "out" / results["run"][0] / store.PLANS)
    assert results["status"].eq("ok").all() and plans["time_s"].nunique() > 2  # it re-planned as the step came


SINGLE = """\
name: single
seeds: [4]
slo_ms: 300
trace: {kind: poisson, rate: 240, duration: 60}
model: {profile: profile.csv, name: resnet18, hardware: cpu-1c, noise: {kind: deterministic}}
serving:
  replicas: 3
  router: ROUTER
  batching: BATCHING
  drop_after_ms: 60
"""
AS_CLUSTER = """\
name: as-cluster
seeds: [4]
slo_ms: 300
trace: {kind: poisson, rate: 240, duration: 60}
cluster:
  pipeline: classification
  profile: profile.csv
  noise: {kind: deterministic}
  initial: {classification: [{variant: resnet18, replicas: 3, batch: 4}]}
  adapter: static
  router: ROUTER
  batching: BATCHING
  drop_after_ms: 60
"""


COMPARED = ("arrival", "finish", "status", "start", "replica", "batch_size")  # a request table's columns, compared
WINDOW = ("{policy: dynamic, max_batch: 4, max_wait_ms: 20}", "{max_wait_ms: 20}")  # (single, cluster)
PADDED = ("{policy: dynamic, max_batch: 4, max_wait_ms: 20, allowed_sizes: [2, 4]}",
          "{max_wait_ms: 20, allowed_sizes: [2, 4]}")
FULL = ("{policy: fixed, batch_size: 4}", "{policy: fixed}")
DEADLINE = ("{policy: deadline, max_batch: 4, slo_ms: 40}", "{policy: deadline, slo_ms: 40}")


# (a random router is left out: it draws from its own stream in each kind of run)
@pytest.mark.parametrize("router, batching", [("shared", WINDOW), ("jsq", WINDOW), ("round_robin", WINDOW),
                                              ("shared", PADDED), ("jsq", FULL), ("shared", DEADLINE)])
def test_a_single_model_run_is_a_one_deployment_static_cluster(write, servesim, tmp_path, router, batching):
    """Today's single-model run is the special case of a cluster: one task, one deployment,
    no adapter. Written either way, the same setup (3 replicas at about 80% load, batches
    of up to 4 with a 20 ms window, padded or not, of exactly 4, or as large as a 40 ms
    deadline allows; drops after 60 ms) gives the same request table: each request's
    start, finish, replica and batch size."""
    (tmp_path / "profile.csv").write_text(profile_text())
    tables, figures = {}, {}
    for (name, text), policy in zip((("single", SINGLE), ("cluster", AS_CLUSTER)), batching):
        out = tmp_path / name
        text = text.replace("ROUTER", router).replace("BATCHING", policy)
        result = servesim("run", write(f"{name}.yaml", text), "--out", out, "--quiet")
        assert result.rc == 0, result.err
        path = next(out.glob("*/" + store.REQUESTS))
        requests = pd.read_parquet(path)
        summary = json.loads((path.parent / store.SUMMARY).read_text())
        if name == "cluster":  # its per-task columns and figures are named after the task
            requests = requests.rename(columns={f"{c}_classification": c for c in ("start", "replica", "batch_size")})
            summary = summary["tasks"]["classification"]
        tables[name] = requests[list(COMPARED)].reset_index(drop=True)
        figures[name] = {k: summary[k] for k in ("completed", "dropped", "latency_ms", "batches", "mean_batch_items")}
    assert (tables["single"]["status"] == 1).any()  # busy enough that some wait out the drop limit
    pd.testing.assert_frame_equal(tables["single"], tables["cluster"])
    assert figures["single"] == figures["cluster"]


def test_a_served_host_is_a_one_lane_static_clusters_host(write, servesim, tmp_path):
    """serving.host and cluster.host are one serving host: one replica whose host takes
    every request in (0.4 ms each) between launching its batches gives the same request
    table and host utilisation written either way."""
    (tmp_path / "profile.csv").write_text(profile_text())
    host = "  host: {intake_assumed_ms: 0.4, launch_share: 0.5}\n"
    tables, utilisation = {}, {}
    for name, text in {"single": SINGLE, "cluster": AS_CLUSTER}.items():
        text = text.replace("replicas: 3", "replicas: 1").replace("rate: 240", "rate: 90") + host
        out = tmp_path / name
        text = text.replace("ROUTER", "shared").replace("BATCHING", WINDOW[name == "cluster"])
        result = servesim("run", write(f"{name}.yaml", text), "--out", out, "--quiet")
        assert result.rc == 0, result.err
        path = next(out.glob("*/" + store.REQUESTS))
        requests = pd.read_parquet(path)
        if name == "cluster":
            requests = requests.rename(columns={f"{c}_classification": c for c in ("start", "replica", "batch_size")})
        tables[name] = requests[list(COMPARED)].reset_index(drop=True)
        utilisation[name] = json.loads((path.parent / store.SUMMARY).read_text())["cost"]["host_utilisation"]
    pd.testing.assert_frame_equal(tables["single"], tables["cluster"])
    assert utilisation["single"] == utilisation["cluster"] > 0.1
