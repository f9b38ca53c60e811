"""`servesim profile import`: a generic per-stage timing CSV into a servesim profile,
with the order and roles of its units explicit (stage, ramp, whole model), checked on
hand-made files and, when ../shared is present, on the H100 stage profiles."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import yaml

from servesim.experiments import cli
from servesim.workloads import CostModel, Deterministic, load_profile
from servesim.workloads.profile import ProfileError
from servesim.workloads.profile_import import import_profile

H100 = Path(__file__).resolve().parents[3] / "shared" / "data" / "h100-stage-profiles"
META = {"device": "gpu:test", "framework": "torch", "date": "2026-12-06", "execution_mode": "eager"}
HEADER = "model,dtype,stage,kind,batch_size,median_ms,p90_ms,p99_ms,repeats\n"


def write(tmp_path, body: str, header: str = HEADER, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body)
    return path


def rows(model, dtype="fp16", sizes=(1, 2)):
    """Stages 2 before 1 in the file (order comes from the names), a ramp, a full row."""
    out = ""
    for stage, kind, base in (("stage2", "stage", 2.0), ("ramp1", "ramp", 0.1), ("stage1", "stage", 1.0),
                              ("stage3", "stage", 3.0), ("whole", "full", 5.5)):
        for b in sizes:
            out += f"{model},{dtype},{stage},{kind},{b},{base * b},{base * b * 1.1},{base * b * 1.2},50\n"
    return out


def test_each_role_becomes_its_own_model(tmp_path):
    profile = import_profile(write(tmp_path, rows("net")), "gpu", META)
    assert profile.models() == ("net", "net_ee", "net_full")
    assert profile.stages("net") == ("stage1", "stage2", "stage3")  # the ramp and the whole model stay out
    assert profile.stages("net_ee") == ("stage1", "ramp1", "stage2", "stage3")
    assert profile.stages("net_full") == ("forward",)
    assert profile.metadata["dtype"] == "fp16" and profile.metadata["execution_mode"] == "eager"
    # A run without exits costs the backbone: the sum of the three stages, not 1 + 0.1 + 2 + 3 + 5.5.
    cost = CostModel(profile, "net", noise=Deterministic())
    assert cost.batch_latency(2) == pytest.approx((1.0 + 2.0 + 3.0) * 2 / 1e3)
    row = profile.rows_for("net_ee", "ramp1")[1]
    assert (row.batch_size, row.latency_p50_ms, row.latency_p99_ms, row.repeats) == (2, 0.2, pytest.approx(0.24), 50)


def test_explicit_order_and_after_columns(tmp_path):
    header = "model,stage,kind,batch_size,p50_ms,p90_ms,p99_ms,order,after\n"
    body = ("m,head,stage,1,1,1,1,2,\n" "m,stem,stage,1,2,2,2,1,\n" "m,early,ramp,1,0.5,0.5,0.5,,stem\n")
    profile = import_profile(write(tmp_path, body, header), "gpu", {**META, "dtype": "fp32"})
    assert profile.stages("m") == ("stem", "head")
    assert profile.stages("m_ee") == ("stem", "early", "head")


def test_dtype_is_chosen_and_metadata_lines_are_kept(tmp_path):
    path = write(tmp_path, rows("net", "fp16") + rows("net", "fp32"), header="# device: from the file\n" + HEADER)
    with pytest.raises(ProfileError, match=r"several dtypes \['fp16', 'fp32'\]; choose one with --dtype"):
        import_profile(path, "gpu", {})
    profile = import_profile(path, "gpu", {k: v for k, v in META.items() if k != "device"}, dtype="fp32")
    assert profile.metadata["device"] == "from the file" and profile.metadata["dtype"] == "fp32"
    assert profile.rows_for("net", "stage1")[0].latency_p50_ms == 1.0


@pytest.mark.parametrize("body, header, message", [
    ("m,stage1,stage,1,1,1,1\n", "model,stage,kind,batch_size,p50_ms,p90_ms\n", "header has no column 'p99_ms'"),
    ("m,stage1,layer,1,1,1,1\n", None, "line 2: column 'kind' is 'layer'; expected one of stage, ramp, full"),
    ("m,stem,stage,1,1,1,1\n", None, "stage 'stem' of model 'm' has no 'order' and its name ends in no number"),
    ("m,stage1,stage,1.5,1,1,1\n", None, "line 2: column 'batch_size' is '1.5'; expected a whole number >= 1"),
    ("m,stage1,stage,1,fast,1,1\n", None, "line 2: column 'p50_ms' is 'fast'; expected a latency in ms"),
    ("m,stage1,stage,1,1,1,1\nm,stage3,stage,1,1,1,1\n", None, "numbered [1, 3]; expected consecutive"),
    ("m,stage1,stage,1,1,1,1\nm,stage2,stage,1,1,1,1\nm,ramp2,ramp,1,1,1,1\n", None,
     "ramp 'ramp2' of model 'm' reads the last stage 'stage2'"),
    ("m,stage1,stage,1,1,1,1\nm,ramp4,ramp,1,1,1,1\n", None, "its number does not name one of its 1 stages"),
    ("m,whole,full,1,1,1,1\n", None, "model 'm' has no rows of kind 'stage'"),
    ("m,stage1,stage,1,2,1,1\n", None, "line 2: latencies must satisfy 0 < p50 <= p90 <= p99 (ms), got 2, 1, 1"),
])
def test_bad_files_are_one_precise_line(tmp_path, body, header, message):
    path = write(tmp_path, body, header or "model,stage,kind,batch_size,p50_ms,p90_ms,p99_ms\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["profile", "import", str(path), "--out", str(tmp_path / "out.csv"), "--hardware", "gpu",
                       "--dtype", "fp16", *[f"--{k.replace('_', '-')}={v}" for k, v in META.items()]])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1 and str(path) in lines[0] and message in lines[0], lines
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.skipif(not H100.is_dir(), reason="../shared/data/h100-stage-profiles is absent")
@pytest.mark.parametrize("model", ["resnet50", "vgg13", "bert-base"])
def test_h100_cuda_graph_stages_add_up_to_the_whole_model(tmp_path, model):
    """SOURCE.md: CUDA-graph stage medians sum to within 3.5% of `full` from batch 4 up.
    Imported, the plain model's latency is that sum, and `<model>_full` is the whole."""
    out = tmp_path / "h100.csv"
    assert cli.main(["profile", "import", str(H100 / "profiles_cudagraph.csv"), "--out", str(out), "--hardware",
                     "h100", "--dtype", "fp16", "--model", model, "--device", "NVIDIA H100 80GB HBM3",
                     "--framework", "torch 2.11.0+cu130", "--date", "2026-11-22",
                     "--execution-mode", "cudagraph"]) == 0
    profile = load_profile(out)
    staged, whole = (CostModel(profile, m, noise=Deterministic()) for m in (model, f"{model}_full"))
    ratios = np.array([staged.batch_latency(b) / whole.batch_latency(b) for b in (4, 8, 16, 32, 64)])
    assert ((ratios > 0.965) & (ratios < 1.035)).all(), ratios


@pytest.mark.skipif(not H100.is_dir(), reason="../shared/data/h100-stage-profiles is absent")
def test_an_experiment_runs_on_an_imported_h100_profile(tmp_path, capsys):
    out = tmp_path / "h100.csv"
    assert cli.main(["profile", "import", str(H100 / "profiles_cudagraph.csv"), "--out", str(out), "--hardware",
                     "h100", "--dtype", "fp16", "--model", "resnet50", "--device", "NVIDIA H100 80GB HBM3",
                     "--framework", "torch 2.11.0+cu130", "--date", "2026-11-22",
                     "--execution-mode", "cudagraph"]) == 0
    config = {"name": "h100", "trace": {"kind": "poisson", "rate": 2000.0, "count": 2000},
              "model": {"profile": "h100.csv", "name": "resnet50", "noise": {"kind": "empirical"}},
              "serving": {"batching": {"policy": "dynamic", "max_batch": 16, "max_wait_ms": 2.0,
                                       "timer": "worker_free"}}}
    (tmp_path / "h100.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["run", str(tmp_path / "h100.yaml"), "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    assert "1 of 1 runs finished" in capsys.readouterr().out
