"""R3GAN's G and D (Huang et al., "The GAN is dead; long live the GAN! A Modern GAN Baseline", NeurIPS 2024),
after brownvc/R3GAN's R3GAN/Networks.py, in plain PyTorch ops.

A plain modern ResNet, no normalisation and no tricks (settings: model.r3gan): each stage is a transition
layer and `blocks`
residual blocks, each block an inverted bottleneck (1x1 conv to `expansion` x the channels, a grouped 3x3
conv of `group_channels` per group, a 1x1 conv back; leaky ReLU with a learned bias after the first two).
Fix-up style initialisation: weights N(0, gain / sqrt(fan_in)) with the activation's gain scaled by
L^(-1/(2m-2)) (L blocks in the network, m = 3 layers per block), and every block's last conv zero, so each
block starts as the identity. Resampling is the [1, 3, 3, 1] filter (R3GAN's "bilinear" interpolation).
G: z (and a class embedding) -> a learned h0 x w0 basis scaled per channel -> stages that 1x1-convolve then
upsample -> a 1x1 conv to the image. D mirrors it, ending in a depthwise h0 x w0 conv and a linear layer to
one logit (conditional: a projection on the embedded label). benchmarks/r3gan_reference.py checks G and D
against the reference with the same weights.

Sizes: G starts at the `stages` size (4 px for 16-256, 7 px for MNIST's 28), so any size the other families
take; channels at resolution r: min(channel_base // r, channel_max), r the longer side, rounded down to
a multiple of group_channels (R3GAN's widths already are).
G returns images in [0, 1] (the reference's [-1, 1] output x maps to (x + 1) / 2, unclamped); D maps its input
back to [-1, 1], so R1/R2 and gamma mean what they mean in the reference (losses.gradient_penalty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distgan.config import ConfigError, ModelConfig, check_finite
from distgan.models.family import Family, refuse_spectral_norm
from distgan.models.layers import MinibatchStd, d_in_channels, mbstd_channels, stages
from distgan.models.resample import downsample2d, fir_filter, upsample2d

LRELU_GAIN = math.sqrt(2 / (1 + 0.2**2))


@dataclass(frozen=True)
class R3GANConfig:
    """model.r3gan: the family's own settings (before 2026-12-06 flat keys: model.r3_*)."""

    channel_base: int = 24576
    """Channels at resolution r are min(channel_base // r, channel_max), r the longer side, rounded down to a
    multiple of group_channels (R3GAN's FFHQ-256: 768 up to 32 px, then halving: 24576 and 768)."""
    channel_max: int = 768
    """The cap on channels per stage."""
    blocks: int = 2
    """Residual blocks per stage (R3GAN: 2)."""
    expansion: int = 2
    """The inverted bottleneck's expansion of a block's channels (R3GAN: 2)."""
    group_channels: int = 16
    """Channels per group of a block's grouped 3x3 conv; cardinality = expanded channels / this (R3GAN:
    2 * 768 / 96 = 16)."""
    output: str = "linear"
    """G's last layer: linear (R3GAN's: images (x + 1) / 2, unclamped) or tanh ((tanh(x) + 1) / 2, in [0, 1]).
    tanh keeps G's pixels in the data's range, but on StackedMNIST at 16-32 channels it saturated every pixel to
    black within 500 steps and G's gradient vanished (docs/evaluation.md, issue 44 item 3): kept as an option,
    not a default."""

    def __post_init__(self) -> None:
        check_finite(self, "model.r3gan")
        if min(self.channel_base, self.channel_max, self.blocks, self.expansion, self.group_channels) < 1:
            raise ConfigError(
                f"model.r3gan.channel_base={self.channel_base}, channel_max={self.channel_max}, blocks={self.blocks}, "
                f"expansion={self.expansion}, group_channels={self.group_channels}: all must be >= 1"
            )
        if self.group_channels > self.channel_max:
            raise ConfigError(
                f"model.r3gan.group_channels={self.group_channels} is above model.r3gan.channel_max="
                f"{self.channel_max}: stages are at least one group wide, so every stage would be widened past "
                f"the cap. Use group_channels <= {self.channel_max}"
            )
        if self.output not in ("linear", "tanh"):
            raise ConfigError(f"model.r3gan.output={self.output!r}: use 'linear' (R3GAN's) or 'tanh'")


