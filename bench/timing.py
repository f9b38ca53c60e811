"""Timing two simulators of one sample path fairly, for the benchmarks in this folder."""

from __future__ import annotations

import statistics
from typing import Callable


def in_turn(repeats: int, first: Callable, second: Callable) -> tuple[list[float], list[float], object, object]:
    """Time ``first()`` and ``second()`` in turn, ``repeats`` times each (each returns
    ``(seconds, result)``), so that a change in the machine's load meets both sides
    alike; returns both sides' seconds and their last results."""
    seconds = ([], [])
    results = [None, None]
    for _ in range(repeats):
        for side, fn in enumerate((first, second)):
            took, results[side] = fn()
            seconds[side].append(took)
    return seconds[0], seconds[1], results[0], results[1]


def median_ratio(seconds: list[float], reference_seconds: list[float]) -> float:
    """The median over the repeats of one side's speed over the reference side's
    (``reference_seconds[i] / seconds[i]``: the same work, each pair timed back to back),
    which a burst of load on the machine moves less than a ratio of best times."""
    return statistics.median(ref / took for took, ref in zip(seconds, reference_seconds))
