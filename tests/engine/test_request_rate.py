"""perf_analyzer's request-rate mode with a cap on outstanding requests (sim.closed_loop.RequestRate).

What it models, checked exactly from the request table: send i goes at max(due_i, free_i),
due_i its scheduled time and free_i the (i - M)-th earliest moment a slot frees (an answer
plus the client overhead; 0 for the first M sends). With a cap the load never reaches, it
is the open-loop run of its schedule, table for table. Two relations follow from the cap
for any server: at most M requests are ever out, so (Little's law over the run, which
starts and ends with none out) the sum of the client latencies is at most M times the run's
length, i.e. throughput <= M / mean client latency; with M = 1 each send waits for the
last answer, and at a rate no server keeps up with, exactly for it.
"""

from __future__ import annotations

import numpy as np
import pytest

from enginekit import make_cost
from servesim.policies.batching import DynamicBatcher
from servesim.policies.routing import JoinShortestQueue
from servesim.sim import ClientCosts, ClosedLoop, RequestRate, simulate
from servesim.traces.trace import Trace
from servesim.workloads import Deterministic, Exponential

COLUMNS = ("arrival", "start", "finish", "replica", "batch_size", "status")


def cost():
    return make_cost({1: 4.0, 2: 5.0, 4: 6.5, 8: 9.0}, Exponential())


def serve(load, replicas=2, shared=False, seed=1, **options):
    routing = dict(replicas=replicas, shared_queue=shared, router=None if shared else JoinShortestQueue())
    return simulate(load, cost(), DynamicBatcher(8, 0.002), rng=np.random.default_rng(seed), **routing,
                    **options).requests


def outstanding_at_most(table, overhead: float) -> int:
    """The most requests sent and whose slot is not yet free (a slot freed first at a tie)."""
    events = np.concatenate([np.stack([table.arrival, np.ones(len(table))], 1),
                             np.stack([table.finish + overhead, -np.ones(len(table))], 1)])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]
    return int(np.cumsum(events[:, 1]).max())


@pytest.mark.parametrize("arrival", ["poisson", "constant"])
@pytest.mark.parametrize("shared", [False, True])
def test_a_cap_never_reached_is_the_open_loop_run_of_the_schedule(arrival, shared):
    load = RequestRate(3000, 3000, rate=900.0, arrival=arrival, seed=4)
    capped = serve(load, shared=shared)
    stepped = serve(load, shared=shared, fast_forward=False)
    opened = serve(Trace(load.schedule()), shared=shared)
    for other in (stepped, opened):
        for column in COLUMNS:
            assert np.array_equal(getattr(capped, column), getattr(other, column)), column


@pytest.mark.parametrize("cap, rate, arrival", [(1, 300.0, "poisson"), (3, 700.0, "poisson"),
                                                (4, 2000.0, "constant"), (16, 1500.0, "poisson")])
def test_each_send_goes_when_due_or_when_a_slot_frees(cap, rate, arrival):
    overhead, count = 0.0005, 4000
    load = RequestRate(cap, count, rate=rate, arrival=arrival, client=ClientCosts(send_s=overhead), seed=cap)
    table = serve(load, shared=cap % 2 == 0, seed=cap)
    due, frees = load.schedule(), np.sort(table.finish + overhead)
    expected = due.copy()
    expected[cap:] = np.maximum(due[cap:], frees[:count - cap])
    assert np.array_equal(table.arrival, expected)
    delayed = float((table.arrival > due).mean())
    assert 0.05 < delayed < 1  # each case is loaded enough that the cap acts
    assert outstanding_at_most(table, overhead) == cap
    # Little's law, exactly bounded: sum of latencies = integral of the outstanding count <= M * length
    latency = table.finish + overhead - table.arrival
    length = float((table.finish + overhead).max())
    assert latency.sum() <= cap * length * (1 + 1e-12)
    throughput = count / length
    assert throughput <= cap / latency.mean() * (1 + 1e-12)


def test_one_outstanding_at_a_rate_no_server_keeps_up_with_is_one_client():
    """M = 1 at 100x the server's rate: after the first, each send is the last answer plus
    the overhead, as one closed-loop client without think time sends."""
    overhead, count = 0.001, 500
    capped = RequestRate(1, count, rate=1e5, arrival="constant", client=ClientCosts(send_s=overhead))
    table = simulate(capped, make_cost(10.0, Deterministic()), DynamicBatcher(1, 0)).requests
    assert np.array_equal(table.arrival[1:], table.finish[:-1] + overhead)
    client = simulate(ClosedLoop(1, count, client=ClientCosts(send_s=overhead)), make_cost(10.0, Deterministic()),
                      DynamicBatcher(1, 0)).requests
    # the same cycle (10 ms served + 1 ms overhead), shifted by the first send's due time
    assert np.allclose(np.diff(table.arrival), np.diff(client.arrival), rtol=0, atol=1e-12)
    assert np.allclose(np.diff(table.arrival), 0.011, rtol=1e-9)


def test_same_seed_same_table_and_another_seed_another():
    def table(seed):
        return serve(RequestRate(4, 3000, rate=800.0, seed=seed), seed=3)
    first, again, other = table(1), table(1), table(2)
    for column in COLUMNS:
        assert np.array_equal(getattr(first, column), getattr(again, column))
    assert not np.array_equal(first.arrival, other.arrival)


@pytest.mark.parametrize("bad, message", [
    (dict(rate=0.0), "rate must be a finite number > 0"),
    (dict(arrival="bursty"), "arrival must be one of"),
    (dict(clients=0), "clients must be a whole number >= 1"),
])
def test_a_request_rate_checks_its_numbers(bad, message):
    with pytest.raises(ValueError, match=message):
        RequestRate(**{"clients": 2, "count": 10, "rate": 5.0, **bad})
