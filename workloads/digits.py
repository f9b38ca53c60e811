"""Real early-exit networks for the simulator: a 4-block MLP with a ramp after each of the
first three blocks, trained on a dataset that installs with the project (no download):

* ``digits``: scikit-learn's bundled digits (1,797 8x8 images, 10 classes), split in
  stratified halves. Table ``workloads/data/digits_ee.npz``, profile
  ``workloads/profiles/cpu_digits_ee.csv``: the same weights produce both.
* ``mnist1d``: MNIST-1D (Greydanus, 2020), 10 classes of 40-sample 1-D signals that its
  package generates offline from templates (padding, scaling, shear, shift and noise):
  the package's own 4,000 / 1,000 split of its default dataset (generator seed 42).
  Harder for an MLP than digits (the paper's MLP reaches about 0.68), so difficulty
  spreads wider across exits: held-out accuracy 0.404, 0.501, 0.646 for ramp1-3 and
  0.700 for the final head, which is overconfident (mean confidence 0.91). Table
  ``workloads/data/mnist1d_ee.npz``, profile ``workloads/profiles/cpu_mnist1d_ee.csv``.

How it is built, and why:

* **Backbone**: ``MLPClassifier`` with 4 hidden layers of 512 ReLU units (standardised
  inputs, adam, fixed seed), trained on a stratified half of the data. 512 units make a
  block a real matrix product worth profiling (0.26 M weights) while training stays at
  a few seconds on one core.
* **Ramps**, as Apparate trains them: after the backbone, with it frozen, one
  ``LogisticRegression`` per hidden layer 1-3 on that layer's activations of the
  training half, **average-pooled** in groups of 16 units (512 -> 32 features), like
  Apparate's CV ramps (AdaptiveAvgPool -> Linear). Pooling keeps ramps cheap and makes
  early exits weaker than the final head, as in real early-exit networks; full-width
  linear ramps on digits were as accurate as the final head (0.977 vs 0.973), which
  would make every exit policy trivially free.
* **Export**: the scaler is folded into the first layer and the pooling into each ramp's
  weights, so the network is a plain chain of float32 dense layers on raw pixels:
  ``block1..block4`` (dense + ReLU; block4 adds the output layer + softmax) and
  ``ramp1..ramp3`` (dense + softmax on the block's output). :meth:`EarlyExitMLP.stages`
  is what the profiler times, and the table is computed by running those same stages.
* **Table**: from the held-out half only (899 samples): confidence = max softmax,
  entropy in nats, prediction, correct vs the label, agrees vs the final exit.
  Held-out accuracy is 0.871, 0.940, 0.964 for ramp1-3 and 0.973 for the final head.
  The ramps (sklearn's default L2 penalty on small pooled activations) are
  underconfident: mean confidence 0.49, 0.66, 0.81, against 0.985 for the final head.
  So one threshold for all exits is a poor rule here, and per-exit tuning matters.

The same recipe serves both datasets, so their fronts differ by data alone. Training runs
under ``threadpool_limits(1)``, so it is deterministic and its time is a one-core time
whatever the machine (digits about 4 s, mnist1d about 15 s).

    python -m servesim.workloads.digits --out workloads/data/digits_ee.npz
    python -m servesim.workloads.digits --dataset mnist1d --out workloads/data/mnist1d_ee.npz
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from servesim.workloads.behaviour import BehaviourTable, from_probabilities, save_table

HIDDEN = 512
N_BLOCKS = 4
POOL = 16
TRAIN_FRACTION = 0.5
SEED = 0
EXIT_NAMES = ("ramp1", "ramp2", "ramp3", "final")
DATA_DIR = Path(__file__).with_name("data")
SHIPPED_TABLE = DATA_DIR / "digits_ee.npz"

Dense = tuple[np.ndarray, np.ndarray]  # (W of shape (d_in, d_out), b of shape (d_out,))


class Stage(NamedTuple):
    """One timed piece of the network: ``run(x) -> y``; ``trunk`` says whether ``y`` feeds
    the next stage (a block) or is an exit's softmax (a ramp, or block4)."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    trunk: bool


@dataclass(frozen=True)
class DigitsSplit:
    """A dataset's training and held-out parts: inputs (one row each) and labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class EarlyExitMLP:
    """The exported network, float32. ``backbone``: 4 hidden layers then the output layer
    (the first takes raw pixels: the scaler is folded in); ``ramps``: one head per hidden
    layer 1-3 (the pooling is folded in)."""

    backbone: tuple[Dense, ...]
    ramps: tuple[Dense, ...]

    def stages(self) -> tuple[Stage, ...]:
        """block1, ramp1, block2, ramp2, block3, ramp3, block4: the order a request meets them."""
        *hidden, output = self.backbone
        stages = []
        for i, (layer, ramp) in enumerate(zip(hidden[:-1], self.ramps), 1):
            stages += [Stage(f"block{i}", _dense_relu(*layer), True), Stage(f"ramp{i}", _dense_softmax(*ramp), False)]
        relu, head = _dense_relu(*hidden[-1]), _dense_softmax(*output)
        stages.append(Stage(f"block{len(hidden)}", lambda x: head(relu(x)), False))
        return tuple(stages)

    def exit_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax of every exit for raw ``pixels`` (n, 64), shape (n, exits, classes),
        computed by running :meth:`stages` in order."""
        x, exits = np.asarray(pixels, dtype=np.float32), []
        for stage in self.stages():
            y = stage.run(x)
            if stage.trunk:
                x = y
            else:
                exits.append(y)
        return np.stack(exits, axis=1)


