"""The language-id early-exit transformer: phrase generator, a small deterministic
training, the executor-style stage calls, the registered builder, and the shipped table
and profile. No test retrains the shipped model (minutes): a few hundred phrases stand
in for it, a second or two each.

The shipped table and profile tests need neither torch nor wordfreq; the others skip
cleanly without them.
"""

from pathlib import Path

import numpy as np
import pytest

from servesim.workloads import PROFILES_DIR, ExitModel, SegmentCosts, load_profile
from servesim.workloads.behaviour import load_table
from shipped import assert_profiled_here_with_torch

EXIT_NAMES = ("ramp1", "ramp2", "ramp3", "ramp4", "ramp5", "final")
STAGES = ("block1", "ramp1", "block2", "ramp2", "block3", "ramp3", "block4", "ramp4", "block5", "ramp5", "block6")
RAMPS = {f"block{i}": f"ramp{i}" for i in range(1, 6)}
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
SHIPPED_TABLE = "langid_ee.npz"
SHIPPED_PROFILE = PROFILES_DIR / "cpu_langid_ee.csv"
# What `python -m servesim.workloads.langid` printed for the shipped table (module docstring).
ACCURACY = (0.6590, 0.7231, 0.7575, 0.7692, 0.7717, 0.7771)
AGREES = (0.7331, 0.8125, 0.8833, 0.9048, 0.9256, 1.0)


@pytest.fixture(scope="module")
def shipped():
    from servesim.experiments.specs import BEHAVIOUR_DIR

    return load_table(BEHAVIOUR_DIR / SHIPPED_TABLE)


@pytest.fixture(scope="module")
def langid():
    pytest.importorskip("torch")
    pytest.importorskip("wordfreq")
    from servesim.workloads import langid

    return langid


@pytest.fixture(scope="module")
def small(langid):
    """A few hundred phrases, one pass: what the tests train instead of the shipped model."""
    return langid.Recipe(train_phrases=480, ramp_phrases=480, test_phrases=120, seed=3)


@pytest.fixture(scope="module")
def built(langid, small):
    return langid.build(small)


