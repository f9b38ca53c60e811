"""Real networks to time: early-exit models cut into stages, and plain variant families.

A profile of an early-exit model needs each backbone stage and each ramp head as a
module of its own, run on the real output of the stage before it, so the builders here
return exactly that: an :class:`EEModel` with its backbone stages in order and a ramp
head branching off after every stage but the last. Weights are the constructors' random
initialisation: latency does not depend on their values, and nothing is downloaded
(torchvision is not needed either: the definitions are short and written in plain
``torch.nn``). The exceptions are ``digits_torch_ee``, the small trained network of
:mod:`workloads.digits_torch` that the real-hardware executor serves (its profile times
the very weights and inputs the executor runs), and ``langid_ee``, the trained byte-level
transformer of :mod:`workloads.langid`, timed on real held-out phrases.

The ramps are the published ones: Apparate's CV ramp (global average pool, then one
linear layer to the classes) on the CNNs, DeeBERT's highway (the pooler on the first
token, then a linear classifier) on BERT.

The *plain variants* are the menus a model-switching policy (InfAdapter, IPA) chooses
from (accuracies in :mod:`workloads.variants`): the ResNet-18..152 family, a YOLOv5
n..x detector family and proxies of the NLP pipeline's language-id, translation and
summarisation models. Each is one block, ``forward``, with no ramps: the whole model
in one call, as a server without exits runs it. They are latency proxies with the
published architectures' shapes (layers, widths, heads, vocabularies), not the
trained models: nothing is downloaded, and outputs are meaningless.

    from servesim.workloads.torch_models import build
    model = build("resnet18_ee")
    for name, module, trunk in model.stages(): ...
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from servesim.workloads import digits_torch, langid


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

def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int | None = None) -> list[nn.Module]:
    """A bias-free conv (padded to keep the side, ``kernel // 2``, unless told) and its BN."""
    padding = kernel // 2 if padding is None else padding
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm2d(c_out)]


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


# torchvision's ResNets: block kind and blocks per residual stage.
RESNETS = {"resnet18": (basic_block, (2, 2, 2, 2)), "resnet34": (basic_block, (3, 4, 6, 3)),
           "resnet50": (bottleneck, (3, 4, 6, 3)), "resnet101": (bottleneck, (3, 4, 23, 3)),
           "resnet152": (bottleneck, (3, 8, 36, 3))}


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
    blocks = [made for layer in _resnet_layers(*RESNETS["resnet18"]) for made in layer]
    stages = [[module] for module, _ in blocks]
    stages[0][:0] = _stem()
    stages[-1].append(pool_linear_head(blocks[-1][1], classes))
    return _cnn("resnet18_ee", stages, [c for _, c in blocks[:-1]], "block", image_size, classes,
                f"resnet18_ee: ResNet-18 (BasicBlock [2,2,2,2]), random init, {classes} classes; block1 = "
                f"stem (conv7x7/2, BN, ReLU, maxpool) + first block, block8 = last block + avgpool + fc; "
                f"ramp1-7 = AdaptiveAvgPool2d(1) + Linear(C, {classes}) on block1-7's output (Apparate)")


def resnet_ee(name: str, image_size: int = 224, classes: int = 1000) -> EEModel:
    """A Bottleneck ResNet (50 or 101), one stage per residual stage (``layer1``..
    ``layer4``): the stem is in layer1, global pool + fc in layer4; ramps after layers 1-3.
    Per-layer stages keep the deep ResNet-101 at four exits, as Apparate places them."""
    block, depths = RESNETS[name.removesuffix("_ee")]
    layers = _resnet_layers(block, depths)
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


# The activations by the names model configs use; torch takes "relu" and "gelu" by name only.
ACTIVATIONS: dict[str, str | Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": "relu", "gelu": "gelu", "silu": nn.functional.silu}


def encoder_layer(hidden: int, heads: int, ffn: int, activation: str = "gelu",
                  eps: float = 1e-12) -> nn.TransformerEncoderLayer:
    """A post-norm, batch-first encoder layer: BERT's, and (with their activation and
    LayerNorm eps) XLM-R's, Marian's and BART's, which are all post-norm."""
    return nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.1, activation=ACTIVATIONS[activation],
                                      layer_norm_eps=eps, batch_first=True, norm_first=False)


