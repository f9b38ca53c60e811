"""Trace files named in an experiment: a window of a count trace is cut before its
arrivals are placed (so a slice of a 22-day trace costs the slice, not the whole)."""

from __future__ import annotations

import numpy as np

from experiments import config as config_module
from traces import loaders


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
