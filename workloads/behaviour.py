"""Per-sample behaviour of early-exit models and cascades: what each exit would say about
each input, and whether it would be right.

An exit policy (confidence threshold, entropy, patience, T-Tamer's index, Apparate's
tuner, a cascade's router) decides per request from what the exits consulted so far
said, and is scored by what the chosen exit got right. Neither can be derived from
per-exit accuracies alone: exits are correlated (an input that is hard for ramp 1 is
usually hard for ramp 2), and that joint behaviour is what makes one policy better than
another. So the simulator replays measured rows, one per input, with one column per exit
(early-exit ramps then the final head, or cascade members small to large).

Where tables come from:

* :func:`load_table` / :func:`save_table`: the project's own ``.npz`` format, below;
* :func:`from_apparate_pickle`: Apparate's artefact pickles (``p["conf"/"acc"][ramp][i]``);
* :func:`synthetic`: a generator with chosen per-exit accuracies and cross-exit persistence;
* :func:`from_probabilities`: a real network's exit probabilities and the true labels
  (:mod:`workloads.digits`, :mod:`workloads.langid`, :mod:`workloads.video` use it).

File format (``.npz``, version 1; read with ``allow_pickle=False``, so loading a table
never runs code). ``n`` = samples >= 1, ``E`` = exits >= 1:

============== ========== ======= ===================================================
key            dtype      shape   meaning
============== ========== ======= ===================================================
format_version int64      ()      1
exit_names     unicode    (E,)    exit names in exit order, unique, non-empty
confidence     float64    (n, E)  max softmax probability, in [0, 1]
correct        bool       (n, E)  the exit's prediction equals the true label
agrees         bool       (n, E)  the exit's prediction equals the final exit's
prediction     int32      (n, E)  predicted label (>= 0); key absent when unknown
entropy        float64    (n, E)  softmax entropy in nats (>= 0); key absent when unknown
============== ========== ======= ===================================================

No other key is allowed (a misspelt optional key would otherwise be silently dropped).
Loading checks everything :class:`BehaviourTable` checks; saving is atomic.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from scipy.special import betaincinv, ndtr, xlogy

from . import safe_pickle

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "exit_names", "confidence", "correct", "agrees")
OPTIONAL_KEYS = ("prediction", "entropy")

PathLike = Union[str, os.PathLike]


class BehaviourError(ValueError):
    """A behaviour table (file or in-code) is malformed; the message names the source,
    the field and the offending value."""


@dataclass(frozen=True, eq=False)
class BehaviourTable:
    """Per-sample behaviour of a model with E exits (early-exit ramps + final head, or
    cascade members in order); row i is input i, column j is exit j.

    The constructor checks and copies its arguments (arrays become read-only, with the
    dtypes of the file format: float64, bool, int32), so a table can be shared safely.
    ``==`` compares the data and ignores ``source``.
    """

    confidence: np.ndarray
    correct: np.ndarray
    agrees: np.ndarray
    prediction: Optional[np.ndarray]
    entropy: Optional[np.ndarray]
    exit_names: tuple[str, ...]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        src = self.source
        confidence = _array(src, "confidence", self.confidence, "fiu", np.float64)
        if confidence.ndim != 2 or 0 in confidence.shape:
            raise BehaviourError(
                f"{src}: field 'confidence' has shape {confidence.shape}; expected (samples, exits), both >= 1"
            )
        names = _exit_names(src, self.exit_names, confidence.shape[1])
        arrays = {"confidence": confidence}
        for field, value, kinds, dtype in (
            ("correct", self.correct, "b", np.bool_),
            ("agrees", self.agrees, "b", np.bool_),
            ("prediction", self.prediction, "iu", np.int32),
            ("entropy", self.entropy, "fiu", np.float64),
        ):
            if value is not None:
                arrays[field] = _array(src, field, value, kinds, dtype, confidence.shape)
            elif field in OPTIONAL_KEYS:
                arrays[field] = None
            else:
                raise BehaviourError(f"{src}: field {field!r} is None; it is required")
        _check_values(src, names, **arrays)
        for field, value in arrays.items():
            if value is not None:
                value.flags.writeable = False
            object.__setattr__(self, field, value)
        object.__setattr__(self, "exit_names", names)

    @property
    def n_samples(self) -> int:
        return self.confidence.shape[0]

    @property
    def n_exits(self) -> int:
        return self.confidence.shape[1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BehaviourTable):
            return NotImplemented
        return self.exit_names == other.exit_names and all(
            (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
            for a, b in ((getattr(self, f), getattr(other, f)) for f in _ARRAY_FIELDS)
        )

    def take(self, index: Sequence[int] | np.ndarray) -> "BehaviourTable":
        """The rows at ``index`` (a 1-D integer array, repeats allowed: bootstrap
        resampling is ``take(rng.integers(n, size=n))``)."""
        index = np.asarray(index)
        if index.ndim != 1 or index.dtype.kind not in "iu" or index.size == 0:
            raise BehaviourError(
                f"{self.source}: take() needs a non-empty 1-D integer index, got shape "
                f"{index.shape} dtype {index.dtype}"
            )
        return BehaviourTable(
            **{f: None if getattr(self, f) is None else getattr(self, f)[index] for f in _ARRAY_FIELDS},
            exit_names=self.exit_names,
            source=self.source,
        )

    def split(self, fraction: float, rng: np.random.Generator) -> tuple["BehaviourTable", "BehaviourTable"]:
        """A random split into disjoint (fit, eval) tables: ``round(fraction * n)`` rows
        for fitting a policy and the rest for scoring it, so a tuned policy is never
        scored on the rows it was tuned on. Each part keeps the table's row order."""
        fit, rest = self.split_rows(fraction, rng)
        return self.take(fit), self.take(rest)

    def split_rows(self, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The row indices of :meth:`split`'s two parts (a real executor needs them to
        feed each request the input its row was measured on)."""
        n_fit = round(fraction * self.n_samples)
        if not 0 < n_fit < self.n_samples:
            raise BehaviourError(
                f"{self.source}: split fraction {fraction!r} of {self.n_samples} samples leaves "
                f"an empty part; both parts need at least one sample"
            )
        order = rng.permutation(self.n_samples)
        return np.sort(order[:n_fit]), np.sort(order[n_fit:])

    def accuracy(self) -> np.ndarray:
        """Per-exit fraction of samples whose prediction is correct, shape (E,)."""
        return self.correct.mean(axis=0)


_ARRAY_FIELDS = tuple(f.name for f in fields(BehaviourTable) if f.name not in ("exit_names", "source"))


def _array(src: str, field: str, value: object, kinds: str, dtype: type,
           shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as a fresh array of ``dtype``, if its kind is one of ``kinds`` (and its
    shape is ``shape``, when given)."""
    try:
        array = np.array(value)
    except ValueError as exc:  # ragged nested lists
        raise BehaviourError(f"{src}: field {field!r} is not a rectangular array ({exc})") from None
    if array.dtype.kind not in kinds:
        expected = {"fiu": "numbers", "b": "booleans", "iu": "integers"}[kinds]
        raise BehaviourError(f"{src}: field {field!r} has dtype {array.dtype}; expected {expected}")
    if shape is not None and array.shape != shape:
        raise BehaviourError(
            f"{src}: field {field!r} has shape {array.shape}; expected {shape} like 'confidence'"
        )
    if dtype is np.int32 and array.size:
        low, high = array.min(), array.max()
        if low < 0 or high > np.iinfo(np.int32).max:
            raise BehaviourError(
                f"{src}: field {field!r} has label {low if low < 0 else high}; labels must be in [0, 2**31)"
            )
    return array.astype(dtype, copy=False)  # np.array above already copied


