"""Swept groups (several keys set together), the recorded video behaviour in a config, the
front-against-front comparison (``servesim fronts``); the Pareto plot's bands are tested
in test_sweep_plots.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from servesim.experiments import fronts
from servesim.experiments.config import ConfigError, expand, load
from servesim.experiments.seeds import ci_half_width

from configs import digits_exits

HEAD = digits_exits("groups")

GROUPED = HEAD + """\
sweep:
  workload:
    - {label: digits}
    - label: mnist1d
      model.profile: "builtin:cpu_mnist1d_ee"
      model.name: mnist1d_ee
      exits.behaviour: {kind: builtin, name: mnist1d_ee}
      trace: {kind: poisson, rate: 300, count: 400}
  exits.policy: [never, {name: ttamer, lam: 0.9}]
"""


def test_a_group_sets_its_keys_together_and_is_named_by_its_label(write):
    path = write("g.yaml", GROUPED)
    runs = expand(load(path), str(path))
    assert len(runs) == 2 * 2 * 2
    assert [r.name for r in runs[:3]] == ["digits_never_seed-1", "digits_never_seed-2", "digits_ttamer-lam-0.9_seed-1"]
    mnist = [r for r in runs if r.name.startswith("mnist1d_")]
    assert {r.config.model.name for r in mnist} == {"mnist1d_ee"}
    assert {r.config.exits.behaviour.name for r in mnist} == {"mnist1d_ee"}
    assert {r.config.trace.rate for r in mnist} == {300}
    assert {r.config.model.name for r in runs if r not in mnist} == {"digits_ee"}  # nothing leaks across


@pytest.mark.parametrize("value, message", [
    ("digits", r"sweep.workload: 'workload' is no config key, so it is a group: each value sets several keys "
               r"together, as a mapping 'key.path: value' \(got 'digits'\)"),
    ("{label: a, seed: 3}", r"sweep.workload: sweep.seed: cannot be swept"),
    ("{label: a, modle.name: x}", r"modle: unknown key; did you mean 'model'\?"),
    ("{label: a, workload2: x}", r"'workload2' is not a config key"),
])
def test_bad_groups_are_named(write, value, message):
    path = write("g.yaml", HEAD + f"sweep:\n  workload:\n    - {value}\n")
    with pytest.raises(ConfigError, match=message):
        expand(load(path), str(path))


def test_a_recorded_video_runs_from_yaml_and_frames_follow_the_clock(write, servesim, tmp_path):
    path = write("v.yaml", HEAD.replace("{kind: builtin, name: digits_ee}", "{kind: recording, name: digits_video}")
                 .replace("count: 400", "count: 3000").replace("seeds: [1, 2]", "seeds: [1]")
                 + "  semantics: latency_only\n  fit_fraction: 0.1\n"
                 + "sweep:\n  exits.policy: [never, {name: apparate}]\n")
    rc, out, err = servesim("run", path, "--out", tmp_path / "out", "--quiet")
    assert rc == 0, err
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(results["status"]) == ["ok", "ok"]
    assert results["agreement"].iloc[1] >= 0.95  # Apparate's 1% budget, on real frames
    rc, _, err = servesim("check", write("w.yaml", path.read_text().replace("{kind: recording, name: digits_video}",
                                                                            "{kind: recording, name: cam}")))
    assert rc == 2 and "no built-in recording 'cam'; known: digits_video" in err


def _results(rows):
    """results.csv rows: (policy, spec, seed, accuracy, p50)."""
    return pd.DataFrame([{"run": f"{spec}-{seed}", "status": "ok", "seed": seed, "exits.policy": spec,
                          "policy": policy, "accuracy": acc, "latency_p50_ms": p50, "latency_p99_ms": 2 * p50,
                          "latency_mean_ms": 1.5 * p50}
                         for policy, spec, seed, acc, p50 in rows])


def test_fronts_count_unmatched_points_and_pair_seeds_for_the_noise():
    rows = []
    for seed, wobble in ((1, 0.0), (2, 0.004), (3, -0.004)):
        rows += [("ttamer", "t1", seed, 0.90 + wobble, 1.00), ("ttamer", "t2", seed, 0.95 + wobble, 2.00),
                 # matched: 1.5% slower at most, and no more than half a point better
                 ("optimal_no_recall", "n1", seed, 0.904 + wobble, 0.99),
                 # unmatched beyond noise: 2 points better at the same p50 in every seed
                 ("optimal_no_recall", "n2", seed, 0.97 + wobble, 2.00),
                 # unmatched but within noise: 1 point better on average, seeds disagree
                 ("confidence", "c1", seed, 0.90 + (0.0, 0.03, 0.0)[seed - 1], 1.00),
                 # faster than any ttamer point
                 ("confidence", "c2", seed, 0.5, 0.5)]
    table = fronts.compare(_results(rows))
    by = table.set_index("rival")
    assert by.loc["optimal_no_recall", ["rival_points", "unmatched", "beyond_noise", "no_point_as_fast"]].tolist() == [2, 1, 1, 0]
    assert by.loc["optimal_no_recall", "largest_gap"] == pytest.approx(0.02)
    assert by.loc["optimal_no_recall", "largest_gap_at_ms"] == pytest.approx(2.0)
    assert by.loc["confidence", ["rival_points", "unmatched", "beyond_noise", "no_point_as_fast"]].tolist() == [2, 2, 0, 1]
    assert by.loc["confidence", "largest_gap"] == pytest.approx(0.01)


def test_fronts_cli_writes_its_table(sweep, servesim):
    rc, out, err = servesim("fronts", sweep.out, "--policy", "none", "--rival", "none")
    assert rc == 0, err
    assert (sweep.out / "fronts.csv").exists() and "table in" in out
    rc, out, err = servesim("fronts", sweep.out, "--latency", "mean")
    assert rc == 0 and (sweep.out / "fronts-mean.csv").exists() and (sweep.out / "front_steps-mean.csv").exists()


def test_fronts_on_another_latency_axis():
    rows = [("ttamer", "t1", 1, 0.90, 1.0), ("confidence", "c1", 1, 0.95, 1.0)]
    table = fronts.compare(_results(rows), latency="mean").set_index("rival")
    assert table.loc["confidence", "largest_gap_at_ms"] == pytest.approx(1.5)


def test_ci_half_width_is_students_t():
    assert np.isnan(ci_half_width([0.9]))
    # three values with sd 0.01: t(0.975, 2) = 4.303, / sqrt(3)
    assert ci_half_width([0.89, 0.90, 0.91]) == pytest.approx(4.3027 * 0.01 / np.sqrt(3), rel=1e-4)


def test_steps_say_how_densely_each_front_is_drawn():
    rows = [("ttamer", f"t{k}", 1, acc, p50) for k, (acc, p50) in
            enumerate([(0.80, 1.0), (0.85, 1.04), (0.855, 1.2), (0.84, 1.3)])]  # the last is off the front
    table = fronts.steps(_results(rows)).set_index("policy")
    assert table.loc["ttamer", "front_points"] == 3
    assert table.loc["ttamer", "largest_accuracy_step"] == pytest.approx(0.05)
    assert table.loc["ttamer", "largest_latency_step"] == pytest.approx(0.16 / 1.04)
    # 0.80 -> 0.85 is 5 points but 4% slower; 0.85 -> 0.855 is 15% slower but half a point: neither is wide
    assert table.loc["ttamer", "wide_steps"] == 0
    rows[1] = ("ttamer", "t1", 1, 0.85, 1.06)
    assert fronts.steps(_results(rows)).set_index("policy").loc["ttamer", "wide_steps"] == 1
