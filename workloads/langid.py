"""A real text early-exit workload: language identification of short phrases by a small
byte-level transformer with a ramp after each of its first five layers, trained here on
one CPU core in about 3 minutes from the word lists the ``wordfreq`` package ships (no
download). Its held-out behaviour table ships as ``workloads/data/langid_ee.npz``
(``exits.behaviour: {kind: builtin, name: langid_ee}``) and its measured latencies as
``workloads/profiles/cpu_langid_ee.csv`` (``model: {profile: builtin:cpu_langid_ee}``,
``exits.ramps: {block1: ramp1, ..., block5: ramp5}``): the same weights produce both.

How it is built, and why:

* **Languages**: 12 Latin-script languages that share letters and many short words, so
  that the task is not trivial: en, de, nl, sv, da (Germanic), fr, es, pt, it, ro
  (Romance), pl, cs (West Slavic). Each has close neighbours (sv/da, es/pt/it, nl/de,
  pl/cs). Norwegian Bokmål is left out: written, it is nearly Danish, and the pair would
  cap the accuracy of any model rather than separate good exits from bad.
* **Phrases** (:func:`make_phrases`): 1-4 words (uniformly), drawn independently from
  the language's 5,000 most frequent letter words in wordfreq (numerals such as "1" are
  dropped: they are the same in every language) with wordfreq's frequencies as
  probabilities, joined by spaces (wordfreq's words are lowercase). Frequency weighting
  makes short phrases genuinely ambiguous: "de", "a", "i", "en", "la" are top words of
  several languages. Long phrases are easy. Since words are drawn independently given
  the language, naive Bayes on wordfreq's own probabilities is the Bayes-optimal
  classifier. On the held-out phrases it scores 0.922 (0.763, 0.949, 0.984 and 0.997 for
  1, 2, 3 and 4 words), the ceiling for any model. Encoding: UTF-8 bytes (vocabulary 256
  + a padding id), cut or padded to 32 (a phrase averages 11.7 bytes; 0.4% are cut).
* **Split, seed**: ``numpy.random.SeedSequence(0)`` spawns two streams: 240,000 training
  phrases and 4,800 held-out ones (the table's rows, exactly 400 per language, in random
  order). The training phrases are a stream seen once, not 24,000 seen many times: on
  24,000 phrases, 8 passes memorised them (0.91 training against 0.72 held-out
  accuracy), and fresh phrases in the same time give 0.78-0.79. Held-out phrases may
  repeat training ones, as real traffic repeats: 27% do, nearly all of them one- and
  two-word phrases (84% and 20% of those), which are the ambiguous ones.
* **Model** (:class:`LangIdEarlyExit`): a byte embedding plus learned positions, then 6
  post-norm ``nn.TransformerEncoderLayer`` (d 64, 4 heads, FFN 128, ReLU, no dropout,
  batch-first) that attend to real bytes only (key padding mask), 224 k parameters. The
  final head and every ramp are the same: the mean of the layer's output over the
  phrase's real bytes, then Linear(64, 12) and softmax. A stage maps one tensor to one
  tensor, as the profiler and an executor call it. So the trunk carries its padding mask
  as a 65th feature column (1 at a byte, 0 at padding). Stages: ``block1`` = embedding
  + layer 1, ``block2``-``block5`` = one layer each, ``block6`` = layer 6 + the final
  head; ``ramp1``-``ramp5`` after blocks 1-5.
* **Training** (:func:`train`): first the backbone with the final head, on its
  cross-entropy. One pass of Adam (lr 3e-3, batches of 32, linear warm-up over the first
  5% of the 7,500 steps, then linear decay to 0). Batches group phrases of similar length
  and are cut at their longest phrase, which is exact under the mask and halves the cost.
  Then, with the backbone frozen, each ramp is fitted as DeeBERT and Apparate do: a
  logistic regression on its layer's pooled output for the first 24,000 training
  phrases (the digits ramps' L-BFGS fit, :func:`workloads.digits_torch._train_ramp`).
  Tried and rejected:
  - Joint training (exit losses weighted 1..6) reached the same final accuracy (0.785
    against 0.791 in the same steps) and took 30% longer. Its ramps were 0.71-0.78, a
    flatter and less useful spread.
  - Sinusoid-initialised positions (0.73), batches of 64, a higher lr, pre-norm layers,
    8 heads and gradient clipping were no better.
  The final accuracy is still rising when the pass ends (about +0.01 per 750 steps).
  A longer pass would gain a little, but not within the 3-4 minute budget.
* **Determinism**: one thread, ``torch.use_deterministic_algorithms``, torch seeded by
  the recipe's seed (:func:`workloads.digits_torch._reproducible`). Two trainings on one
  machine are bitwise equal. Training is float32, not float64 as ``digits_torch`` is:
  float64 is 2.7x slower, which does not fit the budget. So a retraining on another
  CPU, whose kernels round differently, may differ from the shipped table in a few
  rows. The tests check determinism on a small recipe and the shipped table by its
  recorded figures.
* **Table** (:func:`behaviour_table`): the 4,800 held-out phrases, computed by the same
  stage and ramp calls the profiler times, row k = :func:`held_out_phrases` k.
  Confidence = max softmax, entropy in nats, prediction, correct vs the label, agrees
  vs the final exit.
* **Stream** (:func:`record_stream`, ``--stream``): the same model on 720 s of messages at
  20 per second whose topic moves every 150 s: in_domain (as trained), rare_words (words
  of frequency ranks 5,000-20,000, never seen in training), single_rare (one such word),
  in_domain again; shipped as ``workloads/data/langid_stream.npz`` with its topics
  beside it (``exits.behaviour: {kind: recording, name: langid_stream}``; requests take
  the current topic's messages in order). Accuracy per exit, ramp1 to final: in_domain
  0.669 / 0.731 / 0.770 / 0.770 / 0.777 / 0.782, rare_words 0.547 / 0.598 / 0.612 /
  0.630 / 0.633 / 0.629, single_rare 0.420 / 0.461 / 0.483 / 0.492 / 0.493 / 0.504.
* **Cache** (:func:`load_or_train`): the weights are kept where
  :mod:`workloads.digits_torch` keeps its own, keyed by the recipe, torch's version and
  this file's contents. ``main`` stores what it trains, so a profile run right after
  it times the very weights of the table.

Measured (seed 0; 194 s of training on one core of a 2-vCPU AMD EPYC guest, with another
job on the other vCPU), held-out accuracy / agreement with the final exit / mean
confidence:

======  ========  =======  ==========  ==============================
exit    accuracy  agrees   confidence  accuracy by words 1 / 2 / 3 / 4
======  ========  =======  ==========  ==============================
ramp1   0.6590    0.7331   0.637       0.523 / 0.625 / 0.721 / 0.776
ramp2   0.7231    0.8125   0.718       0.561 / 0.706 / 0.797 / 0.837
ramp3   0.7575    0.8833   0.770       0.591 / 0.749 / 0.831 / 0.867
ramp4   0.7692    0.9048   0.785       0.618 / 0.756 / 0.839 / 0.871
ramp5   0.7717    0.9256   0.789       0.625 / 0.759 / 0.838 / 0.873
final   0.7771    1.0000   0.774       0.629 / 0.753 / 0.855 / 0.880
======  ========  =======  ==========  ==============================

The exits are roughly calibrated (mean confidence within 0.02 of accuracy). At ramp1,
65% of phrases reach confidence 0.5, and 80% of those are right. 22% reach 0.9, and 96%
of those are right. 4.4% of phrases are right at ramp1 but wrong at the final head, and
86% are right at some exit. Most of the final head's errors are between neighbours
(da/sv, es/pt, fr/es, it/es).

    python -m servesim.workloads.langid --out workloads/data/langid_ee.npz
    python -m servesim.workloads.langid --stream    # workloads/data/langid_stream.npz, after the above
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from servesim.workloads.behaviour import BehaviourTable, from_probabilities, save_table
from servesim.workloads.drift import RecordedStream, accuracy_by_condition, save_stream
from servesim.workloads.digits_torch import _frozen, _reproducible, _train_ramp, cache_root, load_weights, save_weights

LANGUAGES = ("en", "de", "nl", "sv", "da", "fr", "es", "pt", "it", "ro", "pl", "cs")
TOP_WORDS = 5000
MAX_WORDS = 4
SEQ_LEN = 32
PAD = 256  # bytes are 0..255
VOCAB = 257
D_MODEL, HEADS, FFN, LAYERS = 64, 4, 128, 6
TRAIN_PHRASES, RAMP_PHRASES, TEST_PHRASES = 240_000, 24_000, 4_800
BATCH, LEARNING_RATE, WARMUP = 32, 3e-3, 0.05
BUCKET = 16  # batches per length bucket (see _batches)
SEED = 0
EXIT_NAMES = ("ramp1", "ramp2", "ramp3", "ramp4", "ramp5", "final")
SHIPPED_TABLE = Path(__file__).with_name("data") / "langid_ee.npz"


@dataclass(frozen=True)
class Phrases:
    """Phrases and their language labels (indices into ``languages``); ``words`` holds
    each phrase's word count."""

    texts: tuple[str, ...]
    labels: np.ndarray
    words: np.ndarray
    languages: tuple[str, ...] = LANGUAGES

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Recipe:
    """How much to train: the shipped model uses the defaults; tests shrink them."""

    train_phrases: int = TRAIN_PHRASES
    ramp_phrases: int = RAMP_PHRASES
    test_phrases: int = TEST_PHRASES
    seed: int = SEED


