"""Tiny in-code profiles for the workloads tests (handed out as fixtures: test modules
must not import this file, whose module name other test folders share)."""

import pytest

from servesim.workloads import Profile

METADATA = {
    "device": "cpu:test",
    "dtype": "float32",
    "framework": "none",
    "date": "2024-01-01",
    "execution_mode": "eager",
}


def build_profile(stages, model="m", hardware="cpu"):
    """``stages``: {stage: [(batch_size, p50_ms, p90_ms, p99_ms), ...]} in stage order."""
    rows = [
        (hardware, model, stage, b, p50, p90, p99, 100)
        for stage, points in stages.items()
        for b, p50, p90, p99 in points
    ]
    return Profile.from_rows(rows, METADATA)


@pytest.fixture
def make_profile():
    return build_profile


@pytest.fixture
def metadata():
    return dict(METADATA)


@pytest.fixture
def two_stage():
    """Stage 'a' measured at 1, 2, 4, 8; stage 'b' at 2 and 4 only."""
    return build_profile({
        "a": [(1, 1.0, 1.5, 2.0), (2, 2.0, 2.5, 3.0), (4, 3.0, 4.0, 5.0), (8, 7.0, 8.0, 10.0)],
        "b": [(2, 0.5, 0.6, 0.7), (4, 0.9, 1.0, 1.1)],
    })


@pytest.fixture(scope="module")
def torch():
    """torch, or a skip where the `real` extra is not installed."""
    return pytest.importorskip("torch")