def _dense_relu(w: np.ndarray, b: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        h = x @ w
        h += b
        return np.maximum(h, 0, out=h)

    return run


def _dense_softmax(w: np.ndarray, b: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        z = x @ w
        z += b
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    return run


def fold_scaler(w: np.ndarray, b: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> Dense:
    """The dense layer on raw x equal to (w, b) on (x - mean) / scale."""
    folded = w / scale[:, None]
    return folded, b - mean @ folded


def fold_pooling(coef: np.ndarray, intercept: np.ndarray, pool: int) -> Dense:
    """The dense layer on full activations equal to a linear head (``coef`` of shape
    (classes, groups), as sklearn stores it) on their means over ``pool`` consecutive
    units: unit k gets the weight of its group k // pool, divided by pool."""
    return np.repeat(coef.T, pool, axis=0) / pool, intercept


def split_digits(seed: int = SEED) -> DigitsSplit:
    """The stratified halves of ``load_digits()``, shuffled by ``seed``."""
    x, y = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, train_size=TRAIN_FRACTION, stratify=y, random_state=seed
    )
    return DigitsSplit(train_x, train_y, test_x, test_y)


def split_mnist1d(seed: int = SEED) -> DigitsSplit:
    """MNIST-1D's default dataset and split, as its package generates it (4,000 / 1,000).

    The package seeds numpy's and ``random``'s global generators with its own seed (42),
    so the data is the canonical one whatever ``seed`` is (``seed`` only trains); both
    generators are restored after, so nothing else in the process sees the change.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # the `real` extra

    numpy_state, random_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(random_state)
    return DigitsSplit(data["x"], data["y"], data["x_test"], data["y_test"])


DATASETS: dict[str, Callable[[int], DigitsSplit]] = {"digits": split_digits, "mnist1d": split_mnist1d}


def train(split: DigitsSplit, seed: int = SEED) -> EarlyExitMLP:
    """Train the backbone, then the ramps on its frozen activations (training half only)."""
    with threadpool_limits(limits=1):
        scaler = StandardScaler().fit(split.train_x)
        mlp = MLPClassifier((HIDDEN,) * N_BLOCKS, random_state=seed).fit(scaler.transform(split.train_x), split.train_y)
        first = fold_scaler(mlp.coefs_[0], mlp.intercepts_[0], scaler.mean_, scaler.scale_)
        layers = [first, *zip(mlp.coefs_[1:], mlp.intercepts_[1:])]
        backbone = tuple((w.astype(np.float32), b.astype(np.float32)) for w, b in layers)
        h, ramps = split.train_x.astype(np.float32), []
        for w, b in backbone[: N_BLOCKS - 1]:
            h = _dense_relu(w, b)(h)
            pooled = h.reshape(len(h), -1, POOL).mean(axis=2, dtype=np.float64)
            head = LogisticRegression(max_iter=2000).fit(pooled, split.train_y)
            w_ramp, b_ramp = fold_pooling(head.coef_, head.intercept_, POOL)
            ramps.append((w_ramp.astype(np.float32), b_ramp.astype(np.float32)))
    return EarlyExitMLP(backbone, tuple(ramps))


def behaviour_table(net: EarlyExitMLP, pixels: np.ndarray, labels: np.ndarray, source: str) -> BehaviourTable:
    """Per-sample behaviour of every exit of ``net`` on ``pixels`` with true ``labels``."""
    return from_probabilities(net.exit_probabilities(pixels), labels, EXIT_NAMES, source)


def build(seed: int = SEED, dataset: str = "digits") -> tuple[EarlyExitMLP, DigitsSplit, BehaviourTable]:
    """Split ``dataset`` (a key of :data:`DATASETS`), train, and tabulate the held-out
    part: everything the shipped files come from."""
    split = DATASETS[dataset](seed)
    net = train(split, seed)
    table = behaviour_table(net, split.test_x, split.test_y, f"{dataset}_ee held-out part (seed {seed})")
    return net, split, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits", help="data to train on")
    parser.add_argument("--out", help="behaviour table (.npz) to write (default: workloads/data/<dataset>_ee.npz)")
    args = parser.parse_args(argv)
    out = args.out or str(DATA_DIR / f"{args.dataset}_ee.npz")
    started = time.perf_counter()
    net, split, table = build(dataset=args.dataset)
    seconds = time.perf_counter() - started
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_table(table, out)
    print(f"trained on {len(split.train_y)} {args.dataset} samples in {seconds:.1f} s (1 thread); "
          f"wrote {out} ({table.n_samples} held-out samples)")
    print("backbone:", ", ".join(f"{w.shape[0]}>{w.shape[1]}" for w, _ in net.backbone),
          "| ramps:", ", ".join(f"{w.shape[0]}>{w.shape[1]}" for w, _ in net.ramps))
    for name, acc, agree in zip(table.exit_names, table.accuracy(), table.agrees.mean(axis=0)):
        print(f"  {name:6s} accuracy {acc:.4f}  agrees with final {agree:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
