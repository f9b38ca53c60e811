"""The serving host as a resource shared by launching batches and taking requests in
(sim/host.py), by hand on small traces; the same server on the real executor's loop on
a virtual clock; what a served profile measures of a request's intake; and the
``overloaded`` verdict of a summary.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from enginekit import VirtualClock, make_cost, poisson_trace
from servesim.policies.batching import DynamicBatcher
from servesim.policies.exit import NeverExit
from servesim.sim import simulate, summarize
from servesim.sim.host import ServingHost
from servesim.sim.real import StagedModel, _serve, measure_served
from servesim.traces.trace import Trace
from servesim.workloads.noise import Deterministic

MS = 1e-3


def test_intake_during_the_launches_stretches_the_batch_by_hand():
    """Intake 1 ms, launch-bound (share 1): a 10 ms batch at t=1 s. Arrivals at or after
    its start come in while it launches: 1.0 (1.010 -> 1.011), 1.0005 (-> 1.012), 1.002
    (-> 1.013), and 1.0101, which arrived before 1.013 (-> 1.014); 1.02 comes after."""
    clock = ServingHost(1 * MS).clock(np.array([0.0, 0.5, 1.0, 1.0005, 1.002, 1.0101, 1.02]))
    assert clock.finish(1.0, 10 * MS) == pytest.approx(1.014, abs=1e-12)


def test_intake_owed_from_a_burst_comes_before_the_launches():
    """Ten requests at t=0 cost the host 10 ms of intake: a 2 ms batch started at 1 ms
    launches after the 9 ms still owed, and ends at 12 ms."""
    clock = ServingHost(1 * MS).clock(np.zeros(10))
    assert clock.finish(1 * MS, 2 * MS) == pytest.approx(12 * MS, abs=1e-12)


def test_a_batch_ends_at_the_later_of_device_and_host():
    """Share 0.5 of a 10 ms batch: 5 ms of launches. Three arrivals (1, 2, 3 ms in) make
    them end at 8 ms, before the device's 10 ms; six (1..6 ms) at 11 ms, after it."""
    three = ServingHost(1 * MS, launch_share=0.5).clock(np.array([1, 2, 3]) * MS)
    assert three.finish(0.0, 10 * MS) == pytest.approx(10 * MS)
    six = ServingHost(1 * MS, launch_share=0.5).clock(np.arange(1, 7) * MS)
    assert six.finish(0.0, 10 * MS) == pytest.approx(11 * MS)


def test_a_host_that_launches_nothing_leaves_the_device_time():
    clock = ServingHost(1 * MS, launch_share=0.0).clock(np.arange(1, 7) * MS)
    assert clock.finish(0.0, 10 * MS) == 10 * MS


@pytest.mark.parametrize("bad", [dict(intake_s=-1.0), dict(intake_s=float("nan")), dict(intake_s=0.0, launch_share=1.5)])
def test_a_host_refuses_impossible_costs(bad):
    with pytest.raises(ValueError):
        ServingHost(**bad)


ARRIVALS_MS = [0.0, 5.0, 6.0, 12.5, 13.0]


def test_engine_serves_a_launch_bound_host_by_hand():
    """Every batch 10 ms, no waiting, intake 1 ms. Request 0's batch starts at 0 and
    takes in 0 itself, then 5, 6, 12.5 and 13 as they come while it launches: it ends at
    15. The other four then run together, already taken in: 15 to 25. Without the host
    the batches are 0-10, 10-20 (1, 2) and 20-30 (3, 4)."""
    cost = make_cost({b: 10.0 for b in range(1, 5)})
    trace = Trace(np.array(ARRIVALS_MS) * MS)
    hosted = simulate(trace, cost, DynamicBatcher(4, 0.0), host=ServingHost(1 * MS))
    assert np.round(hosted.requests.finish / MS, 9).tolist() == [15.0, 25.0, 25.0, 25.0, 25.0]
    # the host was busy all along: five intakes and two batches' launches, 25 ms of 25
    assert hosted.host_busy_s == pytest.approx(25 * MS)
    assert summarize(hosted)["cost"]["host_utilisation"] == pytest.approx(1.0)
    plain = simulate(trace, cost, DynamicBatcher(4, 0.0)).requests
    assert np.round(plain.finish / MS, 9).tolist() == [10.0, 20.0, 20.0, 30.0, 30.0]


