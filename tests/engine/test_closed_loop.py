"""Closed-loop load (sim.closed_loop) against queueing theory, and held to the open-loop engine.

Theory. N clients, exponential think time of mean 1/lambda, one server of exponential
service rate mu, batch 1, is the machine-repairman model M/M/1//N:
p0 = [sum_{n=0..N} N!/(N-n)! (lambda/mu)^n]^-1, throughput X = mu (1 - p0), mean
response time R = N/X - 1/lambda. Each case serves 200,000 requests (~0.5 s), discards
the first 1% (all clients start thinking: the transient lasts a few dozen cycles), and
asserts, for X and R, (1) the batch-means SE is at most 0.6% of theory (measured: 0.13-0.57%,
the largest for R near saturation, N = 16 at lambda/mu = 0.1), (2) the error is within 2%
(so >= 3.3 SE) and (3) within 4 SE: a correct engine fails with probability < 1e-3 on a
random seed (the seeds are fixed), and an error of 3% or more is caught. With zero think time
and N >= 2 the server never idles, so X = mu and R = N/mu (exactly, with deterministic
service). Little's law for the clients, N = X (R + Z), holds at every concurrency
whatever the server (replicas, batching): its error over a run is the boundary effect of
the clients' cycles cut at the run's ends.

Consistency. A closed loop's sample path is an open-loop one: its table, replayed as a
trace (its own send times) through the open-loop engine with the same service draws,
must come out identical; and so must the stepped engine (``fast_forward=False``). These
catch a send routed too late or too early, a timer not moved, a lane that misses a send.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from enginekit import batch_means, make_cost
from servesim.policies.batching import DynamicBatcher, FixedBatcher
from servesim.policies.routing import JoinShortestQueue
from servesim.sim import ClientCosts, ClosedLoop, SimulationError, ThinkTime, simulate
from servesim.sim.closed_loop import SendsExceeded
from servesim.traces.trace import Trace
from servesim.workloads import Deterministic, Exponential

MEAN_SERVICE_MS = 10.0  # mu = 100 / s
COUNT = 200_000
WARMUP = 0.01


def repairman(clients: int, think_s: float, service_s: float) -> tuple[float, float]:
    """(X, R) of M/M/1//N: throughput per second and mean response time in seconds."""
    ratio = service_s / think_s  # lambda / mu
    p0 = 1.0 / sum(math.perm(clients, n) * ratio ** n for n in range(clients + 1))
    throughput = (1.0 - p0) / service_s
    return throughput, clients / throughput - think_s


def serve(load: ClosedLoop, cost, batcher, seed: int = 1, **options):
    return simulate(load, cost, batcher, rng=np.random.default_rng(seed), **options).requests


def measured(table, skip: int) -> tuple[float, float, float, float]:
    """(X, its SE, R, its SE) past the first ``skip`` requests; X's SE from batch means of
    the gaps between answers (throughput is their reciprocal mean)."""
    finish = np.sort(table.finish[skip:])
    gaps = np.diff(finish)
    gap, gap_se = batch_means(gaps)
    response, response_se = batch_means(table.finish[skip:] - table.arrival[skip:])
    return 1.0 / gap, gap_se / gap ** 2, response, response_se


@pytest.mark.parametrize("clients, load_ratio", [(1, 0.5), (3, 0.3), (8, 0.15), (16, 0.1), (32, 0.01)])
def test_machine_repairman_throughput_and_response_time(clients, load_ratio):
    service_s = MEAN_SERVICE_MS / 1e3
    think_s = service_s / load_ratio
    load = ClosedLoop(clients, COUNT, ThinkTime("exponential", think_s), seed=11 * clients)
    table = serve(load, make_cost(MEAN_SERVICE_MS, Exponential()), DynamicBatcher(1, 0), seed=7 * clients)
    x, x_se, r, r_se = measured(table, int(WARMUP * COUNT))
    x_theory, r_theory = repairman(clients, think_s, service_s)
    for name, value, se, theory in (("X", x, x_se, x_theory), ("R", r, r_se, r_theory)):
        print(f"N={clients} lambda/mu={load_ratio}: {name} {value:.6g} theory {theory:.6g} "
              f"error {value / theory - 1:+.3%} SE {se / theory:.3%}")
        assert se / theory <= 0.006, (name, se / theory)
        assert abs(value / theory - 1) <= 0.02, (name, value, theory)
        assert abs(value - theory) <= 4 * se, (name, value, theory, se)


