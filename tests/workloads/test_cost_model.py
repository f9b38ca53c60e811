import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from servesim.workloads import (
    BLOCK,
    CostModel,
    Deterministic,
    Empirical,
    Exponential,
    Gamma,
    LogNormal,
    Profile,
    ProfileError,
    ProfileRangeError,
    ProfileRangeWarning,
)

NOISES = [Deterministic(), Empirical(), Exponential(), LogNormal(0.5), Gamma(2.0)]


def quiet(cost):
    """Ask for latencies without the range warnings (tested separately)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileRangeWarning)
        return cost()


def test_exact_at_measured_points_in_seconds(two_stage):
    cost = CostModel(two_stage, "m")
    assert cost.stages == ("a", "b")
    assert cost.model_spec.name == "m"
    assert cost.hardware == "cpu"
    for b, p50_ms in [(1, 1.0), (2, 2.0), (4, 3.0), (8, 7.0)]:
        assert cost.latency("a", b) == p50_ms / 1e3
    assert cost.percentiles(4)[0].p90 == 4.0 / 1e3
    assert isinstance(cost.latency("a", 3), float)


def test_linear_between_measured_points(two_stage):
    cost = CostModel(two_stage, "m")
    assert cost.latency("a", 3) == pytest.approx((2.0 + 3.0) / 2 / 1e3)
    assert cost.latency("a", 5) == pytest.approx((3.0 + (7.0 - 3.0) / 4) / 1e3)
    assert cost.latency("b", 3) == pytest.approx((0.5 + 0.9) / 2 / 1e3)
    p = quiet(lambda: cost.percentiles(6))[0]
    assert (p.p50, p.p90, p.p99) == pytest.approx((5e-3, 6e-3, 7.5e-3))


def test_batch_latency_is_the_sum_over_stages(two_stage):
    cost = CostModel(two_stage, "m")
    assert cost.max_profiled_batch == 4  # the largest batch size measured for every stage
    for b in (2, 3, 4):
        assert cost.batch_latency(b) == pytest.approx(cost.latency("a", b) + cost.latency("b", b))
    # 'b' is extrapolated from (2, 0.5 ms) and (4, 0.9 ms): 0.9 + 0.4 * (8 - 4) / 2 = 1.7 ms
    assert quiet(lambda: cost.batch_latency(8)) == pytest.approx(7e-3 + 1.7e-3)


@pytest.fixture
def one_stage(make_profile):
    return make_profile({"s": [(2, 2.0, 3.0, 4.0), (4, 4.0, 5.0, 6.0), (8, 6.0, 8.0, 9.0)]})


def test_extrapolate_continues_the_last_segment(one_stage):
    cost = CostModel(one_stage, "m")
    p = quiet(lambda: cost.percentiles(12)[0])
    # last segment 4 -> 8: p50 +2 ms, p90 +3 ms, p99 +3 ms per 4 batch sizes
    assert (p.p50, p.p90, p.p99) == pytest.approx((8e-3, 11e-3, 12e-3))


def test_extrapolate_never_goes_below_the_last_point_and_keeps_order(make_profile):
    profile = make_profile({"s": [(1, 5.0, 5.0, 9.0), (2, 4.0, 6.0, 6.0)]})  # p50 falls, p90 rises
    cost = CostModel(profile, "m")
    p = quiet(lambda: cost.percentiles(10)[0])
    assert p.p50 == 4e-3  # not below the last measured median
    assert p.p90 == pytest.approx(6e-3 + 8 * 1e-3)
    assert p.p99 == p.p90  # p99 fell below p90 on its own line; order restored


def test_clamp_and_below_range(one_stage):
    cost = CostModel(one_stage, "m", out_of_range="clamp")
    assert quiet(lambda: cost.latency("s", 100)) == 6e-3
    assert quiet(lambda: cost.latency("s", 1)) == 2e-3
    extrapolating = CostModel(one_stage, "m")
    assert quiet(lambda: extrapolating.latency("s", 1)) == 2e-3  # below: always the smallest measured


def test_error_mode_raises_above_but_clamps_below(one_stage):
    cost = CostModel(one_stage, "m", out_of_range="error")
    message = r"model 'm' stage 's' on 'cpu': batch size 9 is outside the profiled range \[2, 8\]"
    with pytest.raises(ProfileRangeError, match=message):
        cost.latency("s", 9)
    with pytest.raises(ProfileRangeError, match=message):
        cost.sampler(0)(9)
    with pytest.raises(ProfileRangeError, match=message):
        cost.batch_latency(9)
    assert quiet(lambda: cost.latency("s", 1)) == 2e-3
    assert isinstance(ProfileRangeError("x"), ValueError)


def test_warns_once_per_stage_and_batch_size_and_counts_every_request(two_stage):
    cost = CostModel(two_stage, "m", noise=Exponential())
    sample = cost.sampler(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            cost.latency("a", 10)
        cost.batch_latency(10)
        sample(10)
        sample(10)
        sample(3)  # 'b' is in range at 3, 'a' too: nothing to say
        sample(1)  # 'b' is measured from 2 on
    messages = sorted(str(w.message) for w in caught)
    assert all(issubclass(w.category, ProfileRangeWarning) for w in caught)
    assert len(messages) == 3
    assert "stage 'a' on 'cpu': batch size 10 is outside the profiled range [1, 8]" in messages[0]
    assert "stage 'b' on 'cpu': batch size 1 is outside the profiled range [2, 4]; using the batch-2" in messages[1]
    assert "stage 'b' on 'cpu': batch size 10 is outside the profiled range [2, 4]; extrapolating" in messages[2]
    assert all(m.startswith("model 'm' ") for m in messages)
    assert cost.out_of_range_requests == {("a", 10): 6, ("b", 10): 3, ("b", 1): 1}
    with pytest.warns(ProfileRangeWarning):  # a new cost model warns afresh
        CostModel(two_stage, "m").latency("a", 10)


def test_warning_points_at_the_caller(one_stage):
    cost = CostModel(one_stage, "m")
    with pytest.warns(ProfileRangeWarning) as caught:
        cost.sampler(0)(20)
    assert caught[0].filename == __file__


def test_deterministic_sampler_is_batch_latency(two_stage):
    cost = CostModel(two_stage, "m")
    sample = cost.sampler(0)
    for b in range(2, 5):
        assert sample(b) == cost.batch_latency(b)


@pytest.mark.parametrize("noise", NOISES, ids=repr)
def test_same_seed_same_samples(two_stage, noise):
    sizes = np.random.default_rng(99).integers(2, 5, 3 * BLOCK).tolist()  # crosses block refills

    def run(rng):
        sample = CostModel(two_stage, "m", noise=noise).sampler(rng)
        return [sample(b) for b in sizes]

    assert run(np.random.default_rng(7)) == run(7)
    if not isinstance(noise, Deterministic):
        assert run(1) != run(2)


@pytest.mark.parametrize("noise", NOISES[1:], ids=repr)
def test_samplers_do_not_share_state(two_stage, noise):
    cost = CostModel(two_stage, "m", noise=noise)
    alone = cost.sampler(3)
    expected = [alone(4) for _ in range(100)]
    busy, other = cost.sampler(3), cost.sampler(3)
    got = []
    for _ in range(100):
        other(2)  # another sampler of the same cost model, drawing in between
        got.append(busy(4))
    assert got == expected


def test_hardware_choice(metadata):
    rows = [("cpu", "m", "s", 1, 1, 1, 1, 1), ("gpu", "m", "s", 1, 0.1, 0.1, 0.1, 1), ("gpu", "g", "s", 1, 1, 1, 1, 1)]
    profile = Profile.from_rows(rows, metadata, "mixed")
    with pytest.raises(ProfileError, match=r"model 'm' is profiled on \('cpu', 'gpu'\); pass hardware="):
        CostModel(profile, "m")
    assert CostModel(profile, "m", hardware="gpu").latency("s", 1) == 1e-4
    assert CostModel(profile, "g").hardware == "gpu"
    with pytest.raises(ProfileError, match="model 'g' has no rows for hardware 'cpu'"):
        CostModel(profile, "g", hardware="cpu")
    with pytest.raises(ProfileError, match="no rows for model 'x'"):
        CostModel(profile, "x")


def test_bad_arguments(two_stage):
    with pytest.raises(ValueError, match="out_of_range must be one of"):
        CostModel(two_stage, "m", out_of_range="wrap")
    cost = CostModel(two_stage, "m")
    with pytest.raises(ValueError, match=r"model 'm' has no stage 'c'; its stages are \('a', 'b'\)"):
        cost.latency("c", 1)
    with pytest.raises(ValueError, match="batch size must be a whole number >= 1, got 0"):
        cost.latency("a", 0)
    assert cost.profiled_range("b") == (2, 4)


monotone_tables = st.lists(
    st.tuples(
        st.integers(1, 64),  # batch size
        st.floats(0.0, 5.0),  # p50 increase over the previous batch size
        st.floats(0.0, 5.0),  # p90 - p50
        st.floats(0.0, 5.0),  # p99 - p90
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda t: t[0],
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=monotone_tables, mode=st.sampled_from(["extrapolate", "clamp"]))
@example(points=[(1, 0.0, 0.001953125, 5.575912002018477e-17), (3, 0.0, 2.0, 0.0)], mode="extrapolate")  # p99 < p90 by one ulp
def test_monotone_table_gives_monotone_latency(make_profile, points, mode):
    rows, p50 = [], 0.01
    for b, step, d90, d99 in sorted(points):
        p50 += step
        rows.append((b, p50, p50 + d90, p50 + d90 + d99))
    cost = CostModel(make_profile({"s": rows}), "m", out_of_range=mode)

    def check():
        previous = 0.0
        for b in range(1, 2 * rows[-1][0] + 3):
            p = cost.percentiles(b)[0]
            assert p.p50 >= previous
            assert p.p50 <= p.p90 <= p.p99
            assert cost.latency("s", b) == p.p50
            previous = p.p50

    quiet(check)


# --- interpolation error, from the profile's own points ---------------------------------

def test_a_straight_profile_has_no_interpolation_error(make_profile):
    cost = CostModel(make_profile({"a": [(b, 2.0 * b, 2.0 * b, 2.0 * b) for b in (1, 2, 4, 8, 16)]}), "m")
    assert [cost.interpolation_error(b) for b in (3, 5, 12)] == [0.0, 0.0, 0.0]
    assert cost.interpolation_report([3, 5, 12]) == {}


def test_interpolation_error_is_left_one_out_and_the_smaller_of_a_gap(make_profile):
    """Medians 1, 2, 4, 12 ms at 1, 2, 4, 8: size 2 held out (from 1 and 4) is exact;
    size 4 held out (from 2 and 8) is 5.33 against 4, a third off. The gap 2-4 is covered
    by both (the smaller: 0), the gap 4-8 by size 4 alone: a third."""
    cost = CostModel(make_profile({"a": [(1, 1.0, 1.0, 1.0), (2, 2.0, 2.0, 2.0), (4, 4.0, 4.0, 4.0),
                                         (8, 12.0, 12.0, 12.0)]}), "m")
    assert cost.interpolation_error(3) == 0.0
    assert cost.interpolation_error(6) == pytest.approx(1 / 3)
    assert [cost.interpolation_error(b) for b in (4, 8, 9)] == [None, None, None]  # measured, outside
    assert cost.interpolation_report([3, 5, 6, 8]) == {5: pytest.approx(1 / 3), 6: pytest.approx(1 / 3)}


def test_two_measured_sizes_cannot_tell(make_profile):
    cost = CostModel(make_profile({"a": [(1, 1.0, 1.0, 1.0), (8, 9.0, 9.0, 9.0)]}), "m")
    assert cost.interpolation_error(4) is None