def _token_input(vocab: int, seq_len: int) -> Callable[[int], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return lambda batch: torch.randint(0, vocab, (batch, seq_len), generator=generator)


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

    def layers_of(stage: int) -> str:
        return "layer" if per_stage == 1 else f"layers {(stage - 1) * per_stage + 1}-{stage * per_stage}"

    groups = [[encoder_layer(hidden, heads, ffn) for _ in range(per_stage)] for _ in range(stages)]
    groups[0].insert(0, Embeddings(vocab, hidden))
    groups[-1].append(FirstTokenHead(hidden, classes))
    blocks = [(f"{prefix}{i}", nn.Sequential(*modules)) for i, modules in enumerate(groups, 1)]
    ramps = _with_ramps(blocks, [FirstTokenHead(hidden, classes) for _ in range(stages - 1)])
    return EEModel(
        name, blocks, ramps, _token_input(vocab, seq_len), f"(batch, {seq_len}) token ids", False,
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


# --- language id ----------------------------------------------------------------------

def langid_ee(size: int = langid.SEQ_LEN, seed: int = langid.SEED, recipe: langid.Recipe | None = None) -> EEModel:
    """The *trained* early-exit transformer of :mod:`workloads.langid` (its weights from
    the cache, trained on first use: about 3 minutes), so a profile times the weights
    the behaviour table ``langid_ee`` comes from; the input is real held-out phrases
    (UTF-8 bytes padded to 32), cycled past the 4,800 rows. ``size`` is the fixed
    sequence length (accepted so :func:`build` treats every model alike); ``recipe``
    replaces the shipped training recipe of ``seed`` (tests train a small one)."""
    if size != langid.SEQ_LEN:
        raise ValueError(f"langid_ee reads {langid.SEQ_LEN} bytes per phrase: input size {langid.SEQ_LEN}, got {size}")
    model, held_out = langid.load_or_train(recipe or langid.Recipe(seed=seed))
    blocks = [(f"block{i}", stage) for i, stage in enumerate(model.stages, 1)]
    inputs = torch.from_numpy(langid.encode(held_out.texts))
    d, layers = langid.D_MODEL, langid.LAYERS
    return EEModel(
        "langid_ee", blocks, _with_ramps(blocks, model.ramps),
        lambda batch: inputs[torch.arange(batch) % len(inputs)],
        f"(batch, {langid.SEQ_LEN}) UTF-8 byte ids of held-out phrases, {langid.PAD} = padding", False,
        f"langid_ee: byte-level transformer trained on wordfreq phrases of {len(langid.LANGUAGES)} languages "
        f"(seed {recipe.seed if recipe else seed}); {layers} x nn.TransformerEncoderLayer(d={d}, "
        f"heads={langid.HEADS}, ffn={langid.FFN}, ReLU, post-norm, padding mask), sequence {langid.SEQ_LEN}; "
        f"block1 = byte + position embedding + layer 1, block{layers} = layer {layers} + masked mean-pool + "
        f"Linear({d}, {len(langid.LANGUAGES)}) + softmax; ramp1-{layers - 1} = the same pooled head on "
        f"block1-{layers - 1}'s output")


# --- plain variants (the menus of workloads.variants) ---------------------------------

def _plain(name: str, module: nn.Module, make_input: Callable[[int], torch.Tensor], input_shape: str,
           float_input: bool, description: str) -> EEModel:
    """A variant served whole: the one block ``forward``, no ramps (so the profiler's
    ``forward`` rows are the whole model)."""
    return EEModel(name, [("forward", module)], {}, make_input, input_shape, float_input, description)


def resnet(name: str, image_size: int = 224, classes: int = 1000) -> EEModel:
    """A torchvision ResNet (``resnet18`` .. ``resnet152`` of :data:`RESNETS`) in one block:
    stem, the residual stages, global pool + fc; the variants InfAdapter switches between."""
    block, depths = RESNETS[name]
    layers = _resnet_layers(block, depths)
    body = nn.Sequential(*_stem(), *(module for layer in layers for module, _ in layer),
                         pool_linear_head(layers[-1][-1][1], classes))
    return _plain(name, body, _image_input(image_size), f"(batch, 3, {image_size}, {image_size})", True,
                  f"{name}: torchvision ResNet ({block.__name__} [{','.join(map(str, depths))}]), random init, "
                  f"{classes} classes, one block (stem + residual stages + avgpool + fc)")


# --- YOLOv5 ---------------------------------------------------------------------------

def _conv_silu(c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int | None = None) -> nn.Module:
    """YOLOv5's ``Conv``: conv, BN, SiLU."""
    return nn.Sequential(*_conv_bn(c_in, c_out, kernel, stride, padding), nn.SiLU(inplace=True))


class YoloBottleneck(nn.Module):
    """YOLOv5's ``Bottleneck`` inside a C3 (expansion 1): 1x1 then 3x3 conv, plus the
    input when ``shortcut`` (the backbone's C3s; the neck's have none)."""

    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_silu(channels, channels), _conv_silu(channels, channels, 3))
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.shortcut else self.body(x)


class C3(nn.Module):
    """YOLOv5's CSP block: bottlenecks on one 1x1 half, concatenated with the other
    half's 1x1 conv, then a 1x1 conv to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, depth: int, shortcut: bool = True) -> None:
        super().__init__()
        hidden = c_out // 2
        self.main = nn.Sequential(_conv_silu(c_in, hidden), *(YoloBottleneck(hidden, shortcut) for _ in range(depth)))
        self.side = _conv_silu(c_in, hidden)
        self.join = _conv_silu(2 * hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join(torch.cat((self.main(x), self.side(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools of a 1x1-halved input,
    the four concatenated, then a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.reduce = _conv_silu(c_in, c_in // 2)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.join = _conv_silu(c_in // 2 * 4, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [self.reduce(x)]
        for _ in range(3):
            pooled.append(self.pool(pooled[-1]))
        return self.join(torch.cat(pooled, 1))


class Detect(nn.Module):
    """YOLOv5's head: per scale a 1x1 conv to 3 anchors x (4 box + 1 objectness +
    ``classes``) channels (255 at 80 classes), then sigmoid, every cell's predictions in
    one (batch, boxes, 5 + classes) tensor. Box decoding (grid offsets and anchor sizes,
    a few elementwise ops) and non-maximum suppression are left out."""

    ANCHORS = 3

    def __init__(self, classes: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.outputs = 5 + classes
        self.convs = nn.ModuleList(nn.Conv2d(c, self.ANCHORS * self.outputs, 1) for c in channels)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        boxes = []
        for conv, x in zip(self.convs, features):
            y = conv(x)
            batch, _, height, width = y.shape
            y = y.view(batch, self.ANCHORS, self.outputs, height, width).permute(0, 1, 3, 4, 2)
            boxes.append(y.sigmoid().reshape(batch, -1, self.outputs))
        return torch.cat(boxes, 1)


class YoloV5(nn.Module):
    """YOLOv5 (v6.0 layout) at depth and width multiples ``depth``, ``width``: backbone
    (6x6/2 stem conv, conv + C3 stages to strides 8, 16, 32, SPPF), the PAN neck (top-down
    1x1 conv, upsample, concat, C3; then bottom-up 3x3/2 conv, concat, C3) and
    :class:`Detect` on the three scales."""

    def __init__(self, depth: float, width: float, classes: int = 80) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (math.ceil(base * width / 8) * 8 for base in (64, 128, 256, 512, 1024))

        def n(blocks: int) -> int:
            return max(round(blocks * depth), 1)

        self.stride8 = nn.Sequential(_conv_silu(3, c1, 6, 2, 2), _conv_silu(c1, c2, 3, 2), C3(c2, c2, n(3)),
                                     _conv_silu(c2, c3, 3, 2), C3(c3, c3, n(6)))
        self.stride16 = nn.Sequential(_conv_silu(c3, c4, 3, 2), C3(c4, c4, n(9)))
        self.stride32 = nn.Sequential(_conv_silu(c4, c5, 3, 2), C3(c5, c5, n(3)), SPPF(c5, c5))
        self.lateral32 = _conv_silu(c5, c4)
        self.top_down16 = nn.Sequential(C3(2 * c4, c4, n(3), shortcut=False), _conv_silu(c4, c3))
        self.out8 = C3(2 * c3, c3, n(3), shortcut=False)
        self.down8 = _conv_silu(c3, c3, 3, 2)
        self.out16 = C3(2 * c3, c4, n(3), shortcut=False)
        self.down16 = _conv_silu(c4, c4, 3, 2)
        self.out32 = C3(2 * c4, c5, n(3), shortcut=False)
        self.detect = Detect(classes, (c3, c4, c5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def up(t: torch.Tensor) -> torch.Tensor:
            return nn.functional.interpolate(t, scale_factor=2.0, mode="nearest")

        p8 = self.stride8(x)
        p16 = self.stride16(p8)
        h32 = self.lateral32(self.stride32(p16))
        h16 = self.top_down16(torch.cat((up(h32), p16), 1))
        o8 = self.out8(torch.cat((up(h16), p8), 1))
        o16 = self.out16(torch.cat((self.down8(o8), h16), 1))
        o32 = self.out32(torch.cat((self.down16(o16), h32), 1))
        return self.detect((o8, o16, o32))


# Ultralytics' yolov5{n,s,m,l,x}.yaml: (depth multiple, width multiple).
YOLOV5_SCALES = {"yolov5n": (0.33, 0.25), "yolov5s": (0.33, 0.50), "yolov5m": (0.67, 0.75),
                 "yolov5l": (1.0, 1.0), "yolov5x": (1.33, 1.25)}


def yolov5(name: str, image_size: int = 320, classes: int = 80) -> EEModel:
    """A YOLOv5 detector of :data:`YOLOV5_SCALES`, whole, on ``image_size`` square frames.

    The default side is 320 to keep CPU profiling affordable; the published mAP figures
    are at 640 and IPA's video pipeline fed larger frames, which cost about (side/320)^2
    as much (the network is fully convolutional). The side must be a multiple of 32, the
    coarsest scale's stride, so the neck's upsampled maps line up.
    """
    if image_size % 32:
        raise ValueError(f"{name}: image_size must be a multiple of 32 (the coarsest stride), got {image_size}")
    depth, width = YOLOV5_SCALES[name]
    return _plain(name, YoloV5(depth, width, classes), _image_input(image_size),
                  f"(batch, 3, {image_size}, {image_size})", True,
                  f"{name}: YOLOv5 v6.0 layout (depth x{depth}, width x{width}; Conv/C3/SPPF, PAN neck, Detect 1x1 "
                  f"convs at strides 8/16/32, SiLU + BN), random init, {classes} classes; output = sigmoid of all "
                  f"predictions, no box decoding, no NMS")


# --- NLP task proxies -----------------------------------------------------------------

def langid_xlmr(seq_len: int = 32, layers: int = 12, hidden: int = 768, heads: int = 12, ffn: int = 3072,
                vocab: int = 250_002, classes: int = 20) -> EEModel:
    """Language identification, XLM-R-base-like: embeddings, ``layers`` encoder layers
    (GELU, post-norm, eps 1e-5), the first token's classifier (dense, tanh, linear; 20
    languages as the common XLM-R language-detection checkpoint). A latency proxy with
    XLM-R base's shapes, not the trained model. The default 32 tokens: a tweet-length
    sentence, the same text the translation proxies take."""
    body = nn.Sequential(Embeddings(vocab, hidden, max_positions=514),
                         *(encoder_layer(hidden, heads, ffn, eps=1e-5) for _ in range(layers)),
                         FirstTokenHead(hidden, classes))
    return _plain("langid_xlmr", body, _token_input(vocab, seq_len), f"(batch, {seq_len}) token ids", False,
                  f"langid_xlmr: XLM-R-base-like encoder (latency proxy, random init), {layers} x "
                  f"nn.TransformerEncoderLayer(d={hidden}, heads={heads}, ffn={ffn}, GELU, post-norm), vocab "
                  f"{vocab}, sequence {seq_len}; first-token classifier to {classes} languages")


@dataclass(frozen=True)
class Seq2SeqShape:
    """An encoder-decoder's published shape; ``like`` names the checkpoint it imitates."""

    encoder_layers: int
    decoder_layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    activation: str
    max_positions: int
    like: str