def test_the_real_loop_with_intake_answers_when_the_engine_says():
    """The real executor's loop on a virtual clock, a request's intake 1 ms and a batch
    10 ms: it takes in what arrives between a batch's calls, and answers every request
    when the engine's launch-bound host does. (It starts a lone request's batch after
    taking it in, 1 ms later than the engine, which charges that intake to the batch.)"""
    clock = VirtualClock()

    def stage(x):
        clock.t += 10 * MS
        return x

    def intake(row):
        clock.t += 1 * MS

    model = StagedModel(batch=lambda rows: np.zeros((len(rows), 2)), stages=[stage],
                        heads=[lambda x: np.full((len(x), 2), 0.5)], intake=intake)
    times = np.array(ARRIVALS_MS) * MS
    out, _ = _serve(times, np.zeros(len(times), dtype=np.int64), model, DynamicBatcher(4, 0.0), NeverExit(), True,
                    None, clock)
    engine = simulate(Trace(times), make_cost({b: 10.0 for b in range(1, 5)}), DynamicBatcher(4, 0.0),
                      host=ServingHost(1 * MS)).requests
    assert np.round(out.finish / MS, 9).tolist() == np.round(engine.finish / MS, 9).tolist()


def test_a_free_host_changes_nothing():
    """Intake 0: the same requests, batches and times as without a host, bit for bit."""
    cost = make_cost({b: 1.0 + 0.2 * b for b in range(1, 9)})
    trace = poisson_trace(3000.0, 3000, seed=3)
    plain = simulate(trace, cost, DynamicBatcher(8, 0.001))
    hosted = simulate(trace, cost, DynamicBatcher(8, 0.001), host=ServingHost(0.0))
    assert np.array_equal(plain.requests.finish, hosted.requests.finish)
    assert np.array_equal(plain.requests.batch_size, hosted.requests.batch_size)


def test_a_host_serves_one_worker():
    with pytest.raises(ValueError, match="one worker"):
        simulate(poisson_trace(10.0, 10, seed=0), make_cost(1.0), DynamicBatcher(1), replicas=2,
                 host=ServingHost(1 * MS))


def test_a_launch_bound_host_falls_behind_where_the_device_keeps_up():
    """Batches of up to 8 take 2 ms whatever their size (launch-bound): 2,000 req/s is
    half what the device can serve. Each request's intake of 0.3 ms costs the host 60%
    of its time at that rate, so launch-bound batches of 8 take 2 / (1 - 0.6) = 5 ms
    and serve 1,600 req/s: the server falls behind. With CUDA graphs (share 0) it keeps up."""
    cost = make_cost({b: 2.0 for b in range(1, 9)})
    trace = poisson_trace(2000.0, 20000, seed=1)
    device_only = summarize(simulate(trace, cost, DynamicBatcher(8, 0.001)))
    hosted = simulate(trace, cost, DynamicBatcher(8, 0.001), host=ServingHost(0.3 * MS))
    graphs = summarize(simulate(trace, cost, DynamicBatcher(8, 0.001), host=ServingHost(0.3 * MS, 0.0)))
    assert device_only["overloaded"] is False and graphs["overloaded"] is False
    assert summarize(hosted)["overloaded"] is True
    rq = hosted.requests
    steady = (rq.batch_size == 8) & (rq.start > 2.0) & (rq.start < 9.0)  # full batches, arrivals still coming
    assert np.mean(rq.finish[steady] - rq.start[steady]) == pytest.approx(5 * MS, rel=0.05)


# ---------------------------------------------------------------- the overloaded verdict

@pytest.mark.parametrize("seed", range(4))
def test_a_busy_server_that_keeps_up_is_not_called_overloaded(seed):
    """M/D/1 at 95% load, 20,000 requests: long queues now and then, but no trend."""
    cost = make_cost(1.0, noise=Deterministic())
    summary = summarize(simulate(poisson_trace(950.0, 20000, seed=seed), cost, DynamicBatcher(1)))
    assert summary["overloaded"] is False


@pytest.mark.parametrize("rho", [1.03, 1.2, 2.0])
def test_a_server_that_falls_behind_is_called_overloaded(rho):
    """Even 3% more load than it can serve: 300 requests more in its backlog each 10 s."""
    summary = summarize(simulate(poisson_trace(1000.0 * rho, 20000, seed=0), make_cost(1.0), DynamicBatcher(1)))
    assert summary["overloaded"] is True
    assert summary["backlog_end"] > summary["backlog_mid"] > 0