def opts(cfg: ModelConfig) -> R3GANConfig:
    """model.r3gan, typed."""
    return cfg.section("r3gan", R3GANConfig)


"""The gain that keeps a leaky ReLU(0.2)'s output variance: the init's activation gain."""


def msr_init(layer: nn.Conv2d | nn.Linear, gain: float = 1.0) -> None:
    """N(0, gain / sqrt(fan_in)) weights (MSR/He, fan-in mode), zero bias: the reference's MSRInitializer."""
    fan_in = layer.weight.shape[1] * layer.weight[0][0].numel()
    with torch.no_grad():
        layer.weight.normal_(0, gain / math.sqrt(fan_in))
        if layer.bias is not None:
            layer.bias.zero_()


def conv(cin: int, cout: int, k: int, groups: int = 1, gain: float = 1.0) -> nn.Conv2d:
    layer = nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, groups=groups, bias=False)
    msr_init(layer, gain)
    return layer


class BiasedActivation(nn.Module):
    """x + b, then leaky ReLU(0.2); no gain in the forward pass (it lives in the next layer's init)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.to(x.dtype)
        return F.leaky_relu(x + (b.view(1, -1, 1, 1) if x.dim() == 4 else b), 0.2)


class ResidualBlock(nn.Module):
    """x + conv1x1(act(grouped conv3x3(act(conv1x1(x))))); the last conv starts at zero."""

    def __init__(self, channels: int, cfg: ModelConfig, blocks_total: int) -> None:
        super().__init__()
        expanded = channels * opts(cfg).expansion
        gain = LRELU_GAIN * blocks_total ** (-1 / (2 * 3 - 2))
        self.conv1 = conv(channels, expanded, 1, gain=gain)
        self.conv2 = conv(expanded, expanded, 3, groups=expanded // opts(cfg).group_channels, gain=gain)
        self.conv3 = conv(expanded, channels, 1, gain=0.0)
        self.act1, self.act2 = BiasedActivation(expanded), BiasedActivation(expanded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return x + y


class Resample(nn.Module):
    """G: 1x1 conv when the width changes, then 2x upsampling (the reference's UpsampleLayer); D: 2x
    downsampling, then the 1x1 conv (its DownsampleLayer)."""

    f: torch.Tensor

    def __init__(self, cin: int, cout: int, f: torch.Tensor, up: bool) -> None:
        super().__init__()
        self.conv = conv(cin, cout, 1) if cin != cout else None
        self.up = up
        self.register_buffer("f", f, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return upsample2d(self.conv(x) if self.conv is not None else x, self.f)
        x = downsample2d(x, self.f)
        return self.conv(x) if self.conv is not None else x


class GenerativeBasis(nn.Module):
    """A learned (C, h0, w0) basis, each channel scaled by a linear map of the input vector."""

    def __init__(self, dim: int, channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.basis = nn.Parameter(torch.randn(channels, *size))
        self.linear = nn.Linear(dim, channels, bias=False)
        msr_init(self.linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basis.unsqueeze(0) * self.linear(x)[:, :, None, None]


class DiscriminativeBasis(nn.Module):
    """A depthwise h0 x w0 conv (one value per channel), then a linear map to the output."""

    def __init__(self, channels: int, out: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.basis = nn.Conv2d(channels, channels, size, groups=channels, bias=False)
        self.linear = nn.Linear(channels, out, bias=False)
        msr_init(self.basis)
        msr_init(self.linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.basis(x).flatten(1))


def plan(cfg: ModelConfig) -> tuple[list[tuple[int, int]], list[int]]:
    """(H, W) and channels of every stage, coarse to fine."""
    (h0, w0), n = stages(cfg)
    res = [(h0 * 2**i, w0 * 2**i) for i in range(n + 1)]
    g = opts(cfg).group_channels  # widths are multiples of it, so the grouped conv always divides
    return res, [max(g, min(opts(cfg).channel_base // max(r), opts(cfg).channel_max) // g * g) for r in res]


def _blocks(width: int, cfg: ModelConfig, total: int) -> list[nn.Module]:
    return [ResidualBlock(width, cfg, total) for _ in range(opts(cfg).blocks)]


class Generator(nn.Module):
    """G(z, y=None) -> images in [0, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.noise_dim, self.num_classes = cfg.noise_dim, cfg.num_classes
        res, chans = plan(cfg)
        total, f = opts(cfg).blocks * len(res), fir_filter()
        # conditional: a one-hot label through a linear embedding as wide as z, concatenated to z (the reference)
        self.embed = nn.Linear(cfg.num_classes, cfg.noise_dim, bias=False) if cfg.num_classes else None
        if self.embed is not None:
            msr_init(self.embed)
        dim = cfg.noise_dim * (2 if cfg.num_classes else 1)
        self.stages = nn.ModuleList()
        for i, c in enumerate(chans):
            first: nn.Module = GenerativeBasis(dim, c, res[0]) if i == 0 else Resample(chans[i - 1], c, f, up=True)
            self.stages.append(nn.Sequential(first, *_blocks(c, cfg, total)))
        self.out = conv(chans[-1], cfg.image_shape[0], 1)
        self.tanh = opts(cfg).output == "tanh"

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if y is None:
                raise ValueError("a class-conditional generator needs labels y")
            z = torch.cat([z, self.embed(F.one_hot(y, self.num_classes).to(z.dtype))], 1)
        x = z
        for stage in self.stages:
            x = stage(x)
        x = self.out(x)
        return ((torch.tanh(x) if self.tanh else x) + 1) / 2


class Discriminator(nn.Module):
    """D(x, y=None) -> one logit per image."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        res, chans = plan(cfg)
        res, chans = res[::-1], chans[::-1]  # fine to coarse
        total, f = opts(cfg).blocks * len(res), fir_filter()
        self.fromrgb = conv(d_in_channels(cfg), chans[0], 1)
        self.mbstd = MinibatchStd(cfg.mbstd_group, mbstd_channels(cfg, 0), chans[-1])
        out = chans[-1] if cfg.num_classes else 1  # conditional: the projection's width is the coarsest stage's
        self.stages = nn.ModuleList()
        for i, c in enumerate(chans):
            last: nn.Module
            if i + 1 < len(chans):
                last = Resample(c, chans[i + 1], f, up=False)
            else:
                last = DiscriminativeBasis(c + self.mbstd.channels, out, res[-1])
            self.stages.append(nn.Sequential(*_blocks(c, cfg, total), last))
        self.embed = nn.Linear(cfg.num_classes, out, bias=False) if cfg.num_classes else None
        if self.embed is not None:
            msr_init(self.embed, 1 / math.sqrt(out))

    def input_blocks(self) -> list[nn.Module]:
        """Blocks from the input side (model.d_freeze counts them): a stage per resolution, fromRGB with the
        first."""
        return [nn.ModuleList([self.fromrgb, self.stages[0]]), *list(self.stages)[1:]]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, batches: int = 1) -> torch.Tensor:
        """batches: how many batches x holds, one after another (minibatch std groups each alone)."""
        x = self.fromrgb(x * 2 - 1)
        for stage in self.stages[:-1]:
            x = stage(x)
        last = self.stages[-1]
        assert isinstance(last, nn.Sequential)
        *blocks, basis = last  # minibatch std (where on) between the last blocks and the basis
        for block in blocks:
            x = block(x)
        x = basis(self.mbstd(x, batches))
        if self.embed is None:
            return x.squeeze(1)
        if y is None:
            raise ValueError("a class-conditional discriminator needs labels y")
        return (x * self.embed(F.one_hot(y, self.num_classes).to(x.dtype))).sum(1)


FAMILY = Family(
    "r3gan",
    Generator,
    Discriminator,
    output="(x + 1) / 2 of the output layer x (model.r3gan.output linear: unclamped, mostly in [0, 1], clamp before "
    "display; tanh: x = tanh of it, within [0, 1])",
    section=R3GANConfig,
    check=refuse_spectral_norm("r3gan"),
    shape_keys=("channel_base", "channel_max", "blocks", "expansion", "group_channels"),
    warn_keys=("output",),
    old_keys={f"r3_{k}": k for k in ("channel_base", "channel_max", "blocks", "expansion", "group_channels")},
    d_batches=True,
)