def _exit_names(src: str, names: object, n_exits: int) -> tuple[str, ...]:
    names = tuple(names) if isinstance(names, (list, tuple, np.ndarray)) else (names,)
    if len(names) != n_exits:
        raise BehaviourError(f"{src}: field 'exit_names' has {len(names)} names {names!r} for {n_exits} exits")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise BehaviourError(f"{src}: field 'exit_names' has name {name!r}; names must be non-empty strings")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BehaviourError(f"{src}: field 'exit_names' repeats {repeated!r}; names must be unique")
    return tuple(str(n) for n in names)


def _first_bad(src: str, names: tuple[str, ...], field: str, array: np.ndarray, bad: np.ndarray, rule: str) -> None:
    """Raise naming the first (sample, exit) where ``bad`` (the shape of ``array``) holds."""
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise BehaviourError(
            f"{src}: field {field!r} sample {i} exit {names[j]!r} is {array[i, j].item()!r}; {rule} "
            f"({int(bad.sum())} such value(s))"
        )


def _check_values(src: str, names: tuple[str, ...], confidence: np.ndarray, correct: np.ndarray,
                  agrees: np.ndarray, prediction: Optional[np.ndarray], entropy: Optional[np.ndarray]) -> None:
    _first_bad(src, names, "confidence", confidence, ~((confidence >= 0) & (confidence <= 1)),
               "confidences must be numbers in [0, 1]")
    if entropy is not None:
        _first_bad(src, names, "entropy", entropy, ~((entropy >= 0) & np.isfinite(entropy)),
                   "entropies must be finite and >= 0")
    not_final = np.zeros_like(agrees)
    not_final[:, -1] = ~agrees[:, -1]
    _first_bad(src, names, "agrees", agrees, not_final,
               "the final exit agrees with itself, so the last column must be all True")
    if prediction is not None:
        _first_bad(src, names, "agrees", agrees, agrees != (prediction == prediction[:, -1:]),
                   "it must equal prediction == the last exit's prediction")
    # One true label: of (exit j correct, final correct, j agrees with final), any two
    # imply the third, so exactly two being true is a contradiction in the data.
    _first_bad(src, names, "correct", correct,
               correct.astype(np.int8) + correct[:, -1:] + agrees == 2,
               "it contradicts 'agrees' and the final exit's 'correct' (any two of the three imply the third)")


