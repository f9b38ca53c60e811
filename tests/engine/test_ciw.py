"""Validation rung 2: agreement with Ciw, a validated general-purpose queueing simulator.

The queue is M/M/2: Poisson arrivals, exponential service of mean 1 s, two servers, one
FIFO queue. In servesim that is ``shared_queue=True`` with 2 replicas,
``DynamicBatcher(1, 0)`` (batches of one, started as soon as a replica is free) and a
one-stage profile with ``Exponential()`` noise; in Ciw, one node with 2 servers.

(a) **Independent samples.** Each simulator draws its own random numbers (servesim: numpy
    streams; Ciw: its own ``ciw.dists.Exponential`` with ``ciw.seed``) for 200,000
    customers at rho = 0.5. After a 1% warm-up discard, the mean and the p90 of the wait
    (``start - arrival``; Ciw's ``waiting_time``) are estimated with standard errors
    from 40 batch means / batch quantiles (``enginekit.batch_means`` / ``batch_quantile``;
    4,950 customers per batch, far longer than the waits' correlation time of a few
    dozen customers at this load). Asserted:

    * the two estimates differ by at most 4 sqrt(se_servesim^2 + se_ciw^2);
    * each is within 4 of its own SEs of the exact M/M/2 value (Erlang C mean,
      ``mmc_wq_quantile`` p90) -- at this n the SEs are ~1.5-2% of the value, so
      "within 4 SE" means within ~6-8%, and each SE is also asserted below 2.5%.

    A correct pair of simulators fails a 4-SE check with probability ~6e-5 for a random
    seed; the seeds are fixed, so the outcome is deterministic.

(b) **Identical sample path.** Ciw is given exactly servesim's inputs and must produce
    exactly servesim's waits:

    * arrival gaps: ``ciw.dists.Sequential(diff(times, prepend=0) + [1e18])``. Ciw
      samples the first gap at time 0 and adds each later gap to the previous arrival
      date; ``enginekit.poisson_times`` builds the times with ``np.cumsum`` of the same
      gaps, which adds sequentially, so Ciw's arrival dates equal servesim's bit for bit.
      The final 1e18 s gap keeps a cycled (n+1)-th arrival out of the run.
    * service times: servesim draws one service time per batch, from one sampler shared
      by both replicas, in the order batches *start*; Ciw samples a service time when a
      service starts. Under FCFS a customer starts only after every earlier customer has
      started, so start order is arrival (id) order in both simulators, and the k-th
      draw belongs to customer k in both. The test re-creates servesim's sampler with
      the same seed and hands its first n draws to Ciw in that order.
    * server choice: when both servers are free Ciw and servesim may pick different
      servers, but with identical servers and the service time attached to the customer
      (drawn at its start), which server serves whom does not change any start time:
      each customer starts at max(its arrival, the earliest time a server frees up). So
      the tie-break cannot break exactness, and the waits must agree to float rounding
      (asserted: 1e-9 s per customer; in practice they are identical). Ties between an
      arrival and a service completion have probability zero with continuous draws.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from enginekit import COMPLETED, batch_means, batch_quantile, make_cost, mmc_wq, mmc_wq_quantile, poisson_times
from servesim.policies.batching import DynamicBatcher
from servesim.sim import simulate
from servesim.traces.trace import Trace
from servesim.workloads import Exponential

ciw = pytest.importorskip("ciw")

pytestmark = pytest.mark.slow

SEED = 20240613
SERVERS = 2
MEAN_SERVICE_MS = 1000.0    # mu = 1 / s
WARMUP = 0.01
Z_TOL = 4.0
SE_MAX = 0.025              # relative SE above which a 4-SE check would be too loose


def servesim_run(lam: float, n: int, seed: int):
    """servesim M/M/2: returns (Results, arrival times, the service-time seed)."""
    _, times = poisson_times(lam, n, seed)
    res = simulate(Trace(times), make_cost(MEAN_SERVICE_MS, Exponential()), DynamicBatcher(1, 0),
                   replicas=SERVERS, shared_queue=True, rng=np.random.default_rng(seed + 1))
    assert np.all(res.requests.status == COMPLETED)
    return res, times


def ciw_records(network, n: int) -> list:
    """Simulate ``network`` until ``n`` customers completed; their service records in
    arrival (id) order."""
    simulation = ciw.Simulation(network)
    simulation.simulate_until_max_customers(n, method="Complete")
    records = sorted((r for r in simulation.get_all_records() if r.record_type == "service"),
                     key=lambda r: r.id_number)
    assert len(records) == n and [r.id_number for r in records] == list(range(1, n + 1))
    return records


def _report(what: str, **figures) -> None:
    if os.environ.get("SERVESIM_PRINT_FIGURES"):
        print(f"\n{what}: " + " ".join(f"{k}={v:.6g}" for k, v in figures.items()))


# ---------------------------------------------------------------- (a) independent samples

RHO_A = 0.5
N_A = 200_000


@pytest.fixture(scope="module")
def independent_waits():
    lam = RHO_A * SERVERS
    res, _ = servesim_run(lam, N_A, SEED)
    w_servesim = res.requests.start - res.requests.arrival          # arrival order
    ciw.seed(SEED + 7)
    network = ciw.create_network(arrival_distributions=[ciw.dists.Exponential(rate=lam)],
                                 service_distributions=[ciw.dists.Exponential(rate=1.0)],
                                 number_of_servers=[SERVERS])
    w_ciw = np.array([r.waiting_time for r in ciw_records(network, N_A)])
    cut = int(WARMUP * N_A)
    return lam, w_servesim[cut:], w_ciw[cut:]


@pytest.mark.parametrize("statistic", ["mean", "p90"])
def test_independent_samples_agree(independent_waits, statistic):
    lam, w_servesim, w_ciw = independent_waits
    if statistic == "mean":
        estimate, theory = batch_means, mmc_wq(lam, 1.0, SERVERS)
    else:
        estimate, theory = (lambda x: batch_quantile(x, 0.9)), mmc_wq_quantile(lam, 1.0, SERVERS, 0.9)
    (s, se_s), (c, se_c) = estimate(w_servesim), estimate(w_ciw)
    _report(f"M/M/2 rho={RHO_A} {statistic} wait", theory=theory, servesim=s, servesim_rel=s / theory - 1,
            servesim_se=se_s / theory, ciw=c, ciw_rel=c / theory - 1, ciw_se=se_c / theory,
            diff_z=(s - c) / np.hypot(se_s, se_c))
    for name, value, se in (("servesim", s, se_s), ("ciw", c, se_c)):
        assert se / theory <= SE_MAX, f"{name} {statistic}: SE {se / theory:.2%} too large; raise N_A"
        assert abs(value - theory) <= Z_TOL * se, (
            f"{name} {statistic} wait {value:.5f} vs theory {theory:.5f}: {(value - theory) / se:+.2f} SE")
    assert abs(s - c) <= Z_TOL * np.hypot(se_s, se_c), (
        f"{statistic} wait: servesim {s:.5f} vs Ciw {c:.5f} differ by {(s - c) / np.hypot(se_s, se_c):+.2f} SE")


# ---------------------------------------------------------------- (b) identical sample path

@pytest.mark.parametrize("rho, n", [(0.8, 50_000), (0.5, 20_000)])
def test_identical_sample_path(rho, n):
    lam = rho * SERVERS
    seed = SEED + 100 + int(10 * rho)
    res, times = servesim_run(lam, n, seed)
    rq = res.requests
    # servesim's service times, in the order it drew them (= start order = id order):
    # a fresh sampler on the same seed replays them exactly.
    sample = make_cost(MEAN_SERVICE_MS, Exponential()).sampler(np.random.default_rng(seed + 1))
    services = [sample(1) for _ in range(n)]
    assert np.all(np.diff(rq.start) >= 0), "FCFS: services start in arrival order"
    np.testing.assert_allclose(rq.finish - rq.start, services, rtol=0, atol=1e-9)

    gaps = np.diff(times, prepend=0.0).tolist() + [1e18]
    network = ciw.create_network(arrival_distributions=[ciw.dists.Sequential(gaps)],
                                 service_distributions=[ciw.dists.Sequential(services)],
                                 number_of_servers=[SERVERS])
    records = ciw_records(network, n)
    arrival = np.array([r.arrival_date for r in records])
    start = np.array([r.service_start_date for r in records])
    finish = np.array([r.service_end_date for r in records])
    wait_ciw = np.array([r.waiting_time for r in records])
    wait_servesim = rq.start - rq.arrival
    _report(f"M/M/2 rho={rho} sample path n={n}", max_abs_wait_diff=float(np.abs(wait_ciw - wait_servesim).max()),
            identical=float(np.array_equal(wait_ciw, wait_servesim)), mean_wait=float(wait_servesim.mean()))
    np.testing.assert_array_equal(arrival, rq.arrival)
    np.testing.assert_allclose(wait_ciw, wait_servesim, rtol=0, atol=1e-9)
    np.testing.assert_allclose(start, rq.start, rtol=0, atol=1e-9)
    np.testing.assert_allclose(finish, rq.finish, rtol=0, atol=1e-9)
