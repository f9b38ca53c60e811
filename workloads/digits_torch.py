"""The digits early-exit network in PyTorch: the model the real-hardware executor runs.

:mod:`workloads.digits` ships a numpy network whose behaviour table and profile come from
the same weights; this is its twin in torch, so a real executor (``sim/real.py``) can
serve it stage by stage while the simulator replays its table, and the two can be
compared request by request. Same data, split and shape as :mod:`workloads.digits`:
64 > 512 > 512 > 512 > 512 > 10 (ReLU), ramps after blocks 1-3 that average-pool the
512 activations in groups of 16 and apply one linear layer (Apparate's CV ramp), so the
early exits are weaker than the final head.

How it is built, and why:

* **Stages** (:class:`DigitsEarlyExit`): ``block1`` standardises raw pixels with the
  training half's mean and scale (buffers, so the executor feeds raw pixels and no
  weight is rewritten after training), then dense + ReLU; ``block2``/``block3`` dense +
  ReLU; ``block4`` dense + ReLU + the output layer + softmax. Each ramp ends in a
  softmax too: every module the profiler times is exactly what the executor calls.
* **Training** (:func:`train`): the backbone with Adam (lr 1e-3, batches of 64, 20
  epochs; the training loss is about 1e-6 by then) on the final head's cross-entropy; then,
  with it frozen, each ramp on its block's pooled activations of the training half
  (Apparate's recipe), full-batch L-BFGS with the L2 penalty of scikit-learn's
  ``LogisticRegression(C=1)``, as :mod:`workloads.digits` uses. Training runs in
  float64 on one thread with deterministic algorithms and a fixed seed, then the
  weights are cast to float32. float64 is for reproducing the shipped table on other
  CPUs, whose kernels round differently: 300 Adam steps amplify rounding. Changing
  the kernels' reduction order (2 threads instead of 1) moved the float32 weights by
  at most 3e-6 and the table's confidences by 7e-7 (another CPU, an AMD EPYC: 1.4e-6);
  trained in float32, by 3e-3 and 7e-4. On one machine, two trainings are bitwise equal.
* **Table** (:func:`behaviour_table`): the held-out half (899 digits), computed by the
  same ``forward_stage``/``ramp_output`` calls the executor makes, row k = input k of
  :func:`held_out_inputs`. In batches of any size the executor sees the same
  predictions and confidences within 1e-6 (measured at batch 1, 3, 7, 64).
* **Cache** (:func:`load_or_train`): training takes ~6 s, so the weights are kept in a
  cache directory outside the repository, keyed by seed, torch version and this file's
  contents (an edit to the recipe retrains).

Measured (seed 0, 6 s of training): held-out accuracy 0.912, 0.961, 0.963 for ramp1-3
and 0.970 for the final head; mean confidence 0.61, 0.78, 0.88 against 0.99.

    python -m servesim.workloads.digits_torch --out workloads/data/digits_torch_ee.npz
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from servesim.workloads.behaviour import BehaviourTable, save_table
from servesim.workloads.digits import HIDDEN, N_BLOCKS, POOL, SEED, DigitsSplit, behaviour_table as _table_of, split_digits

FEATURES, CLASSES = 64, 10
EPOCHS, BATCH, LEARNING_RATE = 20, 64, 1e-3
SHIPPED_TABLE = Path(__file__).with_name("data") / "digits_torch_ee.npz"
CACHE_ENV = "SERVESIM_CACHE_DIR"


class Standardise(nn.Module):
    """``(x - mean) / scale`` with the training half's statistics, kept as buffers so
    they travel in the state dict and raw pixels go in."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class GroupMean(nn.Module):
    """Average of each run of ``pool`` consecutive units: (b, d) -> (b, d // pool), the
    dense-layer analogue of Apparate's global average pool."""

    def __init__(self, pool: int) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (-1, self.pool)).mean(dim=2)


def _dense_relu(d_in: int) -> list[nn.Module]:
    return [nn.Linear(d_in, HIDDEN), nn.ReLU()]


