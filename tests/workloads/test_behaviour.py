import io
import os
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.workloads.behaviour import (
    BehaviourError,
    BehaviourTable,
    correctness_transitions,
    from_apparate_pickle,
    load_table,
    save_table,
    synthetic,
)

NAMES = ("ramp1", "final")


def small(**changes):
    """Three samples, two exits, every optional array present; ``changes`` override."""
    fields = dict(
        confidence=[[0.6, 0.9], [0.3, 0.8], [1.0, 0.5]],
        correct=[[True, True], [False, True], [False, False]],
        agrees=[[True, True], [False, True], [True, True]],
        prediction=[[1, 1], [2, 0], [4, 4]],
        entropy=[[0.9, 0.2], [1.5, 0.4], [0.0, 1.1]],
        exit_names=NAMES,
    )
    fields.update(changes)
    return BehaviourTable(**fields)


def npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def table_arrays(table, **changes):
    arrays = {
        "format_version": np.int64(1),
        "exit_names": np.array(table.exit_names),
        "confidence": table.confidence,
        "correct": table.correct,
        "agrees": table.agrees,
    }
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


# --- the table ---------------------------------------------------------------------

def test_table_coerces_dtypes_and_is_read_only():
    table = small()
    assert (table.n_samples, table.n_exits) == (3, 2)
    assert table.confidence.dtype == np.float64 and table.entropy.dtype == np.float64
    assert table.correct.dtype == np.bool_ and table.agrees.dtype == np.bool_
    assert table.prediction.dtype == np.int32
    with pytest.raises(ValueError):
        table.confidence[0, 0] = 0.1
    np.testing.assert_allclose(table.accuracy(), [1 / 3, 2 / 3])


@pytest.mark.parametrize("changes, message", [
    (dict(confidence=[[0.6, np.nan], [0.3, 0.8], [1.0, 0.5]]), "'confidence' sample 0 exit 'final' is nan"),
    (dict(confidence=[[0.6, 0.9], [1.2, 0.8], [1.0, 0.5]]), "'confidence' sample 1 exit 'ramp1' is 1.2"),
    (dict(confidence=[0.6, 0.9, 0.5]), "shape (3,); expected (samples, exits)"),
    (dict(correct=[[True, True], [False, True]]), "'correct' has shape (2, 2); expected (3, 2)"),
    (dict(correct=[[1, 1], [0, 1], [0, 0]]), "'correct' has dtype int64; expected booleans"),
    (dict(confidence=[["a", "b"]] * 3), "'confidence' has dtype <U1; expected numbers"),
    (dict(correct=None), "'correct' is None; it is required"),
    (dict(entropy=[[0.9, -0.2], [1.5, 0.4], [0.0, 1.1]]), "'entropy' sample 0 exit 'final' is -0.2"),
    (dict(prediction=[[1, 1], [2, 0], [-4, -4]]), "'prediction' has label -4"),
    (dict(agrees=[[True, True], [False, False], [True, True]]), "'agrees' sample 1 exit 'final'"),
    (dict(agrees=[[True, True], [True, True], [True, True]]), "'agrees' sample 1 exit 'ramp1' is True; it must equal"),
    (dict(exit_names=("a",)), "1 names ('a',) for 2 exits"),
    (dict(exit_names=("a", "a")), "repeats ['a']"),
    (dict(exit_names=("a", "")), "name ''"),
])
def test_table_rejects_bad_fields_naming_field_and_value(changes, message):
    with pytest.raises(BehaviourError, match="^<memory>: .*") as info:
        small(**changes)
    assert message in str(info.value)


def test_correct_agrees_and_final_must_be_consistent():
    # ramp1 right and final right, yet they disagree: impossible with one true label.
    with pytest.raises(BehaviourError, match="'correct' sample 0 exit 'ramp1'.*imply the third"):
        small(agrees=[[False, True], [False, True], [True, True]], prediction=None)


def test_take_and_split():
    table = synthetic(101, [0.7, 0.9], persistence=0.5, n_classes=5, rng=np.random.default_rng(0))
    assert table.take([3, 3, 0]).confidence.tolist() == table.confidence[[3, 3, 0]].tolist()
    fit, held = table.split(0.3, np.random.default_rng(1))
    assert (fit.n_samples, held.n_samples) == (30, 71)
    rows = {tuple(r) for r in table.confidence}
    fit_rows, held_rows = ({tuple(r) for r in t.confidence} for t in (fit, held))
    assert not fit_rows & held_rows and fit_rows | held_rows == rows
    assert fit == table.split(0.3, np.random.default_rng(1))[0]  # deterministic given the rng
    with pytest.raises(BehaviourError, match="leaves an empty part"):
        table.split(0.001, np.random.default_rng(1))
    with pytest.raises(BehaviourError, match="non-empty 1-D integer index"):
        table.take([])


