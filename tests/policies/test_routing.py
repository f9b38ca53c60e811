import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from servesim.policies.routing import JoinShortestQueue, PowerOfTwoChoices, RandomRouter, RoundRobin


def test_round_robin_cycles():
    router = RoundRobin()
    assert [router.choose([0, 0, 0]) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_jsq_picks_the_least_loaded_lowest_index_on_ties():
    router = JoinShortestQueue()
    assert router.choose([3, 1, 2]) == 1
    assert router.choose([2, 1, 1]) == 1
    assert router.choose([1, 0, 2, 0]) == 1


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=12))
def test_jsq_is_the_first_index_of_the_least_load(loads):
    # (its shortcut for an idle replica must not change the choice)
    assert JoinShortestQueue().choose(loads) == int(np.argmin(loads))


def test_random_is_uniform_and_reproducible():
    router = RandomRouter(np.random.default_rng(3))
    picks = [router.choose([0] * 4) for _ in range(40_000)]
    counts = np.bincount(picks, minlength=4)
    # Each count is Binomial(40000, 1/4): sd = 86.6; 5 sd = 433.
    assert np.all(np.abs(counts - 10_000) < 433)
    again = RandomRouter(np.random.default_rng(3))
    assert [again.choose([0] * 4) for _ in range(40_000)] == picks


def test_power_of_two_never_picks_the_more_loaded_of_its_two():
    router = PowerOfTwoChoices(np.random.default_rng(1))
    loads = [5, 0, 5, 5]
    picks = [router.choose(loads) for _ in range(5_000)]
    # Replica 1 wins whenever it is one of the two sampled: probability 1/2.
    share = picks.count(1) / len(picks)
    assert abs(share - 0.5) < 5 * np.sqrt(0.25 / len(picks))
    # With a single replica there is nothing to choose.
    assert router.choose([7]) == 0
