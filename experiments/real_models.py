"""The real models ``servesim fidelity`` and ``servesim profile-served`` can serve.

:data:`REAL_MODELS` are trained models with behaviour tables, which fidelity runs can
score; :func:`served_network` serves any early-exit network of
:mod:`workloads.torch_models` (ResNet, VGG, BERT builders) on the CPU or a GPU, for
measuring served costs only. Each returns a :class:`RealModel`: the
:class:`sim.real.StagedModel` the real executor drives, and the names of its stages and
ramp heads in the project's profiles (taken from the same :mod:`workloads.torch_models`
object the profiler times, so a served profile and a kernel profile name the same
things alike). torch is imported only here,
when a real model is asked for: the simulator runs without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from servesim.sim.real import StagedModel


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
    from servesim.workloads import digits_torch  # noqa: PLC0415  (the `real` extra)

    inputs = digits_torch.held_out_inputs(digits_torch.load_or_train()[1])
    return _digits_model(inputs if rows is None else inputs[rows], threads)


def _digits_torch_ee_json(rows: Optional[np.ndarray], threads: int) -> RealModel:
    """:func:`_digits_torch_ee`, each request arriving as a JSON body that the host parses:
    the digit at 16x16 (each pixel sent as a block of 2x2, as a client that upscaled it
    would), pooled back to 8x8 into the input row its batch reads. Pooling equal values
    in float64 gives each pixel back exactly, so the model sees the inputs (and gives the
    answers) of ``digits_torch_ee``; the difference is the host's work per request, some
    60-100 us on the development machine: the parse-and-decode every serving front end
    does, on the thread that also runs the batches."""
    from servesim.workloads import digits_torch  # noqa: PLC0415

    inputs = digits_torch.held_out_inputs(digits_torch.load_or_train()[1])
    inputs = inputs if rows is None else inputs[rows]
    side = int(round(inputs.shape[1] ** 0.5))
    bodies = [json.dumps({"image": np.kron(x.astype(np.float64).reshape(side, side),
                                           np.ones((UPSCALE, UPSCALE))).tolist()}) for x in inputs]
    received = np.zeros_like(inputs)  # nothing has arrived yet: intake fills each request's row

    def intake(row: int) -> None:
        image = np.asarray(json.loads(bodies[row])["image"], dtype=np.float64)
        received[row] = image.reshape(side, UPSCALE, side, UPSCALE).mean(axis=(1, 3)).ravel()

    return _digits_model(received, threads, intake)


UPSCALE = 2  # a JSON request's digit is sent at this many times its 8x8 side


def _digits_model(inputs: np.ndarray, threads: int, intake: Optional[Callable[[int], None]] = None) -> RealModel:
    """The digits model serving rows of ``inputs`` (a numpy array the input tensor shares)."""
    import torch  # noqa: PLC0415  (the `real` extra)

    from servesim.workloads import digits_torch, torch_models  # noqa: PLC0415

    torch.set_num_threads(threads)
    ee = torch_models.build("digits_torch_ee")
    tensor = torch.from_numpy(inputs)
    ramps = [ee.ramps[name] for name, _ in ee.blocks[:-1]]
    # Ramp heads end in a softmax, and so does the last block: its output is the final
    # exit's. The modules themselves are called, inside one inference_mode session per
    # batch: the calls the profiler times, with no wrapper between them.
    heads = [lambda h, ramp=ramp: ramp(h).numpy() for _, ramp in ramps] + [digits_torch.final_probabilities]
    staged = StagedModel(batch=lambda r: tensor[torch.from_numpy(r)], stages=[m for _, m in ee.blocks],
                         heads=heads, select=lambda x, keep: x[torch.from_numpy(keep)],
                         session=torch.inference_mode, intake=intake, on_thread=lambda: torch.set_num_threads(threads))
    return RealModel(staged, len(inputs), ee.name, tuple(n for n, _ in ee.blocks), tuple(n for n, _ in ramps))


def served_network(name: str, device: str = "cpu", dtype: str = "fp32", size: Optional[int] = None,
                   threads: int = 1, rows: int = 64) -> RealModel:
    """An early-exit network of :mod:`workloads.torch_models` (random weights, seeded) as
    the real executor serves it, for ``servesim profile-served``: ``rows`` distinct random
    inputs on ``device``, the blocks as stages, and as heads each ramp and the last block
    read through a softmax copied to the host (``.cpu()``: on a GPU, the device
    synchronisation an exit needs to read its ramp). The gather of the rows that go on
    is a boolean index on the device. Its behaviour (who exits where) is not the
    network's: profile-served decides exits at random, so any architecture's served
    costs can be measured without trained weights."""
    import torch  # noqa: PLC0415  (the `real` extra)

    from servesim.workloads import torch_models  # noqa: PLC0415
    from servesim.workloads.profiler_torch import DTYPES, resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    torch.set_num_threads(threads)
    ee = torch_models.build(name, size)
    blocks = [b for b, _ in ee.blocks]
    if sorted(ee.ramps) != sorted(blocks[:-1]):
        raise ValueError(f"{name}: the real executor needs a ramp after every block but the last; it has ramps "
                         f"after {sorted(ee.ramps)} of {blocks}")
    for module in ee.modules():
        module.to(dev, DTYPES[dtype])
    torch.manual_seed(0)
    inputs = ee.make_input(rows).to(device=dev, dtype=DTYPES[dtype] if ee.float_input else None)

    def probabilities(x):
        return torch.softmax(x.float(), dim=-1).cpu().numpy()

    heads = [lambda h, ramp=ee.ramps[b][1]: probabilities(ramp(h)) for b in blocks[:-1]] + [probabilities]
    staged = StagedModel(batch=lambda r: inputs[torch.from_numpy(r).to(dev)], stages=[m for _, m in ee.blocks],
                         heads=heads, select=lambda x, keep: x[torch.from_numpy(keep).to(dev)],
                         session=torch.inference_mode, on_thread=lambda: torch.set_num_threads(threads))
    return RealModel(staged, rows, ee.name, tuple(blocks), tuple(ee.ramps[b][0] for b in blocks[:-1]))


REAL_MODELS: dict[str, Callable[[Optional[np.ndarray], int], RealModel]] = {
    "digits_torch_ee": _digits_torch_ee, "digits_torch_ee_json": _digits_torch_ee_json}

# What a closed loop's real instances serve (sim.real_clients): the whole model, every
# stage then the last exit's head, on ``threads`` torch threads. No behaviour table is
# needed (nobody exits), so a network with random weights serves as well as a trained
# one: ResNet-18 on 32x32 inputs takes milliseconds a batch on one core, and a batch of
# 8 about twice what a batch of 1 does, so that batching matters and the model's kernels
# (which release the interpreter lock) dominate a batch, not the Python around them.
WHOLE_MODELS: dict[str, Callable[[int], RealModel]] = {
    "digits_torch_ee": lambda threads: _digits_torch_ee(None, threads),
    "resnet18_32": lambda threads: served_network("resnet18_ee", size=32, threads=threads)}


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
