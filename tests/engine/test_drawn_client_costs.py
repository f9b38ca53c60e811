"""A closed loop's client costs drawn per request from measured samples (sim.closed_loop.ClientSamples).

Request k draws row ``rows[k]`` of the samples from the run's seed. The engine charges
the a-th answer it is told with that row's receive and the c-th send it makes with that
row's send + network; the clients' view (sim.client_view) charges request k with all of
``rows[k]``. With one client both orders are the id order, so every request's costs are
exactly the ones the engine used; with several, equal in distribution, and the same
draws over a whole run (Little's law still holds). Fixed costs run as they always did.

Why it matters: two clients answered in one batch send again after the same fixed cost,
meet in one batch again, and stay in step forever. A measured client now and then wakes
late; one delay d longer than the batching window W (and shorter than a batch of one, S1)
lets the first request go alone, the second arrive while it runs and go alone after it,
and so on: each request then waits S1 - (costs) > W for the other's batch, so from then
on the two alternate in batches of one, a state that absorbs (the real closed loop's
mean batch 1.07 where the fixed-cost simulation said 2).
"""

from __future__ import annotations

import numpy as np
import pytest

from enginekit import make_cost
from servesim.policies.batching import DynamicBatcher
from servesim.policies.routing import RoundRobin
from servesim.sim import ClientCosts, ClosedLoop, RequestRate, ThinkTime, simulate, summarize
from servesim.sim.client_view import client_view, seen_latency_s
from servesim.sim.closed_loop import ClientSamples
from servesim.workloads import Exponential

WINDOW_S = 0.002
BATCH_MS = {1: 7.5, 2: 9.5, 8: 14.0}  # ResNet-18 at 32x32 on one CPU thread, roughly: S1 = 7.5 ms > W = 2 ms


def samples(n: int = 1000, seed: int = 0, slow_every: int = 0, slow_s: float = 0.005) -> ClientSamples:
    """``n`` rows of send, network and receive of 10-50 us each, as a client in one
    process measures them; every ``slow_every``-th row (if any) a receive of ``slow_s``."""
    rows = np.random.default_rng(seed).uniform(10e-6, 50e-6, (n, 3))
    if slow_every:
        rows[::slow_every, 2] = slow_s
    return ClientSamples(*rows.T, source="test")


def serve(load, cost, batcher, seed: int = 1, **options):
    return simulate(load, cost, batcher, rng=np.random.default_rng(seed), **options)


def test_same_seed_same_run_and_another_seed_another():
    def table(seed):
        load = ClosedLoop(8, 3000, ThinkTime("exponential", 0.005), client=samples(slow_every=50), seed=seed)
        return serve(load, make_cost({1: 2.0, 8: 6.0}, Exponential()), DynamicBatcher(8, 0.001), replicas=2).requests
    first, again, other = table(1), table(1), table(2)
    for column in ("arrival", "start", "finish", "replica", "batch_size"):
        assert np.array_equal(getattr(first, column), getattr(again, column)), column
    assert not np.array_equal(first.arrival, other.arrival)


def test_one_row_of_samples_is_the_fixed_costs_run_shifted_by_the_first_sends():
    """Samples of one row draw that row every time: the run is the fixed-cost run of the
    same three, except that each client's first request also pays its send + network
    (fixed costs are charged after answers only, as before samples existed), which moves
    the whole run by that much. Exponential service and think times: no exact ties to
    break differently; the tolerance is the float sums' rounding (1e-12 s)."""
    send, network, recv = 0.0002, 0.0003, 0.0004
    think, cost = ThinkTime("exponential", 0.01), make_cost({1: 2.0, 4: 3.0, 8: 5.0}, Exponential())
    fixed = serve(ClosedLoop(6, 3000, think, client=ClientCosts(send, network, recv), seed=4), cost,
                  DynamicBatcher(8, 0.001)).requests
    drawn = serve(ClosedLoop(6, 3000, think, client=ClientSamples([send], [network], [recv]), seed=4), cost,
                  DynamicBatcher(8, 0.001)).requests
    for column in ("arrival", "start", "finish"):
        assert np.allclose(getattr(drawn, column), getattr(fixed, column) + send + network, rtol=0, atol=1e-12), column
    assert np.array_equal(drawn.batch_size, fixed.batch_size)


def test_one_client_pays_exactly_its_own_draws_and_the_mean_gives_the_throughput():
    """One client, batches of one, service S: answer k + 1 comes S + recv_k + send_{k+1} +
    network_{k+1} after answer k, with the very draws the clients' view reports for those
    requests; so the throughput is 1 / (S + mean costs), that of fixed costs at the
    samples' means, within the sampling error of 20,000 draws (4 standard errors: the
    gaps are independent, their spread the rows')."""
    client, service_s, count = samples(slow_every=20), 0.001, 20_000
    load = ClosedLoop(1, count, client=client, seed=9)
    results = serve(load, make_cost(service_s * 1e3), DynamicBatcher(1, 0))
    table = results.requests
    send, network, recv = client.drawn(load.seed, count)
    assert np.allclose(np.diff(table.finish), service_s + recv[:-1] + send[1:] + network[1:], rtol=1e-12)
    assert np.allclose(seen_latency_s(table, load), send + network + service_s + recv, rtol=1e-12)
    gap = float(np.diff(table.finish).mean())
    spread = float(np.sqrt((client.recv_s.var() + (client.send_s + client.network_s).var()) / (count - 1)))
    assert abs(gap - (service_s + client.total_s)) <= 4 * spread
    fixed = serve(ClosedLoop(1, count, client=client.mean()), make_cost(service_s * 1e3), DynamicBatcher(1, 0))
    assert float(np.diff(fixed.requests.finish).mean()) == pytest.approx(service_s + client.total_s, rel=1e-9)
    # the clients' view: the split's client parts are the drawn means, adding up to the latency
    view = client_view(table, load, summarize(results, None, 0.0))["closed_loop"]
    split = view["split_ms"]
    assert split["client_recv"] == pytest.approx(recv.mean() * 1e3, abs=1e-6)
    assert split["client_send"] + split["network"] + split["queue"] + split["compute"] + split["client_recv"] == \
        pytest.approx(view["latency_ms"]["mean"], abs=1e-5)