def test_a_run_of_one_request_has_no_verdict():
    summary = summarize(simulate(Trace(np.array([0.0])), make_cost(1.0), DynamicBatcher(1)))
    assert summary["overloaded"] is None


# ---------------------------------------------------------------- measuring intake

INTAKE_S, STAGE_S = 0.002, 0.0004


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_measure_served_times_each_intake_and_leaves_it_out_of_the_gaps():
    """A stand-in whose intake spins 2 ms: each request's intake is one sample of about
    that, and the host's ``batch`` gap, which it falls in, is not charged it again."""
    model = StagedModel(batch=np.asarray, stages=[lambda x: (_spin(STAGE_S), x)[1]] * 2,
                        heads=[lambda x: np.tile([0.6, 0.4], (len(x), 1))] * 2, intake=lambda row: _spin(INTAKE_S))
    found = measure_served(model, np.arange(20), [1, 3], repeats=4, warmup=1)
    intake = found[("intake", -1, 1)]
    # the requests of the bursts that came out clean, in two instrumented replays: all 64 on an
    # idle machine, and at least half of them however busy (a replay runs again until then)
    assert intake.size >= 4 * 4 * (1 + 3) // 2
    assert INTAKE_S <= np.median(intake) < 2 * INTAKE_S
    # what is left of the gap before the first stage is the loop, not b intakes: a burst of 3
    # would otherwise leave 2 intakes (4 ms) more than a burst of 1 (on an idle machine each
    # median is under 2 ms; at load 6 on 2 cores both grow alike, by scheduling delays)
    one, three = (np.median(found[("batch", -1, b)]) for b in (1, 3))
    assert three - one < INTAKE_S


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the real models need the `real` extra")
def test_json_requests_give_the_model_its_own_inputs_back():
    """digits_torch_ee_json parses each request's 16x16 body back to the exact 8x8 input
    digits_torch_ee feeds, so its answers are the behaviour table's."""
    from servesim.experiments.real_models import REAL_MODELS

    rows = np.array([5, 0, 7, 7, 3])
    plain = REAL_MODELS["digits_torch_ee"](rows, 1)
    parsed = REAL_MODELS["digits_torch_ee_json"](rows, 1)
    index = np.arange(rows.size)
    assert not parsed.staged.batch(index).numpy().any()  # nothing taken in yet
    for row in index:
        parsed.staged.intake(row)
    assert np.array_equal(parsed.staged.batch(index).numpy(), plain.staged.batch(index).numpy())


def test_a_fidelity_config_sees_the_host_fall_behind(tmp_path: Path):
    """The shipped intake experiment's 85% point, simulated for 2 s: with the host it
    falls behind, without it (the model's own time) it keeps up."""
    from servesim.experiments.config import expand, load
    from servesim.experiments.runner import simulate_config

    path = Path(__file__).parents[2] / "experiments" / "fidelity_digits_intake.yaml"
    runs = [r for r in expand(load(path), str(path)) if r.params["trace.rate"] == 6970]
    verdicts = {}
    for run in runs:
        config = run.config.model_copy(update={"trace": run.config.trace.model_copy(update={"duration": 2.0})})
        results, _, _ = simulate_config(config, path.parent)
        verdicts[config.serving.host is not None] = summarize(results)["overloaded"]
    assert verdicts == {True: True, False: False}


def test_a_host_whose_intake_the_profile_lacks_is_a_config_error_up_front(tmp_path: Path):
    """``servesim check`` names the key: the profile has no model with an ``intake`` stage."""
    from servesim.experiments.config import ConfigError
    from servesim.experiments.runner import check

    shipped = Path(__file__).parents[2] / "experiments" / "fidelity_digits_intake.yaml"
    text = shipped.read_text().replace("host: {intake: digits_torch_ee_host, launch_share: 1.0}\n",
                                       "host: {intake: nobody_host, launch_share: 1.0}\n", 1)
    path = tmp_path / "x.yaml"
    path.write_text(text.split("\nsweep:")[0] + "\n")
    with pytest.raises(ConfigError, match="serving.host.intake: .*no model 'nobody_host'"):
        check(path)
