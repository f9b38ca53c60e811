"""The torch models (early-exit, and the plain variant families), their profiler, and
the profiles it measured.

The shipped-profile tests need no torch (anyone running servesim reads these files);
the others ask for it through the ``torch`` fixture and skip cleanly without it. Models
are shrunk (small images, a narrow BERT, or the ``meta`` device, which allocates
nothing) so the file runs in seconds.
"""

import datetime
import re

import pytest

from servesim.workloads import PROFILES_DIR, ExitModel, SegmentCosts, load_profile

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
TINY_BERT = dict(layers=3, hidden=32, heads=2, ffn=64, vocab=50)


def ee_order(prefix, n):
    """``prefix1, ramp1, ..., ramp{n-1}, prefix{n}``: blocks with a ramp after each but the last."""
    return tuple(s for i in range(1, n + 1) for s in (f"{prefix}{i}", f"ramp{i}"))[:-1]


def ramps_of(stages):
    return {block: ramp for block, ramp in zip(stages[::2], stages[1::2])}


def assert_e2e_rows(profile, model, batch_sizes):
    """``<model>_e2e``: the one stage ``forward`` at every batch size the stages have."""
    assert profile.stages(f"{model}_e2e") == ("forward",)
    assert tuple(r.batch_size for r in profile.rows_for(f"{model}_e2e", "forward")) == tuple(batch_sizes)


SHIPPED = {"cpu_resnet18_ee.csv": ("resnet18_ee", ee_order("block", 8)),
           "cpu_resnet50_ee.csv": ("resnet50_ee", ee_order("layer", 4)),
           "cpu_resnet101_ee.csv": ("resnet101_ee", ee_order("layer", 4)),
           "cpu_bert_ee.csv": ("bert_ee", ee_order("layer", 12)),
           "cpu_bert4_ee.csv": ("bert4_ee", ee_order("stage", 4)),
           **{f"cpu_{m}.csv": (m, ee_order("block", 5)) for m in ("vgg11_ee", "vgg13_ee", "vgg16_ee")}}


@pytest.mark.parametrize("filename", sorted(SHIPPED))
def test_shipped_profile_has_every_stage_at_every_batch_size(filename):
    model, stages = SHIPPED[filename]
    profile = load_profile(PROFILES_DIR / filename)
    meta = profile.metadata
    assert meta["device"].startswith("cpu:") and meta["hardware"] == "cpu"
    assert meta["dtype"] == "float32" and meta["execution_mode"] == "eager" and meta["threads"] == "1"
    assert meta["framework"].startswith("torch ")
    datetime.date.fromisoformat(meta["date"])
    # Measured before the profiler timed the whole backbone too; a re-measured file has its rows.
    assert profile.models() in ((model,), (model, f"{model}_e2e"))
    assert profile.stages(model) == stages
    if len(profile.models()) == 2:
        assert_e2e_rows(profile, model, BATCH_SIZES)
    for stage in stages:
        rows = profile.rows_for(model, stage)
        assert tuple(r.batch_size for r in rows) == BATCH_SIZES
        assert all(r.repeats >= 10 for r in rows)


@pytest.mark.parametrize("filename", sorted(SHIPPED))
def test_shipped_profile_drives_an_exit_model(filename):
    model, stages = SHIPPED[filename]
    profile = load_profile(PROFILES_DIR / filename)
    exits = ExitModel.early_exit(profile, model, ramps_of(stages))
    assert exits.n_exits == len(stages) // 2 + 1
    costs = SegmentCosts(profile, exits)
    assert costs.max_profiled_batch == 64
    # A ramp is a pool + one small linear layer: far cheaper than the block it follows.
    for body, head in zip(costs.body_latency(64), costs.head_latency(64)):
        assert head < 0.2 * body
    assert costs.batch_latency(64) > 10 * costs.batch_latency(1)


@pytest.fixture(scope="module")
def tm(torch):
    from servesim.workloads import torch_models

    return torch_models


@pytest.fixture(scope="module")
def profiler(torch):
    from servesim.workloads import profiler_torch

    return profiler_torch


