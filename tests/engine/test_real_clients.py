"""Real closed-loop clients against real instance threads (sim/real_clients.py), on a
stand-in model that sleeps for its batch (a sleep releases the interpreter lock, as
torch's kernels do). Its times are real, hence noisy: they are checked for causality,
order and bookkeeping, never against a duration."""

from __future__ import annotations

import time

import numpy as np
import pytest

from servesim.policies.batching import DynamicBatcher
from servesim.sim import summarize
from servesim.sim.closed_loop import ClosedLoop, ThinkTime
from servesim.sim.real import StagedModel
from servesim.sim.real_clients import busy_seconds, measure_client_overhead, real_client_view, serve_closed_loop

BATCH_S = 0.002


def sleeper(seen: list) -> StagedModel:
    """A model that takes ``BATCH_S`` a batch and notes the input rows of each."""
    def run(rows):
        seen.append(np.array(rows))
        time.sleep(BATCH_S)
        return rows
    return StagedModel(batch=run, stages=(), heads=(lambda x: x,))


def serve(clients: int, count: int, instances: int = 1, max_batch: int = 4, think=ThinkTime(), size: int = 1,
          inputs: int = 10_000):
    seen: list = []
    run = serve_closed_loop(sleeper(seen), DynamicBatcher(max_batch), ClosedLoop(clients, count, think, size),
                            instances=instances, inputs=inputs)
    return run, seen


def test_every_request_is_served_once_and_no_client_has_two_out():
    run, seen = serve(clients=5, count=300)
    table, clients = run.results.requests, run.clients
    assert len(table) == 300 and (table.status == 0).all()
    # causal, per request: send <= queued <= taken < answered <= received
    assert (clients.sent <= table.arrival).all() and (table.arrival <= table.start).all()
    assert (table.start < table.finish).all() and (table.finish <= clients.received).all()
    # ids follow the sends, and each client waits for its answer before it sends again
    assert (np.diff(table.arrival) >= 0).all()
    assert set(clients.client.tolist()) <= set(range(5))
    for c in range(5):
        mine = np.flatnonzero(clients.client == c)
        assert (clients.sent[mine[1:]] >= clients.received[mine[:-1]]).all()
    # hence never more than 5 out at once: count the sends and answers in time order
    events = np.concatenate([np.column_stack([clients.sent, np.ones(300)]),
                             np.column_stack([clients.received, -np.ones(300)])])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]  # an answer before a send at the same instant
    assert np.cumsum(events[:, 1]).max() <= 5
    # batches: at most max_batch, each request in exactly one, request k fed row k
    assert (run.batches[:, 3] <= 4).all() and run.batches[:, 3].sum() == 300
    assert (np.sort(np.concatenate(seen)) == np.arange(300)).all()
    assert summarize(run.results)["completed"] == 300


def test_requests_of_several_items_are_fed_their_rows_and_count_as_items():
    run, seen = serve(clients=3, count=40, max_batch=6, size=2, inputs=50)
    rows = np.sort(np.concatenate(seen))
    assert (rows == np.sort(np.arange(80) % 50)).all()
    assert (run.results.requests.size == 2).all() and (run.batches[:, 3] <= 6).all()
    assert run.batches[:, 3].sum() == 80


def test_littles_law_holds_on_a_real_run():
    """N = X (R + think + overhead): each client is always somewhere in its cycle, so over
    the run N clients' cycles fill N times its span. R is the latency a client saw, the
    think a fixed 1 ms (slept, so it may overshoot), the overhead the rest of a client's
    cycle (from its answer to its next send, less the nominal think), both from the
    run's own records. The tolerance (5%) is the run's ends: all clients start together
    and stop at the count, so the first and last of each client's ~80 cycles are not
    whole cycles; 2-3 cycles in 80 is 2.5-4%."""
    clients, count, think = 4, 320, 0.001
    run, _ = serve(clients=clients, count=count, think=ThinkTime("fixed", think))
    c = run.clients
    latency = c.received - c.sent
    gaps = []
    for client in range(clients):
        mine = np.flatnonzero(c.client == client)
        gaps.extend(c.sent[mine[1:]] - c.received[mine[:-1]] - think)
    overhead = float(np.mean(gaps))
    throughput = count / float(c.received.max() - c.sent.min())
    assert throughput * (latency.mean() + think + overhead) == pytest.approx(clients, rel=0.05)


