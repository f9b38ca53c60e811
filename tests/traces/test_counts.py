"""Per-bin counts -> arrivals: exact counts per bin, arrivals inside their bins, errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.traces import TraceError, from_counts
from servesim.traces.counts import scatter


def per_bin(times, bins: int, bin_seconds: float) -> np.ndarray:
    """Arrivals in each bin [k*b, (k+1)*b), with the same float64 edges from_counts uses."""
    edges = np.arange(bins + 1) * bin_seconds
    return np.diff(np.searchsorted(times, edges))


@pytest.mark.parametrize("bin_seconds", [1.0, 60.0, 0.1])
def test_uniform_keeps_every_count_inside_its_bin(bin_seconds, rng):
    counts = rng.poisson(30, 2000)
    counts[::7] = 0
    trace = from_counts(counts, bin_seconds, rng=rng)
    assert len(trace) == counts.sum()
    np.testing.assert_array_equal(per_bin(trace.times, counts.size, bin_seconds), counts)
    assert trace.times.max() < counts.size * bin_seconds


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=60),
    bin_seconds=st.floats(1e-3, 1e3, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
)
def test_uniform_counts_property(counts, bin_seconds, seed):
    trace = from_counts(counts, bin_seconds, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(per_bin(trace.times, len(counts), bin_seconds), counts)


def test_uniform_places_arrivals_uniformly_within_bins(rng):
    counts = np.full(1000, 50)
    trace = from_counts(counts, 2.0, rng=rng)
    offsets = (trace.times % 2.0) / 2.0
    # Mean of n uniforms: sd sqrt(1/12/n).
    assert abs(offsets.mean() - 0.5) < 4 * math.sqrt(1 / 12 / offsets.size)


def test_scatter_pulls_arrivals_rounded_onto_the_upper_edge_back_inside():
    class AlmostOne:
        """u just below 1: lower + u*width rounds up to the next bin's edge for large lower."""

        def random(self, n):
            return np.full(n, np.nextafter(1.0, 0.0))

    edges = np.arange(1e6, 1e6 + 4)
    times = scatter(np.array([2, 1, 3]), edges, AlmostOne())
    assert np.all(times < np.repeat(edges[1:], [2, 1, 3]))
    np.testing.assert_array_equal(np.diff(np.searchsorted(times, edges)), [2, 1, 3])


def test_poisson_mode_draws_counts_around_the_given_ones(rng):
    counts = np.full(4000, 25)
    trace = from_counts(counts, 1.0, mode="poisson", rng=rng)
    observed = per_bin(trace.times, counts.size, 1.0)
    # The total is Poisson(100,000): sd sqrt(100,000). Each bin is Poisson(25), variance 25;
    # the sample variance of n such bins has sd sqrt((mu4 - sigma^4) / n) = sqrt((25 + 2*25^2) / n).
    assert abs(len(trace) - counts.sum()) < 4 * math.sqrt(counts.sum())
    assert abs(observed.var() - 25) < 4 * math.sqrt((25 + 2 * 25**2) / counts.size)


def test_same_seed_same_arrivals():
    counts = [3, 0, 5, 1]
    for mode in ("uniform", "poisson"):
        a = from_counts(counts, 1.0, mode=mode, rng=np.random.default_rng(3))
        b = from_counts(counts, 1.0, mode=mode, rng=np.random.default_rng(3))
        np.testing.assert_array_equal(a.times, b.times)


def test_integral_float_counts_are_accepted(rng):
    trace = from_counts(np.array([2.0, 0.0, 1.0]), 1.0, rng=rng, source="x.csv")
    assert len(trace) == 3 and trace.source == "x.csv"


def test_empty_series(rng):
    assert len(from_counts([], 1.0, rng=rng)) == 0


@pytest.mark.parametrize(
    "counts, kwargs, words",
    [
        ([1, 2, -1, 4], {}, ["bin 2", "-1", "src"]),
        ([1, 2.5], {}, ["bin 1", "2.5", "whole"]),
        ([1, float("nan")], {}, ["bin 1", "nan"]),
        ([[1, 2]], {}, ["1-D", "(1, 2)"]),
        (["a"], {}, ["numbers"]),
        ([1], {"bin_seconds": 0}, ["bin_seconds", "0"]),
        ([1], {"mode": "even"}, ["mode", "'even'", "uniform", "poisson"]),
        ([1], {"rng": 5}, ["rng", "Generator"]),
    ],
)
def test_errors(counts, kwargs, words, rng):
    args = {"bin_seconds": 1.0, "rng": rng, "source": "src", **kwargs}
    with pytest.raises(TraceError) as info:
        from_counts(counts, args.pop("bin_seconds"), **args)
    for word in words:
        assert word in str(info.value)
