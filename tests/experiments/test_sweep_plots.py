"""The plots of a sweep: each point's figures are its mean over seeds with Student's t
95% interval, the SLO is drawn where there is one, every axis says its unit, one colour
per family with a shade per parameter, and the figures stay bounded as sweeps grow to
200 runs. Results are made from real configs (their runs, names and results.csv rows)
with figures chosen here, so each drawn number can be checked against its source."""

from __future__ import annotations

import itertools

import matplotlib.axes
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from servesim.experiments import plots, store
from servesim.experiments.config import expand, load
from servesim.experiments.figures import plain_log, timeseries
from servesim.experiments.runner import result_row

from configs import digits_exits

HEAD = """\
name: s
slo_ms: 5
trace: {kind: poisson, rate: 1000, count: 100}
model: {profile: "builtin:cpu_mlp", name: mlp3}
serving: {replicas: 1, batching: {policy: dynamic, max_batch: 1}}
"""
BATCHING = """\
  serving.batching:
    - {policy: dynamic, max_batch: 1}
    - {policy: dynamic, max_batch: 8, max_wait_ms: 1}
    - {policy: deadline, max_batch: 8}
"""
WOBBLE = {1: 0.0, 2: 0.3, 3: -0.1, 4: 0.5, 5: 0.2}  # a seed's draw, as a fraction of the point's figure


def _summary(run) -> dict:
    """Figures that differ by point and by seed, none of which can be read off a run's name."""
    batching = run.params.get("serving.batching", {"max_batch": 1, "policy": "dynamic"})
    rate = run.params.get("trace.rate", 1000)
    base = (1 + rate / 1000) * (3 if batching["max_batch"] == 1 else 1) * (1.5 if batching["policy"] == "deadline" else 1)
    wobble = 1 + WOBBLE[run.seed]
    dropped = int(10 * wobble) if batching["max_batch"] == 1 else 0
    return {"requests": 100, "completed": 100 - dropped, "dropped": dropped, "throughput_rps": rate * wobble,
            "latency_ms": {"p50": base * wobble, "p99": 2 * base * wobble}, "slo_violation_rate": 0.1 * wobble,
            "slo_ms": 5.0}