@functools.lru_cache(maxsize=None)
def vocabulary(language: str, top_n: int = TOP_WORDS) -> tuple[tuple[str, ...], np.ndarray]:
    """The ``top_n`` most frequent words of ``language`` in wordfreq's lists that contain
    letters only (apostrophes and hyphens allowed inside: ``aujourd'hui``), and their
    probabilities, proportional to wordfreq's frequencies. Numerals ("1", "2025") are
    left out: they are the same in every language, so no model could place them."""
    import wordfreq

    words = [w for w in wordfreq.top_n_list(language, top_n + 500)
             if w.replace("'", "").replace("-", "").isalpha()][:top_n]
    if len(words) < top_n:
        raise ValueError(f"wordfreq has only {len(words)} letter words for {language!r}, need {top_n}")
    freq = np.array([wordfreq.word_frequency(w, language) for w in words])
    return tuple(words), freq / freq.sum()


def make_phrases(n: int, rng: np.random.Generator, languages: Sequence[str] = LANGUAGES,
                 most_words: int = MAX_WORDS, ranks: tuple[int, int] = (0, TOP_WORDS)) -> Phrases:
    """``n`` phrases, balanced over ``languages`` (counts differ by at most one), in a
    random order: each of 1..``most_words`` words (uniformly), drawn independently by
    frequency from its language's words of frequency ranks ``ranks`` (default: the
    :func:`vocabulary` trained on), joined by single spaces (wordfreq's words are
    already lowercase). Deterministic given ``rng``'s state."""
    languages = tuple(languages)
    labels = rng.permutation(np.arange(n) % len(languages))
    words = rng.integers(1, most_words + 1, size=n)
    texts: list[str] = [""] * n
    for k, language in enumerate(languages):
        rows = np.flatnonzero(labels == k)
        vocab, p = vocabulary(language, ranks[1])
        vocab, p = vocab[ranks[0]:], p[ranks[0]:] / p[ranks[0]:].sum()
        drawn = rng.choice(len(vocab), size=int(words[rows].sum()), p=p)
        ends = np.cumsum(words[rows])
        for row, end, count in zip(rows, ends, words[rows]):
            texts[row] = " ".join(vocab[i] for i in drawn[end - count:end])
    return Phrases(tuple(texts), labels.astype(np.int64), words.astype(np.int64), languages)


