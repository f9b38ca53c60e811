"""A steady run's table handed to a sink as the run goes (``sim/row_stream.py``): the
chunks, put together, are the table the run builds at the end, row for row and bit for
bit, on random small systems (hypothesis: every router and the shared queue, every
batching policy, drops, a serving host, one to three lanes a replica, under the heapq
loop and under SimPy's steady lanes), with a window of 8 or 16 arrivals so that a run of
a few hundred requests hands over dozens of chunks. A run that cannot stream (exits,
instances, requests of several items) hands its whole table over once, at the end."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from enginekit import make_cost
from servesim.policies.autoscaling import Deployment, Plan, StaticAdapter
from servesim.policies.batching import DynamicBatcher
from servesim.sim import simulate
from servesim.sim.cluster import ClusterCosts, _Cluster, simulate_cluster
from servesim.sim.host import ServingHost
from servesim.sim.records import COLUMNS
from servesim.traces import generators, poisson
from servesim.traces.trace import Trace
from servesim.workloads import Exponential
from test_cluster_invariants import window
from test_one_loop import ROUTERS, batcher, systems


def served(case, sink=None):
    """The case's results (one lane a replica: sim.simulate) or one-task cluster results."""
    trace = Trace(case["times"], source="test")
    router = ROUTERS[case["router"]]
    if case["lanes"] == 1:
        return simulate(trace, case["cost"], batcher(case), replicas=case["replicas"], router=router(),
                        shared_queue=router() is None, drop_after=case["drop"], rng=np.random.default_rng(0),
                        host=ServingHost(4e-4, 0.5) if case["host"] else None, sink=sink)
    sampler = case["cost"].sampler(np.random.default_rng(0))
    costs = ClusterCosts(service=lambda task, variant, cores: sampler, load_time=lambda task, variant: 0.0)
    return simulate_cluster(trace, ["t"], [], {"t": ("m",)}, costs, StaticAdapter(),
                            Plan({"t": (Deployment("m", case["replicas"], cores=case["lanes"], batch=case["batch"]),)}),
                            drop_after=None if case["drop"] is None else {"t": case["drop"]},
                            batching=lambda b, latency: batcher(case), routing=lambda key: router(), sink=sink)


def whole_and_streamed(case, one_loop: bool):
    _Cluster.one_loop = one_loop
    try:
        with window(case["window"] or 16):
            whole = served(case)
            chunks = []
            streamed = served(case, chunks.append)
    finally:
        _Cluster.one_loop = True
    return whole, streamed, chunks


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(systems(), st.booleans())
def test_the_chunks_make_the_table_the_run_builds_at_its_end(case, one_loop):
    whole, streamed, chunks = whole_and_streamed(case, one_loop)
    table = whole.requests if case["lanes"] == 1 else whole.table("t")
    n = len(case["times"])
    assert sum(len(c) for c in chunks) == n and all(len(c) for c in chunks)
    if n > 2 * (case["window"] or 16):
        assert len(chunks) > 1  # it streamed, not one chunk at the end
    for name in COLUMNS:
        joined = np.concatenate([getattr(c, name) for c in chunks])
        assert joined.dtype == getattr(table, name).dtype, name
        np.testing.assert_array_equal(joined, getattr(table, name), err_msg=name)
    if case["lanes"] == 1:
        assert streamed.requests is None
        assert (streamed.batches, streamed.end_time, streamed.replicas) == (whole.batches, whole.end_time,
                                                                            whole.replicas)
        busy, expected = streamed.busy_time, whole.busy_time
    else:
        assert streamed.streamed and streamed.end_time == whole.end_time
        assert streamed.stages["t"].batches == whole.stages["t"].batches
        np.testing.assert_array_equal(streamed.stages["t"].batch_items, whole.stages["t"].batch_items)
        busy, expected = [r.busy_s for r in streamed.replicas], [r.busy_s for r in whole.replicas]
    # the busy seconds are summed a chunk of batches at a time: equal up to the order of a float sum
    np.testing.assert_allclose(busy, expected, rtol=1e-12, atol=1e-15)


