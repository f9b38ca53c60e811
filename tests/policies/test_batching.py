"""Batching policies are pure functions of (now, queued, oldest arrival, draining, and
since when the worker is free). tests/engine/test_batching_timers.py replays each rule
through the engine."""

import pytest

from servesim.policies.batching import DeadlineBatcher, DynamicBatcher, FixedBatcher


def test_fixed_waits_for_a_full_batch_then_flushes_when_draining():
    policy = FixedBatcher(4)
    assert policy.decide(1.0, 3, 0.0, False) == (0, None)
    assert policy.decide(1.0, 4, 0.0, False) == (4, None)
    assert policy.decide(1.0, 9, 0.0, False) == (4, None)
    assert policy.decide(1.0, 1, 0.0, True) == (4, None)


def test_dynamic_runs_when_full_or_when_the_oldest_waited_max_wait():
    policy = DynamicBatcher(max_batch=8, max_wait=0.010)
    assert policy.decide(0.005, 3, 0.0, False) == (0, 0.010)  # wait until oldest + max_wait
    assert policy.decide(0.010, 3, 0.0, False) == (8, None)
    assert policy.decide(0.001, 8, 0.0, False) == (8, None)
    # The end of the trace does not cut the wait short: a real server cannot know it.
    assert policy.decide(0.005, 3, 0.0, True) == (0, 0.010)


def test_dynamic_with_zero_wait_is_greedy():
    assert DynamicBatcher(8, 0.0).decide(5.0, 2, 5.0, False) == (8, None)


def test_deadline_takes_the_largest_batch_that_meets_the_oldest_deadline():
    latency = {1: 0.010, 2: 0.015, 3: 0.020, 4: 0.030}
    policy = DeadlineBatcher(slo=0.050, max_batch=4, batch_latency=latency.__getitem__)
    # Oldest arrived at 0, now 0.025: 0.025 s left -> batch 3 (0.020) fits, 4 (0.030) not.
    assert policy.decide(0.025, 10, 0.0, False) == (3, None)
    # Plenty of time: as large as the queue allows.
    assert policy.decide(0.0, 2, 0.0, False) == (2, None)
    # Already late: still serve one (never starve); dropping is the engine's drop limit.
    assert policy.decide(1.0, 10, 0.0, False) == (1, None)


def test_worker_free_opens_the_window_when_the_worker_is_free():
    policy = DynamicBatcher(max_batch=8, max_wait=0.010, timer="worker_free")
    # The worker freed at 0.030; the oldest has queued since 0.0: the window opened at 0.030.
    assert policy.decide(0.030, 3, 0.0, False, 0.030) == (0, 0.040)
    assert policy.decide(0.040, 3, 0.0, False, 0.030) == (8, None)
    # An idle worker: the window opens with the request's arrival, as the Triton rule.
    assert policy.decide(0.050, 1, 0.045, False, 0.030) == (0, 0.055)
    assert policy.decide(0.050, 1, 0.045, False) == (0, 0.055)  # never busy yet
    triton = DynamicBatcher(max_batch=8, max_wait=0.010)
    assert triton.decide(0.030, 3, 0.0, False, 0.030) == (8, None)  # the oldest has waited long enough


def test_preferred_sizes_run_the_largest_that_can_be_formed_at_once():
    policy = DynamicBatcher(max_batch=16, max_wait=0.010, preferred=[8, 4])
    assert policy.decide(0.001, 3, 0.0, False) == (0, 0.010)
    assert policy.decide(0.001, 4, 0.0, False) == (4, None)
    assert policy.decide(0.001, 7, 0.0, False) == (4, None)  # Triton's documented example: 7 queued, [4, 8] -> 4
    assert policy.decide(0.001, 12, 0.0, False) == (8, None)
    assert policy.decide(0.001, 16, 0.0, False) == (16, None)
    assert policy.decide(0.010, 3, 0.0, False) == (16, None)  # timed out: as many as are queued


@pytest.mark.parametrize("make", [lambda: FixedBatcher(0), lambda: DynamicBatcher(0),
                                  lambda: DynamicBatcher(2, -1.0), lambda: FixedBatcher(2.5),
                                  lambda: DynamicBatcher(2, 0.0, timer="first_enqueue"),
                                  lambda: DynamicBatcher(4, 0.0, preferred=[8]),
                                  lambda: DynamicBatcher(4, 0.0, preferred=[0]),
                                  lambda: DeadlineBatcher(0.0, 4, lambda b: 1.0)])
def test_bad_parameters_are_rejected(make):
    with pytest.raises(ValueError):
        make()
