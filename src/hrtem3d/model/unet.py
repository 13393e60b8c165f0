"""The segmentation network: a plain (optionally residual) U-Net for any image size.

The network maps a single-channel image, normalised to zero median and unit robust
scale at the model's working pixel size (about 0.16 Å/px), to per-pixel class logits
``[N, n_classes, H, W]``. ``forward`` accepts any ``H, W``: it reflect-pads to a
multiple of ``2 ** (depth - 1)`` and crops the logits back.

Upsampling defaults to bilinear x2 + 1x1 convolution (the 1x1 conv is applied before
the interpolation, which gives the same result at a quarter of the cost). On this
project's 2-core CPU it was the faster choice: the upsampling op itself ~3x faster than
a 2x2 stride-2 ConvTranspose (15 vs 47 ms for 32->16 channels at 256^2), the whole
reference network ~0-7 % faster, with 7 % fewer parameters (see
``benchmarks/bench_model_forward.py``). ``UNetConfig(upsample="transpose")`` keeps the
ConvTranspose variant.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from hrtem3d.errors import HrtemError

NORMS = ("batch", "group", "none")
LATTICES = ("auto", "static", "vibrating")  # which reading of a `lattice_heads` network to use
LATTICE_PARTS = ("vibrating_head", "gate_attn", "gate")  # the modules `lattice_heads` adds to a U-Net
UPSAMPLES = ("transpose", "bilinear")


@dataclass
class UNetConfig:
    """Architecture of a `UNet`; stored in every model file.

    Attributes:
        in_channels: input channels (1: one HRTEM image).
        n_classes: output classes (``ClassScheme.n_classes``; 25 for the default scheme).
        widths: filters per level, from full resolution down to the bottleneck;
            ``len(widths)`` is the depth (number of resolution levels).
        convs_per_level: 3x3 conv + norm + ReLU units per level.
        norm: ``"batch"`` (BatchNorm2d), ``"group"`` (GroupNorm, up to 8 groups) or ``"none"``.
        residual: add a 1x1-conv skip around each level's convolutions.
        dropout: channel dropout (Dropout2d) probability after the bottleneck; 0 disables.
        upsample: ``"transpose"`` (2x2 ConvTranspose, stride 2) or ``"bilinear"``
            (bilinear x2 then 1x1 conv).
        global_context: modulate the bottleneck by features pooled over the whole input
            (`GlobalContext`), so that what only the whole particle reveals (does its lattice
            vibrate?) reaches every column. The output then depends on the tile, not only on
            the receptive field.
        lattice_heads: two readings of every pixel, one for a static lattice and one for a vibrating
            lattice (thermal diffuse scattering thins the contrast of thick columns), and an image-level
            gate p(vibrating) from the bottleneck; the output is their mixture (`mix_lattice_hypotheses`),
            so an image the gate cannot place gets the hedge of both readings and a confident one gets
            the matching reading alone. Trained with each head on its own kind of image (`hypotheses`).
    """

    in_channels: int = 1
    n_classes: int = 25
    widths: tuple[int, ...] = (16, 32, 64, 128)
    convs_per_level: int = 2
    norm: str = "batch"
    residual: bool = False
    dropout: float = 0.0
    upsample: str = "bilinear"
    global_context: bool = False
    lattice_heads: bool = False

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.in_channels < 1 or self.n_classes < 1:
            raise ValueError("in_channels and n_classes must be >= 1")
        if len(self.widths) < 1 or any(w < 1 for w in self.widths):
            raise ValueError("widths must hold at least one positive width")
        if self.convs_per_level < 1:
            raise ValueError("convs_per_level must be >= 1")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {self.upsample!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    @property
    def depth(self) -> int:
        """Number of resolution levels."""
        return len(self.widths)

    @property
    def multiple(self) -> int:
        """Spatial size the padded input must be a multiple of."""
        return 2 ** (self.depth - 1)

    def to_dict(self) -> dict:
        """JSON-ready dict (widths as a list)."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        """Inverse of `to_dict`; missing keys take defaults, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNetConfig keys: {sorted(unknown)}")
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        return cls(**d)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Module):
    """``n`` x (3x3 conv, norm, ReLU); the residual variant adds a 1x1-conv skip before the last ReLU."""

    def __init__(self, c_in: int, c_out: int, n: int, norm: str, residual: bool) -> None:
        super().__init__()
        bias = norm == "none"
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=bias))
            layers.append(_norm(norm, c_out))
            layers.append(nn.ReLU(inplace=True))
        if residual:
            layers.pop()  # the last ReLU comes after the sum
        self.body = nn.Sequential(*layers)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip is None:
            return self.body(x)
        return F.relu(self.body(x) + self.skip(x), inplace=True)


