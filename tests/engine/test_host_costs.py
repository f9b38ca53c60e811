"""The serving host's own time, as a served profile measures it and the engine charges it.

Engine side, on a hand-written profile whose every time is known: the host's time before
a batch (``batch`` on an idle server, ``turnaround`` right after the previous batch)
and after each decision (``exit`` when nobody left, ``leave`` when some did, ``final``
after the last stage, ``all_left`` when everyone left at a ramp) lands exactly where it should; ``per_batch`` noise scales a
whole batch by the measured spread of whole batches. Measuring side: on a stand-in
model that spins a known time per stage, :func:`sim.real.measure_served` finds that
time and reports every host part at every size.
"""

from __future__ import annotations

import math

import time

import numpy as np
import pytest

from enginekit import METADATA
from servesim.policies.batching import FixedBatcher
from servesim.policies.exit import ExitPolicy, NeverExit
from servesim.sim import simulate
from servesim.sim.exits import ExitRun, ExitSetup
from servesim.sim.real import StagedModel, measure_served
from servesim.traces.trace import Trace
from servesim.workloads import Profile, ProfileError
from servesim.workloads.behaviour import BehaviourTable
from servesim.workloads.exits import ExitModel, SegmentCosts
from servesim.workloads.noise import Deterministic, PerBatch

MODEL_MS = {"b1": {2: 1.0, 4: 2.0}, "r1": {2: 0.1, 4: 0.2}, "b2": {2: 3.0, 4: 4.0}}
HOST_MS = {"batch": {2: 0.05, 4: 0.06}, "exit": {2: 0.01, 4: 0.02}, "leave": {2: 0.03, 4: 0.04},
           "final": {2: 0.005, 4: 0.007}, "turnaround": {2: 0.08, 4: 0.09}}


def profile(host: dict, total_factor: float | None = None) -> Profile:
    models = {"ee": MODEL_MS, "ee_host": dict(host)}
    if total_factor is not None:  # whole batches took total_factor times the sum of medians
        models["ee_host"]["total"] = {b: total_factor * never_ms(b, host) for b in (2, 4)}
    rows = [("hw", m, stage, b, ms, ms, ms, 1)
            for m, stages in models.items() for stage, by_b in stages.items() for b, ms in by_b.items()]
    return Profile.from_rows(rows, METADATA)


def never_ms(b: int, host: dict) -> float:
    """A never-exiting batch of b on an idle server."""
    return host["batch"][b] + sum(MODEL_MS[s][b] for s in MODEL_MS) + host["exit"][b] + host["final"][b]


class FirstHalfLeaves(ExitPolicy):
    """At the ramp, batch positions 0 and 1 leave; the rest go on."""

    def decide(self, obs):
        m = obs.confidence.shape[0]
        return np.arange(m) < 2, np.full(m, obs.exit_index, np.int64)


def run(n: int, policy: ExitPolicy, prof: Profile, noise=Deterministic()):
    costs = SegmentCosts(prof, ExitModel.early_exit(prof, "ee", {"b1": "r1"}), out_of_range="error",
                         host="ee_host", noise=noise)
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.1, 1.0, (8, 2))
    beh = BehaviourTable(confidence, np.ones((8, 2), bool), np.ones((8, 2), bool), np.zeros((8, 2), np.int32),
                         None, ("r1", "final"))
    setup = ExitSetup(costs, beh, np.arange(n) % 8, policy, "compute_saving")
    return simulate(Trace(np.zeros(n), source="burst"), costs, FixedBatcher(4), exits=setup,
                    rng=np.random.default_rng(1)), costs


def test_host_time_lands_where_the_host_spends_it():
    res, _ = run(4, FirstHalfLeaves(), profile(HOST_MS))
    h, m = HOST_MS, MODEL_MS
    left = h["batch"][4] + m["b1"][4] + m["r1"][4] + h["leave"][4]  # two left, two went on
    rest = left + m["b2"][2] + h["final"][2]
    np.testing.assert_allclose(res.requests.finish, np.array([left, left, rest, rest]) / 1e3, rtol=1e-12)


