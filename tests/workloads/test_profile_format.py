import os
import re

import pytest

from servesim.workloads import COLUMNS, Profile, ProfileError, ProfileRow, load_profile

HEADER = ",".join(COLUMNS)
# Lines 1-5 metadata, line 6 header, lines 7-9 rows.
GOOD = """\
# device: cpu:test
# dtype: float32
# framework: numpy 2.0
# date: 2024-01-01
# execution_mode: eager
{header}
cpu,m,a,1,1.0,1.5,2.0,10
cpu,m,a,2,2.0,2.5,3.0,10
cpu,m,b,1,0.5,0.5,0.5,10
""".format(header=HEADER)


def write(tmp_path, text, name="cpu.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def with_line(line_no, new):
    lines = GOOD.splitlines()
    lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


def test_load_good_file(tmp_path):
    profile = load_profile(write(tmp_path, GOOD))
    assert profile.models() == ("m",)
    assert profile.hardware() == ("cpu",)
    assert profile.stages("m") == ("a", "b")
    assert profile.rows[0] == ProfileRow("cpu", "m", "a", 1, 1.0, 1.5, 2.0, 10)
    assert profile.metadata["framework"] == "numpy 2.0"
    assert profile.source == str(tmp_path / "cpu.csv")


def test_round_trip_keeps_rows_and_metadata_in_order(tmp_path, metadata):
    metadata["hardware"] = "cpu"
    metadata["notes"] = "free key: with a colon"
    rows = [("gpu", "m", "enc", 4, 0.1 + 0.2, 1 / 3, 2.0, 7), ("gpu", "m", "dec", 1, 1e-3, 2e-3, 3e-3, 1)]
    profile = Profile.from_rows(rows, metadata, "test")
    path = tmp_path / "p.csv"
    profile.save(path)
    loaded = load_profile(path)
    assert loaded.rows == profile.rows  # floats round-trip exactly
    assert list(loaded.metadata.items()) == list(metadata.items())
    assert loaded.stages("m") == ("enc", "dec")


def test_save_is_atomic_and_overwrites(tmp_path, two_stage):
    path = tmp_path / "p.csv"
    path.write_text("old content")
    two_stage.save(path)
    assert load_profile(path).rows == two_stage.rows
    assert os.listdir(tmp_path) == ["p.csv"]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_failure_leaves_no_temp_file(tmp_path, two_stage):
    target = tmp_path / "is_a_dir"
    target.mkdir()
    with pytest.raises(OSError):
        two_stage.save(target)
    assert os.listdir(tmp_path) == ["is_a_dir"]


def test_from_rows_accepts_rows_mappings_and_sequences(metadata):
    row = ProfileRow("cpu", "m", "s", 1, 1.0, 2.0, 3.0, 5)
    mapping = dict(zip(COLUMNS, ("cpu", "m", "s", 2, 1.5, 2.5, 3.5, 5)))
    profile = Profile.from_rows([row, mapping, ("cpu", "m", "s", 4, "2", "3", "4", "5")], metadata)
    assert [r.batch_size for r in profile.rows_for("m", "s")] == [1, 2, 4]
    assert profile.rows[2].latency_p50_ms == 2.0


def test_rows_for_sorts_and_needs_hardware_when_ambiguous(metadata):
    rows = [("cpu", "m", "s", 4, 2, 2, 2, 1), ("cpu", "m", "s", 1, 1, 1, 1, 1), ("gpu", "m", "s", 1, 1, 1, 1, 1)]
    profile = Profile.from_rows(rows, metadata, "mixed")
    with pytest.raises(ProfileError, match=r"mixed: model 'm' stage 's' is profiled on 'cpu', 'gpu'; pass hardware="):
        profile.rows_for("m", "s")
    assert [r.batch_size for r in profile.rows_for("m", "s", "cpu")] == [1, 4]
    assert profile.hardware() == ("cpu", "gpu")
    with pytest.raises(ProfileError, match="no rows for hardware 'tpu'"):
        profile.rows_for("m", "s", "tpu")
    with pytest.raises(ProfileError, match="no rows for model 'x'; it profiles 'm'"):
        profile.stages("x")
    with pytest.raises(ProfileError, match="no rows for model 'm' stage 'z'; its stages are 's'"):
        profile.rows_for("m", "z")


@pytest.mark.parametrize(
    "text, message",
    [
        (with_line(8, "cpu,m,a,2,2.0,-3,3.0,10"), "cpu.csv line 8: latency_p90_ms '-3' must be a positive number"),
        (with_line(8, "cpu,m,a,2,fast,2.5,3.0,10"), "cpu.csv line 8: latency_p50_ms 'fast' must be a positive number"),
        (with_line(8, "cpu,m,a,2,2.0,2.5,nan,10"), "cpu.csv line 8: latency_p99_ms 'nan' must be a positive number"),
        (with_line(8, "cpu,m,a,2.5,2.0,2.5,3.0,10"), "cpu.csv line 8: batch_size '2.5' must be a positive integer"),
        (with_line(8, "cpu,m,a,0,2.0,2.5,3.0,10"), "cpu.csv line 8: batch_size '0' must be a positive integer"),
        (with_line(8, "cpu,m,a,two,2.0,2.5,3.0,10"), "cpu.csv line 8: batch_size 'two' must be a positive integer"),
        (with_line(8, "cpu,m,a,2,2.0,2.5,3.0,0"), "cpu.csv line 8: repeats '0' must be an integer >= 1"),
        (with_line(8, "cpu,m,a,2,2.0,1.0,3.0,10"),
         "cpu.csv line 8: latency_p90_ms '1.0' is below latency_p50_ms '2.0'; "
         "percentiles must satisfy p50 <= p90 <= p99"),
        (with_line(8, "cpu,m,a,2,2.0,2.5,2.4,10"), "cpu.csv line 8: latency_p99_ms '2.4' is below latency_p90_ms '2.5'"),
        (with_line(8, "cpu,m,a,1,2.0,2.5,3.0,10"),
         "cpu.csv line 8: duplicate (hardware, model, stage, batch_size) ('cpu', 'm', 'a', 1), "
         "already at line 7; keep one row per batch size"),
        (with_line(8, "cpu,,a,2,2.0,2.5,3.0,10"), "cpu.csv line 8: model is empty"),
        (with_line(8, "cpu,m,a,2,2.0,2.5,3.0"), "cpu.csv line 8: 7 values for 8 columns"),
        (with_line(6, HEADER.replace(",repeats", "")), "cpu.csv line 6: header has missing column(s) 'repeats'"),
        (with_line(6, HEADER + ",device"), "cpu.csv line 6: header has unexpected column(s) 'device'"),
        (with_line(6, HEADER.replace("repeats", "stage")), "cpu.csv line 6: header column(s) 'stage' appear more than once"),
        (with_line(4, "# not metadata"), "cpu.csv line 4: metadata line '# not metadata' must look like '# key: value'"),
        (with_line(4, "# dtype: float16"), "cpu.csv line 4: metadata key 'dtype' appears twice"),
        (with_line(4, ""), "cpu.csv: metadata is missing 'date'; add a line like '# date: ...' before the header"),
        (GOOD + "# late: comment\n", "cpu.csv line 10: comment after the header"),
        ("\n".join(GOOD.splitlines()[:6]) + "\n", "cpu.csv: no data rows"),
        ("\n".join(GOOD.splitlines()[:5]) + "\n", "cpu.csv: no header line"),
    ],
)
def test_problems_name_file_line_column_and_value(tmp_path, text, message):
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profile(write(tmp_path, text))


def test_error_message_names_the_path(tmp_path):
    path = tmp_path / "sub" / "gpu.csv"
    path.parent.mkdir()
    path.write_text(with_line(9, "cpu,m,b,1,0.5,0.5,0.5,-1"))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path} line 9: repeats '-1'")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ProfileError, match=re.escape(f"{tmp_path / 'nope.csv'}: no such profile file")):
        load_profile(tmp_path / "nope.csv")


def test_in_code_rows_are_checked_with_row_numbers(metadata):
    good = ("cpu", "m", "s", 1, 1.0, 1.0, 1.0, 1)
    with pytest.raises(ProfileError, match=re.escape("tiny row 2: latency_p50_ms '-1.0' must be a positive number")):
        Profile.from_rows([good, ("cpu", "m", "s", 2, -1.0, 1.0, 1.0, 1)], metadata, "tiny")
    with pytest.raises(ProfileError, match=re.escape("tiny row 1: row has missing column(s) 'repeats'")):
        Profile.from_rows([dict(zip(COLUMNS[:-1], good))], metadata, "tiny")
    with pytest.raises(ProfileError, match=re.escape("tiny: metadata is missing 'device'")):
        Profile.from_rows([good], {k: v for k, v in metadata.items() if k != "device"}, "tiny")
    with pytest.raises(ProfileError, match=re.escape("tiny: no data rows")):
        Profile.from_rows([], metadata, "tiny")
    with pytest.raises(ProfileError, match="metadata 'date' value '2024\\\\n01' must be a one-line string"):
        Profile.from_rows([good], {**metadata, "date": "2024\n01"}, "tiny")
