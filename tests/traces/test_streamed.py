"""A generated trace drawn stretch by stretch as it is read (``traces/streamed.py``): the
same arrivals, bit for bit, as the array its generator makes from the same seed, for
every kind, by duration and by count, across many stretches; a window that reads
forward only and lets go of what was read."""

from __future__ import annotations

import numpy as np
import pytest

from servesim import traces
from servesim.traces import TraceError, generators
from servesim.traces.streamed import StreamedTrace

KINDS = {
    "poisson": dict(rate=300.0),
    "gamma": dict(rate=300.0, cv=2.0),
    "mmpp2": dict(rates=[100.0, 900.0], mean_sojourn=[1.0, 0.5]),
    "diurnal": dict(mean_rate=300.0, amplitude=0.5, period=20.0),
    "step": dict(rates=[100.0, 500.0], change_times=[10.0]),
    "spike": dict(base_rate=100.0, spike_rate=900.0, start=5.0, length=3.0),
}


@pytest.fixture
def short_stretches(monkeypatch):
    monkeypatch.setattr(generators, "STRETCH", 1000)  # ~20 stretches a trace here


def read_through(trace: StreamedTrace, step: int) -> np.ndarray:
    """The window read ``step`` arrivals at a time, each slice let go once read."""
    window, parts = trace.times, []
    for lo in range(0, len(window), step):
        hi = min(lo + step, len(window))
        parts.append(np.array(window[lo:hi]))
        window.release(hi)
    return np.concatenate([np.empty(0), *parts])


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("span", [{"duration": 60.0}, {"count": 12345}])
def test_drawn_as_read_is_the_array_bit_for_bit(kind, span, short_stretches):
    make = getattr(traces, kind)
    whole = make(**KINDS[kind], **span, rng=np.random.default_rng(3)).times
    streamed = make(**KINDS[kind], **span, rng=np.random.default_rng(3), lazy=True)
    assert whole.size > 5000 and (streamed.count, streamed.last) == (whole.size, whole[-1])
    np.testing.assert_array_equal(read_through(streamed, 777), whole)
    assert streamed.source == make(**KINDS[kind], **span, rng=np.random.default_rng(3)).source


def test_a_trace_shorter_than_a_stretch_is_drawn_as_before():
    """Traces of fewer than generators.STRETCH arrivals are drawn in one stretch, as
    before stretches existed: one Poisson draw for the whole duration."""
    rng = np.random.default_rng(5)
    count = rng.poisson(1000.0 * 30.0)
    expected = np.sort(rng.random(count) * 30.0)
    np.testing.assert_array_equal(traces.poisson(1000.0, duration=30.0, rng=np.random.default_rng(5)).times, expected)


def test_the_window_reads_forward_only(short_stretches):
    trace = traces.poisson(500.0, duration=20.0, rng=np.random.default_rng(1), lazy=True)
    window = trace.times
    assert window is trace.times  # one reader: the trace's
    assert window[-1] == trace.last and len(window) == trace.count
    first = np.array(window[0:100])
    window.release(50)
    np.testing.assert_array_equal(window[50:100], first[50:])
    with pytest.raises(IndexError, match="arrival 10 was let go"):
        window[10:20]
    with pytest.raises(TypeError, match=r"read as slices \[a:b\] or \[-1\]"):
        window[60]


def test_a_bad_stretch_is_refused_naming_the_arrival():
    def stretches():
        yield np.array([0.5, 1.0])
        yield np.array([0.9, 2.0])
    with pytest.raises(TraceError, match=r"made-up: arrival 2 is 0.9; times must be finite, non-negative and sorted"):
        StreamedTrace.drawn(stretches, "made-up")
