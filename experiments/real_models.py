"""The real models ``servesim fidelity`` and ``servesim profile-served`` can serve.

Each builder returns a :class:`RealModel`: the :class:`sim.real.StagedModel` the real
executor drives, and the names of its stages and ramp heads in the project's profiles
(taken from the same :mod:`workloads.torch_models` object the profiler times, so a served
profile and a kernel profile name the same things alike). torch is imported only here,
when a real model is asked for: the simulator runs without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from sim.real import StagedModel


@dataclass(frozen=True)
class RealModel:
    """``staged`` serves ``rows`` request rows; ``name`` is its model in a profile, with
    backbone ``stages`` and ramp ``heads`` (one fewer: the last exit is the backbone's)."""

    staged: StagedModel
    rows: int
    name: str
    stages: tuple[str, ...]
    heads: tuple[str, ...]


def _digits_torch_ee(rows: Optional[np.ndarray], threads: int) -> RealModel:
    """The torch early-exit MLP on digits (workloads/digits_torch.py): request row k is fed
    held-out input ``rows[k]`` (default: input k), the input its behaviour row was measured on."""
    import torch  # noqa: PLC0415  (the `real` extra)

    from workloads import digits_torch, torch_models  # noqa: PLC0415

    torch.set_num_threads(threads)
    ee = torch_models.build("digits_torch_ee")
    _, split = digits_torch.load_or_train()
    inputs = digits_torch.held_out_inputs(split)
    inputs = torch.from_numpy(inputs if rows is None else inputs[rows])
    ramps = [ee.ramps[name] for name, _ in ee.blocks[:-1]]
    # Ramp heads end in a softmax, and so does the last block: its output is the final
    # exit's. The modules themselves are called, inside one inference_mode session per
    # batch: the calls the profiler times, with no wrapper between them.
    heads = [lambda h, ramp=ramp: ramp(h).numpy() for _, ramp in ramps] + [digits_torch.final_probabilities]
    staged = StagedModel(batch=lambda r: inputs[torch.from_numpy(r)], stages=[m for _, m in ee.blocks],
                         heads=heads, select=lambda x, keep: x[torch.from_numpy(keep)],
                         session=torch.inference_mode)
    return RealModel(staged, len(inputs), ee.name, tuple(n for n, _ in ee.blocks), tuple(n for n, _ in ramps))


REAL_MODELS: dict[str, Callable[[Optional[np.ndarray], int], RealModel]] = {"digits_torch_ee": _digits_torch_ee}


def warm_up(model: StagedModel, rows: np.ndarray, max_batch: int) -> None:
    """Run every stage and head at every batch size once, so the replay does not pay for
    first-call set-up (allocator growth, kernel selection) that a serving process pays
    before it takes traffic."""
    for b in range(1, max_batch + 1):
        with model.session():
            x = model.batch(rows[:b] if rows.size >= b else np.resize(rows, b))
            for stage, head in zip(model.stages, model.heads):
                x = stage(x)
                head(x)
