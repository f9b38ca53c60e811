"""Behaviour that drifts over time, so that a policy tuned once goes stale.

Apparate's argument for online tuning is that the inputs of a deployed model change: a
traffic camera's scenes (day, dusk, glare, rush hour) and a review stream's topics make
the early exits right more or less often, and sometimes *confidently* wrong. A
threshold tuned on the first data a deployment has (Apparate bootstraps on the first
10%) then breaks the accuracy budget later. A single :class:`~workloads.behaviour.BehaviourTable`
has no time, so this module adds one:

* a *regime* is a stationary table (one scene or topic kind), drawn by
  :func:`regime_table` from a :class:`Regime` (per-exit accuracies, persistence, and how
  often an early exit's disagreement wears a right answer's confidence);
* :class:`DriftingBehaviour` concatenates the regimes' rows, labels each row with its
  regime, and carries a *schedule*: ``(start_s, regime)`` pieces covering [0, inf);
  a request arriving at t draws a row of the regime active at t
  (:meth:`DriftingBehaviour.draw_samples`);
* :meth:`DriftingBehaviour.split_bootstrap` holds out rows of the first piece's regime,
  what a deployment has seen before going live, to fit static policies on;
* :func:`video_drift` (short scenes, easy and hard alternating) and :func:`topic_drift`
  (a few long topic segments, step changes) build the two kinds of stream;
* :class:`RecordedStream` is a real recording instead (:mod:`workloads.video`,
  :mod:`workloads.langid`): rows in capture order at a fixed rate, and a request meets
  the row live when it arrives (a camera's frame on screen).

Both have ``draw_samples`` and ``split_bootstrap``; the engine reads ``.table`` exactly as
it reads any behaviour table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from servesim.workloads.behaviour import _ARRAY_FIELDS, BehaviourTable, PathLike, load_table, save_table, synthetic
from servesim.workloads.profile import _atomic

STREAM_SUFFIX = ".stream.json"
REPLAYS = ("frames", "messages")  # how a recording's rows meet requests (RecordedStream)


@dataclass(frozen=True)
class Regime:
    """One stationary kind of input. ``accuracy`` (per exit, the last the final one) and
    ``persistence`` go to :func:`workloads.behaviour.synthetic`; ``confidently_wrong``
    in [0, 1] is the share of an early exit's disagreements with the final exit that
    carry the confidence (and entropy) of a right answer instead of a wrong one's: a
    ramp that is wrong *and sure*, which no threshold tuned elsewhere anticipates."""

    name: str
    accuracy: tuple[float, ...]
    persistence: float
    confidently_wrong: float = 0.0


def regime_table(regime: Regime, n_samples: int, n_classes: int, rng: np.random.Generator) -> BehaviourTable:
    """``n_samples`` rows of ``regime``: a synthetic table whose chosen disagreements take
    their confidence and entropy from a second synthetic table in which every exit is
    right, so both columns stay those of one softmax. Deterministic given ``rng``."""
    if not 0 <= regime.confidently_wrong <= 1:
        raise ValueError(f"regime {regime.name!r}: confidently_wrong must be in [0, 1], got "
                         f"{regime.confidently_wrong!r}")
    table = synthetic(n_samples, regime.accuracy, persistence=regime.persistence, n_classes=n_classes, rng=rng)
    arrays = {f: getattr(table, f) for f in _ARRAY_FIELDS}
    source = f"{regime.name}: {table.source}"
    if regime.confidently_wrong > 0:
        sure = synthetic(n_samples, np.ones(table.n_exits), persistence=regime.persistence,
                         n_classes=n_classes, rng=rng)
        swap = ~table.agrees & (rng.random(table.agrees.shape) < regime.confidently_wrong)
        swap[:, -1] = False  # the final exit agrees with itself: nothing to swap there
        arrays.update(confidence=np.where(swap, sure.confidence, table.confidence),
                      entropy=np.where(swap, sure.entropy, table.entropy))
        source += f", confidently_wrong={regime.confidently_wrong}"
    return BehaviourTable(**arrays, exit_names=table.exit_names, source=source)


@dataclass(frozen=True, eq=False)
class DriftingBehaviour:
    """Rows of K regimes in one table, and when each regime is live.

    ``table`` holds every row (of every regime); ``regime[i]`` is row i's regime, in
    [0, K) with K = ``len(regime_names)``; ``schedule`` is ``((start_s, regime), ...)``
    with starts strictly increasing from 0: piece p is live on [start_p, start_{p+1}),
    the last one forever. Every scheduled regime needs at least one row.
    """

    table: BehaviourTable
    regime: np.ndarray
    schedule: tuple[tuple[float, int], ...]
    regime_names: tuple[str, ...]

    def __post_init__(self) -> None:
        k = len(self.regime_names)
        regime = np.array(self.regime)
        if regime.shape != (self.table.n_samples,) or regime.dtype.kind not in "iu":
            raise ValueError(f"regime must be one integer per row ({self.table.n_samples}), got "
                             f"shape {regime.shape} dtype {regime.dtype}")
        if regime.size and not (0 <= regime.min() and regime.max() < k):
            raise ValueError(f"regime values must lie in [0, {k}) (one per name in regime_names)")
        schedule = tuple((float(start), int(r)) for start, r in self.schedule)
        starts = np.array([start for start, _ in schedule])
        live = np.array([r for _, r in schedule], dtype=np.int64)
        if not schedule or starts[0] != 0 or not (np.isfinite(starts).all() and (np.diff(starts) > 0).all()):
            raise ValueError(f"schedule must start at 0 with finite, strictly increasing starts, got {schedule!r}")
        counts = np.bincount(regime, minlength=k)
        empty = sorted({int(r) for r in live if not 0 <= r < k or counts[r] == 0})
        if empty:
            raise ValueError(f"schedule names regime(s) {empty} with no rows (known: 0..{k - 1} "
                             f"with counts {counts.tolist()})")
        regime.flags.writeable = False
        object.__setattr__(self, "regime", regime)
        object.__setattr__(self, "schedule", schedule)
        object.__setattr__(self, "regime_names", tuple(self.regime_names))
        # Rows grouped by regime: regime r's rows are _order[_offsets[r]:_offsets[r] + counts[r]].
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_live", live)
        object.__setattr__(self, "_order", np.argsort(regime, kind="stable"))
        object.__setattr__(self, "_counts", counts)
        object.__setattr__(self, "_offsets", np.concatenate([[0], np.cumsum(counts)[:-1]]))

    @classmethod
    def concat(cls, regimes: Sequence[BehaviourTable], schedule: Sequence[tuple[float, int]],
               regime_names: Sequence[str]) -> "DriftingBehaviour":
        """One table per regime (same exits), stacked in order; optional columns are kept
        only where every regime has them."""
        if len(regimes) != len(regime_names) or not regimes:
            raise ValueError(f"need one name per regime table, got {len(regimes)} tables and "
                             f"{len(regime_names)} names")
        names = {t.exit_names for t in regimes}
        if len(names) != 1:
            raise ValueError(f"regime tables must share their exits, got {sorted(names)}")
        columns = {f: None if any(getattr(t, f) is None for t in regimes)
                   else np.concatenate([getattr(t, f) for t in regimes]) for f in _ARRAY_FIELDS}
        table = BehaviourTable(**columns, exit_names=regimes[0].exit_names,
                               source=" | ".join(t.source for t in regimes))
        regime = np.repeat(np.arange(len(regimes)), [t.n_samples for t in regimes])
        return cls(table, regime, tuple(schedule), tuple(regime_names))

    @property
    def n_regimes(self) -> int:
        return len(self.regime_names)

    def regime_at(self, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """The regime live at each time (s, >= 0); a piece owns its start instant."""
        times = np.asarray(times, dtype=np.float64)
        if times.size and not (np.isfinite(times).all() and times.min() >= 0):
            raise ValueError("times must be finite and >= 0: the schedule covers [0, inf)")
        return self._live[np.searchsorted(self._starts, times, side="right") - 1]

    def rows_of(self, regime: int) -> np.ndarray:
        """Indices (ascending) of the rows of ``regime``."""
        start = self._offsets[regime]
        return self._order[start: start + self._counts[regime]]

    def draw_samples(self, arrival_times: Sequence[float] | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Row indices into ``table``, one per arrival: uniform (with replacement) over
        the rows of the regime live at that arrival. Deterministic given ``rng``."""
        live = self.regime_at(arrival_times)
        return self._order[self._offsets[live] + rng.integers(self._counts[live])].astype(np.int64)

    def split_bootstrap(self, fraction: float,
                        rng: np.random.Generator) -> tuple[BehaviourTable, "DriftingBehaviour"]:
        """``(bootstrap, rest)``: ``round(fraction * m)`` random rows of the first piece's
        regime (m rows), the only data a deployment has before it goes live, and this
        stream without them, so requests never meet a row a policy was fitted on."""
        first = self.rows_of(self._live[0])
        n_fit = round(fraction * first.size)
        if not 0 < n_fit < first.size:
            raise ValueError(f"bootstrap fraction {fraction!r} of the first regime's {first.size} rows "
                             f"leaves an empty part")
        held = np.zeros(self.table.n_samples, dtype=bool)
        held[rng.permutation(first)[:n_fit]] = True
        keep = np.flatnonzero(~held)
        rest = DriftingBehaviour(self.table.take(keep), self.regime[keep], self.schedule, self.regime_names)
        return self.table.take(np.flatnonzero(held)), rest