class DigitsEarlyExit(nn.Module):
    """``stages`` (block1..block4) chained on raw pixels (b, 64); ``ramps[i]`` reads
    ``stages[i]``'s output (i = 0..2). Ramps and block4 end in a softmax: their outputs
    are class probabilities (b, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [nn.Sequential(Standardise(FEATURES), *_dense_relu(FEATURES))]
            + [nn.Sequential(*_dense_relu(HIDDEN)) for _ in range(N_BLOCKS - 2)]
            + [nn.Sequential(*_dense_relu(HIDDEN), nn.Linear(HIDDEN, CLASSES), nn.Softmax(dim=1))]
        )
        self.ramps = nn.ModuleList(
            nn.Sequential(GroupMean(POOL), nn.Linear(HIDDEN // POOL, CLASSES), nn.Softmax(dim=1))
            for _ in range(N_BLOCKS - 1)
        )

    def exit_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax of every exit for raw ``pixels`` (n, 64): (n, exits, classes), by the
        executor's own calls, stage by stage (also what :func:`workloads.digits.behaviour_table`
        reads)."""
        x, exits = torch.from_numpy(np.asarray(pixels, dtype=np.float32)), []
        for i in range(len(self.stages)):
            x = forward_stage(self, i, x)
            exits.append(ramp_output(self, i, x) if i < len(self.ramps) else final_probabilities(x))
        return np.stack(exits, axis=1)


@torch.inference_mode()
def forward_stage(model: DigitsEarlyExit, i: int, x: torch.Tensor) -> torch.Tensor:
    """Stage ``i`` (0-based: block1 is 0) on the previous stage's output (raw pixels for
    block1): activations (b, 512), or for block4 the final probabilities (b, 10)."""
    return model.stages[i](x)


@torch.inference_mode()
def ramp_output(model: DigitsEarlyExit, i: int, h: torch.Tensor) -> np.ndarray:
    """Class probabilities (b, 10), float32 numpy, of ramp ``i`` (0-based) on the output
    ``h`` of ``stages[i]``."""
    return model.ramps[i](h).numpy()


def final_probabilities(out: torch.Tensor) -> np.ndarray:
    """The final exit's probabilities (b, 10) as numpy, from block4's output (which ends
    in the softmax): the last exit's head for the executor."""
    return out.numpy()


def held_out_inputs(split: DigitsSplit) -> np.ndarray:
    """Raw held-out pixels (n, 64) float32, row k = behaviour-table row k."""
    return np.ascontiguousarray(split.test_x, dtype=np.float32)


def behaviour_table(model: DigitsEarlyExit, split: DigitsSplit) -> BehaviourTable:
    """Per-sample behaviour of every exit on :func:`held_out_inputs`, in that row order."""
    return _table_of(model, held_out_inputs(split), split.test_y, "digits_torch_ee held-out half")


