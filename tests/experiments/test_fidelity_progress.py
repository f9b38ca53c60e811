"""``servesim fidelity`` shows its progress: a bar over every point's phases (real runs,
calibration halves, simulations) naming the one under way; ``--quiet`` hides it."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from tqdm import tqdm  # noqa: E402

from servesim.experiments.fidelity import Progress, _phases  # noqa: E402

CONFIG = """\
name: fidprogress
trace: {kind: poisson, rate: 500, duration: 0.2}
model: {profile: "builtin:cpu_digits_torch_ee", name: digits_torch_ee}
serving:
  batching: {policy: dynamic, max_batch: 2}
exits:
  ramps: {block1: ramp1, block2: ramp2, block3: ramp3}
  behaviour: {kind: builtin, name: digits_torch_ee}
  policy: never
real: {model: digits_torch_ee}
"""


@pytest.mark.parametrize("calibrate, repeats, phases", [(False, 1, 2), (False, 3, 4), (True, 1, 5), (True, 2, 8)])
def test_a_point_counts_its_phases(calibrate, repeats, phases):
    # per repeat: the real run (and a calibrating half before and after it); then the
    # simulation (and, calibrating, the simulation before that picks the batch sizes)
    assert _phases(SimpleNamespace(calibrate=calibrate, repeats=repeats)) == phases


def test_progress_names_each_phase_and_counts_it_when_done():
    out = io.StringIO()
    with tqdm(total=2, file=out, mininterval=0) as bar:
        phase = Progress(bar, "point 1/3")
        phase.show("warming up")
        assert bar.desc.startswith("point 1/3: warming up") and bar.n == 0
        with phase("real run"):
            assert bar.desc.startswith("point 1/3: real run") and bar.n == 0
        assert bar.n == 1
        with pytest.raises(RuntimeError), phase("simulating"):
            raise RuntimeError("a failed phase is not counted done")
        assert bar.n == 1


def test_the_command_shows_its_phases_unless_quiet(write, servesim, tmp_path):
    path = write("fid.yaml", CONFIG)
    shown = servesim("fidelity", path, "--out", tmp_path / "shown")
    assert shown.rc == 0, shown.err
    assert "point 1/1: real run" in shown.err and "requests over 0 s of arrivals" in shown.err
    assert "point 1/1: simulating and comparing" in shown.err and "2/2" in shown.err
    quiet = servesim("fidelity", path, "--out", tmp_path / "quiet", "--quiet")
    assert quiet.rc == 0 and "point 1/1" not in quiet.err and "phase" not in quiet.err, quiet.err