# --- the file format ---------------------------------------------------------------

@pytest.mark.parametrize("optional", [True, False])
def test_round_trip_is_exact(tmp_path, optional):
    table = synthetic(500, [0.5, 0.8, 0.95], persistence=0.3, n_classes=7, rng=np.random.default_rng(2))
    if not optional:
        table = BehaviourTable(table.confidence, table.correct, table.agrees, None, None, table.exit_names)
    path = tmp_path / "t.npz"
    save_table(table, path)
    loaded = load_table(path)
    assert loaded == table and loaded.source == str(path)
    assert (loaded.prediction is None) is (not optional)
    with np.load(path) as data:
        assert int(data["format_version"]) == 1
        assert set(data.files) >= {"confidence", "correct", "agrees", "exit_names"}


def test_save_is_atomic_and_overwrites(tmp_path):
    path = tmp_path / "t.npz"
    path.write_text("old")
    save_table(small(), path)
    assert load_table(path) == small()
    assert os.listdir(tmp_path) == ["t.npz"]
    assert os.stat(path).st_mode & 0o777 == 0o644
    first = path.read_bytes()
    save_table(small(), path)
    assert path.read_bytes() == first  # reproducible bytes: regenerating a file is no diff


@pytest.mark.parametrize("edit, message", [
    (dict(confidence=None), "missing key(s) ['confidence']"),
    (dict(predictions=np.zeros((3, 2), np.int32)), "unexpected key(s) ['predictions']"),
    (dict(format_version=np.int64(2)), "'format_version' is array(2); this servesim reads version 1"),
    (dict(format_version=None), "missing key(s) ['format_version']"),
    (dict(exit_names=np.array([1, 2])), "'exit_names' has dtype int64"),
    (dict(confidence=np.full((3, 2), np.nan)), "'confidence' sample 0 exit 'ramp1' is nan"),
    (dict(confidence=np.full((3, 2), 1.5)), "'confidence' sample 0 exit 'ramp1' is 1.5"),
    (dict(agrees=np.ones((3, 3), bool)), "'agrees' has shape (3, 3); expected (3, 2)"),
    (dict(correct=np.array([[{}, {}]] * 3, dtype=object)), "field 'correct' cannot be read"),
])
def test_load_errors_name_file_field_and_value(tmp_path, edit, message):
    path = npz(tmp_path / "bad.npz", **table_arrays(small(), **edit))
    with pytest.raises(BehaviourError, match=f"^{path}: .*") as info:
        load_table(path)
    assert message in str(info.value)


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a zip", b"PK\x03\x04 truncated zip"])
def test_load_rejects_files_that_are_not_npz(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(BehaviourError, match=f"^{path}: not an .npz behaviour table"):
        load_table(path)


def test_load_rejects_missing_file_and_bare_npy(tmp_path):
    with pytest.raises(BehaviourError, match="no such behaviour table file"):
        load_table(tmp_path / "absent.npz")
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(BehaviourError, match="not an .npz behaviour table .starts with b'.x93NUM'"):
        load_table(tmp_path / "a.npy")


@pytest.mark.parametrize("corrupt, message", [
    (lambda payload: payload[:-3], "field 'agrees' cannot be read"),
    (lambda payload: b"not npy", "field 'agrees' is not a .npy array"),
])
def test_load_rejects_corrupt_member(tmp_path, corrupt, message):
    path = tmp_path / "t.npz"
    with zipfile.ZipFile(path, "w") as z:
        for key, value in table_arrays(small()).items():
            payload = _npy_bytes(value)
            z.writestr(f"{key}.npy", corrupt(payload) if key == "agrees" else payload)
    with pytest.raises(BehaviourError, match=message):
        load_table(path)


def _npy_bytes(value):
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


# --- Apparate pickles --------------------------------------------------------------

def dump(tmp_path, obj, name="p.pickle"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj))
    return path