def test_exits_that_cost_more_than_they_save_make_the_server_slower():
    """What leaving costs the host at the ramp (a GPU's synchronisation and gather, as
    a served profile measures them in ``leave``) is charged where it is spent: at 5 ms,
    more than the 3-4 ms of b2 it spares two requests, the batch with exits ends later
    than the same batch without exits (every request through both stages, no ramp)."""
    costly = {**HOST_MS, "leave": {2: 5.0, 4: 5.0}}
    with_exits, _ = run(4, FirstHalfLeaves(), profile(costly))
    plain = HOST_MS["batch"][4] + MODEL_MS["b1"][4] + MODEL_MS["b2"][4] + HOST_MS["final"][4]
    assert with_exits.requests.finish.max() * 1e3 > plain
    assert with_exits.requests.finish.mean() * 1e3 > plain  # on average too: the leavers wait for the leave


class AllLeave(ExitPolicy):
    """Everyone leaves at the ramp."""

    def decide(self, obs):
        m = obs.confidence.shape[0]
        return np.ones(m, bool), np.full(m, obs.exit_index, np.int64)


@pytest.mark.parametrize("measured", [True, False])
def test_a_batch_that_all_left_at_a_ramp_pays_all_left_or_else_final(measured):
    host = {**HOST_MS, "all_left": {2: 0.002, 4: 0.003}} if measured else HOST_MS
    res, _ = run(4, AllLeave(), profile(host))
    done = HOST_MS["batch"][4] + MODEL_MS["b1"][4] + MODEL_MS["r1"][4] + host["all_left" if measured else "final"][4]
    np.testing.assert_allclose(res.requests.finish, done / 1e3, rtol=1e-12)


def test_a_batch_started_by_the_previous_ones_end_pays_the_turnaround():
    res, costs = run(8, NeverExit(), profile(HOST_MS))
    first = never_ms(4, HOST_MS)
    second = first - HOST_MS["batch"][4] + HOST_MS["turnaround"][4]
    np.testing.assert_allclose(res.requests.finish, np.repeat([first, first + second], 4) / 1e3, rtol=1e-12)
    # planning figures (a deadline batcher, the policies' stage costs) count the host too
    assert costs.batch_latency(4) == pytest.approx(first / 1e3, rel=1e-12)


def test_a_batch_starting_a_rounding_error_after_the_last_one_ended_pays_the_turnaround():
    """A lane's clock reaches its batch's end through SimPy's, which adds the batch's
    timeout to its own time and may land an ulp off the end the exit run computed (it
    did once in ~70,000 batches of experiments/fidelity_digits.yaml): that start is
    still right after the last batch, not on an idle server."""
    _, costs = run(4, NeverExit(), profile(HOST_MS))
    beh = BehaviourTable(np.full((8, 2), 0.5), np.ones((8, 2), bool), np.ones((8, 2), bool),
                         np.zeros((8, 2), np.int32), None, ("r1", "final"))
    play = ExitRun(ExitSetup(costs, beh, np.arange(12) % 8, NeverExit(), "compute_saving"), np.random.default_rng(1))
    first = play(0.0, [0, 1, 2, 3], 1)
    for late, ids in ((math.ulp(first), [4, 5, 6, 7]), (1e-6, [8, 9, 10, 11])):
        start = first + late
        took = (play(start, ids, 1) - start) * 1e3
        busy = never_ms(4, HOST_MS) - HOST_MS["batch"][4] + HOST_MS["turnaround"][4]
        assert took == pytest.approx(busy if late < 1e-9 else never_ms(4, HOST_MS), rel=1e-9), late
        first = start + took / 1e3