def test_two_instances_run_two_batches_at_once():
    run, _ = serve(clients=8, count=200, instances=2, max_batch=2)
    batches = run.batches
    assert set(batches[:, 0].astype(int).tolist()) == {0, 1}
    first, second = (batches[batches[:, 0] == i] for i in (0, 1))
    # some batch of instance 1 starts before one of instance 0 ends and ends after it starts
    overlaps = (second[:, None, 1] < first[None, :, 2]) & (first[None, :, 1] < second[:, None, 2])
    assert overlaps.any()
    # so the device's busy time (the union) is less than the batches' total
    assert busy_seconds(batches[:, 1:3]) < float((batches[:, 2] - batches[:, 1]).sum())


def test_one_instance_never_overlaps_itself():
    run, _ = serve(clients=8, count=100)
    spans = run.batches[np.argsort(run.batches[:, 1]), 1:3]
    assert (spans[1:, 0] >= spans[:-1, 1]).all()
    assert busy_seconds(spans) == pytest.approx(float((spans[:, 1] - spans[:, 0]).sum()))


def test_busy_seconds_is_the_union_of_intervals():
    assert busy_seconds(np.array([[0.0, 2.0], [1.0, 3.0], [5.0, 6.0], [5.5, 5.8]])) == pytest.approx(4.0)
    assert busy_seconds(np.empty((0, 2))) == 0.0


def test_the_clients_view_is_what_they_measured():
    load = ClosedLoop(3, 90)
    run, _ = serve(clients=3, count=90)
    summary = summarize(run.results)
    view = real_client_view(run, load, summary)["closed_loop"]
    seen = (run.clients.received - run.clients.sent) * 1e3
    assert view["latency_ms"]["mean"] == pytest.approx(seen.mean(), rel=1e-6)
    split = view["split_ms"]
    table = run.results.requests
    assert split["client_recv"] == pytest.approx((run.clients.received - table.finish).mean() * 1e3, rel=1e-5)
    # the parts add up to the latency the clients saw (network: none in one process)
    assert split["network"] is None
    total = split["client_send"] + split["queue"] + split["compute"] + split["client_recv"]
    assert total == pytest.approx(view["latency_ms"]["mean"], rel=1e-4)


def test_client_overhead_is_measured_against_an_instance_that_answers_at_once():
    """Every kept request is a row (its own three costs, not their mean), so the
    simulation can draw the rare slow one as often as it came."""
    clients = measure_client_overhead(200)
    assert len(clients) == 180 and "180 requests" in clients.source
    parts = (clients.send_s, clients.network_s, clients.recv_s)
    assert all(part.shape == (180,) and part.min() >= 0 for part in parts)
    assert len(np.unique(clients.recv_s)) > 1  # measured one by one on the wall clock: never all alike
    means = clients.mean()
    assert means.total_s == pytest.approx(clients.total_s)
    assert means.recv_s == pytest.approx(clients.recv_s.mean())


def test_only_a_dynamic_batcher_without_padding_is_served():
    from servesim.policies.batching import FixedBatcher

    with pytest.raises(ValueError, match="dynamic batcher"):
        serve_closed_loop(sleeper([]), FixedBatcher(2), ClosedLoop(2, 4), inputs=4)
    with pytest.raises(ValueError, match="never fit"):
        serve_closed_loop(sleeper([]), DynamicBatcher(2), ClosedLoop(2, 4, size=3), inputs=4)


def test_a_failing_model_stops_every_client():
    def broken(rows):
        raise RuntimeError("boom")
    model = StagedModel(batch=broken, stages=(), heads=(lambda x: x,))
    with pytest.raises(RuntimeError, match="boom"):
        serve_closed_loop(model, DynamicBatcher(2), ClosedLoop(4, 50), instances=2, inputs=4)