class GreedySeq2Seq(nn.Module):
    """Encode the source once, then generate ``out_len`` tokens greedily: each token is
    one decoder pass over the whole prefix so far (causal mask), reading the encoder's
    output through cross-attention, and the argmax of the tied output projection at the
    last position. There is no KV cache (every pass recomputes the prefix's and the
    source's keys and values), so the cost grows with the square of ``out_len``, and no
    early stop at an end token (a fixed output length, as a latency proxy needs)."""

    def __init__(self, shape: Seq2SeqShape, out_len: int) -> None:
        super().__init__()
        self.embed = Embeddings(shape.vocab, shape.hidden, shape.max_positions)  # source and target share it
        self.encoder = nn.ModuleList(encoder_layer(shape.hidden, shape.heads, shape.ffn, shape.activation, eps=1e-5)
                                     for _ in range(shape.encoder_layers))
        self.decoder = nn.ModuleList(
            nn.TransformerDecoderLayer(shape.hidden, shape.heads, shape.ffn, dropout=0.1,
                                       activation=ACTIVATIONS[shape.activation], layer_norm_eps=1e-5,
                                       batch_first=True, norm_first=False)
            for _ in range(shape.decoder_layers))
        self.out_len = out_len

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        memory = self.embed(ids)
        for layer in self.encoder:
            memory = layer(memory)
        tokens = ids.new_zeros((len(ids), 1))  # the decoder start token
        for _ in range(self.out_len):
            x = self.embed(tokens)
            mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], device=x.device, dtype=x.dtype)
            for layer in self.decoder:
                x = layer(x, memory, tgt_mask=mask, tgt_is_causal=True)
            logits = x[:, -1] @ self.embed.word.weight.T
            tokens = torch.cat((tokens, logits.argmax(-1, keepdim=True)), 1)
        return tokens[:, 1:]