def test_apparate_list_format_with_the_original_model_entry(tmp_path):
    # As Apparate's artefacts: ramps 0..1 then the original model (conf None, acc True).
    p = {"conf": [[0.9, 0.2, 0.7], np.array([0.95, 0.4, 0.8]), [None] * 3],
         "acc": [[True, False, True], np.array([1, 0, 1]), [True] * 3]}
    table = from_apparate_pickle(dump(tmp_path, p))
    assert table.exit_names == ("ramp0", "ramp1", "final")
    np.testing.assert_array_equal(table.confidence, [[0.9, 0.95, 1.0], [0.2, 0.4, 1.0], [0.7, 0.8, 1.0]])
    np.testing.assert_array_equal(table.agrees, [[True, True, True], [False, False, True], [True, True, True]])
    np.testing.assert_array_equal(table.correct, table.agrees)  # accuracy as agreement
    assert table.prediction is None and table.entropy is None


def test_apparate_array_format(tmp_path):
    p = {"conf": np.array([[0.2, 0.9], [0.6, 0.7]]), "acc": np.array([[False, True], [True, True]])}
    table = from_apparate_pickle(dump(tmp_path, p))
    assert table.exit_names == ("ramp0", "ramp1", "final")
    np.testing.assert_array_equal(table.confidence, [[0.2, 0.6, 1.0], [0.9, 0.7, 1.0]])


def test_apparate_dict_format_sparse_ids_and_final_argument(tmp_path):
    p = {"conf": {7: [0.5, 0.6], 2: [0.1, 0.3]}, "acc": {2: [False, True], 7: [True, True]}}
    table = from_apparate_pickle(dump(tmp_path, p), final=[0.99, 0.97])
    assert table.exit_names == ("ramp2", "ramp7", "final")  # ordered by id, final appended
    np.testing.assert_array_equal(table.confidence[:, -1], [0.99, 0.97])
    assert table.agrees[:, -1].all()


@pytest.mark.parametrize("p, message", [
    ({"conf": [[0.5]]}, "expected a dict with keys 'conf' and 'acc'"),
    ([1, 2], "got list"),
    ({"conf": [[0.5, 0.2], [0.4]], "acc": [[True, True], [True]]}, "field conf[1] has 1 samples; conf[0] has 2"),
    ({"conf": [[0.5, "x"]], "acc": [[True, True]]}, "field conf[0] sample 1 is 'x'; expected a number"),
    ({"conf": [[0.5, None], [None, None]], "acc": [[True, True], [True, True]]}, "conf[0] sample 1 is None"),
    ({"conf": [[0.5, 0.1]], "acc": [[True, 2]]}, "field acc[0] sample 1 is 2; expected a boolean"),
    ({"conf": {0: [0.5]}, "acc": {1: [True]}}, "'conf' has ramp ids [0] but 'acc' has [1]"),
    ({"conf": {"a": [0.5]}, "acc": {"a": [True]}}, "ramp id 'a'; ramp ids must be integers"),
    ({"conf": 3, "acc": 3}, "field 'conf' is a int; expected a list or dict"),
    ({"conf": [[0.5], [None]], "acc": [[True], [False]]}, "acc[1] (the original model's entry"),
    ({"conf": [[1.5, 0.2]], "acc": [[True, True]]}, "'confidence' sample 0 exit 'ramp0' is 1.5"),
])
def test_apparate_errors_name_file_field_and_value(tmp_path, p, message):
    path = dump(tmp_path, p)
    with pytest.raises(BehaviourError, match=f"^{path}: ") as info:
        from_apparate_pickle(path)
    assert message in str(info.value)


def test_apparate_rejects_non_pickles(tmp_path):
    path = tmp_path / "x.pickle"
    path.write_bytes(b"not a pickle")
    with pytest.raises(BehaviourError, match="cannot unpickle"):
        from_apparate_pickle(path)
    with pytest.raises(BehaviourError, match="no such Apparate pickle"):
        from_apparate_pickle(tmp_path / "absent.pickle")


# --- the synthetic generator -------------------------------------------------------

N = 50_000


def lag1(a, b):
    return np.corrcoef(a, b)[0, 1]


@pytest.mark.parametrize("persistence", [0.0, 0.5, 1.0])
def test_synthetic_marginal_accuracies(persistence):
    # 4 binomial standard errors (<= 0.009 at n=50k): a two-sided miss has probability
    # 6e-5 per exit, so a seed that passes is not a lucky one.
    accuracy = [0.55, 0.7, 0.9, 0.97]
    table = synthetic(N, accuracy, persistence=persistence, n_classes=10, rng=np.random.default_rng(3))
    se = np.sqrt(np.multiply(accuracy, np.subtract(1, accuracy)) / N)
    assert np.all(np.abs(table.accuracy() - accuracy) < 4 * se), (table.accuracy(), accuracy)