# Traffic-camera scenes, binary classification as in Apparate's videos; 3 ramps + final.
# "clear" is easy: the ramps agree with the final exit almost always and are sure when
# right. "dusk" is hard the plain way (the ramps are often wrong, and unsure when they
# are); "glare" is hard the treacherous way: most ramp disagreements look as sure as
# right answers, so a threshold that exits safely on clear scenes exits wrongly here.
VIDEO_REGIMES = (
    Regime("clear", (0.95, 0.97, 0.985, 0.99), persistence=0.8),
    Regime("dusk", (0.78, 0.86, 0.93, 0.97), persistence=0.6),
    Regime("glare", (0.88, 0.92, 0.96, 0.98), persistence=0.6, confidently_wrong=0.7),
)

# A review stream (sentiment, binary) whose topic moves away from the ramps' training
# domain: each later topic is less accurate and more often confidently wrong.
TOPIC_REGIMES = (
    Regime("in_domain", (0.85, 0.90, 0.94, 0.95), persistence=0.8),
    Regime("near", (0.75, 0.83, 0.89, 0.92), persistence=0.7, confidently_wrong=0.3),
    Regime("far", (0.70, 0.78, 0.86, 0.91), persistence=0.6, confidently_wrong=0.5),
)


def drifting(regimes: Sequence[Regime], schedule: Sequence[tuple[float, int]], *, samples_per_regime: int,
             n_classes: int, rng: np.random.Generator) -> DriftingBehaviour:
    """``samples_per_regime`` rows of each regime (drawn in order from ``rng``) under
    ``schedule``."""
    tables = [regime_table(r, samples_per_regime, n_classes, rng) for r in regimes]
    return DriftingBehaviour.concat(tables, schedule, [r.name for r in regimes])


