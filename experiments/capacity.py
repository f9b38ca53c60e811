"""InfAdapter's capacity model, measured in the simulator from the measured profile.

InfAdapter load-tests each variant at several core counts and records its *capacity*:
the highest request rate at which the p99 latency still meets the SLO; a linear fit of
capacity against cores (× 0.8 headroom) is what its program plans with. servesim runs
the same load test on the simulated server — ``cores`` single-threaded lanes of the
variant sharing one queue, batch 1, Poisson arrivals — costed by the variant's measured
1-core profile, and bisects on the rate. The arrivals of every probe are one set of
unit-rate gaps rescaled, so latency grows with the rate without sampling noise in the
way (common random numbers), and the bisection converges.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from servesim.policies import infadapter
from servesim.policies.batching import DynamicBatcher
from servesim.sim import simulate
from servesim.traces.trace import Trace
from servesim.workloads import CostModel

PROBE_REQUESTS = 4000


_measured: dict[tuple, float] = {}  # a sweep builds each adapter more than once: test each point once


def capacity(cost_model: CostModel, cores: int, slo_s: float, *, seed: int = 0, requests: int = PROBE_REQUESTS,
             rel_tol: float = 0.005) -> float:
    """The highest Poisson rate (req/s) ``cores`` lanes of ``cost_model`` serve with p99
    latency ≤ ``slo_s`` (0 when even one request alone misses it)."""
    key = (cost_model.profile.source, repr(cost_model), cores, slo_s, seed, requests, rel_tol)
    if key not in _measured:
        _measured[key] = _load_test(cost_model, cores, slo_s, seed, requests, rel_tol)
    return _measured[key]


def _load_test(cost_model: CostModel, cores: int, slo_s: float, seed: int, requests: int, rel_tol: float) -> float:
    rng = np.random.default_rng(seed)
    gaps = np.cumsum(rng.exponential(1.0, requests))
    bound = cores / cost_model.batch_latency(1)  # the lanes' throughput: nothing above it is stable

    def p99(rate: float) -> float:
        trace = Trace(gaps / rate, source="capacity probe")
        results = simulate(trace, cost_model, DynamicBatcher(1), replicas=cores, shared_queue=True,
                           rng=np.random.default_rng(seed + 1))
        return float(np.percentile(results.requests.finish - results.requests.arrival, 99))

    lo, hi = 0.0, bound
    if p99(bound * 1e-3) > slo_s:
        return 0.0
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if p99(mid) <= slo_s else (lo, mid)
    return lo


def linear_fit(cores: Sequence[int], capacities: Sequence[float]) -> tuple[float, float]:
    """InfAdapter's fit of capacity on cores: slope and intercept (least squares), the
    intercept truncated to an int as its code does."""
    slope, intercept = np.polyfit(np.asarray(cores, float), np.asarray(capacities, float), 1)
    return float(slope), float(int(intercept))


def infadapter_variant(name: str, accuracy: float, cost_model: CostModel, load_time: float, budget: int,
                       slo_s: float, probe_cores: Sequence[int] = (1, 2, 4, 8, 16), seed: int = 0) -> infadapter.Variant:
    """A variant for InfAdapter's program: capacity measured at ``probe_cores`` (those up
    to ``budget``), fitted, × 0.8, tabled for 0..budget cores."""
    probes = [c for c in probe_cores if c <= budget] or [budget]
    measured = [capacity(cost_model, c, slo_s, seed=seed) for c in probes]
    slope, intercept = linear_fit(probes, measured) if len(probes) > 1 else (measured[0] / probes[0], 0.0)
    return infadapter.Variant(name, accuracy, infadapter.linear_capacity(slope, intercept, budget), load_time)
