"""The latency sketch (sim/sketch.py): ddsketch's keys computed by numpy, quantiles within
the stated relative error of the exact lower-rank ones, exact merges, and its JSON."""

import json

import numpy as np
import pytest

from servesim.sim.sketch import LatencySketch

QS = (0.0, 0.001, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
ROUNDING = 1e-12  # the representative's pow and product round a few ulps off gamma**k * 2 / (1 + gamma)


def samples(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        return rng.lognormal(np.log(0.005), 1.0, n)
    if kind == "bimodal":  # a fast path and a slow one, three orders of magnitude apart
        return np.where(rng.random(n) < 0.9, rng.normal(0.002, 0.0002, n).clip(1e-4), rng.normal(2.0, 0.3, n).clip(0.1))
    return (rng.pareto(1.1, n) + 1) * 1e-3  # heavy tail: infinite variance


@pytest.mark.parametrize("accuracy", [0.01, 0.001, 0.05])
def test_numpy_keys_are_the_mappings_keys(accuracy):
    sketch = LatencySketch(accuracy)
    values = np.random.default_rng(1).lognormal(-3, 4, 50_000)  # 1e-9 s .. hours
    values = values[values > sketch.zero_threshold]
    assert np.array_equal(sketch.keys(values), [sketch.mapping.key(v) for v in values])


@pytest.mark.parametrize("accuracy", [0.01, 0.005, 0.001])
def test_at_a_bucket_edge_a_key_may_be_one_off_and_the_error_stays_in_bound(accuracy):
    sketch = LatencySketch(accuracy)
    mapping = sketch.mapping
    edges = np.array([mapping.value(k) * (1 + mapping.gamma) / 2 for k in range(-1500, 700)])  # gamma**k
    values = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    values = values[values > sketch.zero_threshold]
    mine = sketch.keys(values)
    theirs = np.array([mapping.key(v) for v in values])
    assert np.abs(mine - theirs).max() <= 1
    for value, key in zip(values, mine):  # whichever key, its representative is within the bound
        assert abs(mapping.value(int(key)) - value) <= (accuracy + ROUNDING) * value


@pytest.mark.parametrize("kind", ["lognormal", "bimodal", "pareto"])
@pytest.mark.parametrize("n", [1, 7, 1000, 1_000_000])
def test_quantiles_are_within_the_relative_error_of_the_exact_ones(kind, n):
    values = samples(kind, n, seed=n)
    sketch = LatencySketch(0.01)
    for part in np.array_split(values, 5):
        sketch.add(part)
    exact = np.quantile(values, QS, method="lower")
    got = np.array(sketch.quantiles(QS))
    assert np.all(np.abs(got - exact) <= (0.01 + ROUNDING) * exact)
    assert got[0] == values.min() and got[-1] == values.max()  # the extremes are kept exactly
    assert sketch.quantile(0.5) == got[QS.index(0.5)]
    assert sketch.count == n and sketch.min == values.min() and sketch.max == values.max()
    assert sketch.sum == pytest.approx(values.sum(), rel=1e-12)
    assert sketch.counts.size < 1200  # 1 us .. 1e4 s at 1% is ~1,150 keys


def test_values_at_or_below_the_zero_threshold_are_answered_as_zero():
    sketch = LatencySketch(0.01)
    values = np.array([0.0, 0.0, 1e-12, 1e-9, 0.004, 0.005, 0.006])
    sketch.add(values)
    assert sketch.zero_count == 4 and sketch.count == 7
    assert sketch.quantiles([0.0, 0.5, 4 / 6]) == [0.0, 0.0, pytest.approx(0.004, rel=0.01)]  # ranks 0, 3, 4
    zeros = LatencySketch(0.01)
    zeros.add(np.zeros(10))
    assert zeros.quantiles([0, 0.5, 1]) == [0.0, 0.0, 0.0] and not zeros.counts.size


def test_an_empty_sketch_answers_none_and_bad_values_are_refused():
    sketch = LatencySketch(0.01)
    sketch.add(np.zeros(0))
    assert sketch.quantile(0.5) is None and sketch.count == 0
    for bad in ([0.1, -1e-3], [0.1, np.nan], [np.inf]):
        with pytest.raises(ValueError, match="finite and >= 0"):
            sketch.add(np.array(bad))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sketch.quantile(1.5)


@pytest.mark.parametrize("kind", ["lognormal", "bimodal", "pareto"])
def test_a_merge_is_the_sketch_of_the_concatenation(kind):
    values = np.concatenate([samples(kind, 100_000, seed=3), np.zeros(50)])
    parts = np.array_split(values, [10, 60_000, 60_001])
    whole, merged = LatencySketch(0.01), LatencySketch(0.01)
    whole.add(values)
    for part in parts:
        one = LatencySketch(0.01)
        one.add(part)
        merged.merge(one)
    merged.merge(LatencySketch(0.01))  # an empty one changes nothing
    assert merged.offset == whole.offset and np.array_equal(merged.counts, whole.counts)
    assert (merged.count, merged.zero_count, merged.min, merged.max) == (whole.count, whole.zero_count,
                                                                         whole.min, whole.max)
    assert merged.sum == pytest.approx(whole.sum, rel=1e-12)
    assert merged.quantiles(QS) == whole.quantiles(QS)


def test_sketches_of_different_accuracy_do_not_merge():
    with pytest.raises(ValueError, match="relative accuracy 0.02"):
        LatencySketch(0.01).merge(LatencySketch(0.02))


def test_json_round_trip_is_small_and_exact():
    sketch = LatencySketch(0.01)
    sketch.add(np.concatenate([samples("bimodal", 100_000, seed=4), [0.0]]))
    data = json.loads(json.dumps(sketch.to_json()))
    back = LatencySketch.from_json(data)
    assert back.offset == sketch.offset and np.array_equal(back.counts, sketch.counts)
    assert (back.count, back.zero_count, back.sum, back.min, back.max) == (sketch.count, sketch.zero_count,
                                                                          sketch.sum, sketch.min, sketch.max)
    assert len(json.dumps(data)) < 10_000  # non-empty buckets only
    empty = LatencySketch.from_json(LatencySketch(0.01).to_json())
    assert empty.count == 0 and empty.quantile(0.5) is None


@pytest.mark.parametrize("change, field", [
    ({"keys": [1, 2]}, "'keys' and 'counts'"),
    ({"keys": [3, 1, 2]}, "'keys'"),
    ({"counts": [1, 0, 1]}, "'counts'"),
    ({"counts": "1,1,1"}, "'counts'"),
    ({"count": 99}, "'count'"),
    ({"count": -1}, "'count'"),
    ({"relative_accuracy": 1.5}, "'relative_accuracy'"),
    ({"relative_accuracy": "1%"}, "'relative_accuracy'"),
    ({"min": 5.0, "max": 1.0}, "'min' and 'max'"),
    ({"sum": float("nan")}, "'sum'"),
])
def test_bad_json_is_a_one_line_error_naming_the_field(change, field):
    good = {"relative_accuracy": 0.01, "zero_threshold": 1e-9, "count": 3, "zero_count": 0, "sum": 0.03,
            "min": 0.009, "max": 0.011, "keys": [-232, -231, -230], "counts": [1, 1, 1]}
    LatencySketch.from_json(good)
    with pytest.raises(ValueError, match=field) as error:
        LatencySketch.from_json({**good, **change})
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="missing field 'keys'"):
        LatencySketch.from_json({k: v for k, v in good.items() if k != "keys"})
    with pytest.raises(ValueError, match="expected a mapping"):
        LatencySketch.from_json([1, 2])


def test_the_cdf_runs_through_the_buckets_to_one():
    """The CDF the plots draw: each bucket's value with the share of values up to it, the
    value within the stated error of the exact quantile at that share."""
    values = np.random.default_rng(3).lognormal(-6, 0.6, 50_000)
    sketch = LatencySketch(0.01)
    sketch.add(values)
    x, share = sketch.cdf()
    assert np.all(np.diff(x) > 0) and np.all(np.diff(share) > 0) and share[-1] == 1.0
    exact = np.sort(values)
    for value, fraction in zip(x[::7], share[::7]):
        rank = int(np.ceil(fraction * exact.size)) - 1  # the last value counted up to this bucket
        assert abs(value - exact[rank]) <= 0.01 * exact[rank] * 1.0001


def test_a_points_sketches_pool_and_a_run_without_one_does_not():
    a, b = LatencySketch(0.01), LatencySketch(0.01)
    a.add(np.array([1e-3, 2e-3]))
    b.add(np.array([3e-3]))
    pooled = LatencySketch.pooled([{"latency_sketch": a.to_json()}, {"latency_sketch": b.to_json()}])
    assert pooled.count == 3 and pooled.max == 3e-3
    assert LatencySketch.pooled([{"latency_sketch": a.to_json()}, {}]) is None