def training_phrases(recipe: Recipe = Recipe()) -> Phrases:
    """The recipe's training phrases: the first of two independent streams of its seed."""
    return make_phrases(recipe.train_phrases, np.random.default_rng(np.random.SeedSequence(recipe.seed).spawn(2)[0]))


def held_out_phrases(recipe: Recipe = Recipe()) -> Phrases:
    """The recipe's held-out phrases (the behaviour table's rows): the second stream."""
    return make_phrases(recipe.test_phrases, np.random.default_rng(np.random.SeedSequence(recipe.seed).spawn(2)[1]))


def encode(texts: Sequence[str], seq_len: int = SEQ_LEN) -> np.ndarray:
    """UTF-8 bytes of each text, cut at ``seq_len`` and padded with :data:`PAD`: (n, seq_len) int64."""
    out = np.full((len(texts), seq_len), PAD, dtype=np.int64)
    for i, text in enumerate(texts):
        raw = text.encode("utf-8")[:seq_len]
        out[i, :len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


# --- the network ----------------------------------------------------------------------
#
# Every stage maps one tensor to one tensor (what the profiler times and the executor
# chains): the trunk is (b, SEQ_LEN, D_MODEL + 1), the features and, in the last
# column, 1.0 at a real byte and 0.0 at padding, so each layer can mask attention and
# each head can pool over the phrase's own bytes without a second input.

class ByteEmbedding(nn.Module):
    """Byte ids (b, L) -> trunk: byte embedding + learned position, plus the keep column."""

    def __init__(self) -> None:
        super().__init__()
        self.byte = nn.Embedding(VOCAB, D_MODEL, padding_idx=PAD)
        self.position = nn.Embedding(SEQ_LEN, D_MODEL)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.byte(ids) + self.position.weight[: ids.shape[1]]
        return torch.cat((x, (ids != PAD).unsqueeze(-1).to(x.dtype)), -1)


class MaskedLayer(nn.Module):
    """One post-norm ``nn.TransformerEncoderLayer`` (ReLU), attending to real bytes only."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FFN, dropout=dropout, batch_first=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        keep = h[..., -1:]
        y = self.layer(h[..., :-1], src_key_padding_mask=keep.squeeze(-1) == 0)
        return torch.cat((y, keep), -1)


class MaskedMeanPool(nn.Module):
    """Trunk (b, L, d + 1) -> mean of the features over real bytes (b, d)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        keep = h[..., -1:]
        return torch.where(keep > 0, h[..., :-1], 0).sum(1) / keep.sum(1)


def pooled_head(classes: int) -> nn.Sequential:
    """Masked mean-pool, Linear(d, classes), softmax: every exit's head, ramps and final."""
    return nn.Sequential(MaskedMeanPool(), nn.Linear(D_MODEL, classes), nn.Softmax(dim=1))


class LangIdEarlyExit(nn.Module):
    """``stages`` (block1..block6) chained on byte ids (b, SEQ_LEN); ``ramps[i]`` reads
    ``stages[i]``'s trunk (i = 0..4). Ramps and block6 end in a softmax: their outputs
    are language probabilities (b, classes)."""

    def __init__(self, classes: int = len(LANGUAGES), dropout: float = 0.0) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [nn.Sequential(ByteEmbedding(), MaskedLayer(dropout))]
            + [nn.Sequential(MaskedLayer(dropout)) for _ in range(LAYERS - 2)]
            + [nn.Sequential(MaskedLayer(dropout), *pooled_head(classes))]
        )
        self.ramps = nn.ModuleList(pooled_head(classes) for _ in range(LAYERS - 1))

    @torch.inference_mode()
    def exit_probabilities(self, ids: np.ndarray, batch: int = 256) -> np.ndarray:
        """Softmax of every exit for byte ids (n, SEQ_LEN): (n, exits, classes) float32,
        by the stage and ramp calls an executor makes, ``batch`` rows at a time."""
        out = []
        for start in range(0, len(ids), batch):
            x, exits = torch.from_numpy(np.ascontiguousarray(ids[start:start + batch])), []
            for i, stage in enumerate(self.stages):
                x = stage(x)
                exits.append(self.ramps[i](x) if i < len(self.ramps) else x)
            out.append(torch.stack(exits, 1).numpy())
        return np.concatenate(out)


