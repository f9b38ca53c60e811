"""Checks shared by the tests of the profiles the project ships (a module of helpers,
importable from any test folder: ``tests`` is on the path)."""

from __future__ import annotations

import datetime


def assert_profiled_here_with_torch(profile, model: str) -> None:
    """``profile``'s metadata says it was measured by the project's torch profiler: on one
    CPU thread, in float32, for ``model``, on a real date."""
    meta = profile.metadata
    assert meta["device"].startswith("cpu:") and meta["dtype"] == "float32" and meta["threads"] == "1"
    assert meta["model"].startswith(f"{model}:") and meta["framework"].startswith("torch ")
    datetime.date.fromisoformat(meta["date"])