def from_probabilities(probabilities: np.ndarray, labels: np.ndarray, exit_names: Sequence[str],
                       source: str) -> BehaviourTable:
    """The table of a network whose exits gave ``probabilities`` (n, exits, classes) on
    inputs whose true classes are ``labels`` (n,): confidence = max softmax, prediction
    = argmax, entropy in nats, correct vs the label, agrees vs the final exit."""
    probs = np.asarray(probabilities, dtype=np.float64)
    prediction = probs.argmax(axis=2).astype(np.int32)
    return BehaviourTable(
        confidence=probs.max(axis=2),
        correct=prediction == np.asarray(labels)[:, None],
        agrees=prediction == prediction[:, -1:],
        prediction=prediction,
        entropy=-xlogy(probs, probs).sum(axis=2),
        exit_names=tuple(exit_names),
        source=source,
    )


def save_table(table: BehaviourTable, path: PathLike) -> None:
    """Write ``table`` to ``path`` in the format above (a compressed ``.npz``, byte for
    byte the same for the same table), atomically: a temporary file in the same folder,
    then ``os.replace``, so a reader never sees half a table. Optional arrays that are
    None are left out."""
    path = Path(path)
    arrays = {
        "format_version": np.int64(FORMAT_VERSION),
        "exit_names": np.array(table.exit_names, dtype=str),
        **{f: getattr(table, f) for f in _ARRAY_FIELDS if getattr(table, f) is not None},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, value in arrays.items():
                # What np.savez_compressed writes, but with a fixed timestamp, so the same
                # table always gives the same bytes (a regenerated shipped file is no diff).
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a table is shared project data
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_table(path: PathLike) -> BehaviourTable:
    """Read and check a table written by :func:`save_table` (or any tool writing the
    format above); every problem raises :class:`BehaviourError` naming the file."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise BehaviourError(f"{name}: no such behaviour table file") from None
    except OSError as exc:
        raise BehaviourError(f"{name}: cannot read behaviour table ({exc.strerror or exc})") from None
    if head != b"PK\x03\x04":  # an .npz is a zip archive; anything else np.load would try to unpickle
        raise BehaviourError(f"{name}: not an .npz behaviour table (starts with {head!r}, not a zip signature)")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BehaviourError(f"{name}: not an .npz behaviour table ({exc})") from None
    with data:
        arrays = {key: _read_member(data, key, name) for key in data.files}
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    unexpected = sorted(set(arrays) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    problems = []
    if missing:
        problems.append(f"missing key(s) {missing}")
    if unexpected:
        problems.append(f"unexpected key(s) {unexpected}")
    if problems:
        raise BehaviourError(
            f"{name}: {' and '.join(problems)}; a version {FORMAT_VERSION} table has keys "
            f"{list(REQUIRED_KEYS)} and optionally {list(OPTIONAL_KEYS)}"
        )
    version = arrays.pop("format_version")
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise BehaviourError(
            f"{name}: field 'format_version' is {version!r}; this servesim reads version {FORMAT_VERSION}"
        )
    names = arrays.pop("exit_names")
    if names.ndim != 1 or names.dtype.kind != "U":
        raise BehaviourError(
            f"{name}: field 'exit_names' has dtype {names.dtype} shape {names.shape}; expected 1-D unicode"
        )
    return BehaviourTable(
        **{f: arrays.get(f) for f in _ARRAY_FIELDS}, exit_names=tuple(names.tolist()), source=name
    )


def _read_member(data: np.lib.npyio.NpzFile, key: str, name: str) -> np.ndarray:
    try:
        value = data[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # object arrays, corrupt members
        raise BehaviourError(f"{name}: field {key!r} cannot be read ({exc})") from None
    if not isinstance(value, np.ndarray):  # NpzFile hands back a member without the .npy header as bytes
        raise BehaviourError(f"{name}: field {key!r} is not a .npy array (starts with {value[:8]!r})")
    return value


def from_apparate_pickle(path: PathLike, final: Optional[float | Sequence[float] | np.ndarray] = None) -> BehaviourTable:
    """Import one of Apparate's per-ramp artefact pickles (``{bootstrap,simulation}_pickles``
    in github.com/dywsjtu/apparate, EXPERIMENTS.md).

    **Security:** read with :mod:`workloads.safe_pickle`, which refuses every global but
    plain containers, numbers and numpy arrays before it is imported: a pickle that
    tries to run code (``os.system``, ``eval``...) is a :class:`BehaviourError` naming
    the global, and nothing runs.

    Schema: a dict ``p`` with ``p["conf"][r][i]`` (confidence of sample i at ramp r, a
    number in [0, 1]; for Apparate's NLP artefacts this is 1 - entropy, not the max
    softmax, and is imported as is) and ``p["acc"][r][i]`` (whether ramp r's prediction
    equals the *original model's* output: Apparate scores accuracy as agreement).
    ``p["conf"]`` and ``p["acc"]`` are lists indexed by ramp id or dicts keyed by integer
    ramp ids (maybe not contiguous); exits are ordered by id and named ``ramp<id>``.

    The final exit: Apparate stores the original model as the last "ramp", with
    confidence None and acc True for every sample. If the highest id has confidence all
    None it is taken as that entry (its acc must be all True) and becomes the exit
    ``final``; otherwise ``final`` is appended. Its confidence is ``final`` (a number or
    one per sample), by default 1.0: measured as agreement, the final exit is right with
    certainty, so 1.0 is its calibrated confidence, and any confidence rule stops there.

    No labels exist in this schema, so ``correct`` = ``agrees`` (accuracy against the
    original model, as Apparate measures it), and ``prediction`` and ``entropy`` are None.
    """
    name = str(path)
    try:
        with open(path, "rb") as f:
            p = safe_pickle.RestrictedUnpickler(f).load()
    except FileNotFoundError:
        raise BehaviourError(f"{name}: no such Apparate pickle") from None
    except safe_pickle.RefusedGlobal as exc:
        raise BehaviourError(f"{name}: refused to unpickle: {exc}") from None
    except Exception as exc:  # unpickling can raise anything: the file decides
        raise BehaviourError(f"{name}: cannot unpickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(p, Mapping) or "conf" not in p or "acc" not in p:
        keys = sorted(map(repr, p)) if isinstance(p, Mapping) else type(p).__name__
        raise BehaviourError(f"{name}: expected a dict with keys 'conf' and 'acc', got {keys}")
    conf, acc = (_per_ramp(name, key, p[key]) for key in ("conf", "acc"))
    if list(conf) != list(acc):
        raise BehaviourError(f"{name}: 'conf' has ramp ids {list(conf)} but 'acc' has {list(acc)}")
    first = next(iter(conf))
    n = len(conf[first])
    for key, per_ramp in (("conf", conf), ("acc", acc)):
        for r, values in per_ramp.items():
            if len(values) != n:
                raise BehaviourError(f"{name}: field {key}[{r}] has {len(values)} samples; conf[{first}] has {n}")
    last = list(conf)[-1]
    if all(v is None for v in conf[last]):
        del conf[last]
        if not _column(name, f"acc[{last}]", acc.pop(last), bool).all():
            raise BehaviourError(f"{name}: field acc[{last}] (the original model's entry, confidence None) "
                                 f"must be all True: the original model agrees with itself")
    final_conf = np.asarray(1.0 if final is None else final, dtype=np.float64)
    if final_conf.shape not in ((), (n,)):
        raise BehaviourError(f"{name}: argument 'final' has shape {final_conf.shape}; expected a number or {n} values")
    final_conf = np.broadcast_to(final_conf, (n,))
    agrees = np.column_stack([_column(name, f"acc[{r}]", v, bool) for r, v in acc.items()] + [np.ones(n, bool)])
    return BehaviourTable(
        confidence=np.column_stack([_column(name, f"conf[{r}]", v, float) for r, v in conf.items()] + [final_conf]),
        correct=agrees,
        agrees=agrees,
        prediction=None,
        entropy=None,
        exit_names=tuple(f"ramp{r}" for r in conf) + ("final",),
        source=name,
    )


def _per_ramp(name: str, key: str, value: object) -> dict[int, Sequence]:
    """``p[key]`` as {ramp id: per-sample values}, ids ascending."""
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple, np.ndarray)):  # indexed by ramp id (an array: one row a ramp)
        items = enumerate(value)
    else:
        raise BehaviourError(f"{name}: field {key!r} is a {type(value).__name__}; expected a list or dict of ramps")
    ramps = {}
    for r, values in items:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise BehaviourError(f"{name}: field {key!r} has ramp id {r!r}; ramp ids must be integers")
        if not hasattr(values, "__len__") or isinstance(values, (str, bytes)):
            raise BehaviourError(f"{name}: field {key}[{r}] is {values!r}; expected one value per sample")
        ramps[int(r)] = values
    if not ramps:
        raise BehaviourError(f"{name}: field {key!r} has no ramps")
    return dict(sorted(ramps.items()))


def _column(name: str, field: str, values: Sequence, kind: type) -> np.ndarray:
    """One ramp's per-sample values as float64 (``kind=float``) or bool (0/1 allowed)."""
    array = np.asarray(values)
    ok = array.ndim == 1 and (array.dtype.kind in "fiu" if kind is float else array.dtype.kind in "biu")
    if ok and kind is bool and array.dtype.kind != "b" and not np.isin(array, (0, 1)).all():
        ok = False
    if not ok:
        for i, v in enumerate(values):
            if not _is_value(v, kind):
                raise BehaviourError(
                    f"{name}: field {field} sample {i} is {v!r}; expected "
                    f"{'a number' if kind is float else 'a boolean (or 0/1)'}"
                )
        raise BehaviourError(f"{name}: field {field} has shape {array.shape}; expected one value per sample")
    return array.astype(np.float64 if kind is float else np.bool_)


def _is_value(v: object, kind: type) -> bool:
    if kind is bool:
        return isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and v in (0, 1))
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