# --- training -------------------------------------------------------------------------

def _batches(lengths: np.ndarray, generator: torch.Generator) -> list[np.ndarray]:
    """One pass's batches: a random order, cut into buckets of BUCKET batches, each
    bucket sorted by phrase length (stably) and cut into batches, the batches shuffled.
    Like lengths share a batch, so a batch is cut at its longest phrase and training
    costs about half what full-length batches would; masking makes the cut exact."""
    order = torch.randperm(len(lengths), generator=generator).numpy()
    batches = []
    for start in range(0, len(order), BATCH * BUCKET):
        bucket = order[start:start + BATCH * BUCKET]
        bucket = bucket[np.argsort(lengths[bucket], kind="stable")]
        batches += [bucket[i:i + BATCH] for i in range(0, len(bucket), BATCH)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _train_backbone(model: LangIdEarlyExit, ids: np.ndarray, y: torch.Tensor, generator: torch.Generator) -> None:
    """The six layers and the final head on the final head's cross-entropy: one pass of
    Adam, the learning rate warmed up linearly over the first WARMUP of the steps, then
    decayed linearly to 0."""
    *hidden, last = model.stages
    trunk = nn.Sequential(*hidden, last[:-1])  # without the softmax: cross-entropy takes logits
    lengths = (ids != PAD).sum(1)
    batches = _batches(lengths, generator)
    warmup = max(1, round(WARMUP * len(batches)))
    optimiser = torch.optim.Adam(trunk.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warmup, 1.0) * (1 - step / len(batches)))
    trunk.train()
    for rows in batches:
        x = torch.from_numpy(ids[rows, : lengths[rows].max()])
        optimiser.zero_grad()
        nn.functional.cross_entropy(trunk(x), y[rows]).backward()
        optimiser.step()
        schedule.step()
    trunk.eval()