@pytest.mark.parametrize("name, stages, params", [
    # Parameter counts of torchvision's models and of BERT-base (plus its 2-class head).
    ("resnet18_ee", ee_order("block", 8), 11_689_512),
    ("resnet50_ee", ee_order("layer", 4), 25_557_032),
    ("resnet101_ee", ee_order("layer", 4), 44_549_160),
    ("vgg11_ee", ee_order("block", 5), 132_863_336),
    ("vgg13_ee", ee_order("block", 5), 133_047_848),
    ("vgg16_ee", ee_order("block", 5), 138_357_544),
    ("bert_ee", ee_order("layer", 12), 109_482_240 + 768 * 2 + 2),
    ("bert4_ee", ee_order("stage", 4), 109_482_240 + 768 * 2 + 2),
])
def test_models_have_named_stages_and_the_reference_backbone(torch, tm, name, stages, params):
    with torch.device("meta"):
        model = tm.build(name)
    assert tuple(s for s, _, _ in model.stages()) == stages
    assert [trunk for _, _, trunk in model.stages()] == [not s.startswith("ramp") for s in stages]
    assert sum(p.numel() for _, block in model.blocks for p in block.parameters()) == params


def run_chain(torch, model, batch):
    """Each stage's output shape, each stage fed its real input."""
    x, shapes = model.make_input(batch), {}
    with torch.inference_mode():
        for name, module, trunk in model.stages():
            y = module(x)
            shapes[name] = tuple(y.shape)
            if trunk:
                x = y
    return shapes


def test_resnet18_stages_chain_at_full_size(torch, tm):
    shapes = run_chain(torch, tm.build("resnet18_ee"), 1)
    sides = [(64, 56), (64, 56), (128, 28), (128, 28), (256, 14), (256, 14), (512, 7)]
    for i, (c, side) in enumerate(sides, 1):
        assert shapes[f"block{i}"] == (1, c, side, side)
        assert shapes[f"ramp{i}"] == (1, 1000)
    assert shapes["block8"] == (1, 1000)


@pytest.mark.parametrize("name, size, options, classes", [
    ("resnet50_ee", 32, {}, 1000),
    ("vgg11_ee", 32, {"classes": 10}, 10),
    ("bert_ee", 8, TINY_BERT, 2),
    ("bert4_ee", 8, {**TINY_BERT, "layers": 8}, 2),
])
def test_ramps_and_last_stage_give_class_scores(torch, tm, name, size, options, classes):
    model = tm.build(name, size, **options)
    shapes = run_chain(torch, model, 2)
    last = model.blocks[-1][0]
    for stage, shape in shapes.items():
        if stage.startswith("ramp") or stage == last:
            assert shape == (2, classes), stage
        else:
            assert shape[0] == 2 and len(shape) > 2, stage
    assert shapes.keys() == {s for s, _, _ in model.stages()}


def test_bert4_groups_three_layers_per_stage_and_refuses_an_uneven_split(torch, tm):
    with torch.device("meta"):
        model = tm.build("bert4_ee")
    for i, (_, block) in enumerate(model.blocks):
        kinds = [type(m).__name__ for m in block]
        assert kinds.count("TransformerEncoderLayer") == 3
        assert ("Embeddings" in kinds) == (i == 0) and ("FirstTokenHead" in kinds) == (i == 3)
    assert "stage1 = embeddings" in model.description and "layers 10-12 + pooler" in model.description
    with pytest.raises(ValueError, match="10 layers do not split into 4 equal stages"):
        tm.build("bert4_ee", 8, **{**TINY_BERT, "layers": 10})


def test_backbone_is_the_blocks_in_sequence_without_ramps(torch, tm):
    model = tm.build("resnet18_ee", 32)
    x = model.make_input(2)
    with torch.inference_mode():
        chained = x
        for _, block in model.blocks:
            chained = block(chained)
        assert torch.equal(model.backbone()(x), chained)


