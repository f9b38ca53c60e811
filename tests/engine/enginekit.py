"""Helpers shared by the engine validation tests: tiny cost models, Poisson traces,
queueing formulas, batch-means standard errors and per-batch views of a result table.

Only test code imports this module; it is not part of the package.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import numpy as np

from servesim.sim.records import COMPLETED, DROPPED, REJECTED  # noqa: F401  (re-exported for tests)
from servesim.traces.trace import Trace
from servesim.workloads import CostModel, Deterministic, Profile

from guards import time_limit  # noqa: F401  (re-exported for tests)

METADATA = {
    "device": "cpu:test",
    "dtype": "float32",
    "framework": "none",
    "date": "2024-01-01",
    "execution_mode": "eager",
}


# ---------------------------------------------------------------- cost models and traces

def make_cost(latency_ms_by_batch: Union[float, Mapping[int, float]], noise=Deterministic(),
              out_of_range: str = "error") -> CostModel:
    """A one-stage cost model. ``latency_ms_by_batch`` is ``{batch_size: median_ms}``
    (or one number: batch size 1 only). p90 = p99 = p50, which only matters for
    ``Empirical`` noise. One stage makes Exponential/LogNormal noise exactly that
    distribution with mean = the median given here. ``out_of_range='error'`` makes a test
    fail loudly if the engine ever asks for a batch larger than the profile covers."""
    if not isinstance(latency_ms_by_batch, Mapping):
        latency_ms_by_batch = {1: float(latency_ms_by_batch)}
    rows = [("hw", "m", "s", int(b), float(ms), float(ms), float(ms), 1)
            for b, ms in sorted(latency_ms_by_batch.items())]
    return CostModel(Profile.from_rows(rows, METADATA), "m", noise=noise, out_of_range=out_of_range)


def poisson_times(rate: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(gaps, times)`` of ``n`` Poisson arrivals at ``rate``/s; times = cumsum(gaps)
    (``np.cumsum`` adds sequentially, so ``times[k] == times[k-1] + gaps[k]`` bit for bit,
    which lets Ciw rebuild the very same arrival times from the gaps)."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
    return gaps, np.cumsum(gaps)


def poisson_trace(rate: float, n: int, seed: int, sizes: Optional[np.ndarray] = None) -> Trace:
    _, times = poisson_times(rate, n, seed)
    columns = {} if sizes is None else {"size": np.asarray(sizes)}
    return Trace(times, columns=columns, source=f"poisson(rate={rate:g}, n={n}, seed={seed})")


class VirtualClock:
    """The real executor's clock (``sim.real._Clock``), made virtual: a wait jumps to its
    time, and a stub model's calls move time on by what they stand for."""

    def __init__(self):
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def wait_until(self, t: float) -> None:
        self.t = max(self.t, t)


# ---------------------------------------------------------------- queueing theory

def mm1_wq(lam: float, mu: float) -> float:
    rho = lam / mu
    return rho / (mu - lam)


def pk_wq(lam: float, mean_s: float, cv: float) -> float:
    """Pollaczek-Khinchine mean wait of M/G/1: lam E[S^2] / (2 (1 - rho)),
    E[S^2] = (1 + cv^2) E[S]^2."""
    rho = lam * mean_s
    return lam * (1.0 + cv * cv) * mean_s**2 / (2.0 * (1.0 - rho))


def erlang_c(lam: float, mu: float, c: int) -> float:
    """Probability that an arrival waits in M/M/c."""
    a = lam / mu
    rho = a / c
    top = a**c / math.factorial(c) / (1.0 - rho)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def mmc_wq(lam: float, mu: float, c: int) -> float:
    return erlang_c(lam, mu, c) / (c * mu - lam)


def mmc_wq_quantile(lam: float, mu: float, c: int, q: float) -> float:
    """q-quantile of the M/M/c FCFS wait: P(Wq > t) = C exp(-(c mu - lam) t)."""
    tail = 1.0 - q
    C = erlang_c(lam, mu, c)
    return 0.0 if C <= tail else math.log(C / tail) / (c * mu - lam)


# ---------------------------------------------------------------- statistics

def batch_means(x: np.ndarray, batches: int = 40) -> tuple[float, float]:
    """Mean of ``x`` (a correlated series, in arrival order) and its standard error
    estimated by non-overlapping batch means. Each batch must be much longer than the
    series' correlation time; the callers use >= 5,000 customers per batch, while the
    waits of the queues here decorrelate within a few hundred customers."""
    m = x.size // batches
    means = x[: m * batches].reshape(batches, m).mean(axis=1)
    return float(x.mean()), float(means.std(ddof=1) / math.sqrt(batches))


def batch_quantile(x: np.ndarray, q: float, batches: int = 40) -> tuple[float, float]:
    """``q``-quantile of ``x`` (a correlated series, in arrival order) and its standard
    error estimated from the spread of the ``q``-quantiles of ``batches`` non-overlapping
    batches (the batch analogue of :func:`batch_means`; the same batch-length rule holds)."""
    m = x.size // batches
    per_batch = np.quantile(x[: m * batches].reshape(batches, m), q, axis=1)
    return float(np.quantile(x, q)), float(per_batch.std(ddof=1) / math.sqrt(batches))


def pool(estimates) -> tuple[float, float]:
    """Combine ``(estimate, standard error)`` pairs of independent replications of equal
    length: their average and its standard error sqrt(sum se^2) / r."""
    values, errors = np.array(list(estimates), dtype=np.float64).reshape(-1, 2).T
    return float(values.mean()), float(math.sqrt(float(np.sum(errors**2))) / values.size)


# ---------------------------------------------------------------- result tables

def waits(res, warmup: float = 0.0) -> np.ndarray:
    """start - arrival of completed requests, in arrival order, minus a warm-up fraction."""
    rq = res.requests
    done = rq.status == COMPLETED
    w = (rq.start - rq.arrival)[done]
    return w[int(warmup * w.size):]


def batch_view(res):
    """The batches of a run as arrays, one row per batch, sorted by (replica, start):
    ``replica, start, finish, items, first`` (``first`` = smallest member id) plus
    ``members``: list of member-id arrays in id order. Members of one batch are the
    served requests sharing (replica, start)."""
    rq = res.requests
    served = np.flatnonzero(rq.status == COMPLETED)
    order = np.lexsort((served, rq.start[served], rq.replica[served]))
    ids = served[order]
    rep, st = rq.replica[ids], rq.start[ids]
    new = np.ones(ids.size, dtype=bool)
    new[1:] = (rep[1:] != rep[:-1]) | (st[1:] != st[:-1])
    bounds = np.flatnonzero(new).tolist() + [ids.size]
    members = [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    heads = np.array([m[0] for m in members], dtype=np.int64)
    return {
        "replica": rq.replica[heads] if members else np.empty(0, np.int32),
        "start": rq.start[heads] if members else np.empty(0),
        "finish": rq.finish[heads] if members else np.empty(0),
        "items": np.array([int(rq.size[m].sum()) for m in members], dtype=np.int64),
        "first": heads,
        "members": members,
    }