class Up(nn.Module):
    """Double the resolution and reduce ``c_in`` to ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.conv: nn.Module = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        else:
            self.conv = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose":
            return self.conv(x)
        # 1x1 conv first: same result (bilinear weights sum to 1), 4x fewer pixels to convolve
        return F.interpolate(self.conv(x), scale_factor=2, mode="bilinear", align_corners=False)


class GlobalContext(nn.Module):
    """Image-level context: features pooled over the whole map (attention weights, so vacuum can be
    ignored) scale and shift every position (FiLM). Starts as the identity (zero-initialised output
    layer and attention logits), so a model without it can be fine-tuned into one.

    >>> gc = GlobalContext(8)
    >>> x = torch.rand(2, 8, 6, 6)
    >>> bool(torch.equal(gc(x), x))
    True
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attn = nn.Conv2d(channels, 1, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                                 nn.Linear(channels, 2 * channels))
        for layer in (self.attn, self.mlp[2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.mlp(attention_pool(x, self.attn))[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


def attention_pool(x: torch.Tensor, logits: nn.Module) -> torch.Tensor:
    """Features ``[N, C, H, W]`` averaged over the map with softmax weights from ``logits`` (a module giving
    ``[N, 1, H, W]``): ``[N, C]``. Zero logits give the plain mean."""
    a = torch.softmax(logits(x).flatten(2), dim=-1)  # [N, 1, HW]
    return (x.flatten(2) * a).sum(-1)


class UNet(nn.Module):
    """U-Net: encoder levels with 2x2 max-pool, decoder with skip concatenation, 1x1 head.

    ``forward(x)`` takes ``[N, in_channels, H, W]`` for any ``H, W`` and returns logits
    ``[N, n_classes, H, W]``.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else UNetConfig()
        w = config.widths
        n, norm, res = config.convs_per_level, config.norm, config.residual
        self.down = nn.ModuleList()
        c = config.in_channels
        for width in w:
            self.down.append(ConvBlock(c, width, n, norm, res))
            c = width
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.context = GlobalContext(w[-1]) if config.global_context else None
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in range(len(w) - 2, -1, -1):
            self.ups.append(Up(w[level + 1], w[level], config.upsample))
            self.up_blocks.append(ConvBlock(2 * w[level], w[level], n, norm, res))
        self.head = nn.Conv2d(w[0], config.n_classes, 1)
        if config.lattice_heads:
            self.vibrating_head = nn.Conv2d(w[0], config.n_classes, 1)
            self.gate_attn = nn.Conv2d(w[-1], 1, 1)
            self.gate = nn.Sequential(nn.Linear(w[-1], w[-1]), nn.ReLU(inplace=True), nn.Linear(w[-1], 1))

    def forward(self, x: torch.Tensor, hypotheses: bool = False):
        """Class logits ``[N, n_classes, H, W]``; with ``hypotheses`` (a `lattice_heads` network, training)
        the triple of `hypotheses` instead, cropped to ``H, W``."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise HrtemError(
                f"network input must be [N, {self.config.in_channels}, H, W], got {list(x.shape)}; "
                "pass a batch of single-channel images"
            )
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.config.multiple)
        if hypotheses:
            static, vibrating, gate = self.hypotheses(x)
            return static[..., :h, :w], vibrating[..., :h, :w], gate
        return self.body(x)[..., :h, :w]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature map at every level, full resolution first; the last is the bottleneck."""
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        return skips

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The network on an input whose sides are multiples of ``config.multiple`` (no checks, no
        padding: the graph that `hrtem3d.model.runtime` exports to ONNX)."""
        if self.config.lattice_heads:
            return mix_lattice_hypotheses(*self.hypotheses(x))
        return self.head(self._decode(self.encode(x)))

    def _decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.dropout(skips.pop())
        if self.context is not None:
            x = self.context(x)
        for up, block in zip(self.ups, self.up_blocks, strict=True):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return x

    def hypotheses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(static logits, vibrating logits, gate logit `[N]`) of a `lattice_heads` network on an input
        whose sides are multiples of ``config.multiple``: the two readings before they are mixed, and
        the logit of the image-level p(vibrating)."""
        skips = self.encode(x)
        gate = self.gate(attention_pool(skips[-1], self.gate_attn))[:, 0]
        feat = self._decode(skips)
        return self.head(feat), self.vibrating_head(feat), gate


def mix_lattice_hypotheses(static: torch.Tensor, vibrating: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Log of (1 - q) softmax(static) + q softmax(vibrating), q = sigmoid(gate) one per image: class
    log-probabilities `[N, C, H, W]` (a softmax of them gives the mixture back).

    >>> s, v = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    >>> p = torch.softmax(mix_lattice_hypotheses(s, v, torch.tensor([-30.0, 30.0])), 1)
    >>> ps, pv = torch.softmax(s, 1), torch.softmax(v, 1)
    >>> bool(torch.allclose(p[0], ps[0], atol=1e-6)), bool(torch.allclose(p[1], pv[1], atol=1e-6))
    (True, True)
    """
    g = gate[:, None, None, None]
    both = torch.stack([F.log_softmax(static, 1) + F.logsigmoid(-g), F.log_softmax(vibrating, 1) + F.logsigmoid(g)])
    return torch.logsumexp(both, 0)


def fix_lattice(model: UNet, lattice: str) -> UNet:
    """`model` itself for ``"auto"`` (its gate decides); for ``"static"`` or ``"vibrating"``, a plain U-Net
    copy of a `lattice_heads` network that gives that reading alone (its head is that reading's; the other
    head and the gate are dropped, so it runs as fast as a network without lattice heads).

    >>> net = UNet(UNetConfig(widths=(4, 8), n_classes=3, lattice_heads=True)).eval()
    >>> x = torch.randn(1, 1, 16, 16)
    >>> static = net(x, hypotheses=True)[0]
    >>> bool(torch.allclose(fix_lattice(net, "static")(x), static))
    True
    """
    if lattice not in LATTICES:
        raise HrtemError(f"lattice must be one of {', '.join(LATTICES)}, got {lattice!r}", param="lattice")
    if lattice == "auto":
        return model
    if not getattr(getattr(model, "config", None), "lattice_heads", False):
        raise HrtemError(f"this model reads one kind of lattice only; `lattice={lattice}` needs a model trained "
                         "with `lattice_heads`", param="lattice")
    fixed = UNet(UNetConfig.from_dict({**model.config.to_dict(), "lattice_heads": False}))
    state = {k: v for k, v in model.state_dict().items() if k.split(".")[0] not in LATTICE_PARTS}
    if lattice == "vibrating":
        state["head.weight"], state["head.bias"] = model.vibrating_head.weight, model.vibrating_head.bias
    fixed.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    return fixed.to(next(model.parameters()).device).train(model.training)


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pad ``[N, C, H, W]`` at the bottom and right to sides that are multiples of ``m``: reflect, or
    replicate where the image is too small to reflect. Crop the output back with ``[..., :H, :W]``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def fold_batchnorm(model: UNet) -> UNet:
    """An inference copy of ``model`` with every BatchNorm folded into the convolution before it
    (the same function of the input to float rounding, one pass over each feature map fewer).

    >>> net = UNet(UNetConfig(widths=(4, 8), n_classes=3)).eval()
    >>> x = torch.randn(1, 1, 32, 32)
    >>> bool(torch.allclose(net(x), fold_batchnorm(net)(x), atol=1e-5))
    True
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            layers = list(module)
            for i in range(len(layers) - 1):
                if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(layers[i], layers[i + 1])
                    module[i + 1] = nn.Identity()
    return model


def receptive_radius(config: UNetConfig) -> int:
    """Largest distance (input pixels, along x or y) from an output pixel to an input pixel it depends on.

    An upper bound from the architecture: each 3x3 convolution at stride s adds s, each 2x2 max-pool of
    stride-s features adds s, each x2 upsampling from stride s adds s (bilinear reads the next coarse
    pixel). The shipped 5-level model (2 convolutions a level) gives 137; the measured support of one
    output pixel's gradient is at most 122 pixels.
    """
    n, depth = config.convs_per_level, config.depth
    encoder = sum(n * 2**i for i in range(depth)) + sum(2 ** (i - 1) for i in range(1, depth))
    decoder = sum(2 ** (i + 1) + n * 2**i for i in range(depth - 1))
    return encoder + decoder


def seam_free_overlap(config: UNetConfig) -> int:
    """Tile overlap (pixels) at which tiling does not change the output: the receptive radius rounded up
    to a multiple of ``config.multiple``, so tiles start on the pooling grid of the whole image."""
    m = config.multiple
    return -(-receptive_radius(config) // m) * m


def plain_unet_reference() -> UNet:
    """The project's speed reference: plain 4-level U-Net, 16-32-64-128 filters,
    two 3x3 conv + BN + ReLU per level, 12 classes (default bilinear upsampling)."""
    return UNet(UNetConfig(n_classes=12, widths=(16, 32, 64, 128), convs_per_level=2, norm="batch"))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, shape: tuple[int, ...] = (1, 1, 512, 512)) -> int:
    """Forward FLOPs (multiply-add = 2) on an input of ``shape``, as counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls; norms,
    activations and pooling are not counted). The model itself is not touched: a copy
    runs on the meta device (shapes only), so any size costs next to nothing."""
    from torch.utils.flop_counter import FlopCounterMode

    # count on the meta device: shapes only, no arithmetic, so any size is instant
    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(torch.empty(shape, device="meta"))
    return int(counter.get_total_flops())


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``prefer`` when given (``"cpu"``, ``"cuda"``, ``"cuda:1"``...),
    else CUDA when available, else CPU. Raises HrtemError if ``prefer`` is not available."""
    if prefer is None or str(prefer) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(prefer)
    except (RuntimeError, TypeError) as e:
        raise HrtemError(f"unknown device {prefer!r}; use 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HrtemError(f"device {prefer!r} asked for but CUDA is not available; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HrtemError(f"device {prefer!r} asked for but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise HrtemError(f"device {prefer!r} asked for but MPS is not available; use 'cpu'")
    return dev