@pytest.mark.parametrize("clients", [2, 5, 20])
def test_zero_think_saturates_one_server(clients):
    """No think time, batch 1: the server always has a request, X = mu, R = N / mu."""
    mu = 1e3 / MEAN_SERVICE_MS
    load = ClosedLoop(clients, 20_000)
    exact = serve(load, make_cost(MEAN_SERVICE_MS, Deterministic()), DynamicBatcher(1, 0))
    served = exact.finish[clients:] - exact.arrival[clients:]  # past the first round, every request waits N-1 services
    assert np.allclose(served, clients / mu, rtol=1e-9)
    assert np.allclose(np.diff(exact.finish), 1 / mu, rtol=1e-9)  # the server never idles
    noisy = serve(load, make_cost(MEAN_SERVICE_MS, Exponential()), DynamicBatcher(1, 0))
    x, x_se, r, r_se = measured(noisy, 200)
    assert abs(x / mu - 1) <= 4 * x_se / mu + 1e-12 and x_se / mu <= 0.01
    assert abs(r - clients / mu) <= 4 * r_se and r_se / (clients / mu) <= 0.01


@pytest.mark.parametrize("clients", [1, 2, 4, 8, 16, 32, 64])
def test_littles_law_for_the_clients_at_every_concurrency(clients):
    """N = X (R + Z) on two replicas that batch, Z = overhead + think (fixed, so that only
    the run's ends are off: each client's cycle cut at either end, at most 2N of the
    requests counted; measured: within 0.06%, a fifth of that bound or less)."""
    think_s, overhead_s, count = 0.02, 0.001, 40_000
    load = ClosedLoop(clients, count, ThinkTime("fixed", think_s), client=ClientCosts(send_s=overhead_s))
    cost = make_cost({1: 4.0, 2: 5.0, 4: 6.5, 8: 9.0}, Exponential())
    table = serve(load, cost, DynamicBatcher(8, 0.001), replicas=2)
    skip = count // 100
    x = (count - skip) / (table.finish[skip:].max() - table.arrival[skip])
    r = float((table.finish[skip:] - table.arrival[skip:]).mean())
    assert abs(x * (r + think_s + overhead_s) / clients - 1) <= 2 * clients / (count - skip)


def test_clients_send_again_after_their_answer_overhead_and_think():
    """One server: answers come in order, so send k + N is answer k plus the pause."""
    clients, count, pause = 5, 3000, ThinkTime("fixed", 0.004)
    load = ClosedLoop(clients, count, pause, client=ClientCosts(send_s=0.0005))
    table = serve(load, make_cost({1: 2.0, 4: 3.0}, Exponential()), DynamicBatcher(4, 0.001))
    assert np.array_equal(table.arrival[:clients], np.full(clients, 0.004))  # each thinks, then sends
    assert np.array_equal(table.arrival[clients:], table.finish[:count - clients] + 0.0005 + 0.004)
    assert np.all(np.diff(table.arrival) >= 0)  # ids in send order


def outstanding(table) -> int:
    """The most requests sent and not yet answered at any moment (an answer first at a tie)."""
    events = np.concatenate([np.stack([table.arrival, np.ones(len(table))], 1),
                             np.stack([table.finish, -np.ones(len(table))], 1)])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]
    return int(np.cumsum(events[:, 1]).max())