@pytest.mark.parametrize("client, batch", [
    (samples(slow_every=100).mean(), 2.0),  # fixed costs: in step forever
    (samples(), 2.0),  # spread, all far below the window: still in step
])
def test_two_clients_with_costs_below_the_window_stay_in_one_batch(client, batch):
    table = serve(ClosedLoop(2, 2000, client=client, seed=3), make_cost(BATCH_MS), DynamicBatcher(8, WINDOW_S)).requests
    assert table.batch_size.mean() == batch


def test_a_rare_delay_longer_than_the_window_sets_two_clients_out_of_step_for_good():
    """1% of the receives take 5 ms (W = 2 ms < 5 ms < S1 = 7.5 ms): the first one splits
    the pair, which then alternates in batches of one (module docstring). 2000 requests:
    the first slow draw comes within a few dozen, so the mean batch is within 10% of 1
    (measured 1.001 with this seed); the throughput falls from 2 per (W + S2) towards 1 per S1."""
    cost, batcher = make_cost(BATCH_MS), lambda: DynamicBatcher(8, WINDOW_S)
    client = samples(slow_every=100)
    in_step = serve(ClosedLoop(2, 2000, client=client.mean(), seed=3), cost, batcher())
    apart = serve(ClosedLoop(2, 2000, client=client, seed=3), cost, batcher())
    assert in_step.requests.batch_size.mean() == 2.0
    assert apart.requests.batch_size.mean() <= 1.1
    rates = [summarize(r, None, 0.0)["throughput_rps"] for r in (in_step, apart)]
    assert rates[0] == pytest.approx(2 / (WINDOW_S + 0.0095 + client.total_s), rel=0.01)
    assert rates[1] == pytest.approx(1 / 0.0075, rel=0.03)


@pytest.mark.parametrize("clients", [1, 4, 16])
def test_littles_law_holds_with_drawn_costs(clients):
    """N = X (R + Z), R the latency the clients see (their drawn costs included), on two
    replicas that batch, each with a queue of its own, sent to in turn (answers told out of
    id order, so draws are equal in distribution only, the same over the run). Only the run's ends are
    off: each client's cycle cut at either end and the draws traded across the first
    counted request, at most 3N cycles of at most the longest one; measured: 11% of that
    bound at N = 1, far less at 4 and 16."""
    think_s, count = 0.02, 20_000
    load = ClosedLoop(clients, count, ThinkTime("fixed", think_s), client=samples(slow_every=50), seed=clients)
    table = serve(load, make_cost({1: 4.0, 2: 5.0, 4: 6.5, 8: 9.0}, Exponential()), DynamicBatcher(8, 0.001),
                  replicas=2, router=RoundRobin()).requests
    assert len(np.unique(table.replica)) == 2
    skip = count // 100
    elapsed = table.finish[skip:].max() - table.arrival[skip]
    seen = seen_latency_s(table, load)[skip:]
    x = (count - skip) / elapsed
    bound = 3 * clients * (seen.max() + think_s) / (clients * elapsed)
    assert abs(x * (seen.mean() + think_s) / clients - 1) <= bound


def test_a_loop_that_ends_by_time_draws_the_same_whatever_its_room():
    def table(room):
        load = ClosedLoop(6, room, ThinkTime("exponential", 0.003), client=samples(slow_every=30), seed=3,
                          duration_s=0.4)
        return serve(load, make_cost({1: 2.0, 8: 6.0}, Exponential()), DynamicBatcher(8, 0.001), replicas=2).requests
    small, large = table(5000), table(200_000)
    assert 300 < len(small) < 5000
    for column in ("arrival", "start", "finish", "replica", "batch_size", "status"):
        assert np.array_equal(getattr(small, column), getattr(large, column)), column


def test_what_samples_must_be():
    with pytest.raises(ValueError, match="recv_s must be a list of finite numbers >= 0"):
        ClientSamples([0.0], [0.0], [-1e-3])
    with pytest.raises(ValueError, match=r"as many of each and at least one \(got \[1, 2\]\)"):
        ClientSamples([0.0], [0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="at least one"):
        ClientSamples([], [], [])
    with pytest.raises(ValueError, match="request rate: its client costs are fixed"):
        RequestRate(2, 10, client=samples(), rate=100.0)
    with pytest.raises(ValueError, match="drawn from samples need a seed"):
        ClosedLoop(2, 10, client=samples(), seed=None)