@given(st.lists(st.floats(0, 1), min_size=2, max_size=6), st.floats(0, 1))
def test_kernel_reproduces_marginals_exactly(accuracy, persistence):
    kernel = correctness_transitions(accuracy, persistence)
    a = np.asarray(accuracy)
    assert ((kernel >= 0) & (kernel <= 1)).all()
    np.testing.assert_allclose(a[:-1] * kernel[:, 1] + (1 - a[:-1]) * kernel[:, 0], a[1:], atol=1e-12)


def test_persistence_raises_lag1_correlation():
    accuracy = [0.7, 0.8, 0.9]
    tables = {p: synthetic(N, accuracy, persistence=p, n_classes=10, rng=np.random.default_rng(4))
              for p in (0.0, 0.5, 1.0)}
    correct = {p: lag1(t.correct[:, 0], t.correct[:, 1]) for p, t in tables.items()}
    loss = {p: lag1(1 - t.confidence[:, 0], 1 - t.confidence[:, 1]) for p, t in tables.items()}
    # Independent exits: |r| < 4 / sqrt(n) = 0.018. Full persistence: the largest
    # correlation marginals 0.7, 0.8 allow, sqrt(0.7 * 0.2 / (0.8 * 0.3)) = 0.764.
    assert abs(correct[0.0]) < 0.018 and abs(loss[0.0]) < 0.018
    assert correct[0.0] < correct[0.5] < correct[1.0]
    assert loss[0.0] < loss[0.5] < loss[1.0]
    assert abs(correct[1.0] - np.sqrt(0.7 * 0.2 / (0.8 * 0.3))) < 0.018
    assert loss[1.0] > 0.7


def test_synthetic_wrong_labels_persist_and_agree():
    table = synthetic(N, [0.6, 0.6], persistence=1.0, n_classes=10, rng=np.random.default_rng(5))
    # Equal marginals at full persistence: the exits are identical.
    assert (table.correct[:, 0] == table.correct[:, 1]).all()
    assert table.agrees.all() and (table.confidence[:, 0] == table.confidence[:, 1]).all()
    independent = synthetic(N, [0.6, 0.6], persistence=0.0, n_classes=10, rng=np.random.default_rng(5))
    both_wrong = ~independent.correct.any(axis=1)
    # A fresh wrong label matches the other exit's wrong label 1 time in K - 1 = 9.
    assert abs(independent.agrees[both_wrong, 0].mean() - 1 / 9) < 4 * np.sqrt(1 / 9 * 8 / 9 / both_wrong.sum())


def test_synthetic_shapes_ranges_and_determinism():
    make = lambda seed: synthetic(1000, [0.5, 0.8, 0.9], persistence=0.4, n_classes=3, rng=np.random.default_rng(seed))
    table = make(6)
    assert table.exit_names == ("ramp1", "ramp2", "final")
    assert table.confidence.shape == table.entropy.shape == table.prediction.shape == (1000, 3)
    assert table.confidence.min() >= 1 / 3 and table.prediction.max() <= 2
    assert (table.entropy <= np.log(3) + 1e-12).all()
    assert table.confidence[table.correct].mean() > table.confidence[~table.correct].mean()
    assert make(6) == table and make(7) != table


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), accuracy=st.lists(st.floats(0, 1), min_size=1, max_size=5),
       persistence=st.floats(0, 1), classes=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_synthetic_tables_are_valid_and_round_trip(tmp_path_factory, n, accuracy, persistence, classes, seed):
    table = synthetic(n, accuracy, persistence=persistence, n_classes=classes, rng=np.random.default_rng(seed))
    path = tmp_path_factory.mktemp("rt") / "t.npz"
    save_table(table, path)
    assert load_table(path) == table


@pytest.mark.parametrize("kwargs, message", [
    (dict(accuracy=[1.2]), "accuracy must be"),
    (dict(accuracy=[]), "accuracy must be"),
    (dict(persistence=1.5), "persistence must be"),
    (dict(n_classes=1), "n_classes >= 2"),
])
def test_synthetic_rejects_bad_arguments(kwargs, message):
    args = dict(n_samples=10, accuracy=[0.5], persistence=0.5, n_classes=4, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        synthetic(**{**args, **kwargs})
