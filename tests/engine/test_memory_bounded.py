"""Bounded memory: the engine streams arrivals through a window and keeps per request only
compact numpy columns.

The checks: a run's table does not depend on the window's size (so the window can be
small in these tests and big in real runs: moving it on, renumbering queued requests,
growing it under a queue that keeps growing and flushing drops and rejections are all
invisible in the results); a run's traced allocations stay within the bytes of its
columns plus a fixed allowance, which a Python list of the trace's arrivals alone would
exceed; the table's columns have the compact dtypes; a trace is handed out in views.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import servesim.sim.cluster
from servesim import sim
import servesim.sim.records
from servesim.policies.batching import DynamicBatcher, FixedBatcher
from servesim.policies.exit import ConfidenceThreshold
from servesim.policies.routing import JoinShortestQueue, RoundRobin
from servesim.sim import simulate
from servesim.sim.exits import ExitSetup
from servesim.traces import Trace, poisson
from servesim.workloads import PROFILES_DIR, CostModel, Empirical, load_profile
from servesim.workloads.behaviour import BehaviourTable
from servesim.workloads.exits import ExitModel, SegmentCosts

MLP = CostModel(load_profile(PROFILES_DIR / "cpu_mlp.csv"), "mlp3", noise=Empirical())


def arrivals(rate: float, n: int, seed: int = 1) -> Trace:
    return poisson(rate, count=n, rng=np.random.default_rng(seed))


def sized(trace: Trace, high: int, seed: int = 2) -> Trace:
    return Trace(trace.times, columns={"size": np.random.default_rng(seed).integers(1, high, len(trace))})


def exit_setup(n: int) -> tuple[SegmentCosts, ExitSetup]:
    profile = load_profile(PROFILES_DIR / "cpu_digits_ee.csv")
    costs = SegmentCosts(profile, ExitModel.early_exit(profile, "digits_ee",
                                                       {"block1": "ramp1", "block2": "ramp2", "block3": "ramp3"}))
    rng = np.random.default_rng(3)
    prediction = rng.integers(0, 3, (500, 4)).astype(np.int32)
    table = BehaviourTable(confidence=rng.uniform(0.05, 1.0, (500, 4)), correct=prediction == 1,
                           agrees=prediction == prediction[:, -1:], prediction=prediction, entropy=None,
                           exit_names=("e0", "e1", "e2", "e3"))
    policy = ConfidenceThreshold(0.6).fit(table, costs.stage_costs())
    return costs, ExitSetup(costs, table, rng.integers(0, 500, n), policy, "compute_saving")


def run(case: str):
    """One configuration per path through the dispatcher, the worker and the log."""
    rng = np.random.default_rng(4)
    if case == "routed, drops":  # several queues, drops flushed from the window
        return simulate(arrivals(30_000, 6000), MLP, DynamicBatcher(8, 0.001), replicas=3, router=RoundRobin(),
                        drop_after=0.004, rng=rng)
    if case == "sizes, rejections":  # sized requests, some too large: rejected at routing
        return simulate(sized(arrivals(8000, 6000), 24), MLP, DynamicBatcher(16, 0.001), replicas=4,
                        router=JoinShortestQueue(), rng=rng)
    if case == "one queue, overloaded":  # the queue outgrows the window: it grows instead of moving
        return simulate(sized(arrivals(9000, 6000), 8), MLP, DynamicBatcher(8, 0.001), rng=rng)
    if case == "shared queue, no fast-forward":
        return simulate(arrivals(20_000, 6000), MLP, FixedBatcher(4), replicas=3, shared_queue=True,
                        fast_forward=False, rng=rng)
    costs, setup = exit_setup(3000)  # exits: batches leave by id, not window position
    return simulate(arrivals(3000, 3000), costs, DynamicBatcher(4, 0.001), replicas=2, exits=setup, rng=rng)


CASES = ["routed, drops", "sizes, rejections", "one queue, overloaded", "shared queue, no fast-forward", "exits"]


@pytest.mark.parametrize("case", CASES)
def test_the_table_does_not_depend_on_the_window(case, monkeypatch):
    reference = run(case)
    for window in (1, 7, 256):
        monkeypatch.setattr(sim.cluster, "WINDOW", window)
        monkeypatch.setattr(sim.cluster, "BUILD_ROWS", 1000)
        windowed = run(case)
        for name, column in reference.requests.columns().items():
            other = windowed.requests.columns()[name]
            assert other.dtype == column.dtype and np.array_equal(other, column, equal_nan=True), (window, name)
        assert (windowed.end_time, windowed.batches, windowed.rejections) == \
               (reference.end_time, reference.batches, reference.rejections)
        assert np.array_equal(windowed.busy_time, reference.busy_time)


def test_progress_reports_do_not_depend_on_the_window(monkeypatch):
    trace = arrivals(30_000, 5000)

    def reports() -> list[int]:
        seen = []
        simulate(trace, MLP, DynamicBatcher(8, 0.001), replicas=2, progress=seen.append)
        return seen

    reference = reports()
    monkeypatch.setattr(sim.cluster, "WINDOW", 300)
    assert reports() == reference and reference[-1] == 5000


def test_a_run_keeps_only_its_columns(monkeypatch):
    """Traced allocations of a 300k-request run stay within its table's new columns (29
    bytes a request: ``arrival`` is the trace's own array), the batch codes (4) while the
    table is built, the batch table (24 bytes a batch, twice while it is assembled) and a
    fixed 3 MB. Window and build step are made small so that their part is well inside
    that. One Python list of the arrivals alone (a pointer and a float object each, 32
    bytes a request) would break the bound; so would one more float64 column."""
    monkeypatch.setattr(sim.cluster, "WINDOW", 4096)
    monkeypatch.setattr(sim.cluster, "BUILD_ROWS", 16384)
    n = 300_000
    trace = arrivals(30_000, n)
    tracemalloc.start()
    try:
        results = simulate(trace, MLP, DynamicBatcher(16, 0.0005), replicas=8, router=JoinShortestQueue())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    table = results.requests
    columns = sum(getattr(table, name).nbytes for name in sim.records.COLUMNS if name != "arrival")
    assert columns == 29 * n
    assert peak <= columns + 4 * n + 2 * 24 * results.batches + 3 * 2**20


def test_the_columns_are_compact():
    table = run("routed, drops").requests
    dtypes = {name: getattr(table, name).dtype for name in sim.records.COLUMNS}
    assert dtypes == {"arrival": np.float64, "size": np.int32, "start": np.float64, "finish": np.float64,
                      "replica": np.int32, "batch_size": np.int32, "status": np.int8}


def test_a_trace_is_handed_out_in_views():
    trace = sized(arrivals(1000, 10), 5)
    chunks = list(trace.chunks(4, "size"))
    assert [len(times) for times, _ in chunks] == [4, 4, 2]
    assert all(np.shares_memory(times, trace.times) for times, _ in chunks)
    assert np.array_equal(np.concatenate([sizes for _, sizes in chunks]), trace.columns["size"])
    assert all(sizes is None for _, sizes in trace.chunks(4))
    with pytest.raises(ValueError, match="chunk size"):
        next(trace.chunks(0))
