import datetime

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from servesim.workloads import PROFILES_DIR, CostModel, load_profile
from servesim.workloads import digits
from servesim.workloads.behaviour import load_table
from servesim.workloads.profiler_cpu import BATCH_SIZES, measure

STAGES = ("block1", "ramp1", "block2", "ramp2", "block3", "ramp3", "block4")
SHIPPED_PROFILE = PROFILES_DIR / "cpu_digits_ee.csv"


@pytest.fixture(scope="module")
def shipped():
    return load_table(digits.SHIPPED_TABLE)


@pytest.fixture(scope="module")
def built():
    """One in-process training (~4 s): the network, its split and its table."""
    return digits.build()


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """The table ``python -m servesim.workloads.digits --out ...`` writes now (one training, ~4 s)."""
    out = tmp_path_factory.mktemp("digits") / "digits_ee.npz"
    assert digits.main(["--out", str(out)]) == 0
    return load_table(out)


def test_shipped_table_is_the_held_out_half_with_all_columns(shipped):
    assert shipped.exit_names == digits.EXIT_NAMES == ("ramp1", "ramp2", "ramp3", "final")
    assert shipped.n_samples == len(digits.split_digits().test_y) == 899
    assert shipped.prediction is not None and shipped.entropy is not None
    assert shipped.agrees[:, -1].all()


def test_shipped_accuracies(shipped):
    accuracy = shipped.accuracy()
    # Measured 0.973 on 899 held-out digits (binomial SE 0.0054); 0.95 is 4 SE below, and
    # far above what a broken export gives (misaligned labels: about 0.1).
    assert accuracy[-1] >= 0.95
    # Early exits are the point: weaker than the final head, yet still useful.
    assert accuracy[:-1].mean() < accuracy[-1] and (accuracy[:-1] <= accuracy[-1]).all()
    assert accuracy[0] > 0.8
    assert np.all(np.diff(accuracy) > 0)  # deeper ramps see better features
    # Confidence carries signal at every exit: right answers are more confident.
    for j in range(shipped.n_exits):
        right = shipped.correct[:, j]
        assert shipped.confidence[right, j].mean() > shipped.confidence[~right, j].mean()


def test_retraining_reproduces_the_shipped_table(shipped, rebuilt):
    # Labels and booleans exactly. Floats to 1e-6: the shipped file was written on this
    # project's machine, and another CPU's BLAS kernels may round the last bits apart.
    for field in ("prediction", "correct", "agrees"):
        np.testing.assert_array_equal(getattr(rebuilt, field), getattr(shipped, field), err_msg=field)
    np.testing.assert_allclose(rebuilt.confidence, shipped.confidence, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rebuilt.entropy, shipped.entropy, rtol=0, atol=1e-6)


def test_training_is_deterministic(built, rebuilt):
    assert built[2] == rebuilt  # two trainings, bitwise equal: fixed seeds, one BLAS thread


def test_fold_scaler_equals_standardise_then_dense():
    rng = np.random.default_rng(0)
    x = rng.normal(5, 3, (20, 6))
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    scaler = StandardScaler().fit(x)
    folded_w, folded_b = digits.fold_scaler(w, b, scaler.mean_, scaler.scale_)
    np.testing.assert_allclose(x @ folded_w + folded_b, scaler.transform(x) @ w + b, atol=1e-12)


def test_fold_pooling_equals_linear_head_on_pooled_activations():
    rng = np.random.default_rng(1)
    h = rng.random((5, 12))
    coef, intercept = rng.standard_normal((3, 4)), rng.standard_normal(3)  # sklearn layout
    w, b = digits.fold_pooling(coef, intercept, pool=3)
    pooled = h.reshape(5, 4, 3).mean(axis=2)
    np.testing.assert_allclose(h @ w + b, pooled @ coef.T + intercept, atol=1e-12)


def test_network_stages_and_weight_shapes(built):
    net, split, _ = built
    assert tuple(s.name for s in net.stages()) == STAGES
    assert [w.shape for w, _ in net.backbone] == [(64, 512), (512, 512), (512, 512), (512, 512), (512, 10)]
    assert [w.shape for w, _ in net.ramps] == [(512, 10)] * 3
    assert all(w.dtype == b.dtype == np.float32 for w, b in net.backbone + net.ramps)
    probs = net.exit_probabilities(split.test_x[:7])
    assert probs.shape == (7, 4, 10)
    np.testing.assert_allclose(probs.sum(axis=2), 1, atol=1e-6)


