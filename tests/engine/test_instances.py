"""Model instances sharing one device (``instances``, ``serving.instances``): a batch's
time is its sampled time times the measured slowdown for the batches running on the
device when it starts (sim/cluster.py, module docstring "Instances")."""

from __future__ import annotations

import numpy as np
import pytest
from enginekit import METADATA, make_cost

from servesim.experiments.config import ConfigError, load
from servesim.experiments.runner import build_cost_model, simulate_config
from servesim.policies.batching import DynamicBatcher
from servesim.sim import simulate
from servesim.sim.errors import SimulationError
from servesim.traces.trace import Trace
from servesim.workloads import CostModel, Deterministic, Profile
from servesim.workloads.contention import NoContentionModel

T_MS = {1: 2.0, 4: 4.0, 8: 6.0}  # a deterministic batch latency at each measured size


def shared(slowdown_by_k: dict[int, float], noise=Deterministic()) -> CostModel:
    """A cost model of :data:`T_MS` whose profile measured ``slowdown_by_k[k]`` at every size."""
    rows = [("hw", "m", "s", b, ms, ms, ms, 1) for b, ms in T_MS.items()]
    contention = [{"hardware": "hw", "model": "m", "instances": k, "batch_size": b, "slowdown": s, "repeats": 1}
                  for k, s in slowdown_by_k.items() for b in T_MS]
    return CostModel(Profile.from_rows(rows, METADATA, contention=contention), "m", noise=noise,
                     out_of_range="error")


def burst(n: int) -> Trace:
    """``n`` requests arriving at once: the device saturated from the start."""
    return Trace(np.zeros(n), source=f"burst({n})")


def test_a_batch_starting_beside_another_is_stretched_by_the_measured_slowdown():
    cost = shared({2: 1.5})
    table = simulate(Trace(np.zeros(2)), cost, DynamicBatcher(1), instances=2).requests
    # the first starts alone (2 ms); the second starts while it runs: 2 ms x 1.5
    assert table.finish.tolist() == pytest.approx([2e-3, 3e-3], abs=1e-15)
    # a batch starting after the other ended is not slowed
    later = simulate(Trace(np.array([0.0, 0.01])), cost, DynamicBatcher(1), instances=2).requests
    assert (later.finish - later.start).tolist() == pytest.approx([2e-3, 2e-3], abs=1e-15)


def test_the_slowdown_is_interpolated_between_measured_sizes():
    rows = [("hw", "m", "s", b, ms, ms, ms, 1) for b, ms in T_MS.items()]
    contention = [{"hardware": "hw", "model": "m", "instances": 2, "batch_size": b, "slowdown": s, "repeats": 1}
                  for b, s in ((1, 1.0), (4, 1.3), (8, 2.1))]
    cost = CostModel(Profile.from_rows(rows, METADATA, contention=contention), "m", out_of_range="error")
    table = simulate(Trace(np.zeros(12)), cost, DynamicBatcher(6), instances=2).requests
    busy = np.unique(np.round(table.finish - table.start, 12))
    # batch 6 alone: 5 ms (linear 4 -> 6 ms); beside another: x (1.3 + 0.8 * 2 / 4) = 1.7
    assert busy.tolist() == pytest.approx([5e-3, 5e-3 * 1.7], rel=1e-12)


def test_pure_time_sharing_gives_two_instances_no_more_throughput_than_one():
    cost = shared({2: 2.0})
    one = simulate(burst(800), cost, DynamicBatcher(8)).requests
    run = simulate(burst(800), cost, DynamicBatcher(8), instances=2)
    two = run.requests
    # 100 full batches of 6 ms either way; two instances gain only the first batch's head start
    assert one.finish.max() == pytest.approx(100 * 6e-3)
    assert two.finish.max() >= one.finish.max() * 0.99
    assert set(two.batch_size.tolist()) == {8}
    # the device is busy while either instance runs a batch: all along, not twice over
    assert run.busy_time.tolist() == pytest.approx([two.finish.max()], rel=1e-12)


def test_free_instances_are_two_lanes():
    free, plain = shared({2: 1.0}), make_cost(T_MS)
    for trace in (burst(400), Trace(np.cumsum(np.random.default_rng(3).exponential(1 / 600, 2000)))):
        a = simulate(trace, free, DynamicBatcher(8), instances=2).requests
        b = simulate(trace, plain, DynamicBatcher(8), replicas=2, shared_queue=True).requests
        for column in ("start", "finish", "batch_size"):
            np.testing.assert_array_equal(getattr(a, column), getattr(b, column))
        assert set(a.replica.tolist()) == {0}  # both lanes are the one replica's


