"""Shared fixtures of the experiments tests: writing YAML files, calling the CLI in-process,
and one small finished sweep that several tests read (fixtures only: test modules must not
import this file, whose module name other test folders share)."""

from __future__ import annotations

import contextlib
import io
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from servesim.experiments import cli

# The common head of the tiny experiments: 500 Poisson requests at 2,000 req/s on the
# shipped CPU profile (a 3-stage MLP, ~0.7 ms per request at batch 1).
TINY = """\
name: tiny
slo_ms: 5
trace: {kind: poisson, rate: 2000, count: 500}
model: {profile: "builtin:cpu_mlp", name: mlp3}
serving:
  replicas: 2
  router: jsq
  batching: {policy: dynamic, max_batch: 4, max_wait_ms: 1}
"""

# 2 x 2 sweep points x 2 seeds = 8 runs.
SWEEP = TINY + """\
seeds: [1, 2]
sweep:
  serving.replicas: [1, 2]
  serving.batching.max_batch: [1, 8]
"""


@dataclass
class Outcome:
    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def __iter__(self):  # rc, out, err = servesim(...)
        return iter((self.rc, self.out, self.err))


def call(argv) -> Outcome:
    """``servesim ARGV`` in this process; argparse's own exits become an Outcome too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as exc:
            rc = exc.code
    return Outcome(rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def servesim():
    """``servesim(*args)`` -> Outcome(rc, out, err), run in-process."""
    return lambda *argv: call(argv)


@pytest.fixture
def write(tmp_path):
    """``write(name, text)`` writes a dedented file into tmp_path and returns its path."""
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path
    return _write


@pytest.fixture
def tiny_yaml(write):
    """A one-run experiment (seed 0) and its path."""
    return write("tiny.yaml", TINY)


@dataclass
class Sweep:
    yaml: Path
    out: Path
    result: Outcome


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> Sweep:
    """The 8-run SWEEP, run once for the session with ``servesim run --quiet``."""
    base = tmp_path_factory.mktemp("sweep")
    yaml_path = base / "sweep.yaml"
    yaml_path.write_text(SWEEP)
    out = base / "out"
    result = call(["run", yaml_path, "--out", out, "--quiet"])
    assert result.rc == 0, result.err
    return Sweep(yaml_path, out, result)


@pytest.fixture(scope="session")
def sweep_yaml_text():
    return SWEEP


@pytest.fixture(scope="session")
def tiny_yaml_text():
    return TINY