def video_drift(rng: np.random.Generator, *, duration_s: float = 600.0, scene_s: float = 30.0,
                samples_per_regime: int = 5000, regimes: Sequence[Regime] = VIDEO_REGIMES,
                n_classes: int = 2) -> DriftingBehaviour:
    """A camera stream: scenes of exponential length (mean ``scene_s``) alternating
    between ``regimes[0]`` (easy, and the first scene: the bootstrap) and a hard one
    drawn uniformly from ``regimes[1:]``, scheduled until ``duration_s``; the scene live
    at ``duration_s`` lasts forever. Over a long stream half the time is easy and each
    hard regime gets an equal share of the rest."""
    return drifting(regimes, scene_schedule(rng, duration_s, scene_s, len(regimes)),
                    samples_per_regime=samples_per_regime, n_classes=n_classes, rng=rng)


def scene_schedule(rng: np.random.Generator, duration_s: float, scene_s: float,
                   n_regimes: int) -> list[tuple[float, int]]:
    """``(start_s, regime)`` scenes of exponential length (mean ``scene_s``) until
    ``duration_s``, alternating regime 0 (easy, first) and one drawn uniformly from
    1..``n_regimes`` - 1."""
    if not (duration_s > 0 and scene_s > 0) or n_regimes < 2:
        raise ValueError(f"need duration_s > 0, scene_s > 0 and at least two regimes, got "
                         f"{duration_s!r}, {scene_s!r} and {n_regimes}")
    ends = np.cumsum(rng.exponential(scene_s, size=1 + int(4 * duration_s / scene_s)))
    while ends[-1] < duration_s:  # rare: the first draw fell short of the horizon
        ends = np.concatenate([ends, ends[-1] + np.cumsum(rng.exponential(scene_s, size=ends.size))])
    starts = np.concatenate([[0.0], ends[ends < duration_s]])
    hard = rng.integers(1, n_regimes, size=starts.size)
    live = np.where(np.arange(starts.size) % 2 == 0, 0, hard)
    return list(zip(starts.tolist(), live.tolist()))


