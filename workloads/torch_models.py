"""Real networks with early-exit ramp heads, cut into the stages a profile times.

A profile of an early-exit model needs each backbone stage and each ramp head as a
module of its own, run on the real output of the stage before it, so the builders here
return exactly that: an :class:`EEModel` with its backbone stages in order and a ramp
head branching off after every stage but the last. Weights are the constructors' random
initialisation: latency does not depend on their values, and nothing is downloaded
(torchvision is not needed either: the definitions are short and written in plain
``torch.nn``). The exception is ``digits_torch_ee``, the small trained network of
:mod:`workloads.digits_torch` that the real-hardware executor serves: its profile times
the very weights and inputs the executor runs.

The ramps are the published ones: Apparate's CV ramp (global average pool, then one
linear layer to the classes) on the CNNs, DeeBERT's highway (the pooler on the first
token, then a linear classifier) on BERT.

    from workloads.torch_models import build
    model = build("resnet18_ee")
    for name, module, trunk in model.stages(): ...
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from workloads import digits_torch


@dataclass
class EEModel:
    """A backbone cut into ``blocks`` (name, module), with ramp heads after some of them.

    ``ramps`` maps a block's name to its ramp head (name, module); ``make_input(batch)``
    gives a batch in the backbone's input format (float images, or integer token ids,
    which a dtype change must leave alone: ``float_input`` says which).
    """

    name: str
    blocks: list[tuple[str, nn.Module]]
    ramps: dict[str, tuple[str, nn.Module]]
    make_input: Callable[[int], torch.Tensor]
    input_shape: str
    float_input: bool
    description: str

    def stages(self) -> list[tuple[str, nn.Module, bool]]:
        """(name, module, trunk) in profile order: each block, then the ramp that branches
        off it. A trunk stage's output feeds the next block; a ramp's does not."""
        order = []
        for name, block in self.blocks:
            order.append((name, block, True))
            if name in self.ramps:
                order.append((*self.ramps[name], False))
        return order

    def modules(self) -> list[nn.Module]:
        return [module for _, module, _ in self.stages()]

    def backbone(self) -> nn.Module:
        """The blocks in sequence, no ramps, as one module (sharing their weights): the
        whole model a server without exits calls once, to set against the stage sum."""
        return nn.Sequential(*(block for _, block in self.blocks))


def _with_ramps(blocks: list[tuple[str, nn.Module]], heads: Sequence[nn.Module]) -> dict[str, tuple[str, nn.Module]]:
    """Ramps ``ramp1..rampN`` after the first N blocks, in order."""
    return {block: (f"ramp{i}", head) for i, ((block, _), head) in enumerate(zip(blocks, heads), 1)}


def pool_linear_head(channels: int, classes: int) -> nn.Module:
    """Apparate's CV ramp (also the ResNet classifier): global average pool, linear."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


# --- ResNet ---------------------------------------------------------------------------

def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


