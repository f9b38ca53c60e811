"""RequestStream (sim/summary_stream.py): the summary's per-request figures from a table fed
in chunks are those of the table fed whole, whatever the cut (``summarize`` feeds a
whole table as one chunk, and the summarize tests of tests/engine pin that to the
figures as they were); without exact latencies the percentiles are the sketch's, within
its relative error, in memory that does not grow with the run."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from servesim.sim.metrics import summarize
from servesim.sim.records import COMPLETED, DROPPED, REJECTED, RequestTable, Results
from servesim.sim.summary_stream import PERCENTILES, RequestStream


def make_table(arrival, status, latency, size=None) -> RequestTable:
    n = arrival.size
    return RequestTable(arrival=arrival, size=np.ones(n, np.int32) if size is None else size,
                        start=np.full(n, np.nan), finish=arrival + latency, replica=np.zeros(n, np.int32),
                        batch_size=np.ones(n, np.int32), status=status.astype(np.int8))


def chunks(table: RequestTable, cuts) -> list[RequestTable]:
    bounds = [0, *sorted(set(cuts)), len(table)]
    return [RequestTable(*(getattr(table, c)[a:b] for c in ("arrival", "size", "start", "finish", "replica",
                                                           "batch_size", "status")))
            for a, b in zip(bounds[:-1], bounds[1:])]


def fed(table, cuts, slo=None, warmup=0.0, **options) -> RequestStream:
    stream = RequestStream(len(table), table.arrival[-1] if len(table) else 0.0, slo, warmup, **options)
    for chunk in chunks(table, cuts):
        stream.add(chunk)
    return stream


@st.composite
def tables(draw):
    """Random tables: ties of arrival times, zero latencies, drops, rejections at arrival,
    and stretches where a lone server falls behind (finishes queue up)."""
    n = draw(st.integers(0, 80))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.004, 0.0137, 0.2]), min_size=n, max_size=n))
    arrival = np.cumsum(gaps)
    status = np.array(draw(st.lists(st.sampled_from([COMPLETED] * 4 + [DROPPED, REJECTED]), min_size=n, max_size=n)),
                      dtype=np.int8)
    service = np.array(draw(st.lists(st.sampled_from([0.0, 0.001, 0.003, 0.01, 0.05]), min_size=n, max_size=n)))
    queued = draw(st.booleans())
    finish, free = np.empty(n), 0.0
    for i in range(n):  # a FIFO server (queued) or each request on its own
        start = max(arrival[i], free) if queued else arrival[i]
        finish[i] = free = start + service[i]
    latency = np.where(status == REJECTED, 0.0, finish - arrival)
    size = np.array(draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)), dtype=np.int32)
    table = make_table(arrival, status, latency, size)
    cuts = draw(st.lists(st.integers(1, max(1, n - 1)), max_size=6)) if n > 1 else []
    return table, cuts


def largest_first_half_backlog(table: RequestTable, warmup: float) -> int:
    """By definition, one request at a time: the most requests arrived and not yet done
    with just after an arrival of the first half of the measured ones."""
    kept = table.arrival >= warmup if warmup > 0 else np.ones(len(table), bool)
    arrival, finish = table.arrival[kept], table.finish[kept]
    if not arrival.size:
        return 0
    mid = (arrival[0] + arrival[-1]) / 2
    return max(max(i + 1 - int(np.sum(finish <= a)) for i, a in enumerate(arrival) if a <= mid), 0)


@settings(max_examples=300, deadline=None)
@given(tables(), st.sampled_from([None, 0.002, 0.02]), st.sampled_from([0.0, 0.001, 0.05, 0.3]))
def test_exact_figures_do_not_depend_on_where_the_table_is_cut(case, slo, warmup):
    table, cuts = case
    whole = fed(table, [], slo, warmup, interval_s=0.05, sketch_interval_s=0.1)
    cut = fed(table, cuts, slo, warmup, interval_s=0.05, sketch_interval_s=0.1)
    assert json.dumps(cut.figures()) == json.dumps(whole.figures())
    assert cut.backlog.first_half_max == whole.backlog.first_half_max == largest_first_half_backlog(table, warmup)
    cut_sketch, whole_sketch = cut.sketch().to_json(), whole.sketch().to_json()
    assert cut_sketch.pop("sum") == pytest.approx(whole_sketch.pop("sum"), rel=1e-12)  # summed in another order
    assert cut_sketch == whole_sketch
    for name, column in whole.intervals().items():  # counts exactly; sums of latencies in another order
        np.testing.assert_allclose(cut.intervals()[name], column, rtol=1e-12, atol=0)
        assert name == "latency_sum_s" or np.array_equal(cut.intervals()[name], column)
    (starts, sketches), (cut_starts, cut_sketches) = whole.interval_sketches(), cut.interval_sketches()
    assert np.array_equal(starts, cut_starts)
    assert [s.to_json()["counts"] for s in sketches] == [s.to_json()["counts"] for s in cut_sketches]
    # and the summary of a streamed run is the whole-table summary plus its sketch
    results = Results(table, 1, float(np.nanmax(table.finish, initial=0.0)), np.array([1.0]), max(1, len(table)))
    streamed = summarize(Results(None, 1, results.end_time, results.busy_time, results.batches), slo, warmup,
                         stream=cut)
    assert streamed.pop("records") == "full" and streamed.pop("latency_sketch")["counts"] == whole_sketch["counts"]
    assert json.dumps(streamed) == json.dumps(summarize(results, slo, warmup))


def test_the_per_interval_counters_count_each_interval():
    rng = np.random.default_rng(5)
    arrival = np.sort(rng.uniform(0, 10, 5000))
    status = rng.choice([COMPLETED, COMPLETED, DROPPED, REJECTED], arrival.size)
    latency = np.where(status == REJECTED, 0.0, rng.exponential(0.01, arrival.size))
    table = make_table(arrival, status, latency)
    latency = table.finish - table.arrival  # as the stream computes it
    stream = fed(table, [100, 2500], slo=0.02, interval_s=0.5, sketch_interval_s=2.5)
    columns = stream.intervals()
    index = (arrival // 0.5).astype(int)
    done = status == COMPLETED
    assert np.array_equal(columns["start_s"], np.arange(20) * 0.5)
    assert np.array_equal(columns["arrivals"], np.bincount(index, minlength=20))
    assert np.array_equal(columns["dropped"], np.bincount(index[status == DROPPED], minlength=20))
    assert np.array_equal(columns["rejected"], np.bincount(index[status == REJECTED], minlength=20))
    late = ~done | (latency > 0.02)
    assert np.array_equal(columns["slo_violations"], np.bincount(index[late], minlength=20))
    np.testing.assert_allclose(columns["latency_sum_s"], np.bincount(index[done], latency[done], minlength=20),
                               rtol=1e-12)
    starts, sketches = stream.interval_sketches()
    assert np.array_equal(starts, [0.0, 2.5, 5.0, 7.5])
    by_sketch = (arrival[done] // 2.5).astype(int)
    for k, sketch in enumerate(sketches):
        mine = latency[done][by_sketch == k]
        assert sketch.count == mine.size and (sketch.min, sketch.max) == (mine.min(), mine.max())
        assert sketch.quantile(0.5) == pytest.approx(np.quantile(mine, 0.5, method="lower"), rel=0.01)
    assert columns["slo_violations"].sum() / arrival.size == pytest.approx(stream.figures()["slo_violation_rate"],
                                                                           abs=1e-9)


def lognormal_run(n: int, duration: float, seed: int):
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, duration, n))
    status = np.where(rng.random(n) < 0.02, DROPPED, COMPLETED)
    return make_table(arrival, status, rng.lognormal(np.log(0.004), 0.8, n))


@pytest.mark.parametrize("n", [3, 1000, 300_000])
def test_without_exact_latencies_the_percentiles_are_the_sketchs(n):
    table = lognormal_run(n, 600.0, seed=n)
    cuts = list(range(65_536, n, 65_536))
    exact = fed(table, cuts, slo=0.01, warmup=1.0).figures()
    sketched = fed(table, cuts, slo=0.01, warmup=1.0, exact=False, relative_accuracy=0.01).figures()
    kept = table.arrival >= 1.0
    latency = (table.finish - table.arrival)[kept & (table.status == COMPLETED)]
    lower = np.percentile(latency, PERCENTILES, method="lower") * 1e3
    for q, value in zip(PERCENTILES, lower):  # within 1% of the exact lower-rank value, rounded to 1e-6 ms
        assert abs(sketched["latency_ms"][f"p{q}"] - value) <= 0.01 * value + 1e-6
    assert sketched["latency_ms"]["mean"] == pytest.approx(exact["latency_ms"]["mean"], abs=2e-6)
    assert {k: v for k, v in sketched.items() if k != "latency_ms"} == {k: v for k, v in exact.items()
                                                                        if k != "latency_ms"}


def test_without_exact_latencies_memory_does_not_grow_with_the_requests():
    def run(n):
        arrival = np.linspace(0.0, 3600.0, n)  # an hour: 61 intervals of the sketches, 3,601 of counters
        latency = np.resize(np.geomspace(1e-3, 0.1, 100), n)  # 1 and 100 ms in every interval
        stream = fed(make_table(arrival, np.zeros(n), latency), range(65_536, n, 65_536), slo=0.05,
                     exact=False, relative_accuracy=0.01)
        stream.figures()
        return stream

    small, large = run(10_000), run(1_000_000)
    assert small.nbytes == large.nbytes < 3_000_000
    assert small.latencies.nbytes == 0 and len(large.interval_sketches()[1]) == 61  # the last: 3,600 s
    assert fed(make_table(np.zeros(1000), np.zeros(1000), np.ones(1000)), []).latencies.nbytes == 8000


def test_a_stream_refuses_what_breaks_its_figures():
    table = lognormal_run(100, 1.0, seed=1)
    stream = RequestStream(100, table.arrival[-1])
    stream.add(chunks(table, [50])[0])
    with pytest.raises(ValueError, match="50 of 100 requests fed"):
        stream.figures()
    with pytest.raises(ValueError, match="out of order"):
        stream.add(chunks(table, [10])[0])
    with pytest.raises(ValueError, match="more than the 10 requests"):
        RequestStream(10, table.arrival[-1]).add(table)
    with pytest.raises(ValueError, match="after the announced last arrival"):
        RequestStream(100, 0.5).add(table)
    early = make_table(table.arrival, table.status, table.finish - table.arrival)
    early.finish[7] = early.arrival[7] - 1e-9
    with pytest.raises(ValueError, match="finishes before it arrives"):
        RequestStream(100, table.arrival[-1]).add(early)
    with pytest.raises(ValueError, match="more than 2000000"):
        RequestStream(10, 7 * 86400.0, interval_s=0.1)
    with pytest.raises(ValueError, match="exact=False needs a relative_accuracy"):
        RequestStream(10, 1.0, exact=False, relative_accuracy=None)


def test_summarize_refuses_a_stream_built_for_another_slo():
    table = lognormal_run(100, 1.0, seed=2)
    stream = fed(table, [30], slo=0.01)
    results = Results(None, 1, 1.0, np.array([0.5]), 100)
    with pytest.raises(ValueError, match="slo 0.01, warmup 0.0; asked for slo 0.02"):
        summarize(results, 0.02, stream=stream)
    assert summarize(results, 0.01, stream=stream)["requests"] == 100
