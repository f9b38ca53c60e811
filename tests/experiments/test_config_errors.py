"""Bad experiment files: every problem is one stderr line naming the file, the key path
and the bad value, with exit status 2 and no traceback, for `check` and for `run`; the
library raises ConfigError with the same text. YAML can never execute code."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from servesim.experiments import config, runner
from servesim.experiments.config import ConfigError
from test_bad_input_fuzz import PYDANTIC_SPEAK
from servesim.workloads import PROFILES_DIR

MODEL = 'model: {profile: "builtin:cpu_mlp", name: mlp3}\n'
TRACE = "trace: {kind: poisson, rate: 2000, count: 300}\n"
HEAD = TRACE + MODEL

# name -> (YAML text, fragments the single error line must contain, the sweep point the
# problem was found in or None). Every fragment names the key path or the bad value.
CASES = {
    "unknown top-level key": (HEAD + "slo: 5\n", ["slo: unknown key", "(got 5)"], None),
    "built-in profile named by a path out of its folder": (
        TRACE + 'model: {profile: "builtin:../profiles/cpu_mlp", name: mlp3}\n',
        ["model.profile: no built-in profile 'builtin:../profiles/cpu_mlp'; known: builtin:"], None),
    "profile path too long to look up": (TRACE + f'model: {{profile: "{"p" * 5000}.csv", name: mlp3}}\n',
                                         ["model.profile: cannot use the path", "File name too long"], None),
    "unknown nested key": ("trace: {kind: poisson, rate: 2000, count: 300, rtae: 3}\n" + MODEL,
                           ["trace.rtae: unknown key", "(got 3)"], None),
    "unknown key under a policy": (HEAD + "serving: {batching: {policy: dynamic, max_batch: 4, max_wiat_ms: 2}}\n",
                                   ["serving.batching.max_wiat_ms: unknown key",
                                    "did you mean 'max_wait_ms'?", "(got 2)"], None),
    "empty list of seeds": (HEAD + "seeds: []\n", ["seeds:", "at least 1 item", "(got [])"], None),
    "wrong type": (HEAD + "serving: {replicas: two}\n", ["serving.replicas:", "integer", "(got 'two')"], None),
    "wrong type of a nested rate": ("trace: {kind: poisson, rate: fast, count: 300}\n" + MODEL,
                                    ["trace.rate:", "number", "(got 'fast')"], None),
    "negative rate": ("trace: {kind: poisson, rate: -5, count: 300}\n" + MODEL,
                      ["trace.rate:", "greater than 0", "(got -5)"], None),
    "negative drop limit": (HEAD + "serving: {drop_after_ms: -3}\n",
                            ["serving.drop_after_ms:", "greater than 0", "(got -3)"], None),
    "negative seed": (HEAD + "seeds: [1, -1]\n", ["seeds.1:", "(got -1)"], None),
    "unknown trace kind": ("trace: {kind: poison, rate: 5, count: 300}\n" + MODEL,
                           ["trace:", "'poison'", "'poisson'"], None),
    "unknown trace format": ("trace: {kind: file, path: t.txt, format: csvv}\n" + MODEL,
                             ["trace:", "unknown trace format 'csvv'", "timestamps"], None),
    "unknown batching policy": (HEAD + "serving: {batching: {policy: greedy, max_batch: 4}}\n",
                                ["serving.batching:", "'greedy'", "'dynamic'"], None),
    "unknown router": (HEAD + "serving: {router: fastest}\n", ["serving.router:", "'fastest'", "'jsq'"], None),
    "unknown router near a known name": (HEAD + "serving: {router: {name: jsqq}}\n",
                                         ["serving.router: name 'jsqq' is not one of ", "did you mean 'jsq'?"], None),
    "router without its name": (HEAD + "serving: {router: {d: 2}}\n",
                                ["serving.router: needs a 'name' key saying which one", "(got {'d': 2})"], None),
    "a threshold per exit, too few": (
        TRACE + "model: {profile: 'builtin:cpu_digits_ee', name: digits_ee}\n"
        "exits: {ramps: {block1: ramp1, block2: ramp2, block3: ramp3}, behaviour: {kind: builtin, name: digits_ee}, "
        "policy: {name: confidence, threshold: [0.9, 0.8]}}\n",
        ["exits.policy: threshold: 2 thresholds for a model with 4 exits", "(got [0.9, 0.8])"], None),
    "unknown noise kind": (TRACE + "model: {profile: 'builtin:cpu_mlp', name: mlp3, noise: {kind: pink}}\n",
                           ["model.noise:", "'pink'"], None),
    "bad out_of_range": (TRACE + "model: {profile: 'builtin:cpu_mlp', name: mlp3, out_of_range: wrap}\n",
                         ["model.out_of_range:", "'extrapolate'", "(got 'wrap')"], None),
    "missing required section": (TRACE, ["model: required key is missing"], None),
    "missing required key": (TRACE + "model: {profile: 'builtin:cpu_mlp'}\n",
                             ["model.name: required key is missing"], None),
    "missing parameter of a kind": ("trace: {kind: poisson, count: 300}\n" + MODEL,
                                    ["trace.rate: required key is missing"], None),
    "missing parameter of a noise kind": (TRACE + "model: {profile: 'builtin:cpu_mlp', name: mlp3, noise: {kind: lognormal}}\n",
                                          ["model.noise.cv: required key is missing"], None),
    "both duration and count": ("trace: {kind: poisson, rate: 5, count: 300, duration: 3}\n" + MODEL,
                                ["trace:", "exactly one of 'duration'", "'duration': 3"], None),
    "sweep key with a typo": (HEAD + "sweep: {serving.replicsa: [1, 2]}\n",
                              ["serving.replicsa: unknown key", "(got 1)"], "serving.replicsa=1"),
    "sweep key under an unknown section": (HEAD + "sweep: {servng.replicas: [1, 2]}\n",
                                           ["servng: unknown key"], "servng.replicas=1"),
    "sweep key through a number": (HEAD + "sweep: {trace.rate.per_s: [1, 2]}\n",
                                   ["sweep.trace.rate.per_s:", "trace.rate is not a mapping"], None),
    "sweep value not a list": (HEAD + "sweep: {serving.replicas: 3}\n",
                               ["sweep.serving.replicas:", "list", "(got 3)"], None),
    "empty sweep list": (HEAD + "sweep: {serving.replicas: []}\n",
                         ["sweep.serving.replicas:", "needs at least one value"], None),
    "bad swept value": (HEAD + "sweep: {serving.replicas: [1, -2]}\n",
                        ["serving.replicas:", "greater than 0", "(got -2)"], "serving.replicas=-2"),
    "sweeping the seed": (HEAD + "sweep: {seed: [1, 2]}\n", ["sweep.seed:", "seeds:"], None),
    "duplicate seeds": (HEAD + "seeds: [1, 2, 1]\n", ["seeds:", "seed 1 is listed twice", "[1, 2, 1]"], None),
    "deadline policy without an SLO": (HEAD + "serving: {batching: {policy: deadline, max_batch: 8}}\n",
                                       ["serving.batching.slo_ms:", "deadline", "SLO"], None),
    "deadline policy without an SLO in one sweep point": (
        HEAD + "sweep:\n  serving.batching: [{policy: dynamic, max_batch: 4}, {policy: deadline, max_batch: 8}]\n",
        ["serving.batching.slo_ms:", "deadline"], "serving.batching={'policy': 'deadline', 'max_batch': 8}"),
    "top level not a mapping": ("- trace\n- model\n", ["the top level must be a mapping"], None),
    "empty file": ("", ["the top level must be a mapping"], None),
    "unknown built-in profile": (TRACE + "model: {profile: 'builtin:gpu', name: mlp3}\n",
                                 ["model.profile:", "'builtin:gpu'", "builtin:cpu_mlp"], None),
    "unknown model in the profile": (TRACE + "model: {profile: 'builtin:cpu_mlp', name: resnet}\n",
                                     ["model.name:", "'resnet'", "cpu_mlp.csv", "it has: mlp3"], None),
    "unknown hardware in the profile": (TRACE + "model: {profile: 'builtin:cpu_mlp', name: mlp3, hardware: h100}\n",
                                        ["hardware 'h100'", "profiled on ('cpu',)"], None),
    "missing profile file": (TRACE + "model: {profile: profiles/nothere.csv, name: mlp3}\n",
                             ["model.profile:", "no such profile file", "nothere.csv"], None),
    "missing trace file": ("trace: {kind: file, path: nope.txt, format: timestamps}\n" + MODEL,
                           ["trace.path:", "no such file", "nope.txt"], None),
}


def _assert_one_clean_problem(result, path, fragments, point):
    assert result.rc == 2, (result.out, result.err)
    assert "Traceback" not in result.err
    lines = result.err_lines
    prefix = f"servesim: error: {path}"
    assert all(line.startswith(prefix) for line in lines), lines
    problems = [line for line in lines if "(in the sweep point" not in line]
    assert len(problems) == 1, lines
    for fragment in fragments:
        assert fragment in problems[0], (fragment, problems[0])
    assert not re.search(PYDANTIC_SPEAK, problems[0]), problems[0]  # plain words, not pydantic's
    context = [line for line in lines if "(in the sweep point" in line]
    if point is None:
        assert context == []
    else:
        assert context == [f"{prefix}: (in the sweep point {point})"]


@pytest.mark.parametrize("name", list(CASES))
def test_check_reports_one_line_naming_file_key_and_value(name, write, servesim):
    text, fragments, point = CASES[name]
    path = write("bad.yaml", text)
    _assert_one_clean_problem(servesim("check", path), path, fragments, point)


@pytest.mark.parametrize("name", list(CASES))
def test_run_refuses_the_same_files_before_writing_anything(name, write, servesim, tmp_path):
    text, fragments, point = CASES[name]
    path = write("bad.yaml", text)
    out = tmp_path / "out"
    result = servesim("run", path, "--out", out, "--quiet")
    _assert_one_clean_problem(result, path, fragments, point)
    assert not out.exists()
    assert result.out == ""


@pytest.mark.parametrize("name", ["unknown nested key", "negative rate", "duplicate seeds", "unknown model in the profile",
                                  "bad swept value"])
def test_library_raises_config_error_with_the_cli_text(name, write, servesim):
    text, fragments, _ = CASES[name]
    path = write("bad.yaml", text)
    with pytest.raises(ConfigError) as caught:
        runner.check(path)
    cli_lines = [line.removeprefix("servesim: error: ") for line in servesim("check", path).err_lines]
    assert str(caught.value).splitlines() == cli_lines
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_every_problem_of_a_file_gets_its_own_line(write, servesim):
    path = write("bad.yaml", """\
        slo: 5
        trace: {kind: poisson, rate: -1, count: 300}
        model: {profile: "builtin:cpu_mlp", name: mlp3}
        serving: {replicas: two, router: fastest}
        """)
    result = servesim("check", path)
    assert result.rc == 2
    assert "Traceback" not in result.err
    lines = result.err_lines
    assert len(lines) == 4, lines
    keys = sorted(re.match(rf"servesim: error: {re.escape(str(path))}: ([\w.]+):", line).group(1) for line in lines)
    assert keys == ["serving.replicas", "serving.router", "slo", "trace.rate"]


@pytest.mark.parametrize("text, where", [
    # an unclosed flow mapping: the parser notices at the ':' of the next line
    (HEAD + "serving: {replicas: 2\n  router: jsq\n", "line 4 column 9"),
    # a tab cannot indent YAML
    ("name: x\ntrace:\n\tkind: poisson\n", "line 3 column 1"),
    # a key indented less than its siblings
    ("name: x\ntrace:\n  kind: poisson\n rate: 3\n", "line 4 column 2"),
])
def test_yaml_syntax_error_names_line_and_column(text, where, write, servesim):
    path = write("bad.yaml", text)
    result = servesim("check", path)
    assert result.rc == 2
    assert "Traceback" not in result.err
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith(f"servesim: error: {path}: {where}: invalid YAML: ")


def test_missing_experiment_file(servesim, tmp_path):
    path = tmp_path / "nothere.yaml"
    for argv in (["check", path], ["run", path, "--out", tmp_path / "out", "--quiet"]):
        result = servesim(*argv)
        assert result.rc == 2
        assert result.err_lines == [f"servesim: error: {path}: no such file"]
    with pytest.raises(ConfigError, match="no such file"):
        config.load(path)


def test_unreadable_experiment_path_is_a_config_error(servesim, tmp_path):
    result = servesim("check", tmp_path)  # a folder, not a file
    assert result.rc == 2
    assert "Traceback" not in result.err
    assert result.err_lines == [f"servesim: error: {tmp_path}: cannot read (Is a directory)"]


def test_malformed_profile_names_its_file_line_and_value(write, servesim, tmp_path):
    lines = (PROFILES_DIR / "cpu_mlp.csv").read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("cpu,mlp3,block2,2,"))
    parts = lines[row].split(",")
    parts[4] = "fast"
    lines[row] = ",".join(parts)
    (tmp_path / "prof.csv").write_text("\n".join(lines) + "\n")
    path = write("bad.yaml", TRACE + "model: {profile: prof.csv, name: mlp3}\n")
    result = servesim("check", path)
    assert result.rc == 2
    assert "Traceback" not in result.err
    assert len(result.err_lines) == 1
    line = result.err_lines[0]
    assert line.startswith(f"servesim: error: {path}: ")
    assert f"{tmp_path / 'prof.csv'} line {row + 1}: latency_p50_ms 'fast'" in line


def test_profile_path_is_relative_to_the_yaml_file(write, servesim, tmp_path):
    (tmp_path / "profiles").mkdir()
    shutil.copy(PROFILES_DIR / "cpu_mlp.csv", tmp_path / "profiles" / "mine.csv")
    path = write("ok.yaml", TRACE + "model: {profile: profiles/mine.csv, name: mlp3}\n")
    result = servesim("check", path)
    assert result.rc == 0, result.err
    assert "OK, 1 run(s)" in result.out


def _trace_yaml(write, lines: list[str]):
    write("arrivals.txt", "\n".join(lines) + "\n")
    return write("bad.yaml", "trace: {kind: file, path: arrivals.txt, format: timestamps}\n" + MODEL)


def test_check_reports_the_bad_line_of_a_trace_file(write, servesim, tmp_path):
    path = _trace_yaml(write, ["0.1", "0.2", "0.3x", "0.4"])
    result = servesim("check", path)
    assert result.rc == 2
    assert "Traceback" not in result.err
    assert result.err_lines == [
        f"servesim: error: {path}: trace.path: {tmp_path / 'arrivals.txt'} line 3: '0.3x' is not a finite number >= 0"]


def test_run_refuses_a_bad_trace_line_before_writing_anything(write, servesim, tmp_path):
    path = _trace_yaml(write, ["0.1", "0.2", "0.15", "0.4"])  # not sorted at line 3
    out = tmp_path / "out"
    result = servesim("run", path, "--out", out, "--quiet")
    assert result.rc == 2
    assert result.err_lines == [
        f"servesim: error: {path}: trace.path: {tmp_path / 'arrivals.txt'} line 3: '0.15' is earlier than the "
        f"arrival before it ('0.2'); arrivals must be in time order"]
    assert not out.exists()


def test_a_good_trace_file_runs(write, servesim, tmp_path):
    times = [f"{0.001 * i:.3f}" for i in range(200)]
    path = _trace_yaml(write, times)
    assert servesim("check", path).rc == 0
    out = tmp_path / "out"
    result = servesim("run", path, "--out", out, "--quiet")
    assert result.rc == 0, result.err
    summary = json.loads((out / "seed-0" / "summary.json").read_text())
    assert summary["requests"] == 200
    assert summary["completed"] == 200


# --- safety: YAML never constructs Python objects ------------------------------------------

@pytest.mark.parametrize("template", [
    '!!python/object/apply:os.system ["touch {marker}"]\n',
    'name: !!python/object/apply:os.system ["touch {marker}"]\n' + HEAD,
    HEAD + 'description: !!python/object/apply:subprocess.check_call [["touch", "{marker}"]]\n',
    HEAD + 'seed: !!python/object/new:os.system ["touch {marker}"]\n',
    HEAD + "name: !!python/name:os.system\n",
])
@pytest.mark.parametrize("command", ["check", "run"])
def test_python_tags_are_refused_and_never_executed(template, command, write, servesim, tmp_path):
    marker = tmp_path / "PWNED"
    path = write("evil.yaml", template.replace("{marker}", str(marker)))
    argv = [command, path] + (["--out", tmp_path / "out", "--quiet"] if command == "run" else [])
    result = servesim(*argv)
    assert not marker.exists()
    assert result.rc == 2
    assert "Traceback" not in result.err
    assert len(result.err_lines) == 1
    line = result.err_lines[0]
    assert line.startswith(f"servesim: error: {path}: line ")
    assert "invalid YAML" in line and "tag:yaml.org,2002:python/" in line
    with pytest.raises(ConfigError):
        config.load(path)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
