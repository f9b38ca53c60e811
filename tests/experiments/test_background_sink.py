"""A run's records are summarised and written on a thread of their own
(:class:`experiments.background.BackgroundSink`): the sink sees every chunk, in order;
what it raises reaches the run; a run whose writer fails is reported, and leaves no
partial file behind."""

from __future__ import annotations

import threading

import pytest

from servesim.experiments import store
from servesim.experiments.background import DEPTH, BackgroundSink
from servesim.experiments.runner import run_experiment


def test_every_chunk_reaches_the_sink_in_order_on_another_thread():
    seen = []
    sink = BackgroundSink(lambda chunk: seen.append((chunk, threading.current_thread().name)))
    for chunk in range(10 * DEPTH):
        sink(chunk)
    sink.close()
    assert [chunk for chunk, _ in seen] == list(range(10 * DEPTH))
    assert {name for _, name in seen} == {"servesim-records"}


def test_what_the_sink_raises_is_raised_on_the_runs_thread_and_later_chunks_are_not_taken():
    seen, sent = [], threading.Event()

    def sink(chunk):
        if chunk == 3:
            sent.wait(10)  # (fails once every chunk is queued)
            raise OSError("disk full")
        seen.append(chunk)

    behind = BackgroundSink(sink)
    for chunk in range(4 + DEPTH):  # 3 taken, 1 failing, DEPTH waiting behind it
        behind(chunk)
    sent.set()
    with pytest.raises(OSError, match="disk full"):
        behind.close()
    assert seen == [0, 1, 2]
    with pytest.raises(OSError, match="disk full"):  # and by any call after it
        behind(3 * DEPTH)
    behind.stop()  # (a failed run's clean-up raises nothing)


def test_a_run_whose_table_cannot_be_written_fails_alone_and_leaves_no_file(tmp_path, monkeypatch):
    calls = []
    write = store.RequestsWriter.__call__

    def failing(self, table):
        calls.append(len(table))
        if len(calls) == 2:
            raise OSError("no space left on device")
        write(self, table)

    monkeypatch.setattr(store.RequestsWriter, "__call__", failing)
    monkeypatch.setattr("servesim.sim.cluster.WINDOW", 2048)  # several chunks in a short run
    (tmp_path / "x.yaml").write_text(
        "name: x\nseeds: [1]\ntrace: {kind: poisson, rate: 2000, duration: 5}\n"
        "model: {profile: 'builtin:cpu_mlp', name: mlp3}\n"
        "serving: {replicas: 2, batching: {policy: dynamic, max_batch: 8, max_wait_ms: 1}}\n")
    outcome = run_experiment(tmp_path / "x.yaml", tmp_path / "out", jobs=1, show_progress=False)
    assert [row["status"] for row in outcome.failed] == ["failed"]
    assert "no space left on device" in outcome.failed[0]["error"]
    assert len(calls) >= 2
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(store.TEMPORARY)]
