"""Front against front: where one exit policy's accuracy / latency front falls short of another's.

A recall policy fitted well is never worse than a no-recall one beyond noise (it may
always answer from the last exit run), so a front of T-Tamer points that a rival's point
beats is a finding to explain. A reader checks it point by point: for each point of a
rival policy (optimal no-recall at some λ, a confidence threshold), is there a point of
the policy under test at no more than :data:`LATENCY_SLACK` more latency (p50 by
default) and no less than :data:`ACCURACY_SLACK` less accuracy, in the same panel (the
same values of every swept key but the exit policy)? Points are means over seeds.

Which latency matters: a fitted stopping rule minimises *expected* cost, so its natural
axis is the mean; p50 is what users read, and on an idle server it moves in steps (the
median request's exit), so a front can lose on p50 between two steps and not on the mean.

Seeds share their arrivals and samples across policies (common random numbers), so the
accuracy of two points is compared seed by seed: a rival point is *beyond noise* where
its paired accuracy lead over the best test point at its speed exceeds the slack by more
than the 95% confidence half-width of that lead.

    servesim fronts runs/ttamer_pareto     # writes fronts.csv and front_steps.csv there
    servesim fronts runs/ttamer_pareto --latency mean   # fronts-mean.csv, front_steps-mean.csv

:func:`steps` says how densely each front is drawn: its largest step between neighbours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import store
from .config import STEP_ACCURACY, STEP_LATENCY
from .plots import front, panels, point_keys
from .seeds import ci_half_width

LATENCY_SLACK = 0.02     # a test point may be 2% slower and still match
ACCURACY_SLACK = 0.005   # ... and half a point less accurate
FRONTS = "fronts.csv"
STEPS = "front_steps.csv"
COLUMNS = ["panel", "rival", "rival_points", "unmatched", "beyond_noise", "no_point_as_fast",
           "largest_gap", "largest_gap_at_ms"]
LATENCIES = {"p50": "latency_p50_ms", "p99": "latency_p99_ms", "mean": "latency_mean_ms"}


def compare(results: pd.DataFrame, policy: str = "ttamer",
            rivals: tuple[str, ...] = ("optimal_no_recall", "confidence"), latency: str = "p50") -> pd.DataFrame:
    """One row per (panel, rival): how many of the rival's points no ``policy`` point
    matches (``unmatched``), how many of those beyond the seeds' noise, how many no
    ``policy`` point is as fast as, and the largest accuracy lead of a rival point over
    the best ``policy`` point at its latency (positive: the rival is ahead). ``latency``:
    a key of :data:`LATENCIES`."""
    rows = []
    for frame, title in _panels_with_exits(results):
        points = _points_by_seed(frame, LATENCIES[latency])
        tested = [p for p in points if p[0] == policy]
        for rival in rivals:
            rows.append({"panel": title, "rival": rival,
                         **_against(points, tested, [p for p in points if p[0] == rival])})
    return pd.DataFrame(rows, columns=COLUMNS)


def _panels_with_exits(results: pd.DataFrame) -> list[tuple[pd.DataFrame, str]]:
    """(runs, title) of each panel of the Pareto plot: finished runs with exits."""
    ok = results[(results["status"] == "ok") & results["accuracy"].notna()]
    if ok.empty or "policy" not in ok:
        return []
    keys = store.swept_keys(ok.columns)  # the panels and points of the swept keys, not of their fields
    groups, titles, _ = panels(ok.drop(columns=[c for c in store.swept_columns(ok.columns) if c not in keys]))
    return list(zip(groups, titles))


def _points_by_seed(frame: pd.DataFrame, column: str) -> dict[tuple, pd.DataFrame]:
    """Each exit-policy setting's runs, indexed by seed: (policy name, swept values...) ->
    frame of accuracy and ``latency`` (the latency ``column``)."""
    keys = point_keys(frame)
    return {(values if isinstance(values, tuple) else (values,)): runs.set_index("seed")[["accuracy", column]].rename(columns={column: "latency"})
            for values, runs in frame.groupby(keys, dropna=False, sort=False)}


def _against(points: dict, tested: list, rival: list) -> dict:
    counts = {"rival_points": len(rival), "unmatched": 0, "beyond_noise": 0, "no_point_as_fast": 0,
              "largest_gap": np.nan, "largest_gap_at_ms": np.nan}
    means = {p: points[p].mean() for p in tested}
    for r in rival:
        runs = points[r]
        latency, accuracy = runs["latency"].mean(), runs["accuracy"].mean()
        fast = [p for p in tested if means[p]["latency"] <= (1 + LATENCY_SLACK) * latency]
        if not fast:
            counts["unmatched"] += 1
            counts["no_point_as_fast"] += 1
            continue
        best = max(fast, key=lambda p: means[p]["accuracy"])
        gap = accuracy - means[best]["accuracy"]
        if np.isnan(counts["largest_gap"]) or gap > counts["largest_gap"]:
            counts["largest_gap"], counts["largest_gap_at_ms"] = gap, latency
        if gap > ACCURACY_SLACK:
            counts["unmatched"] += 1
            lead = (runs["accuracy"] - points[best]["accuracy"]).dropna()  # paired by seed
            half = ci_half_width(lead)
            if lead.mean() - (0 if np.isnan(half) else half) > ACCURACY_SLACK:
                counts["beyond_noise"] += 1
    return counts


STEP_COLUMNS = ["panel", "policy", "front_points", "largest_accuracy_step", "largest_latency_step", "wide_steps"]


def steps(results: pd.DataFrame, latency: str = "p50") -> pd.DataFrame:
    """How densely each policy's front is drawn, per panel: its points (means over
    seeds, the front as the Pareto plot draws it) and the largest step between
    neighbours, in accuracy (absolute) and in latency (relative to the faster one), and
    ``wide_steps``: how many steps exceed :data:`~experiments.config.STEP_ACCURACY` in
    accuracy *and* :data:`~experiments.config.STEP_LATENCY` in latency. A front with no
    wide step is drawn, not sampled: no unseen point hides between two (a step small in
    either figure leaves no room for one)."""
    rows = []
    for frame, title in _panels_with_exits(results):
        column = LATENCIES[latency]
        means = frame.groupby(point_keys(frame), dropna=False, sort=False)[["accuracy", column]].mean()
        for policy, pts in means.groupby(level=0, sort=False):
            times, accuracy = pts[column].to_numpy(), pts["accuracy"].to_numpy()
            on = front(times, accuracy)
            times, accuracy = times[on], accuracy[on]
            rise, slower = np.diff(accuracy), np.diff(times) / times[:-1]
            rows.append({"panel": title, "policy": policy, "front_points": on.size,
                         "largest_accuracy_step": rise.max(initial=0.0),
                         "largest_latency_step": slower.max(initial=0.0),
                         "wide_steps": int(((rise > STEP_ACCURACY) & (slower > STEP_LATENCY)).sum())})
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


def write_fronts(out_dir: Path | str, policy: str = "ttamer",
                 rivals: tuple[str, ...] = ("optimal_no_recall", "confidence"),
                 latency: str = "p50") -> tuple[Path, pd.DataFrame]:
    """:func:`compare` and :func:`steps` on an experiment folder's results.csv, written
    there as ``fronts[-LATENCY].csv`` and ``front_steps[-LATENCY].csv`` (no suffix for p50)."""
    out_dir = Path(out_dir)
    results = store.read_folder(out_dir)
    suffix = "" if latency == "p50" else f"-{latency}"
    targets = [out_dir / name.replace(".csv", f"{suffix}.csv") for name in (FRONTS, STEPS)]
    tables = compare(results, policy, rivals, latency), steps(results, latency)
    for target, frame in zip(targets, tables):
        with store.atomic_path(target) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    return targets[0], tables[0]
