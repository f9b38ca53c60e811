"""``servesim profile contention PROFILE --derive merged-batch``: the sidecar it writes, a
run that uses it saying so, and its errors (the rule itself: tests/workloads/test_derived_contention.py)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from servesim.workloads import Profile, load_profile
from servesim.workloads.contention import contention_path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "h100-stage-profiles"
METADATA = {"device": "cpu:test", "dtype": "float32", "framework": "none", "date": "2024-01-01",
            "execution_mode": "eager"}
# batch 1, 4, 16 take 1, 2, 5 ms; flat from 16 on would be a guess, so the table says where it extrapolated
PROFILE = Profile.from_rows([("hw", "m", "s", b, ms, ms, ms, 9) for b, ms in ((1, 1.0), (4, 2.0), (16, 5.0))],
                            METADATA)
DERIVE = ("profile", "contention")


def test_it_writes_a_labelled_sidecar_and_leaves_the_profile_as_it_was(servesim, tmp_path):
    PROFILE.save(tmp_path / "p.csv")
    before = (tmp_path / "p.csv").read_bytes()
    outcome = servesim(*DERIVE, tmp_path / "p.csv", "--derive", "merged-batch", "--instances", "3")
    assert outcome.rc == 0, outcome.err
    # S(2)/S(1), S(8)/S(4), S(32)/S(16) = 1.333, 1.5, 1.8; only b = 16 reaches past batch 16 (3 x 4 is 12)
    assert "slowdown at 2 instances b=1 1.333, b=4 1.500, b=16 1.800" in outcome.out
    assert "extrapolated for b = 16 " in outcome.out and "not a measurement" in outcome.out
    assert (tmp_path / "p.csv").read_bytes() == before
    text = contention_path(tmp_path / "p.csv").read_text().splitlines()
    assert text[0] == "hardware,model,instances,batch_size,slowdown,repeats,source"
    assert len(text) == 7 and all(line.endswith(",derived: merged-batch from p.csv") for line in text[1:])


def test_a_run_on_a_derived_table_says_so_in_its_summary_and_on_the_console(servesim, write, tmp_path):
    PROFILE.save(tmp_path / "p.csv")
    assert servesim(*DERIVE, tmp_path / "p.csv", "--derive", "merged-batch", "--instances", "2").rc == 0
    config = write("e.yaml", "trace: {kind: poisson, rate: 300, count: 200}\nmodel: {profile: p.csv, name: m}\n"
                             "serving: {batching: {policy: dynamic, max_batch: 8}}\n"
                             "sweep:\n  serving.instances: [1, 2]\n")
    outcome = servesim("run", config, "--out", tmp_path / "out", "--quiet")
    assert outcome.rc == 0, outcome.err
    summaries = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*/summary.json")}
    assert sorted(s.get("instances", {}).get("contention", "none") for s in summaries.values()) == [
        "derived: merged-batch from p.csv", "none"]  # one instance has nothing to contend with
    assert ("warning: serving.instances: 1 run(s) stretched concurrent batches by a contention table "
            "'derived: merged-batch from p.csv': an assumption") in outcome.err


@pytest.mark.parametrize("argv, message", [
    (["missing.csv", "--derive", "merged-batch", "--instances", "2"], r"missing\.csv: no such profile file"),
    (["p.csv", "--derive", "merged-batch", "--instances", "2", "--model", "x"],
     r"p\.csv: --model 'x' is not in the profile; it has: m$"),
    (["p.csv", "--derive", "merged-batch", "--instances", "2", "--hardware", "gpu"],
     r"p\.csv: --hardware 'gpu' did not run any model there; it has: hw$"),
    (["p.csv", "--derive", "merged-batch", "--instances", "1"],
     r"argument --instances: '1': expected a whole number of instances from 2 to 64$"),
    (["p.csv", "--derive", "merged-batch", "--instances", "two"], r"argument --instances: 'two': expected"),
    (["p.csv", "--derive", "guess", "--instances", "2"], r"argument --derive: invalid choice: 'guess'"),
])
def test_bad_input_is_one_error_line_naming_the_file_option_and_value(servesim, tmp_path, monkeypatch, argv,
                                                                       message):
    monkeypatch.chdir(tmp_path)
    PROFILE.save(tmp_path / "p.csv")
    outcome = servesim(*DERIVE, *argv)
    assert outcome.rc == 2
    [line] = [line for line in outcome.err_lines if "error:" in line]
    assert re.search(message, line), outcome.err
    assert not contention_path(tmp_path / "p.csv").exists()


def test_a_measured_table_is_never_replaced_by_a_derived_one(servesim, tmp_path):
    measured = Profile.from_rows(PROFILE.rows, METADATA, contention=[
        {"hardware": "hw", "model": "m", "instances": 2, "batch_size": b, "slowdown": 1.3, "repeats": 5}
        for b in (1, 4, 16)])
    measured.save(tmp_path / "p.csv")
    before = contention_path(tmp_path / "p.csv").read_bytes()
    outcome = servesim(*DERIVE, tmp_path / "p.csv", "--derive", "merged-batch", "--instances", "2", "--model", "m")
    assert outcome.rc == 2 and "has a measured contention table; a derived one never replaces" in outcome.err
    outcome = servesim(*DERIVE, tmp_path / "p.csv", "--derive", "merged-batch", "--instances", "2")
    assert outcome.rc == 2 and "every model chosen has a measured contention table; nothing to derive" in outcome.err
    assert contention_path(tmp_path / "p.csv").read_bytes() == before
    assert load_profile(tmp_path / "p.csv").contention == measured.contention


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/h100-stage-profiles is absent")
def test_the_h100_sweep_header_commands_import_derive_and_check(servesim, tmp_path):
    """experiments/concurrency_sweep_h100.yaml's header, run as written from a copy of the
    repository's layout: the table is the ratio of the profile's measured medians."""
    path = REPO / "experiments" / "concurrency_sweep_h100.yaml"
    text = path.read_text()
    commands = [shlex.split(c.replace("\\\n#", " "))[1:]
                for c in re.findall(r"#   (servesim profile .*?)\n(?=#   servesim)", text, re.S)]
    assert [argv[:2] for argv in commands] == [["profile", "import"], ["profile", "contention"]]
    (tmp_path / "repo" / "experiments").mkdir(parents=True)
    shutil.copy(path, tmp_path / "repo" / "experiments")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / SHARED.name).symlink_to(SHARED)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path / "repo")
        for argv in commands:
            assert servesim(*argv).rc == 0
        outcome = servesim("check", f"experiments/{path.name}")
        table = load_profile("runs/h100/cudagraph_fp16.csv").contention["h100", "resnet50_full"]
    assert outcome.rc == 0 and "OK, 18 run(s)" in outcome.out, outcome.err
    # full-model medians at batch 1, 2, 32, 64: 1.0367, 1.1185, 3.8541, 7.2719 ms (profiles_cudagraph.csv);
    # 2 x 64 is beyond the profile: 7.2719 + 64 x (7.2719 - 3.8541) / 32
    assert table.slowdown[0][0] == pytest.approx(1.1185 / 1.0367, rel=1e-9)
    assert table.slowdown[0][-1] == pytest.approx((7.2719 + 2 * (7.2719 - 3.8541)) / 7.2719, rel=1e-9)
    assert table.source == "derived: merged-batch from cudagraph_fp16.csv"
