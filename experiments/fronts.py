"""Front against front: where one exit policy's accuracy / p50 front falls short of another's.

A recall policy fitted well is never worse than a no-recall one beyond noise (it may
always answer from the last exit run), so a front of T-Tamer points that a rival's point
beats is a finding to explain. A reader checks it point by point: for each point of a
rival policy (optimal no-recall at some λ, a confidence threshold), is there a point of
the policy under test at no more than :data:`P50_SLACK` more p50 and no less than
:data:`ACCURACY_SLACK` less accuracy, in the same panel (the same values of every swept
key but the exit policy)? Points are means over seeds.

Seeds share their arrivals and samples across policies (common random numbers), so the
accuracy of two points is compared seed by seed: a rival point is *beyond noise* where
its paired accuracy lead over the best test point at its speed exceeds the slack by more
than the 95% confidence half-width of that lead.

    servesim fronts runs/ttamer_pareto     # writes fronts.csv and front_steps.csv there

:func:`steps` says how densely each front is drawn: its largest step between neighbours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import store
from .plots import ci_half_width, front, panels, point_keys, read_results

P50_SLACK = 0.02         # a test point may be 2% slower at p50 and still match
ACCURACY_SLACK = 0.005   # ... and half a point less accurate
FRONTS = "fronts.csv"
STEPS = "front_steps.csv"
COLUMNS = ["panel", "rival", "rival_points", "unmatched", "beyond_noise", "no_point_as_fast",
           "largest_gap", "largest_gap_at_p50_ms"]


def compare(results: pd.DataFrame, policy: str = "ttamer",
            rivals: tuple[str, ...] = ("optimal_no_recall", "confidence")) -> pd.DataFrame:
    """One row per (panel, rival): how many of the rival's points no ``policy`` point
    matches (``unmatched``), how many of those beyond the seeds' noise, how many no
    ``policy`` point is as fast as, and the largest accuracy lead of a rival point over
    the best ``policy`` point at its p50 (positive: the rival is ahead)."""
    rows = []
    for frame, title in _panels_with_exits(results):
        points = _points_by_seed(frame)
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
    groups, titles, _ = panels(ok)
    return list(zip(groups, titles))


def _points_by_seed(frame: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """Each exit-policy setting's runs, indexed by seed: (policy name, swept values...) ->
    frame of accuracy and latency_p50_ms."""
    keys = point_keys(frame)
    return {(values if isinstance(values, tuple) else (values,)): runs.set_index("seed")[["accuracy", "latency_p50_ms"]]
            for values, runs in frame.groupby(keys, dropna=False, sort=False)}


def _against(points: dict, tested: list, rival: list) -> dict:
    counts = {"rival_points": len(rival), "unmatched": 0, "beyond_noise": 0, "no_point_as_fast": 0,
              "largest_gap": np.nan, "largest_gap_at_p50_ms": np.nan}
    means = {p: points[p].mean() for p in tested}
    for r in rival:
        runs = points[r]
        p50, accuracy = runs["latency_p50_ms"].mean(), runs["accuracy"].mean()
        fast = [p for p in tested if means[p]["latency_p50_ms"] <= (1 + P50_SLACK) * p50]
        if not fast:
            counts["unmatched"] += 1
            counts["no_point_as_fast"] += 1
            continue
        best = max(fast, key=lambda p: means[p]["accuracy"])
        gap = accuracy - means[best]["accuracy"]
        if np.isnan(counts["largest_gap"]) or gap > counts["largest_gap"]:
            counts["largest_gap"], counts["largest_gap_at_p50_ms"] = gap, p50
        if gap > ACCURACY_SLACK:
            counts["unmatched"] += 1
            lead = (runs["accuracy"] - points[best]["accuracy"]).dropna()  # paired by seed
            half = ci_half_width(lead)
            if lead.mean() - (0 if np.isnan(half) else half) > ACCURACY_SLACK:
                counts["beyond_noise"] += 1
    return counts


STEP_COLUMNS = ["panel", "policy", "front_points", "largest_accuracy_step", "largest_p50_step"]


def steps(results: pd.DataFrame) -> pd.DataFrame:
    """How densely each policy's p50 front is drawn, per panel: its points (means over
    seeds, the front as the Pareto plot draws it) and the largest step between
    neighbours, in accuracy (absolute) and in p50 (relative to the faster one). A front
    whose steps are small is drawn, not sampled: no unseen point hides between two."""
    rows = []
    for frame, title in _panels_with_exits(results):
        means = frame.groupby(point_keys(frame), dropna=False, sort=False)[["accuracy", "latency_p50_ms"]].mean()
        for policy, pts in means.groupby(level=0, sort=False):
            p50, accuracy = pts["latency_p50_ms"].to_numpy(), pts["accuracy"].to_numpy()
            on = front(p50, accuracy)
            p50, accuracy = p50[on], accuracy[on]
            rows.append({"panel": title, "policy": policy, "front_points": on.size,
                         "largest_accuracy_step": np.diff(accuracy).max(initial=0.0),
                         "largest_p50_step": (np.diff(p50) / p50[:-1]).max(initial=0.0)})
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


def write_fronts(out_dir: Path | str, policy: str = "ttamer",
                 rivals: tuple[str, ...] = ("optimal_no_recall", "confidence")) -> tuple[Path, pd.DataFrame]:
    """:func:`compare` on an experiment folder's results.csv, written to ``fronts.csv`` there."""
    out_dir = Path(out_dir)
    path = out_dir / store.RESULTS
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results.csv here; is {out_dir} an experiment output folder?")
    results = read_results(path)
    table, drawn = compare(results, policy, rivals), steps(results)
    for target, frame in ((out_dir / FRONTS, table), (out_dir / STEPS, drawn)):
        with store.atomic_path(target) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    return out_dir / FRONTS, table