# Synthetic confidences: 1/K + (1 - 1/K) * B with B ~ Beta(a, b) given correctness, so a
# confidence is at least 1/K, as a max softmax over K classes is.
CORRECT_BETA = (5.0, 1.0)  # mean 0.83, mode 1: most right answers are confident
WRONG_BETA = (2.0, 2.0)  # mean 0.5: wrong answers spread over the whole range

# What a config gets unless it asks otherwise: nested correctness. At persistence 1 a sample
# right at one exit is right at every later exit (when the accuracies do not decrease), so
# no policy, with recall or without, can answer better than the final exit: the full model
# is the most accurate, as a user expects. Below 1 an earlier exit is right on some samples
# the final exit gets wrong ("over-thinking"), and because synthetic confidences tell right
# from wrong more sharply than a real network's do, confidence rules and T-Tamer's recall
# pick those samples and score above the full model (at 0.5 with accuracies 0.6/0.7/0.8/0.9,
# T-Tamer 0.931 against the final exit's 0.889 on the same 3,000 requests). The shipped real
# tables sit close to nested: of the samples an exit gets right the final exit also gets
# right 99% (digits_ee) and 93-97% (langid_ee), and no confidence threshold beats their final
# exit beyond sampling error. What 1 costs: the confidence copula below is then fully
# correlated too, so a sample keeps its confidence quantile at every exit, and its confidence
# moves only where its correctness does.
DEFAULT_PERSISTENCE = 1.0


