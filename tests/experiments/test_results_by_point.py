"""What a sweep says about its points: run names (short, shell-safe, unique), results.csv's
swept columns (JSON, every field split), results_by_point.csv (means and Student-t
intervals over seeds) and the table ``servesim run`` prints at its end."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from servesim.experiments import names, store
from servesim.experiments.seeds import mean_ci

from configs import digits_exits
from test_cluster_experiment import profile_text

T_975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (3 seeds)
SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")

THREE_SEEDS = """\
name: three
slo_ms: 5
seeds: [1, 2, 3]
trace: {kind: poisson, rate: 2000, count: 400}
model: {profile: "builtin:cpu_mlp", name: mlp3}
serving:
  replicas: 2
sweep:
  serving.batching:
    - {policy: dynamic, max_batch: 1}
    - {policy: dynamic, max_batch: 8, max_wait_ms: 1}
  setup:
    - {label: plain}
    - {label: shared, serving.router: shared}
"""


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    from servesim.experiments.cli import main  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("three")
    (folder / "three.yaml").write_text(THREE_SEEDS)
    assert main(["run", str(folder / "three.yaml"), "--out", str(folder / "out"), "--quiet"]) == 0
    return folder / "out"


def test_results_csv_holds_swept_values_as_json_and_every_field_in_a_column(three):
    results = pd.read_csv(three / store.RESULTS)
    assert list(results.columns[:10]) == [
        "run", "status", "seed", "point", "serving.batching", "serving.batching.policy",
        "serving.batching.max_batch", "serving.batching.max_wait_ms", "setup", "setup.serving.router"]
    assert len(results) == 12 and results["status"].eq("ok").all()
    first = results.iloc[0]
    assert json.loads(first["serving.batching"]) == {"policy": "dynamic", "max_batch": 1}
    assert first["point"] == "dynamic-max_batch-1_plain" and first["run"] == "dynamic-max_batch-1_plain_seed-1"
    assert first["setup"] == "plain" and pd.isna(first["setup.serving.router"])
    assert pd.isna(first["serving.batching.max_wait_ms"])  # the value has no such field
    batched = results[results["serving.batching.max_batch"] == 8]
    assert (batched["serving.batching.max_wait_ms"] == 1).all() and len(batched) == 6
    assert set(results["setup.serving.router"].dropna()) == {"shared"}
    text = (three / store.RESULTS).read_text()
    assert "'" not in text and "{'" not in text  # no Python reprs
    for run, point in zip(results["run"], results["point"]):
        assert run.startswith(f"{point}_seed-") and SAFE.fullmatch(run)


def test_results_by_point_is_each_points_mean_and_t_interval_over_its_seeds(three):
    results = pd.read_csv(three / store.RESULTS)
    table = pd.read_csv(three / store.RESULTS_BY_POINT)
    assert list(table["point"]) == list(dict.fromkeys(results["point"]))
    assert (table["seeds"] == 3).all()
    assert list(table.columns[:8]) == ["point", "seeds", "serving.batching", "serving.batching.policy",
                                       "serving.batching.max_batch", "serving.batching.max_wait_ms", "setup",
                                       "setup.serving.router"]
    for _, row in table.iterrows():
        runs = results[results["point"] == row["point"]]
        assert json.loads(row["serving.batching"]) == json.loads(runs["serving.batching"].iloc[0])
        for figure in ("latency_p99_ms", "latency_p50_ms", "slo_violation_rate", "throughput_rps"):
            x = runs[figure].to_numpy()
            mean = sum(x) / 3
            half = T_975_2 * np.sqrt(sum((x - mean) ** 2) / 2) / np.sqrt(3)
            assert row[figure] == pytest.approx(mean, rel=1e-9, abs=1e-12), figure
            assert row[f"{figure}_ci95"] == pytest.approx(half, rel=1e-8, abs=1e-12), figure
            assert (row[f"{figure}_min"], row[f"{figure}_max"]) == (x.min(), x.max())
    # the seeds differ, so the interval of a latency is no zero
    assert (table["latency_p99_ms_ci95"] > 0).all()


def test_the_console_shows_a_line_per_point_with_its_interval(three, servesim):
    again = servesim("run", three.parent / "three.yaml", "--out", three, "--resume")
    assert again.rc == 0, again.err
    lines = again.out.splitlines()
    assert lines[0] == "4 sweep point(s), mean ± 95% CI over 3 seeds:"
    assert lines[1].split() == ["point", "p50", "ms", "p99", "ms", "SLO", "viol.", "%", "dropped"]
    table = pd.read_csv(three / store.RESULTS_BY_POINT).set_index("point")
    for line in lines[2:6]:
        point = line.split()[0]
        p99 = mean_ci(table.loc[point, "latency_p99_ms"], table.loc[point, "latency_p99_ms_ci95"])
        assert f"  {p99}  " in line and " ± " in p99
    assert len(lines) == 7 and lines[-1].startswith("12 of 12 runs finished (12 kept")


EXITS = digits_exits("exits", count=1500) + """\
sweep:
  exits.policy: [never, {name: confidence, threshold: 0.9}, {name: confidence, threshold: 0.6}]