def test_shipped_digits_profile():
    profile = load_profile(SHIPPED_PROFILE)
    meta = profile.metadata
    assert meta["hardware"] == "cpu" and meta["device"].startswith("cpu:")
    assert meta["dtype"] == "float32" and meta["threads"] == "1"
    assert meta["model"].startswith("digits_ee:")
    datetime.date.fromisoformat(meta["date"])
    assert profile.models() == ("digits_ee",) and profile.hardware() == ("cpu",)
    assert profile.stages("digits_ee") == STAGES
    for stage in STAGES:
        rows = profile.rows_for("digits_ee", stage)
        assert tuple(r.batch_size for r in rows) == BATCH_SIZES == (1, 2, 4, 8, 16, 32, 64)
        assert all(r.repeats >= 50 for r in rows)
    at64 = {s: profile.rows_for("digits_ee", s)[-1].latency_p50_ms for s in STAGES}
    for block in ("block2", "block3", "block4"):
        assert at64[block] > 3 * profile.rows_for("digits_ee", block)[0].latency_p50_ms
        assert at64[block] > max(at64["ramp1"], at64["ramp2"], at64["ramp3"])  # ramps are cheap
    assert CostModel(profile, "digits_ee").max_profiled_batch == 64


def test_profiler_measures_the_digits_network(built, monkeypatch):
    monkeypatch.setattr(digits, "build", lambda dataset: built)  # the profiler trains via build(); reuse it
    profile = measure(repeats=2, warmup=1, threads=1, model="digits_ee")
    assert profile.stages("digits_ee") == STAGES
    assert len(profile.rows) == len(STAGES) * len(BATCH_SIZES)


# --- the same recipe on MNIST-1D --------------------------------------------------------

MNIST1D_TABLE = digits.DATA_DIR / "mnist1d_ee.npz"


def test_mnist1d_is_the_packages_default_split_and_leaves_global_generators_alone():
    pytest.importorskip("mnist1d")
    import random

    before = np.random.get_state()[1].copy(), random.getstate()
    split = digits.split_mnist1d()
    assert split.train_x.shape == (4000, 40) and split.test_x.shape == (1000, 40)
    assert set(np.unique(split.test_y)) == set(range(10))
    np.testing.assert_array_equal(np.random.get_state()[1], before[0])
    assert random.getstate() == before[1]
    again = digits.split_mnist1d(seed=7)  # the data is the package's; the seed only trains
    np.testing.assert_array_equal(again.test_x, split.test_x)


def test_shipped_mnist1d_table_spreads_wider_than_digits(shipped):
    table = load_table(MNIST1D_TABLE)
    assert table.exit_names == digits.EXIT_NAMES and table.n_samples == 1000
    accuracy = table.accuracy()
    # Measured 0.404, 0.501, 0.646, 0.700 (SE at most 0.016 on 1,000 samples); an MLP on
    # MNIST-1D reaches about 0.68 in its paper, so 0.6-0.8 is the plausible band.
    np.testing.assert_allclose(accuracy, [0.404, 0.501, 0.646, 0.700], atol=1e-9)
    assert np.all(np.diff(accuracy) > 0)
    assert accuracy[-1] - accuracy[0] > 2 * (shipped.accuracy()[-1] - shipped.accuracy()[0])
    # The final head is overconfident: its mean confidence far above its accuracy.
    assert table.confidence[:, -1].mean() > accuracy[-1] + 0.1


def test_retraining_reproduces_the_shipped_mnist1d_table(tmp_path):
    pytest.importorskip("mnist1d")
    out = tmp_path / "mnist1d_ee.npz"
    assert digits.main(["--dataset", "mnist1d", "--out", str(out)]) == 0
    fresh, shipped = load_table(out), load_table(MNIST1D_TABLE)
    for field in ("prediction", "correct", "agrees"):
        np.testing.assert_array_equal(getattr(fresh, field), getattr(shipped, field), err_msg=field)
    np.testing.assert_allclose(fresh.confidence, shipped.confidence, rtol=0, atol=1e-6)


def test_shipped_mnist1d_profile_names_every_stage():
    profile = load_profile(PROFILES_DIR / "cpu_mnist1d_ee.csv")
    assert profile.models() == ("mnist1d_ee",)
    assert profile.stages("mnist1d_ee") == STAGES
    assert profile.metadata["model"].startswith("mnist1d_ee: MLP 40>512")