def correctness_transitions(accuracy: Sequence[float], persistence: float) -> np.ndarray:
    """The Markov kernel of :func:`synthetic`'s correctness chain: row j holds
    P(exit j+1 correct | exit j wrong) and P(exit j+1 correct | exit j correct).

    For consecutive marginals a, b the joint P(both correct) is
    (1 - persistence) * a * b + persistence * min(a, b): independence at 0, the largest
    overlap the marginals allow (Fréchet's upper bound) at 1, always a valid joint. The
    kernel then reproduces the marginals exactly: a * p11 + (1 - a) * p01 = b.
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    a, b = acc[:-1], acc[1:]
    both = (1 - persistence) * a * b + persistence * np.minimum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        p11 = np.where(a > 0, both / a, b)  # a == 0: never conditioned on, any value works
        p01 = np.where(a < 1, (b - both) / (1 - a), b)
    return np.clip(np.column_stack([p01, p11]), 0.0, 1.0)


def fixed_exits(n_samples: int, shares: Sequence[float]) -> BehaviourTable:
    """A table in which each sample's exit is fixed in advance: ``shares[j]`` of the rows
    (exactly, by largest remainder) have confidence 0 before exit j and 1 from it on, so
    any confidence threshold in (0, 1] stops each at its exit. Every answer is right and
    agrees with the final one: a latency replay of a measured server whose requests left
    at given stages, not an accuracy study."""
    weights = np.asarray(shares, dtype=np.float64)
    if weights.ndim != 1 or weights.size < 2 or not np.isfinite(weights).all() or (weights < 0).any() \
            or not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
        raise BehaviourError(f"fixed exits: shares must be >= 0, one per exit (at least 2), summing to 1; "
                             f"got {list(shares)}")
    if int(n_samples) != n_samples or n_samples < 1:
        raise BehaviourError(f"fixed exits: n_samples must be a whole number >= 1, got {n_samples!r}")
    exact = weights * n_samples
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact, kind="stable")[: n_samples - counts.sum()]] += 1  # largest remainders
    exit_of = np.repeat(np.arange(weights.size), counts)
    confidence = (np.arange(weights.size)[None, :] >= exit_of[:, None]).astype(np.float64)
    right = np.ones_like(confidence, dtype=bool)
    return BehaviourTable(confidence=confidence, correct=right, agrees=right, prediction=None, entropy=None,
                          exit_names=tuple(f"exit{j + 1}" for j in range(weights.size)),
                          source=f"fixed exits {list(map(float, weights))}")


def synthetic(n_samples: int, accuracy: Sequence[float], *, persistence: float, n_classes: int,
              rng: np.random.Generator) -> BehaviourTable:
    """A table with chosen per-exit accuracies and a tunable cross-exit dependence, for
    tests and for exploring policies where no measured table exists.

    * **Correctness** is a Markov chain across exits with marginals ``accuracy`` (exactly,
      in expectation) and kernel :func:`correctness_transitions`; ``persistence`` in
      [0, 1] runs from independent exits (0) to as dependent as the marginals allow (1:
      with non-decreasing accuracies, right at exit j means right at every later exit, so
      the final exit is the most accurate for every policy, row by row;
      :data:`DEFAULT_PERSISTENCE` says why that is the configs' default).
    * **Confidence** given correctness is 1/K + (1 - 1/K) * B, B ~ Beta(5, 1) when right
      and Beta(2, 2) when wrong (:data:`CORRECT_BETA`, :data:`WRONG_BETA`), drawn through
      a Gaussian copula z_{j+1} = persistence * z_j + sqrt(1 - persistence^2) * noise,
      B = F^-1(Phi(z)). So the losses (1 - confidence) are correlated across exits
      through the Markov state (correct_j, z_j); the loss alone is not exactly Markov,
      as on real networks.
    * **Predictions**: the true label (uniform over K classes) when right; when wrong, the
      previous exit's wrong label with probability ``persistence`` if it was wrong too,
      else a fresh uniform wrong label (so Patience-style rules can be fooled).
      ``agrees`` follows from the predictions.
    * **Entropy**: of the softmax with max probability = confidence and the rest spread
      evenly over the other K - 1 classes (the most uncertain softmax with that maximum).
      It is then a decreasing function of confidence, so entropy and max-probability
      rules rank samples alike here; compare them on a measured table.

    Deterministic given ``rng``. Exits are named ``ramp1..ramp<E-1>, final``.
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 1 or acc.size == 0 or not ((acc >= 0) & (acc <= 1)).all():
        raise ValueError(f"accuracy must be a non-empty sequence of numbers in [0, 1], got {accuracy!r}")
    if not 0 <= persistence <= 1:
        raise ValueError(f"persistence must be in [0, 1], got {persistence!r}")
    if n_classes < 2 or n_samples < 1:
        raise ValueError(f"need n_classes >= 2 and n_samples >= 1, got {n_classes!r} and {n_samples!r}")
    n, n_exits, k = n_samples, acc.size, n_classes
    kernel = correctness_transitions(acc, persistence)
    labels = rng.integers(k, size=n)
    uniform = rng.random((n, n_exits))
    noise = rng.standard_normal((n, n_exits))
    fresh_wrong = (labels[:, None] + 1 + rng.integers(k - 1, size=(n, n_exits))) % k
    keep_wrong = rng.random((n, n_exits)) < persistence

    correct = np.empty((n, n_exits), dtype=bool)
    z = np.empty((n, n_exits))
    prediction = np.empty((n, n_exits), dtype=np.int32)
    correct[:, 0] = uniform[:, 0] < acc[0]
    z[:, 0] = noise[:, 0]
    prediction[:, 0] = np.where(correct[:, 0], labels, fresh_wrong[:, 0])
    for j in range(1, n_exits):
        correct[:, j] = uniform[:, j] < kernel[j - 1][correct[:, j - 1].astype(np.intp)]
        z[:, j] = persistence * z[:, j - 1] + np.sqrt(1 - persistence**2) * noise[:, j]
        wrong = np.where(keep_wrong[:, j] & ~correct[:, j - 1], prediction[:, j - 1], fresh_wrong[:, j])
        prediction[:, j] = np.where(correct[:, j], labels, wrong)

    u = ndtr(z)
    spread = np.where(correct, betaincinv(*CORRECT_BETA, u), betaincinv(*WRONG_BETA, u))
    confidence = 1 / k + (1 - 1 / k) * spread
    rest = 1 - confidence
    return BehaviourTable(
        confidence=confidence,
        correct=correct,
        agrees=prediction == prediction[:, -1:],
        prediction=prediction,
        entropy=-xlogy(confidence, confidence) - xlogy(rest, rest / (k - 1)),
        exit_names=tuple(f"ramp{j}" for j in range(1, n_exits)) + ("final",),
        source=f"synthetic(n={n}, accuracy={acc.tolist()}, persistence={persistence}, classes={k})",
    )