def test_profiler_measures_a_valid_profile_with_the_whole_model_apart(tm, profiler):
    model = tm.build("resnet18_ee", 32)
    profile = profiler.measure(model, batch_sizes=(1, 2), repeats=3, warmup=1)
    stages = ee_order("block", 8)
    assert profile.models() == ("resnet18_ee", "resnet18_ee_e2e")
    assert profile.stages("resnet18_ee") == stages
    assert_e2e_rows(profile, "resnet18_ee", (1, 2))
    assert len(profile.rows) == 2 * (len(stages) + 1) and {r.repeats for r in profile.rows} == {3}
    assert [r.model for r in profile.rows[-2:]] == ["resnet18_ee_e2e"] * 2  # after the model's own rows
    meta = profile.metadata
    assert meta["framework"].startswith("torch ") and meta["execution_mode"] == "eager"
    assert meta["hardware"] == "cpu" and meta["device"].startswith("cpu:") and meta["threads"] == "1"
    assert meta["input"] == "(batch, 3, 32, 32)" and "perf_counter_ns" in meta["timing"]
    assert "ring of distinct copies" in meta["timing"] and "resnet18_ee_e2e" in meta["e2e"]
    assert "launch_bound" not in meta and "cuda" not in meta
    ExitModel.early_exit(profile, "resnet18_ee", ramps_of(stages))


def test_no_e2e_times_the_stages_only(tm, profiler):
    profile = profiler.measure(tm.build("resnet18_ee", 32), batch_sizes=(1,), repeats=1, warmup=0,
                               e2e=False)
    assert profile.models() == ("resnet18_ee",) and "e2e" not in profile.metadata


def test_fresh_inputs_are_distinct_copies_up_to_the_budget(torch, profiler):
    x = torch.arange(10.0)  # 40 bytes
    ring = profiler.fresh_inputs(x, calls=5)
    assert len(ring) == 5 and ring[0] is x
    assert len({t.data_ptr() for t in ring}) == 5 and all(torch.equal(t, x) for t in ring)
    assert len(profiler.fresh_inputs(x, calls=5, budget_bytes=100)) == 3
    assert profiler.fresh_inputs(x, calls=5, budget_bytes=1) == [x]  # one input past the budget: itself


def test_only_eager_execution_is_implemented(tm, profiler):
    with pytest.raises(ValueError, match="execution mode 'cuda_graph' is not implemented; choose from eager"):
        profiler.measure(tm.build("resnet18_ee", 32), execution_mode="cuda_graph")


def test_time_cap_keeps_the_minimum_repeats_and_records_them(tm, profiler):
    profile = profiler.measure(tm.build("bert_ee", 8, **TINY_BERT), batch_sizes=(2,), repeats=50,
                               min_repeats=2, max_seconds=1e-9, warmup=3)
    assert {r.repeats for r in profile.rows} == {2}
    assert "once 1e-09 s have passed but at least 2" in profile.metadata["repeats"]
    assert profile.metadata["input"] == "(batch, 8) token ids"


def test_budget_stops_at_the_count_or_the_cap_but_not_below_the_minimum(profiler):
    capped = profiler.Budget(calls=50, at_least=3, seconds=1.0)
    assert capped.more(2, 10.0) and not capped.more(3, 10.0) and capped.more(49, 0.5)
    assert not capped.more(50, 0.0)
    assert profiler.Budget(calls=5, at_least=5, seconds=None).more(4, 1e9)


def test_fp16_on_the_cpu_warns(tm, profiler):
    with pytest.warns(UserWarning, match="fp16 on the CPU"):
        profile = profiler.measure(tm.build("vgg11_ee", 32), dtype="fp16", batch_sizes=(1,), repeats=1,
                                   warmup=0)
    assert profile.metadata["dtype"] == "float16"


def test_unknown_device_and_model_are_refused(torch, tm, profiler):
    with pytest.raises(ValueError, match="device must be"):
        profiler.measure(tm.build("vgg11_ee", 32), device="mps")
    with pytest.raises(ValueError, match="device must be"):
        profiler.resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device available"):
            profiler.resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown model"):
        tm.build("resnet19_ee")


