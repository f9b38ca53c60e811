"""Trace files named in an experiment: a window of a count trace is cut before its
arrivals are placed (so a slice of a 22-day trace costs the slice, not the whole)."""

from __future__ import annotations

import numpy as np

from servesim.experiments import config as config_module
from servesim.traces import loaders


def test_window_of_a_count_file_places_only_the_window(write, tmp_path, monkeypatch):
    write("counts.txt", "4 5 6 7000000\n")  # per-second counts; the last bin is huge
    path = write("exp.yaml", """\
        trace: {kind: file, path: counts.txt, format: twitter, window: [1, 3]}
        model: {profile: "builtin:cpu_mlp", name: mlp3}
        """)
    placed = []
    real = loaders.from_counts
    monkeypatch.setattr(loaders, "from_counts", lambda counts, *a, **k: placed.append(list(counts)) or real(counts, *a, **k))
    cfg = config_module.load(path)
    trace = cfg.trace.build(np.random.default_rng(0), tmp_path)
    assert placed == [[5, 6]]  # bins 1 and 2 only: the 7,000,000 arrivals are never drawn
    assert len(trace) == 11
    assert trace.times.min() >= 0 and trace.times.max() < 2


def test_windows_of_a_count_file_are_cut_one_by_one_and_played_in_turn(write, tmp_path, monkeypatch):
    write("counts.txt", "4 5 6 7000000\n")
    path = write("exp.yaml", """\
        trace: {kind: file, path: counts.txt, format: twitter, windows: [[1, 3], [0, 1], [1, 3]]}
        model: {profile: "builtin:cpu_mlp", name: mlp3}
        """)
    placed = []
    real = loaders.from_counts
    monkeypatch.setattr(loaders, "from_counts", lambda counts, *a, **k: placed.append(list(counts)) or real(counts, *a, **k))
    trace = config_module.load(path).trace.build(np.random.default_rng(0), tmp_path)
    assert placed == [[5, 6], [4], [5, 6]]
    # 2 s, then 1 s, then 2 s: 11 + 4 + 11 arrivals, each piece inside its own stretch
    assert len(trace) == 26 and trace.times.max() < 5
    assert ((trace.times >= 2) & (trace.times < 3)).sum() == 4


def test_window_and_windows_together_are_refused(write, servesim):
    path = write("exp.yaml", """\
        trace: {kind: poisson, rate: 10, duration: 5, window: [0, 1], windows: [[0, 1]]}
        model: {profile: "builtin:cpu_mlp", name: mlp3}
        """)
    result = servesim("check", path)
    assert result.rc == 2 and "give 'window' or 'windows', not both" in result.err