def _distilbart(encoder_layers: int, decoder_layers: int) -> Seq2SeqShape:
    return Seq2SeqShape(encoder_layers, decoder_layers, 1024, 16, 4096, 50_264, "gelu", 1024,
                        f"sshleifer/distilbart-xsum-{encoder_layers}-{decoder_layers}")


# Shapes from the checkpoints' Hugging Face configs (d_model, heads, ffn_dim, vocab_size,
# activation_function, max_position_embeddings).
SEQ2SEQ = {
    "opus_mt": Seq2SeqShape(6, 6, 512, 8, 2048, 59_514, "silu", 512, "Helsinki-NLP/opus-mt-fr-en (Marian)"),
    "tc_big": Seq2SeqShape(6, 6, 1024, 16, 4096, 53_017, "relu", 1024, "Helsinki-NLP/opus-mt-tc-big-fr-en (Marian)"),
    **{f"distilbart_{e}_{d}": _distilbart(e, d) for e, d in ((1, 1), (12, 1), (6, 6), (12, 3), (9, 6), (12, 6))},
}


def seq2seq(name: str, seq_len: int = 32, out_len: int = 8, **shape) -> EEModel:
    """The translation or summarisation proxy ``name`` of :data:`SEQ2SEQ`: a
    :class:`GreedySeq2Seq` on ``seq_len`` source tokens generating ``out_len``; ``shape``
    overrides fields of its :class:`Seq2SeqShape` (tests shrink ``hidden``, ``vocab``...).

    A latency proxy with the published shape, not the trained model. Defaults: 32 source
    tokens (a tweet-length sentence, as IPA's nlp pipeline serves) and 8 generated. On
    one core of this project's CPU machine a batch-1 call then takes 0.4 s (opus-mt,
    distilbart 1-1) to 1.0-1.3 s (tc-big, distilbart 12-6), and batch 8 about 2-4 s,
    so a profile at batch sizes 1-8 takes minutes. Each generated token is one pass
    reading every decoder weight and the output projection (vocab x d: 206 MiB for
    distilbart), and without a KV cache the work of a pass also grows with the prefix,
    so longer outputs soon make profiling take hours.
    """
    spec = dataclasses.replace(SEQ2SEQ[name], **shape)
    for field, length in (("seq_len", seq_len), ("out_len", out_len)):
        if not 1 <= length <= spec.max_positions:
            raise ValueError(f"{name}: {field} must be 1..{spec.max_positions} (the positions of {spec.like}), "
                             f"got {length}")
    return _plain(name, GreedySeq2Seq(spec, out_len), _token_input(spec.vocab, seq_len),
                  f"(batch, {seq_len}) token ids", False,
                  f"{name}: {spec.like}-like encoder-decoder (latency proxy, random init), {spec.encoder_layers}+"
                  f"{spec.decoder_layers} layers, d={spec.hidden}, heads={spec.heads}, ffn={spec.ffn}, "
                  f"{spec.activation}, post-norm, vocab {spec.vocab}; {seq_len} source tokens, greedy generation "
                  f"of {out_len} tokens, one decoder pass over the prefix per token (no KV cache)")


MODELS: dict[str, Callable[..., EEModel]] = {
    "digits_torch_ee": digits_torch_ee,
    "langid_ee": langid_ee,
    "resnet18_ee": resnet18_ee,
    "resnet50_ee": functools.partial(resnet_ee, "resnet50_ee"),
    "resnet101_ee": functools.partial(resnet_ee, "resnet101_ee"),
    "vgg11_ee": functools.partial(vgg_ee, "vgg11_ee"),
    "vgg13_ee": functools.partial(vgg_ee, "vgg13_ee"),
    "vgg16_ee": functools.partial(vgg_ee, "vgg16_ee"),
    "bert_ee": bert_ee,
    "bert4_ee": functools.partial(bert_ee, stages=4, name="bert4_ee", prefix="stage"),
    **{name: functools.partial(resnet, name) for name in RESNETS},
    **{name: functools.partial(yolov5, name) for name in YOLOV5_SCALES},
    "langid_xlmr": langid_xlmr,
    **{name: functools.partial(seq2seq, name) for name in SEQ2SEQ},
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
