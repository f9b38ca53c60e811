"""Trace -> Trace transforms: window, scale_rate, compress_time, head; columns stay aligned."""

import math

import numpy as np
import pytest

from servesim.traces import Trace, TraceError, compress_time, concat, head, poisson, scale_rate, step, window


def indexed(times) -> Trace:
    """A trace whose column 'idx' is each request's original position, to check alignment."""
    times = np.asarray(times, dtype=float)
    return Trace(times, {"idx": np.arange(times.size), "size": np.arange(times.size) % 3 + 1}, "src")


def assert_aligned(result: Trace, original: Trace) -> None:
    idx = result.columns["idx"]
    np.testing.assert_array_equal(result.columns["size"], original.columns["size"][idx])


def test_window_rebases_and_keeps_columns():
    trace = indexed([0.5, 1.0, 2.0, 2.5, 3.0, 4.0])
    part = window(trace, 1.0, 3.0)
    np.testing.assert_array_equal(part.times, [0.0, 1.0, 1.5])  # [1, 3): 3.0 is excluded
    np.testing.assert_array_equal(part.columns["idx"], [1, 2, 3])
    assert_aligned(part, trace)
    assert "src" in part.source
    assert len(window(trace, 10.0, 20.0)) == 0


@pytest.mark.parametrize("t0, t1, words", [(2.0, 2.0, ["t0 < t1"]), (-1.0, 2.0, ["t0", "-1.0"]),
                                           (0.0, float("inf"), ["t1", "inf"])])
def test_window_errors(t0, t1, words):
    with pytest.raises(TraceError) as info:
        window(indexed([1.0]), t0, t1)
    for word in words:
        assert word in str(info.value)


def test_compress_time():
    trace = indexed([1.0, 2.0, 4.0])
    fast = compress_time(trace, 4.0)
    np.testing.assert_array_equal(fast.times, [0.25, 0.5, 1.0])
    np.testing.assert_array_equal(fast.columns["idx"], [0, 1, 2])
    np.testing.assert_array_equal(compress_time(trace, 0.5).times, [2.0, 4.0, 8.0])
    with pytest.raises(TraceError, match="factor"):
        compress_time(trace, 0)


def test_head():
    trace = indexed([1.0, 2.0, 4.0])
    first = head(trace, 2)
    np.testing.assert_array_equal(first.times, [1.0, 2.0])
    np.testing.assert_array_equal(first.columns["idx"], [0, 1])
    assert len(head(trace, 10)) == 3 and len(head(trace, 0)) == 0
    with pytest.raises(TraceError, match="max_requests"):
        head(trace, -1)


def test_scale_down_thins_independently(rng):
    original = poisson(100.0, count=50_000, rng=rng)
    trace = indexed(original.times)
    factor, n = 0.3, len(trace)
    scaled = scale_rate(trace, factor, rng=rng)
    # Binomial(n, f): sd sqrt(n f (1 - f)).
    assert abs(len(scaled) - n * factor) < 4 * math.sqrt(n * factor * (1 - factor))
    np.testing.assert_array_equal(scaled.times, trace.times[scaled.columns["idx"]])
    assert_aligned(scaled, trace)


@pytest.mark.parametrize("factor", [1.0, 2.0, 3.5])
def test_scale_up_count_span_and_alignment(factor, rng):
    trace = indexed(poisson(100.0, count=20_000, rng=rng).times)
    n = len(trace)
    scaled = scale_rate(trace, factor, rng=rng)
    k = math.ceil(factor)
    p = factor / k
    # n*k independent Bernoulli(p) draws: sd sqrt(n k p (1 - p)).
    assert abs(len(scaled) - n * factor) <= 4 * math.sqrt(n * k * p * (1 - p))
    assert scaled.times.max() <= trace.times.max()  # same span
    # every request lies between the arrival it copies and that arrival's successor (for the
    # last arrival: its predecessor)
    idx = scaled.columns["idx"]
    lower = np.where(idx == n - 1, trace.times[n - 2], trace.times[idx])
    upper = trace.times[np.minimum(idx + 1, n - 1)]
    assert np.all(scaled.times >= lower) and np.all(scaled.times <= upper)
    assert_aligned(scaled, trace)


def test_scale_up_spreads_copies_instead_of_stacking_duplicates(rng):
    trace = poisson(50.0, count=10_000, rng=rng)
    scaled = scale_rate(trace, 3.0, rng=rng)
    assert len(np.unique(scaled.times)) == len(scaled)


def test_scale_up_keeps_the_rate_shape(rng):
    # 20 req/s for 200 s then 200 req/s for 200 s; x2.5 must give ~50 then ~500 req/s.
    trace = step((20.0, 200.0), (200.0,), duration=400.0, rng=rng)
    scaled = scale_rate(trace, 2.5, rng=rng)
    for lo, hi in ((0.0, 200.0), (200.0, 400.0)):
        before = int(((trace.times >= lo) & (trace.times < hi)).sum())
        after = int(((scaled.times >= lo) & (scaled.times < hi)).sum())
        # each of the 3 copies, kept w.p. 5/6, moves at most one request across an edge
        sd = math.sqrt(before * 3 * (5 / 6) * (1 / 6))
        assert abs(after - 2.5 * before) < 4 * sd + 3


def test_scale_rate_is_deterministic_and_validates():
    trace = poisson(10.0, count=1000, rng=np.random.default_rng(1))
    a = scale_rate(trace, 2.2, rng=np.random.default_rng(5))
    b = scale_rate(trace, 2.2, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a.times, b.times)
    with pytest.raises(TraceError, match="factor"):
        scale_rate(trace, -1.0, rng=np.random.default_rng(5))
    with pytest.raises(TraceError, match="rng"):
        scale_rate(trace, 2.0, rng=None)


def test_scale_up_a_single_request(rng):
    one = indexed([2.0])
    scaled = scale_rate(one, 3.0, rng=rng)
    assert len(scaled) == 3 and np.all(scaled.times == 2.0)


def test_transforms_of_an_empty_trace(rng):
    empty = Trace(np.empty(0))
    for result in (window(empty, 0, 1), compress_time(empty, 2), head(empty, 3),
                   scale_rate(empty, 0.5, rng=rng), scale_rate(empty, 2.5, rng=rng)):
        assert len(result) == 0


def test_concat_plays_pieces_one_after_another_with_their_columns():
    a = Trace(np.array([0.5, 1.5]), {"size": np.array([1, 2])}, "a")
    b = Trace(np.array([0.25]), {"size": np.array([3])}, "b")
    both = concat([a, b, a], [2.0, 1.0, 2.0])
    np.testing.assert_array_equal(both.times, [0.5, 1.5, 2.25, 3.5, 4.5])
    np.testing.assert_array_equal(both.columns["size"], [1, 2, 3, 1, 2])
    assert both.source == "concat(a, b, a)"


@pytest.mark.parametrize("pieces, lengths, words", [
    ([Trace(np.array([0.5]))], [0.5], "past its length 0.5"),
    ([Trace(np.array([0.5]))], [1.0, 2.0], "one length per piece"),
    ([Trace(np.array([0.5]), {"size": np.array([1])}), Trace(np.array([0.5]))], [1.0, 1.0], "piece 1 has columns"),
])
def test_concat_refuses_what_cannot_be_played_in_turn(pieces, lengths, words):
    with pytest.raises(TraceError, match=words):
        concat(pieces, lengths)