@torch.no_grad()
def _pooled_features(model: LangIdEarlyExit, ids: np.ndarray, batch: int = 1024) -> list[torch.Tensor]:
    """Each ramp's input, pooled: the masked mean of layers 1-5's outputs, (n, d) each."""
    pooled: list[list[torch.Tensor]] = [[] for _ in model.ramps]
    for start in range(0, len(ids), batch):
        h = torch.from_numpy(ids[start:start + batch])
        for i, ramp in enumerate(model.ramps):
            h = model.stages[i](h)
            pooled[i].append(ramp[0](h))
    return [torch.cat(p) for p in pooled]


def train(recipe: Recipe = Recipe()) -> tuple[LangIdEarlyExit, Phrases, Phrases]:
    """Make the phrases; train the backbone and final head; then, with them frozen, each
    ramp on its layer's pooled output for the first ``ramp_phrases`` training phrases.
    Deterministic given ``recipe``."""
    train_set, test_set = training_phrases(recipe), held_out_phrases(recipe)
    ids, y = encode(train_set.texts), torch.from_numpy(train_set.labels)
    with _reproducible(recipe.seed):
        model = LangIdEarlyExit()
        _train_backbone(model, ids, y, torch.Generator().manual_seed(recipe.seed))
        model.eval()
        n = recipe.ramp_phrases
        for ramp, pooled in zip(model.ramps, _pooled_features(model, ids[:n])):
            # A one-position trunk [pooled, keep = 1] pools to ``pooled`` itself, so the
            # digits ramps' logistic regression fits as is.
            _train_ramp(ramp, torch.cat((pooled, torch.ones(len(pooled), 1)), 1).unsqueeze(1), y[:n])
    return _frozen(model), train_set, test_set


def behaviour_table(model: LangIdEarlyExit, phrases: Phrases, source: str) -> BehaviourTable:
    """Per-phrase behaviour of every exit, row k = phrase k of ``phrases``."""
    return from_probabilities(model.exit_probabilities(encode(phrases.texts)), phrases.labels, EXIT_NAMES, source)


def build(recipe: Recipe = Recipe()) -> tuple[LangIdEarlyExit, Phrases, Phrases, BehaviourTable]:
    """Train, and tabulate the held-out phrases: everything the shipped table comes from."""
    model, train_set, test_set = train(recipe)
    source = (f"langid_ee: {len(test_set)} held-out phrases (seed {recipe.seed}; trained on "
              f"{len(train_set)}, ramps on {recipe.ramp_phrases})")
    return model, train_set, test_set, behaviour_table(model, test_set, source)


# --- a drifting stream ------------------------------------------------------------------
#
# What a deployed language identifier meets is not its training distribution for long:
# a stream of messages whose topic moves to rarer words (names, jargon) and to one-word
# messages. Each topic is a phrase distribution; the stream is topic segments in turn,
# recorded at STREAM_RATE phrases per second with the model's own exits on each.

TOPICS = {  # name: (most words per phrase, frequency ranks of the words)
    "in_domain": (MAX_WORDS, (0, TOP_WORDS)),      # as trained
    "rare_words": (MAX_WORDS, (TOP_WORDS, 20_000)),  # words the model never saw
    "single_rare": (1, (TOP_WORDS, 20_000)),        # one unseen word: the hardest
}
STREAM_TOPICS = ("in_domain", "rare_words", "single_rare", "in_domain")
STREAM_SEGMENT_S = 150.0
STREAM_RATE = 20.0       # phrases per second
STREAM_DURATION_S = 720.0  # the four segments, the last one held on past 600 s
SHIPPED_STREAM = SHIPPED_TABLE.with_name("langid_stream.npz")