def topic_drift(rng: np.random.Generator, *, segment_s: float = 300.0, n_segments: int = 4,
                samples_per_regime: int = 5000, regimes: Sequence[Regime] = TOPIC_REGIMES,
                n_classes: int = 2) -> DriftingBehaviour:
    """A text stream: ``n_segments`` topic segments of ``segment_s`` seconds each, with
    step changes between them, cycling through ``regimes`` in order (the default four
    segments: in_domain, near, far, in_domain again, where a tuned-down policy should
    recover); the last segment lasts forever."""
    if not segment_s > 0 or n_segments < 1:
        raise ValueError(f"need segment_s > 0 and n_segments >= 1, got {segment_s!r} and {n_segments!r}")
    schedule = [(p * segment_s, p % len(regimes)) for p in range(n_segments)]
    return drifting(regimes, schedule, samples_per_regime=samples_per_regime, n_classes=n_classes, rng=rng)


class StreamError(ValueError):
    """A recorded stream's files disagree or are malformed; the message names the file."""


@dataclass(frozen=True, eq=False)
class RecordedStream:
    """Rows in capture order (a camera's frames, a text stream's messages): row i of
    ``table`` was captured at ``i / rate`` (``rate`` rows per second);
    ``schedule`` is ``((start_s, condition), ...)`` from 0, strictly increasing, naming
    ``condition_names`` by index: the scenes or topics (the rows carry the behaviour).

    ``replay`` says how requests meet rows. ``"frames"``: a camera, whose every request
    sees the frame on screen when it arrives (a burst sees one frame). ``"messages"``: a
    message stream, whose requests are the messages: those arriving in a scene take that
    scene's rows in order, one each (cycling if they outnumber them), whatever the
    request rate."""

    table: BehaviourTable
    rate: float
    schedule: tuple[tuple[float, int], ...]
    condition_names: tuple[str, ...]
    replay: str = "frames"

    def __post_init__(self) -> None:
        starts = [s for s, _ in self.schedule]
        if self.replay not in REPLAYS:
            raise StreamError(f"replay must be one of {REPLAYS}, got {self.replay!r}")
        if not (np.isfinite(self.rate) and self.rate > 0):
            raise StreamError(f"rate must be a positive number of rows per second, got {self.rate!r}")
        if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
            raise StreamError(f"scenes must start at 0 and strictly increase, got {starts[:5]!r}...")
        bad = [c for _, c in self.schedule if not 0 <= c < len(self.condition_names)]
        if bad:
            raise StreamError(f"scene condition {bad[0]!r} names none of {self.condition_names!r}")

    @property
    def duration_s(self) -> float:
        return self.table.n_samples / self.rate

    def draw_samples(self, arrival_times: Sequence[float] | np.ndarray,
                     rng: np.random.Generator | None = None) -> np.ndarray:
        """Each arrival's row, as ``replay`` says (``rng`` is unused: the stream is the
        randomness). Frames past the end of the recording loop to its start."""
        times = np.asarray(arrival_times, dtype=np.float64)
        if times.size and not (np.isfinite(times).all() and times.min() >= 0):
            raise ValueError("arrival times must be finite and >= 0")
        if self.replay == "frames":
            return np.floor(times * self.rate).astype(np.int64) % self.table.n_samples
        starts = np.array([s for s, _ in self.schedule])
        piece = np.searchsorted(starts, times, side="right") - 1
        first = np.minimum(np.ceil(starts * self.rate).astype(np.int64), self.table.n_samples - 1)
        ends = np.append(first[1:], self.table.n_samples)
        counts = np.maximum(ends - first, 1)
        # the k-th arrival of piece p (times are sorted) takes row first[p] + k mod count
        order = np.argsort(piece, kind="stable")
        rank = np.empty(times.size, dtype=np.int64)
        rank[order] = np.arange(times.size) - np.searchsorted(piece[order], piece[order], side="left")
        return first[piece] + rank % counts[piece]

    def split_bootstrap(self, fraction: float,
                        rng: np.random.Generator | None = None) -> tuple[BehaviourTable, "RecordedStream"]:
        """``(bootstrap, live)``: the first ``fraction`` of the first scene's rows, and
        the stream that starts right after them (its clock and scenes moved back)."""
        first_end = self.schedule[1][0] if len(self.schedule) > 1 else self.duration_s
        n_fit = round(fraction * first_end * self.rate)
        if not 0 < n_fit < self.table.n_samples:
            raise ValueError(f"bootstrap fraction {fraction!r} of the first scene ({first_end:.1f} s at "
                             f"{self.rate:g} rows/s) leaves an empty part")
        offset = n_fit / self.rate
        moved = [(max(0.0, s - offset), c) for s, c in self.schedule if s == 0 or s > offset]
        live = RecordedStream(self.table.take(np.arange(n_fit, self.table.n_samples)), self.rate,
                              tuple(moved), self.condition_names, self.replay)
        return self.table.take(np.arange(n_fit)), live