def test_a_run_that_cannot_stream_hands_its_table_over_at_the_end():
    """Requests of several items (a ``size`` column) leave the steady lanes: the sink gets
    the whole table once, and the results hold none."""
    times = np.arange(1, 200) * 1e-3
    trace = Trace(times, source="test", columns={"size": np.full(times.size, 2)})
    chunks = []
    with window(8):
        results = simulate(trace, make_cost({1: 1.0, 2: 1.2, 4: 1.5}, noise=Exponential()), DynamicBatcher(4),
                           replicas=2, rng=np.random.default_rng(0), sink=chunks.append)
    assert results.requests is None and len(chunks) == 1 and len(chunks[0]) == times.size
    assert (chunks[0].size == 2).all() and (chunks[0].status == 0).all()


def test_a_request_neither_served_nor_dropped_is_an_error_naming_it():
    """A chunk with a request the engine lost (a bug) is refused, not written: here the
    engine's record of a served request's batch is wiped before the chunk is built."""
    times = np.arange(1, 100) * 1e-3
    real = _Cluster.slide

    def losing(self):
        if self.rows is not None and self.rows.next <= 3 < self.arrived - 2:  # served, not yet handed over
            self.batch_of["model"][3] = -1
        real(self)

    with pytest.MonkeyPatch.context() as patch, window(8):
        patch.setattr(_Cluster, "slide", losing)
        with pytest.raises(Exception, match=r"1 request\(s\) were neither served nor dropped \(the first: 3\)"):
            simulate(Trace(times, source="test"), make_cost({1: 0.5}), DynamicBatcher(1), replicas=2,
                     rng=np.random.default_rng(0), sink=lambda table: None)


def test_a_trace_drawn_as_it_is_read_gives_the_run_of_its_array():
    """A generated trace drawn stretch by stretch as the engine reads it (traces.streamed),
    here in stretches of ~500 arrivals and a window of 16, gives the rows of the same
    trace made whole, bit for bit; the engine holds a window of it, not all of it."""
    cost = make_cost({1: 1.0, 2: 1.3, 4: 1.8}, noise=Exponential())
    tables = {}
    with pytest.MonkeyPatch.context() as patch, window(16):
        patch.setattr(generators, "STRETCH", 500)
        for lazy in (False, True):
            trace = poisson(3000.0, duration=2.0, rng=np.random.default_rng(9), lazy=lazy)
            chunks = []
            simulate(trace, cost, DynamicBatcher(4, 0.001), replicas=3, rng=np.random.default_rng(0),
                     sink=chunks.append)
            tables[lazy] = {name: np.concatenate([getattr(c, name) for c in chunks]) for name in COLUMNS}
            if lazy:
                assert trace.times._lo > trace.count - 600  # all but the last stretch and window let go
    assert tables[True]["arrival"].size > 5000
    for name in COLUMNS:
        np.testing.assert_array_equal(tables[True][name], tables[False][name], err_msg=name)


def test_a_trace_drawn_as_it_is_read_needs_a_run_that_streams():
    trace = poisson(100.0, count=50, rng=np.random.default_rng(1), lazy=True)
    with pytest.raises(ValueError, match="drawn as it is read .* served only where the run hands its rows over"):
        simulate(trace, make_cost({1: 1.0}), DynamicBatcher(1), rng=np.random.default_rng(0))


@pytest.mark.parametrize("lazy", [False, True])
def test_a_run_without_requests_hands_over_one_empty_chunk(lazy):
    trace = poisson(1.0, duration=0.001, rng=np.random.default_rng(0), lazy=lazy)
    assert len(trace.times) == 0
    chunks = []
    results = simulate(trace, make_cost({1: 1.0}), DynamicBatcher(1), replicas=2, rng=np.random.default_rng(0),
                       sink=chunks.append)
    assert len(chunks) == 1 and len(chunks[0]) == 0 and chunks[0].columns().keys() >= set(COLUMNS)
    assert results.requests is None and results.batches == 0