def same_weights(torch, a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- shipped table and profile (no torch needed) --------------------------------------

def test_shipped_table_has_six_exits_and_the_reported_accuracies(shipped):
    assert shipped.exit_names == EXIT_NAMES
    assert shipped.n_samples == 4800 and shipped.prediction is not None and shipped.entropy is not None
    assert shipped.agrees[:, -1].all()
    np.testing.assert_array_equal(np.round(shipped.accuracy(), 4), ACCURACY)
    np.testing.assert_array_equal(np.round(shipped.agrees.mean(axis=0), 4), AGREES)


def test_shipped_accuracy_climbs_across_exits(shipped):
    accuracy = shipped.accuracy()
    # 4,800 phrases: a binomial SE of at most 0.0072. Deeper exits see more: each exit
    # within 1 SE of the one before it at worst, and the final head far above ramp1.
    assert (np.diff(accuracy) > -0.0072).all()
    assert accuracy[-1] >= accuracy[0] + 0.1
    assert accuracy[0] > 1 / 6  # far above chance (1/12): the first ramp is useful
    # Confidence carries signal at every exit: right answers are more confident.
    for j in range(shipped.n_exits):
        right = shipped.correct[:, j]
        assert shipped.confidence[right, j].mean() > shipped.confidence[~right, j].mean()
    assert (shipped.confidence >= 1 / 12 - 1e-9).all() and (shipped.entropy <= np.log(12) + 1e-9).all()


def test_shipped_table_is_a_builtin_behaviour(shipped):
    from servesim.experiments.specs import BuiltinBehaviour

    assert BuiltinBehaviour(kind="builtin", name="langid_ee").build(None, None) == shipped


def test_shipped_profile_names_every_stage_at_every_batch_size():
    profile = load_profile(SHIPPED_PROFILE)
    assert_profiled_here_with_torch(profile, "langid_ee")
    assert profile.stages("langid_ee") == STAGES
    assert profile.stages("langid_ee_e2e") == ("forward",)
    for stage in STAGES:
        rows = profile.rows_for("langid_ee", stage)
        assert tuple(r.batch_size for r in rows) == BATCH_SIZES and all(r.repeats >= 50 for r in rows)
    costs = SegmentCosts(profile, ExitModel.early_exit(profile, "langid_ee", RAMPS))
    assert costs.max_profiled_batch == 64 and costs.batch_latency(64) > costs.batch_latency(1)


# --- phrases --------------------------------------------------------------------------

def test_phrases_are_deterministic_balanced_and_from_the_word_lists(langid):
    a = langid.make_phrases(250, np.random.default_rng(7))
    b = langid.make_phrases(250, np.random.default_rng(7))
    assert a.texts == b.texts and np.array_equal(a.labels, b.labels) and np.array_equal(a.words, b.words)
    assert a.texts != langid.make_phrases(250, np.random.default_rng(8)).texts
    counts = np.bincount(a.labels, minlength=len(langid.LANGUAGES))
    assert counts.sum() == 250 and counts.max() - counts.min() <= 1  # 250 = 12 x 20 + 10
    assert set(a.words.tolist()) == set(range(1, langid.MAX_WORDS + 1))
    for text, label, n in zip(a.texts, a.labels, a.words):
        vocab = set(langid.vocabulary(langid.LANGUAGES[label])[0])
        assert text == text.lower() and len(text.split(" ")) == n and set(text.split(" ")) <= vocab


def test_vocabularies_are_letter_words_with_frequency_weights(langid):
    for language in langid.LANGUAGES:
        words, p = langid.vocabulary(language)
        assert len(words) == len(set(words)) == langid.TOP_WORDS
        assert all(w.replace("'", "").replace("-", "").isalpha() for w in words)
        assert np.isclose(p.sum(), 1) and (p > 0).all() and (np.diff(p) <= 1e-12).all()  # most frequent first


def test_held_out_phrases_are_the_shipped_rows(langid, shipped):
    """Row k of the shipped table is held-out phrase k: its labels regenerate exactly."""
    held_out = langid.held_out_phrases()
    assert len(held_out) == shipped.n_samples
    assert (np.bincount(held_out.labels) == shipped.n_samples // 12).all()
    np.testing.assert_array_equal(shipped.correct, shipped.prediction == held_out.labels[:, None])


def test_encode_pads_and_cuts_utf8_bytes(langid):
    ids = langid.encode(["că", "x" * 40])
    assert ids.shape == (2, langid.SEQ_LEN) and ids.dtype == np.int64
    assert ids[0, :3].tolist() == list("că".encode()) and (ids[0, 3:] == langid.PAD).all()
    assert (ids[1] == ord("x")).all()


# --- a small training -----------------------------------------------------------------

def test_small_training_is_deterministic_and_restores_torch_settings(langid, small, built):
    import torch

    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.get_rng_state()
    again = langid.build(small)
    assert torch.get_num_threads() == before[0] and torch.are_deterministic_algorithms_enabled() == before[1]
    assert torch.equal(torch.get_rng_state(), before[2])
    assert same_weights(torch, built[0], again[0])  # bitwise: one thread, fixed seed, deterministic kernels
    assert built[3] == again[3] and built[3].exit_names == EXIT_NAMES and built[3].n_samples == 120


def test_stage_calls_chain_and_match_the_table_at_any_batch_size(langid, built):
    import torch

    model, _, held_out, table = built
    ids = torch.from_numpy(langid.encode(held_out.texts))
    for batch in (1, 7):
        x = ids[:batch]
        with torch.inference_mode():
            for i, stage in enumerate(model.stages):
                x = stage(x)
                probabilities = (model.ramps[i](x) if i < 5 else x).numpy()
                assert x.shape == ((batch, langid.SEQ_LEN, langid.D_MODEL + 1) if i < 5 else (batch, 12))
                np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
                np.testing.assert_array_equal(probabilities.argmax(axis=1), table.prediction[:batch, i])
                np.testing.assert_allclose(probabilities.max(axis=1), table.confidence[:batch, i], atol=1e-5)


def test_padding_is_masked_out(langid, built):
    """A phrase's answer does not depend on how much padding follows it: cutting the
    batch at its longest phrase (as training does) gives the same probabilities."""
    model, _, held_out, _ = built
    ids = langid.encode(held_out.texts[:16])
    longest = int((ids != langid.PAD).sum(1).max())
    assert longest < langid.SEQ_LEN
    np.testing.assert_allclose(model.exit_probabilities(ids[:, :longest]), model.exit_probabilities(ids), atol=1e-5)


def test_registered_builder_profiles_the_cached_network(langid, small, built, tmp_path, monkeypatch):
    import torch

    from servesim.workloads import profiler_torch, torch_models

    monkeypatch.setenv("SERVESIM_CACHE_DIR", str(tmp_path))  # workloads.digits_torch.CACHE_ENV
    model = torch_models.build("langid_ee", recipe=small)  # trains (small) and caches
    assert langid.cache_path(small).is_file()
    assert tuple(name for name, _, _ in model.stages()) == STAGES
    assert same_weights(torch, model.blocks[0][1], built[0].stages[0])
    batch = model.make_input(121)  # the 120 held-out rows, cycled
    assert batch.shape == (121, langid.SEQ_LEN) and torch.equal(batch[120], batch[0])
    monkeypatch.setattr(langid, "train", lambda recipe: pytest.fail("the cached weights were not used"))
    cached = torch_models.build("langid_ee", recipe=small)  # read back from the cache
    assert same_weights(torch, cached.blocks[5][1], built[0].stages[5]) and not cached.blocks[0][1].training
    profile = profiler_torch.measure(cached, batch_sizes=(1, 2), repeats=2, warmup=1)
    assert profile.stages("langid_ee") == STAGES
    with pytest.raises(ValueError, match="input size 32"):
        torch_models.build("langid_ee", 16)


def test_shipped_stream_moves_to_words_the_model_never_saw():
    """The recorded topic stream (``python -m servesim.workloads.langid --stream``): its figures as
    the docstring gives them, and each topic harder than the one before it."""
    from servesim.workloads.drift import accuracy_by_condition, load_stream

    stream = load_stream(Path(__file__).parents[2] / "workloads" / "data" / "langid_stream.npz")
    assert stream.replay == "messages" and stream.rate == 20.0 and stream.table.n_samples == 14_400
    assert [(s, stream.condition_names[c]) for s, c in stream.schedule] == [
        (0.0, "in_domain"), (150.0, "rare_words"), (300.0, "single_rare"), (450.0, "in_domain")]
    by = accuracy_by_condition(stream)
    np.testing.assert_allclose(by["in_domain"], [0.669, 0.731, 0.770, 0.770, 0.777, 0.782], atol=6e-4)
    np.testing.assert_allclose(by["rare_words"][-1], 0.629, atol=6e-4)
    np.testing.assert_allclose(by["single_rare"][-1], 0.504, atol=6e-4)
    assert by["in_domain"][-1] > by["rare_words"][-1] + 0.1 > by["single_rare"][-1] + 0.2
