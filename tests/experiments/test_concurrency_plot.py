"""plots/concurrency.png of a sweep of load.clients: its lines, points and knee (experiments.concurrency_plot)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from servesim.experiments.concurrency_plot import curves, knee
from servesim.experiments.plots import plot_experiment

MODEL = 'model: {profile: "builtin:cpu_mlp", name: mlp3}\n'


@pytest.mark.parametrize("clients, throughput, p99, expected", [
    # 2 -> 4 adds 4% while p99 grows: the knee is at 2
    ([1, 2, 4, 8], [100, 190, 197.6, 198], [1, 1.1, 2, 4], 1),
    # the same gains per doubling on a sweep that triples: 1.04 ** log2(3) = 6.4% over the step
    ([1, 3, 9], [100, 180, 180 * 1.04 ** np.log2(3)], [1, 2, 4], 1),
    # throughput flat but p99 does not grow (batches fill faster): no knee
    ([1, 2, 4], [100, 102, 103], [2, 1.5, 1.2], None),
    # 5.1% per doubling is still growth
    ([1, 2], [100, 105.1], [1, 2], None),
])
def test_the_knee_is_where_a_doubling_adds_under_5_percent_while_p99_grows(clients, throughput, p99, expected):
    assert knee(*(np.asarray(v, float) for v in (clients, throughput, p99))) == expected


def test_a_concurrency_sweep_plots_one_line_per_other_setting(write, servesim, tmp_path):
    text = ("load: {kind: closed_loop, clients: 1, count: 400}\n" + MODEL
            + "serving: {batching: {policy: dynamic, max_batch: 8}}\nseeds: [1, 2]\n"
            + "sweep:\n  load.clients: [1, 4, 64]\n  serving.replicas: [1, 2]\n")
    out = tmp_path / "out"
    assert servesim("run", write("c.yaml", text), "--out", out, "--quiet").rc == 0
    results = pd.read_csv(out / "results.csv")
    lines = curves(results)
    assert [line.label for line in lines] == ["1 replica", "2 replicas"]  # a swept count reads as one
    for line, replicas in zip(lines, (1, 2)):
        assert line.clients.tolist() == [1, 4, 64]
        runs = results[results["serving.replicas"] == replicas]
        means = runs.groupby("load.clients")[["client_throughput_rps", "client_p99_ms"]].mean()  # over the 2 seeds
        assert np.allclose(line.throughput, means["client_throughput_rps"]) and np.allclose(line.p99, means["client_p99_ms"])
    assert (out / "plots" / "concurrency.png").stat().st_size > 0
    # an open-loop sweep has no such plot
    other = tmp_path / "open"
    assert servesim("run", write("o.yaml", "trace: {kind: poisson, rate: 100, count: 50}\n" + MODEL
                                 + "sweep:\n  serving.replicas: [1, 2]\n"), "--out", other, "--quiet").rc == 0
    assert not (other / "plots" / "concurrency.png").exists()
    assert all(path.name != "concurrency.png" for path in plot_experiment(other))