def test_command_line_writes_the_profile(profiler, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert profiler.main(["--model", "resnet18_ee", "--input-size", "32", "--batch-sizes", "1,2",
                          "--repeats", "2", "--warmup", "1", "--threads", "1", "--out", str(out)]) == 0
    profile = load_profile(out)
    assert {r.batch_size for r in profile.rows} == {1, 2} and {r.repeats for r in profile.rows} == {2}
    assert_e2e_rows(profile, "resnet18_ee", (1, 2))
    assert f"wrote {out}" in capsys.readouterr().out
    assert profiler.main(["--model", "resnet18_ee", "--input-size", "32", "--batch-sizes", "1", "--repeats", "1",
                          "--warmup", "0", "--no-e2e", "--out", str(out)]) == 0
    assert load_profile(out).models() == ("resnet18_ee",)
    with pytest.raises(SystemExit):
        profiler.main(["--model", "resnet18_ee", "--batch-sizes", "0,2", "--out", str(out)])


def test_command_line_refuses_a_bad_model_or_device_in_one_line(profiler, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert profiler.main(["--model", "resnet19_ee", "--out", str(out)], prog="prof") == 2
    assert profiler.main(["--model", "resnet18_ee", "--device", "tpu", "--out", str(out)], prog="prof") == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("prof: error: unknown model 'resnet19_ee'; choose from ") and "bert4_ee" in lines[0]
    assert lines[1:] == ["prof: error: device must be cpu or cuda[:N], got 'tpu'"]
    assert not out.exists()


@pytest.mark.parametrize("dtype, recorded", [("fp16", "float16"), ("fp32", "float32")])
def test_cuda_profile_keeps_host_time_apart(torch, tm, profiler, dtype, recorded):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    profile = profiler.measure(tm.build("resnet18_ee", 32), device="cuda", dtype=dtype, batch_sizes=(1, 2),
                               repeats=5, warmup=2)
    meta = profile.metadata
    assert meta["device"].startswith("cuda:") and meta["hardware"] != "cpu" and meta["dtype"] == recorded
    assert meta["execution_mode"] == "eager" and "CUDA events" in meta["timing"]
    assert "points had" in meta["launch_bound"] and "TF32 for fp32 matmul" in meta["cuda"]
    assert profile.hardware() == (meta["hardware"],)
    assert_e2e_rows(profile, "resnet18_ee", (1, 2))
    assert all(r.latency_p50_ms > 0 for r in profile.rows)


# --- plain variants: the menus of workloads.variants -------------------------------------

RESNET_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                 "resnet101": 44_549_160, "resnet152": 60_192_808}
# Ultralytics' v6.0 table (80 classes), which rounds to 0.1 M.
YOLOV5_PARAMS = {"yolov5n": 1.9e6, "yolov5s": 7.2e6, "yolov5m": 21.2e6, "yolov5l": 46.5e6, "yolov5x": 86.7e6}
TINY_SEQ2SEQ = dict(hidden=32, heads=2, ffn=64, vocab=50)


def n_params(model):
    return sum(p.numel() for _, block in model.blocks for p in block.parameters())


def assert_one_block(model):
    assert [(name, trunk) for name, _, trunk in model.stages()] == [("forward", True)] and model.ramps == {}


@pytest.mark.parametrize("name", sorted(RESNET_PARAMS))
def test_resnet_family_has_torchvisions_parameter_counts(torch, tm, name):
    with torch.device("meta"):
        model = tm.build(name)
    assert_one_block(model)
    assert n_params(model) == RESNET_PARAMS[name]  # exact: the same layers as torchvision


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])  # one of each block kind
def test_resnet_family_classifies_a_small_image(torch, tm, name):
    model = tm.build(name, 32)
    with torch.inference_mode():
        assert model.backbone()(model.make_input(2)).shape == (2, 1000)
    assert model.input_shape == "(batch, 3, 32, 32)"


@pytest.mark.parametrize("name", sorted(YOLOV5_PARAMS))
def test_yolov5_family_is_within_rounding_of_the_published_sizes(torch, tm, name):
    with torch.device("meta"):
        model = tm.build(name)
    assert_one_block(model)
    # The table rounds to 0.1 M: +-0.05 M is 2.6% of yolov5n's 1.9 M, so 3% allows the rounding and little
    # more. (The counts equal Ultralytics' v6.0 model summaries exactly: 1,872,157 / 7,235,389 / 21,190,557 /
    # 46,563,709 / 86,749,405.)
    assert n_params(model) == pytest.approx(YOLOV5_PARAMS[name], rel=0.03)
    detect = model.blocks[0][1].detect
    assert [conv.out_channels for conv in detect.convs] == [255] * 3