"""


def test_an_exit_experiment_answers_with_accuracy(write, servesim, tmp_path):
    out = tmp_path / "out"
    result = servesim("run", write("exits.yaml", EXITS), "--out", out)
    assert result.rc == 0, result.err
    lines = result.out.splitlines()
    assert lines[1].split() == ["point", "p50", "ms", "p99", "ms", "accuracy", "dropped"]
    assert [line.split()[0] for line in lines[2:5]] == ["never", "confidence-threshold-0.9",
                                                       "confidence-threshold-0.6"]
    table = pd.read_csv(out / store.RESULTS_BY_POINT).set_index("point")
    for line in lines[2:5]:
        point = line.split()[0]
        accuracy = mean_ci(table.loc[point, "accuracy"], table.loc[point, "accuracy_ci95"], ".4f")
        assert f"  {accuracy}  " in line
    # exiting early answers sooner and less accurately than the full model
    assert table.loc["confidence-threshold-0.6", "latency_p50_ms"] < table.loc["never", "latency_p50_ms"]
    assert table.loc["confidence-threshold-0.6", "accuracy"] < table.loc["never", "accuracy"]


CLUSTER = """\
name: cluster
slo_ms: 750
seeds: [3]
trace: {kind: step, rates: [40, 100, 40], change_times: [20, 40], duration: 60}
cluster:
  pipeline: classification
  profile: profile.csv
  initial: {classification: [{variant: resnet152, cores: 6}]}
  drop_after_ms: 3000
  adapter: static
sweep:
  cluster.adapter: [static, {name: vpa, variant: resnet152, max_cores: 12}]