def record_stream(model: LangIdEarlyExit, seed: int = SEED) -> RecordedStream:
    """The topic stream, phrase by phrase: segment p of :data:`STREAM_SEGMENT_S` seconds
    draws its phrases from topic ``STREAM_TOPICS[p]`` (the last lasts to the end)."""
    names = tuple(TOPICS)
    schedule = [(p * STREAM_SEGMENT_S, names.index(topic)) for p, topic in enumerate(STREAM_TOPICS)]
    n = int(STREAM_DURATION_S * STREAM_RATE)
    segment = np.minimum((np.arange(n) / STREAM_RATE // STREAM_SEGMENT_S).astype(np.int64), len(schedule) - 1)
    rng = np.random.default_rng([seed, 2])
    texts, labels = [""] * n, np.empty(n, dtype=np.int64)
    for p, (_, topic) in enumerate(schedule):
        rows = np.flatnonzero(segment == p)
        most, ranks = TOPICS[names[topic]]
        phrases = make_phrases(rows.size, rng, most_words=most, ranks=ranks)
        for row, text in zip(rows, phrases.texts):
            texts[row] = text
        labels[rows] = phrases.labels
    stream = Phrases(tuple(texts), labels, np.array([t.count(" ") + 1 for t in texts]))
    table = behaviour_table(model, stream, f"langid_stream: {STREAM_DURATION_S:g} s at {STREAM_RATE:g} phrases/s, "
                                           f"topics {' > '.join(STREAM_TOPICS)} (seed {seed})")
    return RecordedStream(table, STREAM_RATE, tuple(schedule), names, replay="messages")


# --- weight cache ---------------------------------------------------------------------

def cache_path(recipe: Recipe = Recipe(), cache_dir: Optional[os.PathLike] = None) -> Path:
    """Where :func:`load_or_train` keeps the weights (the folder of
    :func:`workloads.digits_torch.cache_root`), keyed by the recipe, torch's version and
    this file's contents."""
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    key = f"seed{recipe.seed}-{recipe.train_phrases}-{recipe.ramp_phrases}-{recipe.test_phrases}"
    return cache_root(cache_dir) / f"langid_ee-{key}-torch{torch.__version__}-{code}.pt"


def load_or_train(recipe: Recipe = Recipe(), cache_dir: Optional[os.PathLike] = None
                  ) -> tuple[LangIdEarlyExit, Phrases]:
    """The trained model and its held-out phrases, from the cache when a readable entry
    exists, else trained (minutes) and cached atomically. Same weights either way."""
    model = load_weights(cache_path(recipe, cache_dir), LangIdEarlyExit)
    if model is not None:
        return model, held_out_phrases(recipe)
    model, _, test_set = train(recipe)
    store(model, recipe, cache_dir)
    return model, test_set


def store(model: LangIdEarlyExit, recipe: Recipe = Recipe(), cache_dir: Optional[os.PathLike] = None) -> Path:
    """Write ``model``'s weights to :func:`cache_path` (atomically) and return the path."""
    return save_weights(model, cache_path(recipe, cache_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="behaviour table (.npz) to write (default: workloads/data/langid_ee.npz, "
                                      "or langid_stream.npz with --stream)")
    parser.add_argument("--stream", action="store_true",
                        help="record the drifting topic stream with the cached (or newly trained) model instead")
    args = parser.parse_args(argv)
    if args.stream:
        return _record(args.out or str(SHIPPED_STREAM))
    args.out = args.out or str(SHIPPED_TABLE)
    started = time.perf_counter()
    model, train_set, test_set, table = build()
    seconds = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_table(table, args.out)
    cached = store(model)  # so the profiler (torch_models "langid_ee") times these very weights
    print(f"trained on {len(train_set)} phrases in {seconds:.1f} s (1 thread); "
          f"wrote {args.out} ({table.n_samples} held-out phrases) and {cached}")
    for j, (name, acc, agree, conf) in enumerate(zip(table.exit_names, table.accuracy(), table.agrees.mean(axis=0),
                                                     table.confidence.mean(axis=0))):
        by_words = " ".join(f"{table.correct[test_set.words == k, j].mean():.3f}" for k in range(1, MAX_WORDS + 1))
        print(f"  {name:6s} accuracy {acc:.4f}  agrees with final {agree:.4f}  mean confidence {conf:.3f}"
              f"  | by words 1-{MAX_WORDS}: {by_words}")
    return 0


def _record(out: str) -> int:
    started = time.perf_counter()
    model, _ = load_or_train()
    stream = record_stream(model)
    save_stream(stream, out)
    print(f"recorded {stream.table.n_samples} phrases in {time.perf_counter() - started:.1f} s; wrote {out}")
    for name, accuracy in accuracy_by_condition(stream).items():
        print(f"  {name:11s} accuracy per exit " + " ".join(f"{a:.3f}" for a in accuracy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
