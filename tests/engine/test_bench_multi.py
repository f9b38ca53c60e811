"""The multi-replica cases of ``bench/engine.py`` (``bench/multi.py``) on a small trace:
servesim and the bench's heapq loop, written from the routing and batching rules alone,
give the same sample path, request by request (start time and replica exactly equal), on
the twelve cases and on other replica counts, batch limits, windows and loads
(hypothesis).
So the benchmark compares the same work, and a change to the engine that moves a sample
path shows here before a benchmark is run. No timing is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

BENCH = Path(__file__).resolve().parents[2] / "bench"
N = 3000


@pytest.fixture(scope="module")
def multi():
    sys.path.insert(0, str(BENCH))
    try:
        import multi  # bench/multi.py (and bench/timing.py, which it imports)
    finally:
        sys.path.remove(str(BENCH))
    return multi


@pytest.fixture(scope="module")
def inputs(multi):
    return multi.inputs(N)


@pytest.mark.parametrize("index", range(12))
def test_heapq_loop_gives_servesims_sample_path(multi, inputs, index):
    case = multi.CASES[index]
    times = multi.arrival_times(case, N, inputs.latency)
    _, results = multi.run_servesim(case, times, inputs.cost_model)
    _, (start, served_by) = multi.run_heapq(case, times, inputs)
    assert multi.compare(results, start, served_by) == (0.0, 0)
    req = results.requests
    # the case exercises what it names: queueing at rho 0.9, batches of several where it batches
    assert (req.batch_size.max() > 1) == (case.max_batch > 1)
    if case.rho > 0.5:
        assert np.mean(req.start > req.arrival) > 0.2



@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(route=st.sampled_from(["jsq", "rr", "shared"]), replicas=st.integers(1, 5), max_batch=st.integers(1, 8),
       max_wait=st.sampled_from([0.0, 2e-4, 1e-3, 5e-3]), rho=st.floats(0.2, 1.1), seed=st.integers(0, 2**31))
def test_heapq_loop_follows_the_engine_beyond_the_benchmarks_cases(multi, inputs, route, replicas, max_batch,
                                                                  max_wait, rho, seed):
    """The loop is written from the rules, not tuned to twelve cases: any replica count,
    batch limit and window, at loads up to overload, give servesim's sample path."""
    case = multi.Case(route, rho, max_batch, max_wait, replicas)
    times = multi.arrival_times(case, 400, inputs.latency, seed)
    _, results = multi.run_servesim(case, times, inputs.cost_model)
    _, (start, served_by) = multi.run_heapq(case, times, inputs)
    assert multi.compare(results, start, served_by) == (0.0, 0)