def accuracy_by_condition(stream: RecordedStream) -> dict[str, np.ndarray]:
    """Per-exit accuracy over the rows of each condition (frames, phrases)."""
    starts = np.array([s for s, _ in stream.schedule])
    times = np.arange(stream.table.n_samples) / stream.rate
    live = np.array([c for _, c in stream.schedule])[np.searchsorted(starts, times, side="right") - 1]
    return {name: stream.table.correct[live == c].mean(axis=0)
            for c, name in enumerate(stream.condition_names) if (live == c).any()}


def save_stream(stream: RecordedStream, path: PathLike) -> None:
    """The table at ``path`` (servesim's ``.npz``: it also loads as a plain table) and the
    scenes beside it (``<path>.stream.json``), each written atomically."""
    path = Path(path)
    save_table(stream.table, path)
    meta = {"rate": stream.rate, "replay": stream.replay, "conditions": list(stream.condition_names),
            "scenes": [[s, stream.condition_names[c]] for s, c in stream.schedule]}
    _atomic(_sidecar(path), lambda f: json.dump(meta, f, indent=0))


def load_stream(path: PathLike) -> RecordedStream:
    """A stream written by :func:`save_stream`; any problem names the file."""
    path = Path(path)
    table, sidecar = load_table(path), _sidecar(path)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        names = tuple(meta["conditions"])
        schedule = tuple((float(s), names.index(c)) for s, c in meta["scenes"])
        return RecordedStream(table, float(meta["rate"]), schedule, names, meta["replay"])
    except FileNotFoundError:
        raise StreamError(f"{sidecar}: missing (a recorded stream needs its scenes beside the table)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise StreamError(f"{sidecar}: not a recorded stream's scenes ({type(exc).__name__}: {exc})") from None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".npz") + STREAM_SUFFIX)