class Residual(nn.Module):
    """A ResNet block: ``body(x) + shortcut(x)``, then ReLU; the shortcut is a strided
    1x1 conv + BN where the shape changes (torchvision's option B)."""

    def __init__(self, body: list[nn.Module], c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = (nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def basic_block(c_in: int, width: int, stride: int) -> tuple[Residual, int]:
    """ResNet-18/34's block: two 3x3 convs. Returns the block and its output channels."""
    body = [*_conv_bn(c_in, width, 3, stride), nn.ReLU(inplace=True), *_conv_bn(width, width, 3)]
    return Residual(body, c_in, width, stride), width


def bottleneck(c_in: int, width: int, stride: int) -> tuple[Residual, int]:
    """ResNet-50's block: 1x1 reduce, 3x3 (strided, as torchvision v1.5), 1x1 expand x4."""
    c_out = 4 * width
    body = [*_conv_bn(c_in, width, 1), nn.ReLU(inplace=True),
            *_conv_bn(width, width, 3, stride), nn.ReLU(inplace=True),
            *_conv_bn(width, c_out, 1)]
    return Residual(body, c_in, c_out, stride), c_out


def _resnet_layers(block: Callable[[int, int, int], tuple[Residual, int]],
                   depths: Sequence[int]) -> list[list[tuple[Residual, int]]]:
    """The four residual stages: lists of (block, output channels), widths 64..512."""
    layers, c_in = [], 64
    for i, depth in enumerate(depths):
        width, stride, layer = 64 * 2 ** i, 1 if i == 0 else 2, []
        for j in range(depth):
            made = block(c_in, width, stride if j == 0 else 1)
            layer.append(made)
            c_in = made[1]
        layers.append(layer)
    return layers


def _stem() -> list[nn.Module]:
    return [*_conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]


def _image_input(image_size: int) -> Callable[[int], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return lambda batch: torch.randn(batch, 3, image_size, image_size, generator=generator)


def _cnn(name: str, stages: list[list[nn.Module]], ramp_channels: Sequence[int], prefix: str,
         image_size: int, classes: int, description: str) -> EEModel:
    """Name the stages ``{prefix}1..``, put a pool+linear ramp after all but the last."""
    blocks = [(f"{prefix}{i}", nn.Sequential(*modules)) for i, modules in enumerate(stages, 1)]
    ramps = _with_ramps(blocks, [pool_linear_head(c, classes) for c in ramp_channels])
    return EEModel(name, blocks, ramps, _image_input(image_size), f"(batch, 3, {image_size}, {image_size})",
                   True, description)


def resnet18_ee(image_size: int = 224, classes: int = 1000) -> EEModel:
    """ResNet-18, one stage per BasicBlock (``block1``..``block8``): the stem is in
    block1, global pool + fc in block8; ramps after blocks 1-7."""
    blocks = [made for layer in _resnet_layers(basic_block, (2, 2, 2, 2)) for made in layer]
    stages = [[module] for module, _ in blocks]
    stages[0][:0] = _stem()
    stages[-1].append(pool_linear_head(blocks[-1][1], classes))
    return _cnn("resnet18_ee", stages, [c for _, c in blocks[:-1]], "block", image_size, classes,
                f"resnet18_ee: ResNet-18 (BasicBlock [2,2,2,2]), random init, {classes} classes; block1 = "
                f"stem (conv7x7/2, BN, ReLU, maxpool) + first block, block8 = last block + avgpool + fc; "
                f"ramp1-7 = AdaptiveAvgPool2d(1) + Linear(C, {classes}) on block1-7's output (Apparate)")


BOTTLENECK_DEPTHS = {"resnet50_ee": (3, 4, 6, 3), "resnet101_ee": (3, 4, 23, 3)}


def resnet_ee(name: str, image_size: int = 224, classes: int = 1000) -> EEModel:
    """A Bottleneck ResNet (50 or 101), one stage per residual stage (``layer1``..
    ``layer4``): the stem is in layer1, global pool + fc in layer4; ramps after layers 1-3.
    Per-layer stages keep the deep ResNet-101 at four exits, as Apparate places them."""
    depths = BOTTLENECK_DEPTHS[name]
    layers = _resnet_layers(bottleneck, depths)
    stages = [[module for module, _ in layer] for layer in layers]
    stages[0][:0] = _stem()
    stages[-1].append(pool_linear_head(layers[-1][-1][1], classes))
    return _cnn(name, stages, [layer[-1][1] for layer in layers[:-1]], "layer", image_size, classes,
                f"{name}: ResNet-{3 * sum(depths) + 2} (Bottleneck [{','.join(map(str, depths))}]), random "
                f"init, {classes} classes; layer1 = stem + first residual stage, layer4 = last residual stage + "
                f"avgpool + fc; ramp1-3 = AdaptiveAvgPool2d(1) + Linear(C, {classes}) on layer1-3's output "
                f"(Apparate)")


VGG_CONFIGS = {"vgg11_ee": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
               "vgg13_ee": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
               "vgg16_ee": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))}


def vgg_ee(name: str, image_size: int = 224, classes: int = 1000) -> EEModel:
    """VGG (no batch norm), one stage per conv group ending at its max-pool (``block1``..
    ``block5``); block5 also holds the classifier; ramps after blocks 1-4."""
    stages, c_in = [], 3
    for widths in VGG_CONFIGS[name]:
        group = []
        for width in widths:
            group += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = width
        stages.append([*group, nn.MaxPool2d(2)])
    stages[-1] += [nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(512 * 49, 4096), nn.ReLU(inplace=True),
                   nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(),
                   nn.Linear(4096, classes)]
    return _cnn(name, stages, [widths[-1] for widths in VGG_CONFIGS[name][:-1]], "block", image_size, classes,
                f"{name}: VGG conv groups {VGG_CONFIGS[name]} (no BN), random init, {classes} classes; "
                f"stages split after each max-pool, block5 includes the 3-layer classifier; ramp1-4 = "
                f"AdaptiveAvgPool2d(1) + Linear(C, {classes}) on block1-4's output")


# --- BERT -----------------------------------------------------------------------------

class Embeddings(nn.Module):
    """BERT's input embeddings: word + position + token type (one segment), LayerNorm."""

    def __init__(self, vocab: int, hidden: int, max_positions: int = 512) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(max_positions, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word(ids) + self.position(positions) + self.token_type.weight[0]
        return self.dropout(self.norm(x))


class FirstTokenHead(nn.Module):
    """BERT's pooler (first token, dense, tanh) and a linear classifier: both the final
    classifier and DeeBERT's highway ramp."""

    def __init__(self, hidden: int, classes: int) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.classify = nn.Sequential(nn.Dropout(0.1), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(x[:, 0]))


def bert_ee(seq_len: int = 128, layers: int = 12, hidden: int = 768, heads: int = 12, ffn: int = 3072,
            vocab: int = 30522, classes: int = 2, stages: int | None = None, name: str = "bert_ee",
            prefix: str = "layer") -> EEModel:
    """A BERT-base-like encoder cut into ``stages`` equal groups of layers (default: one
    per layer), named ``{prefix}1``..: the embeddings are in the first, the pooler +
    classifier in the last; DeeBERT highway ramps after the others. ``bert4_ee`` is the
    4 x 3-layer cut, whose fewer, larger exits amortise a ramp over three layers.

    ``nn.TransformerEncoderLayer`` in eval mode under ``inference_mode`` takes PyTorch's
    fused fast path, as an eager inference server would; no attention mask (every token
    is real).
    """
    stages = layers if stages is None else stages
    if stages < 1 or layers % stages:
        raise ValueError(f"{name}: {layers} layers do not split into {stages} equal stages")
    per_stage = layers // stages

    def encoder() -> nn.Module:
        return nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.1, activation="gelu",
                                          layer_norm_eps=1e-12, batch_first=True, norm_first=False)

    def layers_of(stage: int) -> str:
        return "layer" if per_stage == 1 else f"layers {(stage - 1) * per_stage + 1}-{stage * per_stage}"

    groups = [[encoder() for _ in range(per_stage)] for _ in range(stages)]
    groups[0].insert(0, Embeddings(vocab, hidden))
    groups[-1].append(FirstTokenHead(hidden, classes))
    blocks = [(f"{prefix}{i}", nn.Sequential(*modules)) for i, modules in enumerate(groups, 1)]
    ramps = _with_ramps(blocks, [FirstTokenHead(hidden, classes) for _ in range(stages - 1)])
    generator = torch.Generator().manual_seed(0)
    return EEModel(
        name, blocks, ramps,
        lambda batch: torch.randint(0, vocab, (batch, seq_len), generator=generator),
        f"(batch, {seq_len}) token ids", False,
        f"{name}: BERT-base-like encoder, {layers} x nn.TransformerEncoderLayer(d={hidden}, heads={heads}, "
        f"ffn={ffn}, GELU, post-norm, batch_first), random init, sequence {seq_len}, no mask; {prefix}1 = "
        f"embeddings (vocab {vocab} + position + type, LayerNorm) + {layers_of(1)}, {prefix}{stages} = "
        f"{layers_of(stages)} + pooler (first token, Linear {hidden}x{hidden}, tanh) + Linear({hidden}, "
        f"{classes}); ramp1-{stages - 1} = DeeBERT highway (same pooler + classifier) on "
        f"{prefix}1-{stages - 1}'s output")


# --- digits ---------------------------------------------------------------------------

def digits_torch_ee(size: int = 64, seed: int = 0) -> EEModel:
    """The *trained* early-exit MLP of :mod:`workloads.digits_torch` (its weights from the
    cache, trained on first use), so a profile times exactly the executor's model; the
    input is real held-out digits, cycled past the 899 rows. ``size`` is the fixed 64
    pixels of an 8x8 digit (accepted so :func:`build` treats every model alike)."""
    if size != digits_torch.FEATURES:
        raise ValueError(f"digits_torch_ee takes 8x8 digits: input size {digits_torch.FEATURES}, got {size}")
    model, split = digits_torch.load_or_train(seed)
    blocks = [(f"block{i}", stage) for i, stage in enumerate(model.stages, 1)]
    inputs = torch.from_numpy(digits_torch.held_out_inputs(split))
    return EEModel(
        "digits_torch_ee", blocks, _with_ramps(blocks, model.ramps),
        lambda batch: inputs[torch.arange(batch) % len(inputs)], "(batch, 64) raw pixels of held-out digits",
        True,
        f"digits_torch_ee: MLP 64>512>512>512>512>10 (ReLU) trained on sklearn digits (seed {seed}); "
        f"block1 = standardise + dense, block4 = dense + output layer + softmax; ramp1-3 = mean of "
        f"16-unit groups (512>32) + Linear(32, 10) + softmax on block1-3's output")


MODELS: dict[str, Callable[..., EEModel]] = {
    "digits_torch_ee": digits_torch_ee,
    "resnet18_ee": resnet18_ee,
    "resnet50_ee": functools.partial(resnet_ee, "resnet50_ee"),
    "resnet101_ee": functools.partial(resnet_ee, "resnet101_ee"),
    "vgg11_ee": functools.partial(vgg_ee, "vgg11_ee"),
    "vgg13_ee": functools.partial(vgg_ee, "vgg13_ee"),
    "vgg16_ee": functools.partial(vgg_ee, "vgg16_ee"),
    "bert_ee": bert_ee,
    "bert4_ee": functools.partial(bert_ee, stages=4, name="bert4_ee", prefix="stage"),
}


def build(name: str, size: int | None = None, **options) -> EEModel:
    """The model ``name`` (a key of :data:`MODELS`) in eval mode, weights seeded (0).

    ``size`` is the input size whatever the model (image side, or sequence length: every
    builder takes it first), so a profiler can shrink any model the same way; ``options``
    go to the builder by name (``classes``; for BERT ``layers``, ``hidden``, ...).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    torch.manual_seed(0)
    model = MODELS[name](*([] if size is None else [size]), **options)
    for module in model.modules():
        module.eval()
    return model
