"""A "video" of real images, and the real network's own behaviour on every frame: drift
that Apparate's controller meets as a deployment would, not as a generator draws it.

Apparate tunes exits online because a camera's input changes: scenes come and go, and
within one scene consecutive frames are near-copies of each other. The drifting tables
of :mod:`workloads.drift` draw each request's row independently from a synthetic
regime; this module records a stream instead:

* **Frames**: held-out digits of scikit-learn's ``digits`` (real handwriting, never
  trained on). The camera looks at one digit for ``shot_s`` (1 s: 30 frames), then the
  next; every frame is a fresh view of it: shifted by up to one pixel (zero fill) half
  the time, plus sensor noise.
* **Scenes** (:func:`workloads.drift.scene_schedule`: exponential lengths, mean
  ``scene_s`` = 40 s) alternate ``clear`` with a hard condition: ``dusk`` (contrast x0.6,
  noise sd 1.5: everything is less sure, and the ramps most) or ``glare`` (a 3x3 bright
  patch, +8, somewhere on the digit: the ramps are wrong more often, with more
  confidence than in dusk).
* **Network**: the early-exit MLP of :mod:`workloads.digits` (same recipe, same shapes,
  so ``cpu_digits_ee``'s profile costs it), trained on the training half rendered
  ``AUGMENT`` times as clear frames: a camera model trained on the clear conditions it
  was installed in. Held-out accuracy (the shipped recording) by condition, ramp1-3 and
  final: clear 0.662 / 0.829 / 0.914 / 0.945, dusk 0.430 / 0.454 / 0.612 / 0.770, glare
  0.560 / 0.624 / 0.700 / 0.747. Training and recording take about 15 s on one core.
* **Table**: one row per frame at ``fps``, in capture order, with the scenes beside it
  (``<name>.stream.json``: fps and ``[start_s, condition]`` pieces). A request arriving
  at t meets the frame captured at t (:meth:`RecordedStream.draw_samples`), so a burst of
  requests sees views of one digit, as a real camera's batch does.

A policy is fitted on the footage a deployment has before going live: the first
``fraction`` of the first (clear) scene; the live stream starts right after it
(:meth:`RecordedStream.split_bootstrap`), so requests never meet a fitted frame.

    python -m servesim.workloads.video --out workloads/data/digits_video.npz
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from servesim.workloads import digits
from servesim.workloads.drift import RecordedStream, accuracy_by_condition, save_stream, scene_schedule

CONDITIONS = ("clear", "dusk", "glare")
FPS = 30.0
DURATION_S = 720.0   # 600 s of trace, plus room for the bootstrap footage and late arrivals
SCENE_S = 40.0
SHOT_S = 1.0
SHIFT_SHARE = 0.5    # frames shifted by up to a pixel (the rest are centred)
AUGMENT = 4          # clear renderings of each training digit
SEED = 0
SIDE = 8             # digits are 8x8, pixel values 0..16
SHIPPED = digits.DATA_DIR / "digits_video.npz"


def render(images: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """One view of each 8x8 ``image`` under ``condition``, flattened to 64 pixels in
    [0, 16]: a shift of up to a pixel (zero fill) for ``SHIFT_SHARE`` of them, then the
    condition's light, then clipping to the sensor's range."""
    n = len(images)
    offsets = rng.integers(-1, 2, size=(n, 2)) * (rng.random((n, 1)) < SHIFT_SHARE)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    rows = 1 - offsets[:, :1, None] + np.arange(SIDE)[None, :, None]
    cols = 1 - offsets[:, 1:, None] + np.arange(SIDE)[None, None, :]
    frames = padded[np.arange(n)[:, None, None], rows, cols]
    if condition == "clear":
        frames = frames + rng.normal(0, 1.0, frames.shape)
    elif condition == "dusk":
        frames = 0.6 * frames + rng.normal(0, 1.5, frames.shape)
    elif condition == "glare":
        corner = rng.integers(0, SIDE - 2, size=(n, 2))
        patch = np.zeros_like(frames)
        for k, (r, c) in enumerate(corner):
            patch[k, r:r + 3, c:c + 3] = 8.0
        frames = frames + patch + rng.normal(0, 1.0, frames.shape)
    else:
        raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    return np.clip(frames, 0, 16).reshape(n, SIDE * SIDE)


def train_camera(seed: int = SEED) -> tuple[digits.EarlyExitMLP, digits.DigitsSplit]:
    """The digits recipe trained on ``AUGMENT`` clear renderings of the training half."""
    split = digits.split_digits(seed)
    rng = np.random.default_rng(seed)
    images = split.train_x.reshape(-1, SIDE, SIDE)
    frames = np.concatenate([render(images, "clear", rng) for _ in range(AUGMENT)])
    augmented = digits.DigitsSplit(frames, np.tile(split.train_y, AUGMENT), split.test_x, split.test_y)
    return digits.train(augmented, seed), split


def record(net: digits.EarlyExitMLP, split: digits.DigitsSplit, seed: int = SEED, duration_s: float = DURATION_S,
           fps: float = FPS, scene_s: float = SCENE_S, shot_s: float = SHOT_S) -> RecordedStream:
    """Film the held-out digits: scenes, one digit per shot, one fresh view per frame."""
    rng = np.random.default_rng([seed, 1])
    schedule = scene_schedule(rng, duration_s, scene_s, len(CONDITIONS))
    times = np.arange(int(duration_s * fps)) / fps
    starts = np.array([s for s, _ in schedule])
    condition = np.array([c for _, c in schedule])[np.searchsorted(starts, times, side="right") - 1]
    shot_digit = rng.integers(0, len(split.test_y), size=int(np.ceil(duration_s / shot_s)) + 1)
    digit = shot_digit[(times // shot_s).astype(np.int64)]
    images = split.test_x.reshape(-1, SIDE, SIDE)[digit]
    frames = np.empty((times.size, SIDE * SIDE))
    for c, name in enumerate(CONDITIONS):
        rows = np.flatnonzero(condition == c)
        frames[rows] = render(images[rows], name, rng)
    table = digits.behaviour_table(net, frames, split.test_y[digit],
                                   f"digits_video: {duration_s:g} s at {fps:g} fps of held-out digits (seed {seed})")
    return RecordedStream(table, fps, tuple(schedule), CONDITIONS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(SHIPPED), help="the stream's table (.npz); scenes go beside it")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    net, split = train_camera()
    stream = record(net, split)
    seconds = time.perf_counter() - started
    save_stream(stream, args.out)
    print(f"trained and recorded in {seconds:.1f} s (1 thread); wrote {args.out} "
          f"({stream.table.n_samples} frames, {len(stream.schedule)} scenes)")
    for name, accuracy in accuracy_by_condition(stream).items():
        print(f"  {name:6s} accuracy per exit " + " ".join(f"{a:.3f}" for a in accuracy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
