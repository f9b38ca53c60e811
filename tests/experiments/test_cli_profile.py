"""``servesim profile``: the torch profiler behind servesim's command line.

A tiny run (a 32-pixel ResNet-18, one batch size, two timed calls) checks the options
reach the profiler and the file is written; the errors are one line each, status 2,
and servesim still answers, with one line, where torch is not installed.
"""

from __future__ import annotations

import sys

import pytest

from servesim.workloads import load_profile


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_profile_writes_the_stages_and_the_whole_model(torch, servesim, tmp_path):
    out = tmp_path / "resnet.csv"
    result = servesim("profile", "--model", "resnet18_ee", "--device", "cpu", "--dtype", "fp32",
                      "--batch-sizes", "1", "--repeats", "2", "--warmup", "1", "--threads", "1",
                      "--max-seconds-per-point", "5", "--input-size", "32", "--out", out)
    assert result.rc == 0, result.err
    assert result.out.startswith(f"wrote {out} (16 rows) in ")
    profile = load_profile(out)
    assert profile.models() == ("resnet18_ee", "resnet18_ee_e2e")
    assert {(r.batch_size, r.repeats) for r in profile.rows} == {(1, 2)}
    assert profile.metadata["dtype"] == "float32" and profile.metadata["execution_mode"] == "eager"


def test_profile_help_is_the_profilers(torch, servesim):
    result = servesim("profile", "--help")
    assert result.rc == 0 and result.out.startswith("usage: servesim profile ")
    assert "--max-seconds-per-point" in result.out and "--no-e2e" in result.out


def test_unknown_model_is_one_line_naming_the_known_ones(torch, servesim, tmp_path):
    result = servesim("profile", "--model", "resnet19_ee", "--out", tmp_path / "p.csv")
    assert result.rc == 2 and "Traceback" not in result.err
    [line] = result.err_lines
    assert line.startswith("servesim profile: error: unknown model 'resnet19_ee'; choose from ")
    assert all(name in line for name in ("resnet18_ee", "resnet101_ee", "vgg13_ee", "bert4_ee"))


def test_without_torch_profile_says_how_to_install_it(servesim, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails as if not installed
    monkeypatch.delitem(sys.modules, "servesim.workloads.profiler_torch", raising=False)
    result = servesim("profile", "--model", "resnet18_ee", "--out", tmp_path / "p.csv")
    assert (result.rc, result.out) == (2, "")
    assert result.err_lines == ["servesim: error: profiling needs torch: pip install 'servesim[real]'"]


def test_other_commands_still_refuse_unknown_options(servesim, tiny_yaml):
    result = servesim("check", tiny_yaml, "--model", "x")
    assert result.rc == 2 and result.err_lines[-1] == "servesim: error: unrecognized arguments: --model x"


def test_profile_served_writes_the_model_and_its_host(torch, servesim, tmp_path):
    out = tmp_path / "served.csv"
    result = servesim("profile-served", "--model", "digits_torch_ee", "--batch-sizes", "1,2", "--repeats", "3",
                      "--warmup", "1", "--out", out)
    assert result.rc == 0, result.err
    profile = load_profile(out)
    assert profile.models() == ("digits_torch_ee", "digits_torch_ee_host")
    assert set(profile.stages("digits_torch_ee")) == {"block1", "block2", "block3", "block4",
                                                      "ramp1", "ramp2", "ramp3"}
    assert {"batch", "exit", "leave", "final", "all_left", "turnaround", "total"} == set(
        profile.stages("digits_torch_ee_host"))
    assert profile.metadata["timing"].startswith("served: sim.real.measure_served")


def test_profile_served_serves_any_early_exit_network(torch, servesim, tmp_path):
    """A builder's network (random weights), as the executor serves it: its blocks and
    ramps under their kernel-profile names, every host part, and the raw samples."""
    from servesim.workloads.profile import samples_path
    from servesim.workloads.torch_models import build

    out = tmp_path / "bert.csv"
    result = servesim("profile-served", "--model", "bert4_ee", "--input-size", "8", "--batch-sizes", "1,2",
                      "--repeats", "2", "--warmup", "1", "--out", out)
    assert result.rc == 0, result.err
    profile = load_profile(out)
    network = build("bert4_ee", 8)
    kernel_names = [name for name, _, _ in network.stages()]
    assert list(profile.stages("bert4_ee")) == kernel_names
    assert {"batch", "exit", "leave", "final"} <= set(profile.stages("bert4_ee_host"))  # total: clean idle bursts, timing-dependent
    assert samples_path(out).exists() and len(profile.samples) == len(profile.rows)
    assert profile.hardware() == ("cpu",)


def test_profile_served_keeps_a_trained_model_as_trained(torch, servesim, tmp_path):
    result = servesim("profile-served", "--model", "digits_torch_ee", "--input-size", "16", "--out",
                      tmp_path / "x.csv")
    assert result.rc == 2 and result.err_lines == [
        "servesim profile-served: error: digits_torch_ee is served as trained: on the CPU, in fp32, at its own "
        "input size"]
    result = servesim("profile-served", "--model", "resnet19_ee", "--out", tmp_path / "x.csv")
    [line] = result.err_lines
    assert line.startswith("servesim profile-served: error: unknown model 'resnet19_ee'; choose from ")
