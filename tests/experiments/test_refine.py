"""Adaptive refinement (``refine:``): a sweep runs the midpoints where a front takes a step
large in accuracy and in latency, round after round, and resumes to the same runs."""

from __future__ import annotations

import pandas as pd
import pytest

from servesim.experiments.config import ConfigError, RefineConfig, Run, expand, load
from servesim.experiments.refine import midpoints

REFINE = RefineConfig(key="exits.policy", fields=["lam", "threshold"], accuracy_step=0.01, latency_step=0.05)


def _run(value, seed=1, workload="a") -> Run:
    params = {"workload": {"label": workload}, "exits.policy": value}
    return Run(name=f"{workload}-{value}-{seed}", params=params, seed=seed, config=None)


def _summary(accuracy, p50, mean=None):
    return {"accuracy": accuracy, "latency_ms": {"p50": p50, "mean": p50 if mean is None else mean}}


def test_only_steps_large_in_both_figures_are_bisected():
    lams = [0.5, 0.6, 0.7, 0.8]
    figures = {0.5: (0.60, 1.0), 0.6: (0.70, 2.0),   # 10 points and 100%: wide
               0.7: (0.75, 2.05),                    # 5 points but 2.5%: a vertical step, left alone
               0.8: (0.755, 3.0)}                    # half a point: left alone
    runs, summaries = [], {}
    for lam in lams:
        for seed in (1, 2):
            run = _run({"name": "ttamer", "lam": lam}, seed)
            runs.append(run)
            summaries[run.name] = _summary(*figures[lam])
    wanted = midpoints(REFINE, runs, summaries)
    assert wanted == [{"workload": {"label": "a"}, "exits.policy": {"name": "ttamer", "lam": 0.55}}]


def test_a_step_wide_in_any_latency_asked_for_is_bisected():
    """On an idle server p50 hardly moves while the mean does: asked for both, the step is wide."""
    runs = [_run({"name": "ttamer", "lam": 0.3}), _run({"name": "ttamer", "lam": 0.4})]
    summaries = {runs[0].name: _summary(0.60, 1.0, mean=1.0), runs[1].name: _summary(0.72, 1.01, mean=1.4)}
    assert midpoints(REFINE, runs, summaries) == []
    both = REFINE.model_copy(update={"latencies": ["p50", "mean"]})
    assert [w["exits.policy"]["lam"] for w in midpoints(both, runs, summaries)] == [0.35]


def test_neighbours_share_everything_but_the_field_and_failed_runs_are_no_neighbours():
    runs = [_run({"name": "ttamer", "lam": 0.5}), _run({"name": "ttamer", "lam": 0.9}),
            _run({"name": "optimal_no_recall", "lam": 0.7}),      # another line: no neighbour of either
            _run({"name": "ttamer", "lam": 0.7}, workload="b"),    # another workload
            _run({"name": "ttamer", "lam": 0.8}),                  # failed: no summary
            _run("never")]                                        # no field: not refined
    summaries = {runs[0].name: _summary(0.6, 1.0), runs[1].name: _summary(0.9, 3.0),
                 runs[2].name: _summary(0.75, 2.0), runs[3].name: _summary(0.75, 2.0)}
    # 0.5 and 0.9 are not neighbours (0.8 sits between them, failed), so nothing is asked
    assert midpoints(REFINE, runs, summaries) == []
    del runs[4]
    assert [w["exits.policy"]["lam"] for w in midpoints(REFINE, runs, summaries)] == [0.7]


SWEPT = """\
name: refined
seeds: [1, 2]
trace: {kind: poisson, rate: 150, count: 600}
model: {profile: "builtin:cpu_mnist1d_ee", name: mnist1d_ee}
serving: {batching: {policy: dynamic, max_batch: 16}}
exits:
  ramps: {block1: ramp1, block2: ramp2, block3: ramp3}
  behaviour: {kind: builtin, name: mnist1d_ee}
  policy: never
sweep:
  exits.policy: [{name: confidence, threshold: 0.2}, {name: confidence, threshold: 0.9}]
refine: {key: exits.policy, fields: [threshold], rounds: 2}
"""


def test_a_refined_sweep_runs_midpoints_and_resumes_to_the_same_runs(write, servesim, tmp_path):
    path = write("r.yaml", SWEPT)
    out = tmp_path / "out"
    rc, _, err = servesim("run", path, "--out", out, "--quiet", "--jobs", "1")
    assert rc == 0, err
    results = pd.read_csv(out / "results.csv")
    thresholds = sorted(set(results["policy_threshold"]))
    # round 1 bisects 0.2-0.9 (exit 0 answers 40% of mnist1d right, the last 70%);
    # round 2 then bisects what is still wide; every point with both seeds
    assert thresholds[:1] == [0.2] and thresholds[-1] == 0.9 and 0.55 in thresholds
    assert 3 < len(thresholds) <= 5
    assert (results.groupby("policy_threshold").size() == 2).all()
    assert (results["status"] == "ok").all()
    rc, _, err = servesim("run", path, "--out", out, "--quiet", "--resume")
    assert rc == 0, err
    again = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(again.sort_values("run").reset_index(drop=True),
                                  results.sort_values("run").reset_index(drop=True))


@pytest.mark.parametrize("refine, message", [
    ("{key: serving.replicas, fields: [lam]}", r"refine.key: 'serving.replicas' is not swept"),
    ("{key: exits.policy, fields: [k]}", r"refine.fields: no value of sweep.exits.policy is a mapping with a "
                                         r"number in \['k'\]"),
    ("{key: exits.policy, fields: [threshold], rounds: 0}", r"refine.rounds: .*greater than or equal to 1"),
])
def test_bad_refinement_is_named(write, refine, message):
    path = write("r.yaml", SWEPT.replace("refine: {key: exits.policy, fields: [threshold], rounds: 2}",
                                         f"refine: {refine}"))
    with pytest.raises(ConfigError, match=message):
        expand(load(path), str(path))