def test_one_instance_is_the_run_without_instances_even_with_a_table_and_noise():
    from servesim.workloads import Exponential
    cost = shared({2: 3.0}, noise=Exponential())
    trace = Trace(np.cumsum(np.random.default_rng(1).exponential(1 / 300, 3000)))
    runs = [simulate(trace, cost, DynamicBatcher(8), replicas=2, rng=np.random.default_rng(5), **kw).requests
            for kw in ({}, {"instances": 1})]
    for column in ("start", "finish", "replica", "batch_size"):
        np.testing.assert_array_equal(getattr(runs[0], column), getattr(runs[1], column))


def test_more_instances_than_measured_or_none_measured_is_refused():
    with pytest.raises(NoContentionModel, match="no measured contention.*never assumed"):
        simulate(burst(4), make_cost(T_MS), DynamicBatcher(1), instances=2)
    with pytest.raises(NoContentionModel, match="measured contention up to 2 instances only"):
        simulate(burst(4), shared({2: 1.5}), DynamicBatcher(1), instances=3)
    with pytest.raises(ValueError, match="instances must be a whole number >= 1, got 0"):
        simulate(burst(4), shared({2: 1.5}), DynamicBatcher(1), instances=0)


def test_the_cluster_engine_refuses_instances_without_a_table():
    from servesim.policies.autoscaling import Deployment, Plan, StaticAdapter
    from servesim.sim.cluster import ClusterCosts, simulate_cluster
    sample = make_cost(T_MS).sampler(0)
    costs = ClusterCosts(service=lambda t, v, u: sample, load_time=lambda t, v: 0.0)
    with pytest.raises(SimulationError, match="t/v: 2 instances share each device, and no contention was measured"):
        simulate_cluster(burst(4), ["t"], [], {"t": ("v",)}, costs, StaticAdapter(),
                         Plan({"t": (Deployment("v", 1, batch=1),)}), instances=2)


CONFIG = """\
name: shared
trace: {{kind: poisson, rate: 1500, count: 600}}
model: {{profile: "{profile}", name: m}}
serving:
  replicas: 1
  batching: {{policy: dynamic, max_batch: 8, max_wait_ms: 1}}
{extra}"""


def write_config(tmp_path, extra: str, contention: bool = True):
    rows = [("hw", "m", "s", b, ms, ms, ms, 1) for b, ms in T_MS.items()]
    rows_k = [{"hardware": "hw", "model": "m", "instances": 2, "batch_size": b, "slowdown": 1.6, "repeats": 1}
              for b in T_MS] if contention else []
    Profile.from_rows(rows, METADATA, contention=rows_k).save(tmp_path / "p.csv")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(profile=tmp_path / "p.csv", extra=extra))
    return load(path)


def test_serving_instances_one_is_the_config_without_the_key(tmp_path):
    without = simulate_config(write_config(tmp_path, ""), tmp_path)[0].requests
    one = simulate_config(write_config(tmp_path, "  instances: 1\n"), tmp_path)[0].requests
    two = simulate_config(write_config(tmp_path, "  instances: 2\n"), tmp_path)[0].requests
    for column in ("arrival", "start", "finish", "replica", "batch_size"):
        np.testing.assert_array_equal(getattr(without, column), getattr(one, column))
    assert not np.array_equal(without.finish, two.finish)  # the key is read


def test_serving_instances_without_a_measured_table_is_a_config_error(tmp_path):
    config = write_config(tmp_path, "  instances: 2\n", contention=False)
    with pytest.raises(ConfigError, match=r"^serving\.instances: 2 instances of 'm' share one 'hw' device, and the "
                                          r"profile .*p\.csv has no measured contention"):
        build_cost_model(config, tmp_path)


def test_closed_loop_clients_see_free_instances_as_two_lanes_and_shared_ones_slower():
    from servesim.sim.closed_loop import ClosedLoop
    load = ClosedLoop(clients=6, count=600)
    free = simulate(load, shared({2: 1.0}), DynamicBatcher(4), instances=2).requests
    lanes = simulate(load, make_cost(T_MS), DynamicBatcher(4), replicas=2, shared_queue=True).requests
    for column in ("arrival", "start", "finish", "batch_size"):
        np.testing.assert_array_equal(getattr(free, column), getattr(lanes, column))
    slow = simulate(load, shared({2: 2.0}), DynamicBatcher(4), instances=2).requests
    assert slow.finish.max() > free.finish.max() * 1.5  # time-shared: near one lane's pace
