"""Batching policies are pure functions of (now, queued, oldest arrival, draining)."""

import pytest

from policies.batching import DeadlineBatcher, DynamicBatcher, FixedBatcher


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


@pytest.mark.parametrize("make", [lambda: FixedBatcher(0), lambda: DynamicBatcher(0),
                                  lambda: DynamicBatcher(2, -1.0), lambda: FixedBatcher(2.5),
                                  lambda: DeadlineBatcher(0.0, 4, lambda b: 1.0)])
def test_bad_parameters_are_rejected(make):
    with pytest.raises(ValueError):
        make()
