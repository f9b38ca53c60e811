"""The batching timers of real servers (policies.batching.DynamicBatcher), replayed by
hand through the engine on a five-request trace, request by request: which batch each
request ran in and when it started; and the real executor's loop on a virtual clock,
which must batch the same. One worker, every batch 10 ms."""

import numpy as np
import pytest

from servesim.policies.batching import DynamicBatcher
from servesim.policies.exit import NeverExit
from servesim.sim import simulate
from servesim.sim.real import StagedModel, _serve, execute
from servesim.traces.trace import Trace

from enginekit import VirtualClock, make_cost


def _one_worker(arrivals_ms, batcher, service_ms=10.0):
    """Serve ``arrivals_ms`` on one worker whose every batch takes ``service_ms``:
    {request id: (batch start in ms, the ids of its batch)}."""
    cost = make_cost({b: service_ms for b in range(1, 17)})
    rq = simulate(Trace(np.array(arrivals_ms) / 1e3), cost, batcher).requests
    start = np.round(rq.start * 1e3, 9)
    return {i: (float(start[i]), [int(j) for j in np.flatnonzero(start == start[i])]) for i in range(len(rq))}


# Request 0 runs alone; requests 1 and 2 queue behind it; 3 and 4 arrive just after it ends.
ARRIVALS_MS = [0.0, 5.0, 6.0, 12.5, 13.0]


def test_engine_replays_the_oldest_arrival_timer_by_hand():
    """Triton: 0 waits its 2 ms alone (start 2, done 12). At 12, 1 and 2 have waited more
    than 2 ms, so they go at once (done 22), without 3 and 4 (12.5, 13), which then go at 22."""
    served = _one_worker(ARRIVALS_MS, DynamicBatcher(4, 0.002))
    assert served == {0: (2.0, [0]), 1: (12.0, [1, 2]), 2: (12.0, [1, 2]), 3: (22.0, [3, 4]), 4: (22.0, [3, 4])}


def test_engine_replays_the_worker_free_timer_by_hand():
    """Ray Serve / TorchServe: at 12 the free worker holds 1 and opens its window until
    14; 3 (12.5) and 4 (13.0) join, and the batch is full (4) at 13."""
    served = _one_worker(ARRIVALS_MS, DynamicBatcher(4, 0.002, timer="worker_free"))
    assert served == {0: (2.0, [0]), 1: (13.0, [1, 2, 3, 4]), 2: (13.0, [1, 2, 3, 4]),
                      3: (13.0, [1, 2, 3, 4]), 4: (13.0, [1, 2, 3, 4])}


def test_engine_replays_preferred_sizes_by_hand():
    """A preferred size of 2 overrides the worker's window: at 12, 1 and 2 make a
    preferred batch and go at once; 3 and 4 make another at 22."""
    served = _one_worker(ARRIVALS_MS, DynamicBatcher(4, 0.002, timer="worker_free", preferred=[2]))
    assert served == {0: (2.0, [0]), 1: (12.0, [1, 2]), 2: (12.0, [1, 2]), 3: (22.0, [3, 4]), 4: (22.0, [3, 4])}


def _real_loop(arrivals_ms, batcher, service_ms=10.0):
    """The real executor's serving loop (sim.real._serve) on a virtual clock and a
    one-stage stub model: {request id: (batch start in ms, the ids of its batch)}."""
    clock = VirtualClock()

    def stage(x):
        clock.t += service_ms / 1e3
        return x

    model = StagedModel(batch=lambda rows: np.zeros((len(rows), 2)), stages=[stage],
                        heads=[lambda x: np.full((len(x), 2), 0.5)])
    times = np.array(arrivals_ms) / 1e3
    out, _ = _serve(times, np.zeros(len(times), dtype=np.int64), model, batcher, NeverExit(), True, None, clock)
    start = np.round(out.start * 1e3, 9)
    return {i: (float(start[i]), [int(j) for j in np.flatnonzero(start == start[i])]) for i in range(len(times))}


@pytest.mark.parametrize("make", [lambda: DynamicBatcher(4, 0.002), lambda: DynamicBatcher(4, 0.002, timer="worker_free"),
                                  lambda: DynamicBatcher(4, 0.002, timer="worker_free", preferred=[2])],
                         ids=["oldest_arrival", "worker_free", "preferred"])
def test_the_real_executor_batches_as_the_engine(make):
    """The same policy objects drive the real executor's loop: the same batches at the
    same times, request by request."""
    assert _real_loop(ARRIVALS_MS, make()) == _one_worker(ARRIVALS_MS, make())


def test_tf_serving_pads_a_batch_to_an_allowed_size_and_pays_for_it():
    """allowed_sizes [2, 4]: a request alone runs as a batch of 2 (5 ms, not 1 ms); three
    together as a batch of 4 (8 ms). TF-Serving's timeout is the oldest_arrival rule."""
    cost = make_cost({1: 1.0, 2: 5.0, 3: 7.0, 4: 8.0})
    rq = simulate(Trace(np.array([0.0, 20.0, 20.5, 21.0]) / 1e3), cost,
                  DynamicBatcher(4, 0.002, allowed_sizes=[2, 4])).requests
    assert np.round(rq.start * 1e3, 9).tolist() == [2.0, 22.0, 22.0, 22.0]
    assert np.round(rq.finish * 1e3, 9).tolist() == [7.0, 30.0, 30.0, 30.0]
    assert rq.batch_size.tolist() == [1, 3, 3, 3]  # the items, not the padding
    assert DynamicBatcher(4, allowed_sizes=[2, 4]).padded(3) == 4 and DynamicBatcher(4).padded(3) == 3


def test_padding_is_refused_where_it_is_not_modelled():
    with pytest.raises(ValueError, match="largest allowed batch size must be max_batch"):
        DynamicBatcher(8, allowed_sizes=[2, 4])
    with pytest.raises(ValueError, match="does not pad"):
        execute(np.zeros(1), None, DynamicBatcher(4, allowed_sizes=[4]), table=None, samples=np.zeros(1))