"""


def test_a_cluster_experiment_answers_with_cost_and_accuracy(write, servesim, tmp_path):
    (tmp_path / "profile.csv").write_text(profile_text())
    out = tmp_path / "out"
    result = servesim("run", write("cluster.yaml", CLUSTER), "--out", out)
    assert result.rc == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "2 sweep point(s), one seed each:"
    assert lines[1].split() == ["point", "p50", "ms", "p99", "ms", "SLO", "viol.", "%", "accuracy", "core-s",
                                "dropped"]
    table = pd.read_csv(out / store.RESULTS_BY_POINT).set_index("point")
    assert list(table.index) == ["static", "vpa-resnet152-max_cores-12"]
    for line in lines[2:4]:
        cells = re.split(r"\s{2,}", line.strip())
        point = cells[0]
        assert cells[4] == format(table.loc[point, "accuracy"], ".4f")
        assert cells[5] == format(table.loc[point, "cost"], ".4g")
        assert "±" not in line  # one seed: no interval
    assert table.loc["static", "accuracy"] == pytest.approx(0.78312)  # resnet152's, all along


# --- names -----------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**12),
                    st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["name", "policy", "kind", "lam", "path", "x.y"]),
                                                 inner, max_size=4)), max_leaves=12)
sweeps = st.dictionaries(st.sampled_from(["trace", "trace.rate", "serving.batching", "exits.policy", "cluster.rate",
                                          "workload"]),
                         st.lists(values, min_size=1, max_size=5, unique_by=names.identity), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(sweep=sweeps, seed=st.integers(0, 10**6))
def test_names_are_shell_safe_bounded_and_unique(sweep, seed):
    taken: dict[str, str] = {}
    points = []
    for combo in itertools.product(*sweep.values()):
        params = dict(zip(sweep, combo))
        point = names.point_name(params, sweep, taken)
        assert point.lower() not in taken  # distinct points, distinct names (case aside)
        taken[point.lower()] = names.identity(params)
        points.append(point)
        run = names.run_name(point, seed)
        assert SAFE.fullmatch(run), run
        assert len(point) <= names.MAX_POINT
        assert names.point_of(run) == point
    assert len(set(points)) == len(points)


def test_readable_names_for_the_shapes_sweeps_take():
    sweep = {"serving.batching": [{"policy": "dynamic", "max_batch": 1},
                                  {"policy": "dynamic", "max_batch": 8, "max_wait_ms": 1},
                                  {"policy": "deadline", "max_batch": 32}],
             "trace.rate": [2460, 4920.5],
             "workload": [{"label": "digits idle", "trace": {"kind": "poisson"}}],
             "cluster.adapter": [{"name": "vpa", "variant": "resnet18", "initial": {"t": [{"cores": 20}]}},
                                 {"name": "vpa", "variant": "resnet34", "initial": {"t": [{"cores": 20}]}}],
             "trace": [{"kind": "file", "path": "../data/twitter/workload.txt", "window": [1, 2]},
                       {"kind": "file", "path": "../data/twitter/workload.txt", "window": [3, 4]}],
             "model.profile": ["builtin:cpu_mlp", "profiles/h100.csv"],
             "exits.policy": ["never", {"name": "apparate", "tuning_window": 64, "adjustment_window": 320,
                                        "emergency": "scale", "new_ramp_threshold": 0.01}]}
    labels = {key: [names.label(v, values, names.short_names(list(sweep))[key]) for v in values]
              for key, values in sweep.items()}
    assert labels == {
        "serving.batching": ["dynamic-max_batch-1", "dynamic-max_batch-8-max_wait_ms-1", "deadline-max_batch-32"],
        "trace.rate": ["rate-2460", "rate-4920.5"],
        "workload": ["digits-idle"],
        "cluster.adapter": ["vpa-resnet18", "vpa-resnet34"],  # what tells them apart, nested plans left out
        "trace": ["file-window-1-2", "file-window-3-4"],  # alike but for a nested field: it is named
        "model.profile": ["cpu_mlp", "h100"],
        "exits.policy": ["never", "apparate-64-320-scale-0.01"],  # too long with its fields' names
    }


def test_a_point_too_long_or_taken_is_numbered_and_a_repeated_one_refused(write):
    from servesim.experiments.config import ConfigError, expand, load  # noqa: PLC0415

    long = {f"k{i}.x": ["a" * 40] for i in range(3)}
    assert names.point_name({k: v[0] for k, v in long.items()}, long, {}) == "p001"
    # labels that join alike: 'a_b' + 'c' and 'a' + 'b_c'
    sweep = {"x.s": ["a_b", "a"], "y.s": ["c", "b_c"]}
    taken: dict[str, str] = {}
    got = []
    for combo in itertools.product(*sweep.values()):
        params = dict(zip(sweep, combo))
        got.append(names.point_name(params, sweep, taken))
        taken[got[-1].lower()] = names.identity(params)
    assert got == ["a_b_c", "a_b_b_c", "a_c", "p004"]  # the 4th point's own name is the 1st's
    path = write("twice.yaml", """\
        trace: {kind: poisson, rate: 100, count: 50}
        model: {profile: "builtin:cpu_mlp", name: mlp3}
        sweep: {serving.replicas: [1, 2, 1]}
        """)
    with pytest.raises(ConfigError, match=r"the point serving.replicas=1 is listed twice .*'replicas-1_seed-0'"):
        expand(load(path), str(path))


def test_a_long_sweep_lists_the_points_no_other_beats():
    from servesim.experiments import answer  # noqa: PLC0415

    rng = np.random.default_rng(4)
    n = 200
    points = pd.DataFrame({"point": [f"p{i:03d}" for i in range(n)], "seeds": 2,
                           "latency_p50_ms": rng.uniform(1, 10, n), "latency_p99_ms": rng.uniform(5, 50, n),
                           "accuracy": rng.uniform(0.5, 0.9, n), "dropped": np.zeros(n)})
    for figure in ("latency_p50_ms", "latency_p99_ms", "accuracy", "dropped"):
        points[f"{figure}_ci95"] = 0.01
    lines = answer.lines(points, cluster=False, where="OUT/results_by_point.csv")
    shown = [line.split()[0] for line in lines[2:-1]]
    figures = points.set_index("point")[["latency_p50_ms", "latency_p99_ms", "accuracy"]].to_numpy() * [1, 1, -1]
    beaten = {f"p{j:03d}" for j in range(n) for i in range(n)
              if (figures[i] <= figures[j]).all() and (figures[i] < figures[j]).any()}
    assert 0 < len(shown) <= answer.MAX_ROWS
    assert set(shown) == set(points["point"]) - beaten  # every unbeaten point, in the sweep's order
    assert shown == sorted(shown)
    assert lines[-1] == (f"({len(shown)} of 200 points shown: those no other point beats on every figure above; "
                         f"all of them in OUT/results_by_point.csv)")