def test_without_a_turnaround_stage_a_busy_start_costs_what_an_idle_one_does():
    host = {k: v for k, v in HOST_MS.items() if k != "turnaround"}
    res, _ = run(8, NeverExit(), profile(host))
    np.testing.assert_allclose(res.requests.finish[4:], 2 * never_ms(4, host) / 1e3, rtol=1e-12)


def test_a_host_model_without_its_stages_is_refused_by_name():
    host = {k: v for k, v in HOST_MS.items() if k != "leave"}
    with pytest.raises(ProfileError, match=r"host model 'ee_host' needs the stages .* lacks \['leave'\]"):
        run(4, NeverExit(), profile(host))


def test_per_batch_noise_scales_the_whole_batch_by_the_measured_spread():
    plain, _ = run(4, FirstHalfLeaves(), profile(HOST_MS))
    scaled, _ = run(4, FirstHalfLeaves(), profile(HOST_MS, total_factor=1.25), noise=PerBatch())
    np.testing.assert_allclose(scaled.requests.finish, 1.25 * plain.requests.finish, rtol=1e-12)


def test_per_batch_noise_needs_the_whole_batches_measured():
    with pytest.raises(ProfileError, match="per_batch noise .* needs a host model with a 'total' stage"):
        run(4, NeverExit(), profile(HOST_MS), noise=PerBatch())


STAGE_S = 0.0004


def spinning_model() -> StagedModel:
    def stage(rows):
        end = time.perf_counter() + STAGE_S
        while time.perf_counter() < end:
            pass
        return rows

    def head(rows):
        return np.tile([0.6, 0.4], (len(rows), 1))

    return StagedModel(batch=np.asarray, stages=[stage, stage], heads=[head, head])


# Bursts arrive 2-4 ms of idle server after the batch before them is expected to end, not
# the default 0-0.5 ms: on a loaded machine (load 4 on 2 cores) a preempted batch overran
# the default's slack so often that no burst of 1 came out clean, while with this slack
# every part is still timed (and with none of it spoiled, the counts are the default's).
SLACK = (0.002, 0.004)


def test_measure_served_finds_the_stage_time_and_every_host_part():
    # 12 rounds: a loaded machine spoils bursts that overrun, and with 6 it once left no
    # burst of 1 that left at the ramp (all_left) to time
    found = measure_served(spinning_model(), np.arange(20), [1, 3], repeats=12, warmup=1, idle=SLACK)
    for b in (1, 3):
        for what in ("batch", "turnaround", "exit", "final", "all_left", "total"):
            assert found[(what, -1, b)].size > 0 and (found[(what, -1, b)] >= 0).all(), (what, b)
        for i in (0, 1):
            # a spin of 0.4 ms is measured as at least that, and (median) not far above it
            stage = found[("stage", i, b)]
            assert stage.min() >= STAGE_S and np.median(stage) < 1.5 * STAGE_S
        assert np.median(found[("total", -1, b)]) >= 2 * STAGE_S
        # whole batches come from their own replay, all of whose bursts find the server idle
        assert found[("total", -1, b)].size > found[("turnaround", -1, b)].size
    assert found[("leave", -1, 3)].size > 0  # some of a batch of 3 left at the ramp
    assert ("leave", -1, 1) not in found  # one request cannot leave while others go on


def test_measure_served_draws_burst_sizes_in_the_given_mix():
    found = measure_served(spinning_model(), np.arange(20), [1, 3], repeats=24, warmup=1, mix=[3, 1], idle=SLACK)
    # 0.9 * 3/4 + 0.05 = 0.725 of the bursts are of 1: whole batches of 1 far outnumber those of 3
    # (2.6 times as many drawn; a loaded machine spoils more bursts of 1, which leave less slack)
    assert found[("total", -1, 1)].size > 1.5 * found[("total", -1, 3)].size
    with pytest.raises(ValueError, match="mix must be one non-negative weight per batch size"):
        measure_served(spinning_model(), np.arange(20), [1, 3], repeats=1, warmup=0, mix=[1])