@contextlib.contextmanager
def _reproducible(seed: int) -> Iterator[None]:
    """One thread, deterministic algorithms, torch's RNG seeded: all restored on exit, so
    training leaves the caller's torch settings and random stream as they were."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train_backbone(model: DigitsEarlyExit, x: torch.Tensor, y: torch.Tensor) -> None:
    *hidden, last = model.stages
    trunk = nn.Sequential(*hidden, last[:-1])  # without the softmax: cross-entropy takes logits
    optimiser = torch.optim.Adam(trunk.parameters(), lr=LEARNING_RATE)
    for _ in range(EPOCHS):
        for rows in torch.randperm(len(x)).split(BATCH):
            optimiser.zero_grad()
            nn.functional.cross_entropy(trunk(x[rows]), y[rows]).backward()
            optimiser.step()


def _train_ramp(ramp: nn.Sequential, h: torch.Tensor, y: torch.Tensor) -> None:
    """Fit the ramp's linear layer, a logistic regression on its pooling of the block
    output ``h``: mean cross-entropy plus ||W||^2 / 2n, scikit-learn's
    ``LogisticRegression(C=1)`` objective divided by n."""
    pool, linear = ramp[0], ramp[1]
    pooled = pool(h)
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=500, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = nn.functional.cross_entropy(linear(pooled), y) + linear.weight.square().sum() / (2 * len(y))
        value.backward()
        return value

    optimiser.step(loss)


def _frozen(model: DigitsEarlyExit) -> DigitsEarlyExit:
    """float32, eval mode, no gradients: the deployed model."""
    return model.float().eval().requires_grad_(False)


def train(seed: int = SEED) -> tuple[DigitsEarlyExit, DigitsSplit]:
    """Train on the training half of :func:`workloads.digits.split_digits`: the backbone,
    then each ramp on its frozen block's activations. Deterministic given ``seed``."""
    split = split_digits(seed)
    scaler = StandardScaler().fit(split.train_x)
    with _reproducible(seed):
        model = DigitsEarlyExit().double()
        standardise = model.stages[0][0]
        standardise.mean.copy_(torch.from_numpy(scaler.mean_))
        standardise.scale.copy_(torch.from_numpy(scaler.scale_))
        x, y = torch.from_numpy(split.train_x.astype(np.float64)), torch.from_numpy(split.train_y)
        _train_backbone(model, x, y)
        h = x
        for stage, ramp in zip(model.stages, model.ramps):
            with torch.no_grad():
                h = stage(h)
            _train_ramp(ramp, h, y)
    return _frozen(model), split


def cache_root(cache_dir: Optional[os.PathLike] = None) -> Path:
    """Where trained weights are kept: ``cache_dir``, else ``$SERVESIM_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/servesim`` (``~/.cache/servesim``)."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "servesim"))


def cache_path(seed: int = SEED, cache_dir: Optional[os.PathLike] = None) -> Path:
    """Where :func:`load_or_train` keeps the weights (:func:`cache_root`), keyed by the
    seed, torch's version and this file's contents."""
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return cache_root(cache_dir) / f"digits_torch_ee-seed{seed}-torch{torch.__version__}-{recipe}.pt"


def load_weights(path: Path, empty: Callable[[], nn.Module]) -> Optional[nn.Module]:
    """The module ``empty()`` builds, with the weights cached at ``path``, frozen; or
    ``None`` where there is no readable entry (the caller trains)."""
    try:
        state = torch.load(path, weights_only=True)
        with torch.device("meta"):  # no initialisation: it would draw from the caller's RNG
            model = empty()
        model.load_state_dict(state, assign=True)
        return _frozen(model)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # absent or unreadable
        return None


def save_weights(model: nn.Module, path: Path) -> Path:
    """Write ``model``'s weights to ``path`` atomically and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(model.state_dict(), f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load_or_train(seed: int = SEED, cache_dir: Optional[os.PathLike] = None) -> tuple[DigitsEarlyExit, DigitsSplit]:
    """:func:`train`'s result, from the cache when a readable entry exists; otherwise
    trained and cached (written atomically). Same weights either way."""
    path = cache_path(seed, cache_dir)
    model = load_weights(path, DigitsEarlyExit)
    if model is not None:
        return model, split_digits(seed)
    model, split = train(seed)
    save_weights(model, path)
    return model, split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(SHIPPED_TABLE), help="behaviour table (.npz) to write")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model, split = train()
    seconds = time.perf_counter() - started
    table = behaviour_table(model, split)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_table(table, args.out)
    print(f"trained on {len(split.train_y)} digits in {seconds:.1f} s (1 thread); "
          f"wrote {args.out} ({table.n_samples} held-out samples)")
    for name, acc, agree, conf in zip(table.exit_names, table.accuracy(), table.agrees.mean(axis=0),
                                      table.confidence.mean(axis=0)):
        print(f"  {name:6s} accuracy {acc:.4f}  agrees with final {agree:.4f}  mean confidence {conf:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
