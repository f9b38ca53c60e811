"""``servesim profiles``: every shipped profile, as a config names it, with what its own
metadata and rows say; profile files or folders given instead; bad files in one line."""

from __future__ import annotations

from servesim.workloads import PROFILES_DIR, load_profile
from servesim.workloads.profile import profiles_in
from servesim.experiments.profile_list import ProfileEntry, entries, table


def test_every_shipped_profile_is_listed_with_its_metadata_and_models(servesim):
    result = servesim("profiles")
    assert result.rc == 0 and result.err == ""
    shipped = profiles_in(PROFILES_DIR)
    assert len(shipped) >= 14
    lines = result.out.splitlines()
    for path in shipped:
        profile = load_profile(path)
        line = next(line for line in lines if line.startswith(f"builtin:{path.stem} "))
        for key in ("device", "dtype", "framework", "date"):
            assert profile.metadata[key] in line, (path.stem, key)
        first = profile.models()[0]
        assert f"{first} ({len(profile.stages(first))})" in result.out
    assert "builtin:cpu_digits_ee" in result.out and "digits_ee (7)" in result.out
    assert f"{len(shipped)} shipped profiles" in result.out


def test_files_and_folders_given_are_listed_by_path_with_stage_names(servesim, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tiny.csv").write_text(
        "# device: NVIDIA H100 80GB HBM3\n# dtype: fp16\n# framework: torch 2.11\n# date: 2026-11-22\n"
        "# execution_mode: cudagraph\n"
        "hardware,model,stage,batch_size,latency_p50_ms,latency_p90_ms,latency_p99_ms,repeats\n"
        "h100,net,stem,1,0.1,0.2,0.3,10\nh100,net,head,1,0.1,0.2,0.3,10\n")
    result = servesim("profiles", "--stages", mine)
    assert result.rc == 0, result.err
    row, = [line for line in result.out.splitlines() if "tiny.csv" in line]
    assert "NVIDIA H100 80GB HBM3" in row and "fp16" in row and "2026-11-22" in row and "net: stem head" in row
    assert "shipped profiles" not in result.out


def test_a_file_that_is_no_profile_is_one_error_line(servesim, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("hardware,model\n")
    result = servesim("profiles", bad)
    assert result.rc == 2 and len(result.err_lines) == 1 and "bad.csv" in result.err and "Traceback" not in result.err


def test_the_models_column_wraps_between_models_to_fit_the_width():
    many = ProfileEntry("builtin:x", "cpu", "float32", "numpy", "2026-01-01", "cpu",
                        tuple(f"model{k} (1)" for k in range(40)))
    lines = table([many], width=120).splitlines()
    assert len(lines) > 3 and all(len(line) <= 120 for line in lines)
    assert all(line.rstrip().endswith(("(1),", "(1)")) for line in lines[1:])  # no model cut in two
    assert ", ".join(many.models) == " ".join(" ".join(line[lines[0].index("models"):].strip()
                                                       for line in lines[1:]).split())
    assert len(entries([])) == len(profiles_in(PROFILES_DIR))
