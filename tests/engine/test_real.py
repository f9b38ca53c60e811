"""The real-hardware executor on a stand-in model whose every output is known.

The "model" spins for a fixed time per stage (so it takes real time) and its heads
return the probabilities a behaviour table prescribes for the rows in the batch, so the
exit decisions the executor makes can be checked exactly, while its times (real, hence
noisy) are checked only for causality and order.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from enginekit import COMPLETED
from servesim.policies.batching import DynamicBatcher
from servesim.policies.exit import ConfidenceThreshold, NeverExit
from servesim.sim import summarize
from servesim.sim.real import StagedModel, execute
from servesim.workloads.behaviour import BehaviourTable

STAGE_S = 0.0003


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def table(n: int = 50, seed: int = 0) -> BehaviourTable:
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, (n, 2))
    prediction = np.zeros((n, 2), dtype=np.int32)  # two classes: the argmax is class 0
    return BehaviourTable(confidence=confidence, correct=np.ones((n, 2), bool), agrees=np.ones((n, 2), bool),
                          prediction=prediction, entropy=None, exit_names=("ramp", "final"))


def model(beh: BehaviourTable) -> StagedModel:
    def stage(rows):
        spin(STAGE_S * (1 + 0.1 * len(rows)))
        return rows

    def head(i):
        return lambda rows: np.column_stack([beh.confidence[rows, i], 1 - beh.confidence[rows, i]])

    return StagedModel(batch=lambda rows: np.asarray(rows), stages=[stage, stage], heads=[head(0), head(1)])


def poisson(rate: float, n: int, seed: int = 1) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).exponential(1 / rate, n))


@pytest.mark.parametrize("semantics", ["compute_saving", "latency_only"])
def test_real_replay_exits_where_the_policy_says_and_keeps_causality(semantics):
    beh = table()
    times = poisson(500.0, 150)
    samples = np.random.default_rng(2).integers(0, beh.n_samples, times.size)
    res = execute(times, model(beh), DynamicBatcher(4, 0.0005), table=beh, samples=samples,
                  policy=ConfidenceThreshold(0.8), semantics=semantics)
    req, ex = res.requests, res.requests.exits
    assert (req.status == COMPLETED).all()
    assert (req.arrival <= req.start + 1e-9).all() and (req.start < req.finish).all()
    np.testing.assert_array_equal(ex["exit_stage"], np.where(beh.confidence[samples, 0] >= 0.8, 0, 1))
    np.testing.assert_array_equal(ex["answered_from"], ex["exit_stage"])
    assert (req.batch_size >= 1).all() and (req.batch_size <= 4).all()
    assert (req.finish - req.start).min() >= STAGE_S  # at least one stage really ran
    summary = summarize(res)
    assert summary["completed"] == 150 and summary["accuracy"] == 1.0
    assert summary["exits"]["mean_stages_paid"] == (2 if semantics == "latency_only"
                                                     else pytest.approx(1 + (ex["exit_stage"] == 1).mean()))


def test_real_replay_respects_arrival_times_when_idle():
    beh = table()
    times = np.array([0.0, 0.05, 0.10])
    res = execute(times, model(beh), DynamicBatcher(1, 0.0), table=beh, samples=np.zeros(3, int), policy=NeverExit())
    start = res.requests.start
    assert (start >= times).all()
    # a free server starts each request before the next arrives (50 ms on), so it served it
    # alone when it came, neither early nor held back; idle, within a few ms (7.5 ms seen at
    # load 6 on 2 cores, hence the margin)
    assert (start[:-1] < times[1:]).all() and start[-1] < times[-1] + 0.05


def test_online_and_oracle_policies_are_refused():
    from servesim.policies.exit import Oracle

    beh = table()
    with pytest.raises(ValueError, match="not supported by the real executor"):
        execute(np.zeros(1), model(beh), DynamicBatcher(1), table=beh, samples=np.zeros(1, int), policy=Oracle())


@pytest.mark.parametrize("policy, ramp_calls", [(NeverExit(2), 0), (NeverExit(2, run_ramps=True), 6),
                                                (NeverExit(), 6)])
def test_vanilla_runs_no_ramp_head_on_the_real_executor_either(policy, ramp_calls):
    """The simulator skips switched-off ramps; the real executor skips the same calls."""
    beh, calls = table(), []
    staged = model(beh)
    heads = [lambda rows, h=h, i=i: calls.append(i) or h(rows) for i, h in enumerate(staged.heads)]
    staged = StagedModel(batch=staged.batch, stages=staged.stages, heads=heads)
    res = execute(np.zeros(6), staged, DynamicBatcher(1, 0.0), table=beh, samples=np.arange(6), policy=policy)
    assert (res.requests.exits["exit_stage"] == 1).all()
    assert calls.count(0) == ramp_calls and calls.count(1) == 6