@pytest.mark.parametrize("name", ["yolov5n", "yolov5s"])
def test_yolov5_predicts_three_anchors_per_cell_at_three_scales(torch, tm, name):
    model = tm.build(name, 64)
    with torch.inference_mode():
        y = model.backbone()(model.make_input(2))
    cells = (64 // 8) ** 2 + (64 // 16) ** 2 + (64 // 32) ** 2
    assert y.shape == (2, 3 * cells, 85)
    assert bool(((y > 0) & (y < 1)).all())  # sigmoid outputs, no box decoding
    assert tm.build(name).input_shape == "(batch, 3, 320, 320)"


def test_yolov5_refuses_a_side_the_strides_do_not_divide(tm):
    with pytest.raises(ValueError, match="yolov5s: image_size must be a multiple of 32 .*got 48"):
        tm.build("yolov5s", 48)


def test_language_id_proxy_has_xlmr_base_shapes_and_classifies_the_first_token(torch, tm):
    with torch.device("meta"):
        full = tm.build("langid_xlmr")
    body = full.blocks[0][1]
    layers = [m for m in body if isinstance(m, torch.nn.TransformerEncoderLayer)]
    assert len(layers) == 12 and layers[0].linear1.weight.shape == (3072, 768)
    assert body[0].word.weight.shape == (250_002, 768) and full.input_shape == "(batch, 32) token ids"
    tiny = tm.build("langid_xlmr", 8, layers=2, hidden=32, heads=2, ffn=64, vocab=50)
    assert_one_block(tiny)
    with torch.inference_mode():
        assert tiny.backbone()(tiny.make_input(3)).shape == (3, 20)


@pytest.mark.parametrize("name, encoder, decoder, hidden", [
    ("opus_mt", 6, 6, 512), ("tc_big", 6, 6, 1024), ("distilbart_1_1", 1, 1, 1024), ("distilbart_12_1", 12, 1, 1024),
    ("distilbart_6_6", 6, 6, 1024), ("distilbart_12_3", 12, 3, 1024), ("distilbart_9_6", 9, 6, 1024),
    ("distilbart_12_6", 12, 6, 1024),
])
def test_seq2seq_proxies_have_the_published_layer_counts(torch, tm, name, encoder, decoder, hidden):
    with torch.device("meta"):
        model = tm.build(name)
    assert_one_block(model)
    net = model.blocks[0][1]
    assert (len(net.encoder), len(net.decoder)) == (encoder, decoder)
    assert net.decoder[0].linear1.weight.shape == (4 * hidden, hidden) and net.out_len == 8
    assert model.input_shape == "(batch, 32) token ids" and "no KV cache" in model.description


def test_greedy_generation_runs_the_decoder_once_per_token_over_the_whole_prefix(torch, tm):
    model = tm.build("distilbart_12_6", 8, out_len=3, **TINY_SEQ2SEQ)
    net = model.blocks[0][1]
    prefixes = []
    net.decoder[0].register_forward_hook(lambda module, args, out: prefixes.append(out.shape[1]))
    x = model.make_input(2)
    with torch.inference_mode():
        tokens = net(x)
        assert torch.equal(net(x), tokens)  # deterministic
    assert tokens.shape == (2, 3) and tokens.dtype == torch.int64
    assert bool(((tokens >= 0) & (tokens < 50)).all())
    assert prefixes == [1, 2, 3] * 2  # no KV cache: pass k sees the k tokens so far


def test_seq2seq_refuses_lengths_outside_its_positions(tm):
    with pytest.raises(ValueError, match=r"opus_mt: out_len must be 1\.\.512 .*got 0"):
        tm.build("opus_mt", 8, out_len=0, **TINY_SEQ2SEQ)
    with pytest.raises(ValueError, match=r"tc_big: seq_len must be 1\.\.1024 .*got 1025"):
        tm.build("tc_big", 1025, **TINY_SEQ2SEQ)


def test_plain_variant_profile_names_its_hardware_and_times_cold_starts(tm, profiler):
    from servesim.workloads.variants import cpu_hardware

    model = tm.build("resnet18", 32)
    profile = profiler.measure(model, batch_sizes=(1, 2), repeats=3, warmup=1, hardware=cpu_hardware(1),
                               cold_start=lambda: tm.build("resnet18", 32))
    # One block: its forward rows are the whole model, so no _e2e rows.
    assert profile.models() == ("resnet18", "resnet18_load") and "e2e" not in profile.metadata
    assert profile.hardware() == ("cpu-1c",) and profile.metadata["hardware"] == "cpu-1c"
    assert profile.stages("resnet18") == ("forward",) and profile.stages("resnet18_load") == ("load",)
    [load] = profile.rows_for("resnet18_load", "load")
    assert (load.batch_size, load.repeats) == (1, 5)
    # A cold start constructs 11.7 M randomly initialised weights (tens of ms) and then makes a
    # forward call itself, so it cannot be as quick as a warm forward call (about 1 ms at 32 px).
    assert load.latency_p50_ms > profile.rows_for("resnet18", "forward")[0].latency_p50_ms
    # 11,689,512 fp32 weights are 44.59 MiB; BN's running statistics add 4,800 channels x 2 x 4 bytes.
    assert "5 cold starts" in profile.metadata["load"] and "44.6 MiB" in profile.metadata["load"]


def test_hardware_names_and_load_repeats_are_checked_before_timing(tm, profiler):
    model = tm.build("resnet18", 32)
    with pytest.raises(ValueError, match=re.escape("hardware 'cpu-2c' names 2 core(s), but threads is 1; "
                                                   "name it 'cpu-1c' or run 2 thread(s)")):
        profiler.measure(model, hardware="cpu-2c", threads=1)
    with pytest.raises(ValueError, match=re.escape("hardware must be a non-empty printable name without "
                                                   "surrounding spaces, got ' cpu'")):
        profiler.measure(model, hardware=" cpu")
    with pytest.raises(ValueError, match="load_repeats must be at least 5, got 4"):
        profiler.measure(model, cold_start=lambda: model, load_repeats=4)


def test_command_line_appends_runs_on_other_hardware_to_one_file(profiler, tmp_path, capsys):
    out = str(tmp_path / "variants.csv")
    common = ["--input-size", "32", "--batch-sizes", "1", "--repeats", "2", "--warmup", "0", "--out", out]
    assert profiler.main(["--model", "resnet18", "--hardware", "cpu-1c", "--load-time", *common]) == 0
    assert profiler.main(["--model", "resnet18", "--append", *common]) == 0  # default hardware: cpu
    assert profiler.main(["--model", "resnet34", "--hardware", "cpu-1c", "--append", *common]) == 0
    profile = load_profile(out)
    assert profile.models() == ("resnet18", "resnet18_load", "resnet34")
    assert profile.hardware("resnet18") == ("cpu-1c", "cpu") and profile.hardware("resnet34") == ("cpu-1c",)
    assert profile.rows_for("resnet18", "forward", hardware="cpu")[0].repeats == 2
    meta = profile.metadata
    assert meta["hardware"] == "cpu-1c | cpu" and meta["threads"] == "1"
    assert meta["model"].count(" | ") == 1 and "load" in meta  # resnet18's description, then resnet34's
    capsys.readouterr()
    assert profiler.main(["--model", "resnet18", "--hardware", "cpu-1c", "--append", *common], prog="prof") == 2
    assert profiler.main(["--model", "resnet18", "--hardware", "cpu-2c", *common], prog="prof") == 2
    assert capsys.readouterr().err.splitlines() == [
        f"prof: error: {out} already has model 'resnet18' on hardware 'cpu-1c'",
        "prof: error: hardware 'cpu-2c' names 2 core(s), but threads is 1; name it 'cpu-1c' or run 2 thread(s)"]
    with pytest.raises(SystemExit):
        profiler.main(["--model", "resnet18", "--load-time", "--load-repeats", "4", *common])
    assert load_profile(out).rows == profile.rows  # the refused runs left the file alone


def test_append_refuses_a_file_of_another_precision(tm, profiler, tmp_path):
    out = tmp_path / "p.csv"
    profiler.measure(tm.build("resnet18", 32), batch_sizes=(1,), repeats=1, warmup=0).save(out)
    other = profiler.measure(tm.build("resnet34", 32), batch_sizes=(1,), repeats=1, warmup=0)
    half = type(other)(other.rows, {**other.metadata, "dtype": "float16"})
    with pytest.raises(ValueError, match=f"cannot append to {re.escape(str(out))}: its dtype is 'float32', "
                                         f"this run's is 'float16'"):
        profiler.append(out, half)
