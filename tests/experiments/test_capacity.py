"""InfAdapter's capacity model measured in the simulator (``experiments.capacity``):
the load test finds the rate at which p99 meets the SLO, capacity grows with cores at
least linearly (pooled lanes), and the fit feeds InfAdapter's program."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.experiments.capacity import capacity, infadapter_variant, linear_fit
from servesim.sim import simulate
from servesim.policies.batching import DynamicBatcher
from servesim.traces.trace import Trace
from servesim.workloads import CostModel, Profile
from servesim.workloads.noise import Deterministic

METADATA = {"device": "cpu:test", "dtype": "float32", "framework": "none", "date": "2026-12-02",
            "execution_mode": "eager"}


def model(ms: float = 100.0) -> CostModel:
    return CostModel(Profile.from_rows([("cpu", "m", "forward", 1, ms, ms, ms, 1)], METADATA), "m",
                     noise=Deterministic())


def test_capacity_is_the_highest_rate_whose_p99_meets_the_slo():
    slo = 0.5
    found = capacity(model(), 1, slo, seed=4)
    assert 0 < found < 10.0  # below the lane's 10 req/s throughput
    rng = np.random.default_rng(4)
    gaps = np.cumsum(rng.exponential(1.0, 4000))

    def p99(rate):
        res = simulate(Trace(gaps / rate, source="t"), model(), DynamicBatcher(1), replicas=1, shared_queue=True)
        return np.percentile(res.requests.finish - res.requests.arrival, 99)

    assert p99(found) <= slo < p99(found * 1.02)  # the bisection's tolerance is 0.5%


def test_capacity_grows_at_least_linearly_with_lanes_and_is_zero_when_one_request_misses():
    one, four = capacity(model(), 1, 0.5), capacity(model(), 4, 0.5)
    assert 4 * one <= four <= 40.0  # pooling four lanes carries more than four single lanes
    assert capacity(model(), 2, 0.05) == 0.0  # a 100 ms request can never meet 50 ms


def test_infadapters_variant_tables_the_fitted_capacity_with_headroom():
    assert linear_fit([1, 2, 4], [10.0, 20.0, 40.0]) == pytest.approx((10.0, 0.0))
    variant = infadapter_variant("m", 0.7, model(), 2.0, budget=4, slo_s=0.5, probe_cores=(1, 2, 4))
    probes = [capacity(model(), c, 0.5) for c in (1, 2, 4)]
    slope, intercept = linear_fit([1, 2, 4], probes)
    assert variant.capacity == tuple([0] + [int(np.floor(0.8 * (slope * n + intercept))) for n in (1, 2, 3, 4)])
    assert variant.load_time == 2.0