def _results(write, text: str, summary=_summary) -> tuple[pd.DataFrame, dict]:
    """results.csv of ``text``'s runs (written and read back as servesim does) and the runs by name."""
    path = write("s.yaml", text)
    runs = {run.name: run for run in expand(load(path), str(path))}
    rows = [result_row(run, summary(run)) for run in runs.values()]
    target = path.parent / store.RESULTS
    store.write_rows(target, rows, store.results_columns(rows))
    return store.read_results(target), runs


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plots draw, kept open instead of saved."""
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, target: figures.append(fig))
    yield figures
    plt.close("all")


def _calls(monkeypatch, method: str) -> list:
    """Each call of ``Axes.<method>``: (axes, args)."""
    calls = []
    original = getattr(matplotlib.axes.Axes, method)
    monkeypatch.setattr(matplotlib.axes.Axes, method,
                        lambda self, *args, **kw: calls.append((self, args)) or original(self, *args, **kw))
    return calls


def _expected(runs: dict, key) -> dict:
    """Per point (by its swept values), the mean and t half-width over seeds of ``key(summary)``."""
    by_point = {}
    for run in runs.values():
        by_point.setdefault(repr(sorted(run.params.items())), []).append(key(_summary(run)))
    out = {}
    for point, values in by_point.items():
        values = np.array(values)
        out[point] = (values.mean(), stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return out


def _units(fig) -> None:
    """Every axis label of ``fig`` says its unit (in brackets); small multiples label their outer panels."""
    labels = [label for ax in fig.axes if ax.get_visible() and not ax.images
              for label in (ax.get_xlabel(), ax.get_ylabel()) if label]
    assert labels and all("(" in label and label.endswith(")") for label in labels), labels


def _slo_lines(ax) -> list:
    return [line for line in ax.lines if line.get_linestyle() == "--" and line.get_color() == "tab:red"]


def test_lines_against_the_rate_show_each_point_s_mean_and_its_t_interval(write, drawn, monkeypatch):
    results, runs = _results(write, HEAD + "seeds: [1, 2, 3]\nsweep:\n  trace.rate: [500, 1000, 2000]\n" + BATCHING)
    bands = _calls(monkeypatch, "fill_between")
    sweep = plots.describe(results, {name: 5.0 for name in runs})
    assert sweep.x == "trace.rate"
    plots.comparison(sweep, plots.SERVING, None, "compared")
    (fig,) = drawn
    p99 = next(ax for ax in fig.axes if ax.get_ylabel() == "p99 latency (ms)")
    expected = _expected(runs, lambda s: s["latency_ms"]["p99"])
    drawn_bands = [(np.asarray(x), np.asarray(lo), np.asarray(hi)) for ax, (x, lo, hi) in bands if ax is p99]
    assert len(drawn_bands) == 3  # one per batching setting
    halves = sorted(h for _, h in expected.values())
    assert sorted(np.concatenate([(hi - lo) / 2 for _, lo, hi in drawn_bands])) == pytest.approx(halves, rel=1e-9)
    means = sorted(m for m, _ in expected.values())
    assert sorted(np.concatenate([line.get_ydata() for line in p99.lines if line.get_linestyle() == "-"])) \
        == pytest.approx(means, rel=1e-9)
    assert [line.get_ydata()[0] for line in _slo_lines(p99)] == [5.0]  # the configured SLO
    assert p99.get_xlabel() == "rate (requests/s)"
    _units(fig)
    (legend,) = fig.legends
    names = [t.get_text() for t in legend.get_texts()]
    assert names == ["dynamic max_batch=1", "dynamic max_batch=8 max_wait_ms=1", "deadline max_batch=8", "SLO 5 ms"]
    colours = {name: handle.get_color() for name, handle in zip(names, legend.legend_handles)}
    one, eight, deadline = (np.array(colours[n][:3]) for n in names[:3])
    assert one[2] > one[0] and eight[2] > eight[0] and deadline[0] > deadline[2]  # dynamic blue, deadline orange
    assert eight.sum() < one.sum()  # the larger max_batch a darker shade


def test_dots_list_each_point_with_drops_in_per_cent(write, drawn, monkeypatch):
    """4 points x 2 seeds (the quickstart's shape): a dot per point with its interval."""
    results, runs = _results(write, HEAD + "seeds: [1, 2]\nsweep:\n" + BATCHING.replace(
        "    - {policy: deadline, max_batch: 8}\n", "    - {policy: deadline, max_batch: 8}\n    - {policy: deadline, max_batch: 32}\n"))
    dots = _calls(monkeypatch, "errorbar")
    sweep = plots.describe(results, {name: 5.0 for name in runs})
    assert sweep.x is None
    plots.comparison(sweep, plots.SERVING, None, "compared")
    (fig,) = drawn
    dropped = next(ax for ax in fig.axes if ax.get_xlabel() == "dropped (% of requests)")
    expected = _expected(runs, lambda s: 100 * s["dropped"] / s["requests"])
    shown = sorted(args[0] for ax, args in dots if ax is dropped)
    assert shown == pytest.approx(sorted(m for m, _ in expected.values()))
    p99 = next(ax for ax in fig.axes if ax.get_xlabel() == "p99 latency (ms)")
    assert [line.get_xdata()[0] for line in _slo_lines(p99)] == [5.0]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [  # top down: families, then shades
        "dynamic max_batch=1", "dynamic max_batch=8 max_wait_ms=1", "deadline max_batch=8", "deadline max_batch=32"]
    _units(fig)


def test_dot_intervals_are_students_t_over_the_seeds(write, drawn):
    results, runs = _results(write, HEAD + "seeds: [1, 2, 4]\nsweep:\n" + BATCHING)
    sweep = plots.describe(results, {})
    plots.comparison(sweep, plots.SERVING, None, "compared")
    (fig,) = drawn
    p50 = next(ax for ax in fig.axes if ax.get_xlabel() == "p50 latency (ms)")
    halves = []
    for container in p50.containers:
        (bars,) = container.lines[2]
        halves += [(segment[1][0] - segment[0][0]) / 2 for segment in bars.get_segments()]
    expected = _expected(runs, lambda s: s["latency_ms"]["p50"])
    assert sorted(halves) == pytest.approx(sorted(h for _, h in expected.values()), rel=1e-9)
    assert not _slo_lines(p50)  # no SLO given, none drawn


def _tables(runs: dict, n: int = 40) -> dict:
    """A small per-request table per run: latencies of a few ms, every tenth dropped."""
    tables = {}
    for k, name in enumerate(runs):
        arrival = np.linspace(0, 1, n)
        status = (np.arange(n) % 10 == 9).astype(np.int8)
        tables[name] = pd.DataFrame({"arrival": arrival, "finish": arrival + 0.001 * (1 + (np.arange(n) + k) % 7),
                                     "status": status})
    return tables


def test_200_runs_stay_readable_and_bounded(write, drawn):
    rates = "[" + ", ".join(str(r) for r in range(400, 4400, 400)) + "]"
    batching = BATCHING + "    - {policy: deadline, max_batch: 32}\n"
    results, runs = _results(write, HEAD + f"seeds: [1, 2, 3, 4, 5]\nsweep:\n  trace.rate: {rates}\n" + batching)
    assert len(runs) == 200
    sweep = plots.describe(results, {name: 5.0 for name in runs})
    plots.comparison(sweep, plots.SERVING, None, "compared")
    plots.latency_cdf(sweep, _tables(runs), None)
    comparison, cdf = drawn
    for fig in drawn:
        width, height = fig.get_size_inches()
        assert width <= 16 and height <= 12, (width, height)
        assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 5  # 4 settings and the SLO
        _units(fig)
    panels = [ax for ax in cdf.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in panels][:2] == ["rate=400 requests/s", "rate=800 requests/s"]
    assert len(panels) == 10 and all(len(ax.lines) == 4 + 1 for ax in panels)  # a CDF per setting, the SLO


def test_more_points_than_rows_become_heatmaps(write, drawn):
    """80 points with no numeric axis: a heatmap per figure, families down, facets across."""
    values = "\n".join(f"    - {{policy: {p}, max_batch: {b}}}" for p, b in itertools.product(("dynamic", "deadline"),
                                                                                             range(1, 41)))
    text = (HEAD + "seeds: [1, 2]\nsweep:\n  serving.router: [jsq, round_robin]\n  serving.batching:\n" + values + "\n")
    results, runs = _results(write, text.replace("replicas: 1", "replicas: 2"))
    sweep = plots.describe(results, {name: 5.0 for name in runs})
    plots.comparison(sweep, plots.SERVING, None, "compared")
    (fig,) = drawn
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 5 and maps[0].images[0].get_array().shape == (80, 2)
    assert [t.get_text() for t in maps[0].get_xticklabels()] == ["router=jsq", "router=round_robin"]
    width, height = fig.get_size_inches()
    assert width <= 25 and height <= 20
    over = maps[1].collections[0].get_offsets()  # p99 above the 5 ms SLO: marked
    assert len(over) == int((sweep.points["latency_p99_ms"] > 5).sum()) > 0


EXITS = digits_exits("e", seeds="[1, 2, 3]") + """\
sweep:
  exits.policy:
""" + "".join(f"    - {{name: {p}, {k}: {v}}}\n" for p, k in (("ttamer", "lam"), ("confidence", "threshold"))
              for v in (0.5, 0.7, 0.9))


def _exit_summary(run) -> dict:
    policy = run.params["exits.policy"]
    k = {0.5: 0, 0.7: 1, 0.9: 2}[policy.get("lam", policy.get("threshold"))]
    return {"requests": 400, "completed": 400, "dropped": 0, "accuracy": 0.8 + 0.05 * k + 0.01 * run.seed,
            "latency_ms": {"p50": 1.0 + k, "p99": 2.0 + 2 * k}, "policy": {"name": policy["name"]}}


def test_pareto_draws_each_family_s_front_with_its_band(write, drawn, monkeypatch):
    results, runs = _results(write, EXITS, _exit_summary)
    bands = _calls(monkeypatch, "fill_between")
    sweep = plots.describe(results, {})
    plots.pareto(sweep, None)
    (fig,) = drawn
    assert len(bands) == 4  # two families, p50 and p99 panels
    for _, (x, lo, hi) in bands:  # accuracy over seeds 1, 2, 3: sd 0.01
        np.testing.assert_allclose(np.asarray(hi) - np.asarray(lo), 2 * 4.3027 * 0.01 / np.sqrt(3), rtol=1e-4)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ttamer", "confidence"]
    _units(fig)


def test_log_axes_read_as_plain_numbers():
    fig, ax = plt.subplots()
    ax.plot([3, 40], [3, 40])
    plain_log(ax, "x")
    fig.canvas.draw()
    labels = {t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)} - {""}
    plt.close(fig)
    assert {"10", "20", "5"} <= labels and not any("10^" in s or "times" in s for s in labels)


def test_a_run_over_time_shows_its_slo_and_its_drops(drawn, monkeypatch):
    monkeypatch.setattr("servesim.experiments.figures.save_figure", lambda fig, target: drawn.append(fig))
    table = _tables({"r": None}, n=200)["r"]
    timeseries("r", table, None, slo_ms=4.0)
    (fig,) = drawn
    top, bottom = fig.axes
    assert [line.get_ydata()[0] for line in _slo_lines(top)] == [4.0]
    assert "dropped (requests/s)" in [line.get_label() for line in bottom.lines]
    _units(fig)