CASES = {  # name -> (replicas, shared queue, think, batcher, request size)
    "one server, no think": (1, False, ThinkTime(), lambda: DynamicBatcher(1, 0), 1),
    "one server, a window": (1, False, ThinkTime("exponential", 0.02), lambda: DynamicBatcher(4, 0.005), 1),
    "shared queue": (3, True, ThinkTime("exponential", 0.02), lambda: DynamicBatcher(8, 0.002), 1),
    "shared queue, sized requests": (3, True, ThinkTime("exponential", 0.02), lambda: DynamicBatcher(8, 0.002), 2),
    "routed, fixed think": (3, False, ThinkTime("fixed", 0.01), lambda: DynamicBatcher(8, 0.002), 1),
    "routed, no think": (2, False, ThinkTime(), lambda: DynamicBatcher(8, 0), 2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_closed_loop_is_the_open_loop_run_of_its_own_sends(name):
    replicas, shared, think, batcher, size = CASES[name]
    cost = lambda: make_cost({1: 10.0, 2: 14.0, 4: 20.0, 8: 30.0}, Exponential())  # noqa: E731
    load = ClosedLoop(12, 5000, think, size=size, client=ClientCosts(send_s=0.001), seed=5)
    options = dict(replicas=replicas, shared_queue=shared, router=None if shared else JoinShortestQueue())
    closed = serve(load, cost(), batcher(), **options)
    stepped = serve(load, cost(), batcher(), fast_forward=False, **options)
    trace = Trace(closed.arrival, {"size": closed.size} if size > 1 else {})
    replayed = serve(trace, cost(), batcher(), **options)
    for other in (stepped, replayed):
        for column in ("arrival", "start", "finish", "replica", "batch_size", "status"):
            assert np.array_equal(getattr(closed, column), getattr(other, column)), column
    assert outstanding(closed) == 12
    assert np.all(closed.size == size)


def test_same_seed_same_table_and_another_seed_another():
    def table(seed):
        load = ClosedLoop(8, 4000, ThinkTime("exponential", 0.01), seed=seed)
        return serve(load, make_cost({1: 2.0, 8: 6.0}, Exponential()), DynamicBatcher(8, 0.001), replicas=2)
    first, again, other = table(1), table(1), table(2)
    for column in ("arrival", "start", "finish", "replica", "batch_size"):
        assert np.array_equal(getattr(first, column), getattr(again, column))
    assert not np.array_equal(first.arrival, other.arrival)


def test_a_batch_the_clients_can_never_fill_is_an_error():
    load = ClosedLoop(4, 100)
    with pytest.raises(SimulationError, match="closed loop stopped after 4 of 100 requests: its 4 clients"):
        serve(load, make_cost({8: 5.0}), FixedBatcher(8))


@pytest.mark.parametrize("options, message", [
    (dict(drop_after=0.1), "without drop_after, exits or a serving host"),
    (dict(), "requests of 4 items exceed a deployment's batch of 2"),
])
def test_what_a_closed_loop_cannot_be_served_by_is_refused(options, message):
    size = 1 if options else 4
    with pytest.raises(ValueError, match=message):
        serve(ClosedLoop(2, 10, size=size), make_cost({1: 1.0, 2: 1.5}), DynamicBatcher(2, 0), **options)


@pytest.mark.parametrize("bad, message", [
    (dict(clients=0), "clients must be a whole number >= 1"),
    (dict(count=2.5), "count must be a whole number >= 1"),
    (dict(duration_s=0.0), "duration_s must be a finite number > 0"),
])
def test_a_closed_loop_checks_its_numbers(bad, message):
    with pytest.raises(ValueError, match=message):
        ClosedLoop(**{"clients": 2, "count": 10, **bad})
    with pytest.raises(ValueError, match="network_s must be a finite number >= 0"):
        ClientCosts(network_s=-1.0)


# --- a closed loop that ends by time (duration_s) -----------------------------------------

def test_a_loop_that_ends_by_time_stops_sending_then_answers_what_is_out():
    """One server, fixed pause: each answer makes one send at finish + pause, unless that
    falls at or after the end, when its client stops. So every send is before the end, the
    first ``clients`` are the clients' first sends, and exactly as many answers as there are
    later sends came early enough to make one; the requests out at the end are served."""
    clients, until, pause = 5, 0.5, 0.0005 + 0.004
    load = ClosedLoop(clients, 10_000, ThinkTime("fixed", 0.004), client=ClientCosts(send_s=0.0002, network_s=0.0002,
                                                                                     recv_s=0.0001), duration_s=until)
    table = serve(load, make_cost({1: 2.0, 4: 3.0}, Exponential()), DynamicBatcher(4, 0.001))
    n = len(table)
    assert 100 < n < 10_000 and np.all(table.arrival < until) and np.all(table.status == 0)
    assert np.array_equal(table.arrival[clients:], table.finish[:n - clients] + pause)
    assert int(np.sum(table.finish + pause < until)) == n - clients
    assert outstanding(table) == clients


def test_a_loop_that_ends_by_time_is_the_same_run_whatever_its_room():
    def table(room):
        load = ClosedLoop(6, room, ThinkTime("exponential", 0.003), seed=3, duration_s=0.4)
        return serve(load, make_cost({1: 2.0, 8: 6.0}, Exponential()), DynamicBatcher(8, 0.001), replicas=2)
    small, large = table(2000), table(200_000)
    assert 300 < len(small) < 2000
    for column in ("arrival", "start", "finish", "replica", "batch_size", "status"):
        assert np.array_equal(getattr(small, column), getattr(large, column)), column


def test_a_loop_that_ends_by_time_is_the_loop_of_as_many_requests():
    """Without think time on one server, answers (and so sends) come in time order: the
    loop that ends by time is the loop that ends after as many requests."""
    client = ClientCosts(send_s=0.001)
    timed = serve(ClosedLoop(4, 50_000, client=client, duration_s=1.0), make_cost({1: 2.0, 4: 3.0}, Exponential()),
                  DynamicBatcher(4, 0))
    counted = serve(ClosedLoop(4, len(timed), client=client), make_cost({1: 2.0, 4: 3.0}, Exponential()),
                    DynamicBatcher(4, 0))
    for column in ("arrival", "start", "finish", "batch_size"):
        assert np.array_equal(getattr(timed, column), getattr(counted, column)), column


def test_a_loop_that_ends_by_time_without_room_says_how_much_it_needs():
    load = ClosedLoop(4, 50, duration_s=1.0)
    cost, batcher = make_cost({1: 2.0, 4: 3.0}, Deterministic()), DynamicBatcher(4, 0)
    with pytest.raises(SendsExceeded, match="sent 50 requests by .* before its end at 1 s") as full:
        serve(load, cost, batcher)
    table = serve(ClosedLoop(4, full.value.room, duration_s=1.0), cost, batcher)  # 3 ms a batch of 4: ~1333
    assert 1300 < len(table) < full.value.room
