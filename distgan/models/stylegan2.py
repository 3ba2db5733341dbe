"""StyleGAN2 (Karras et al. 2020) in plain PyTorch ops: no custom CUDA kernels to compile.

Follows stylegan2-ada-pytorch's networks.py (config 'stylegan2' / 'paper256'): a mapping network (lr multiplier
0.01) from z (and a class embedding) to w; a synthesis network from a learned constant with modulated,
demodulated 3x3 convolutions, per-layer noise with a learned strength, and a toRGB at every resolution whose
outputs are summed (the skip architecture); a residual D ending in minibatch standard deviation and, when
conditional, a projection on the label mapped by its own network. Every weight is stored N(0, 1) and scaled at
run time (equalised learning rate). Resampling is the [1, 3, 3, 1] FIR filter (upfirdn2d written with conv2d) or
bilinear interpolation (model.stylegan2.resample). benchmarks/stylegan2_reference.py checks G and D against
stylegan2-ada-pytorch's networks.py with the same weights.

Sizes: G starts at the `stages` size (4 px for 16-256, and 7 px for MNIST's 28: 7 -> 14 -> 28, so no pixel is
padded, cropped or resized and D judges exactly the data; non-square sizes start at e.g. 4x6 for 32x48 or 64x96).
Channels at resolution r: min(channel_base // r, channel_max) with r the longer side, so one config scales with the
resolution.

Mixed precision: only the `model.stylegan2.mp_res` highest resolutions run under the run's autocast (bf16/fp16);
the lower ones and the mapping network in float32, and the convolutions of those high-resolution layers are clamped
to +-model.stylegan2.conv_clamp (256; StyleGAN2-ADA's num_fp16_res=4 and conv_clamp=256), where fp16 would
otherwise overflow.

Randomness is an input, never drawn inside: per-layer noise (`noise`, a list of tensors from `noise_shapes`)
and style mixing (`mix`: second latents and the cutoff) come from the trainer's seeded global-batch stream,
so 2 ranks compute what 1 process does and a resume continues it. Without `noise` the layers use their fixed
noise buffers (deterministic samples and export, like stylegan2-ada's noise_mode='const').
G returns images in [0, 1] (the synthesis output x maps to (x + 1) / 2, unclamped); D maps its input back to
[-1, 1].
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distgan.config import ConfigError, ModelConfig, check_finite
from distgan.models.family import Family, refuse_spectral_norm
from distgan.models.layers import MinibatchStd, d_in_channels, mbstd_channels, stages
from distgan.models.resample import downsample2d, fir_filter, upfirdn2d, upsample2d

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class StyleGAN2Config:
    """model.stylegan2: the family's own settings (before 2026-12-06 flat keys: model.w_dim, model.sg_*, ...)."""

    w_dim: int = 512
    """Width of the intermediate latent w (and of the mapping network)."""
    mapping_layers: int = 8
    """Depth of the mapping network z -> w (StyleGAN2: 8; stylegan2-ada's paper256 and cifar: 2)."""
    mapping_lr_mul: float = 0.01
    """Learning-rate multiplier of the mapping network (equalised lr: its weights move 100x slower)."""
    channel_base: int = 16384
    """Channels at resolution r are min(channel_base // r, channel_max) (32768 for 256+ px in StyleGAN2's paper
    configs, 16384 for stylegan2-ada's paper256)."""
    channel_max: int = 512
    """The cap on channels per layer."""
    resample: str = "fir"
    """2x resampling: fir (StyleGAN2's [1, 3, 3, 1] filter) or bilinear."""
    mp_res: int = 4
    """Under train.precision bf16/fp16 only the layers of this many highest resolutions run in reduced precision
    (stylegan2-ada's num_fp16_res), the rest and the mapping network in float32."""
    conv_clamp: float = 256.0
    """The reduced-precision layers clamp their outputs to +- this (0: no clamp)."""

    def __post_init__(self) -> None:
        check_finite(self, "model.stylegan2")
        if self.resample not in ("fir", "bilinear"):
            raise ConfigError(f"model.stylegan2.resample={self.resample!r}: use 'fir' or 'bilinear'")
        if min(self.w_dim, self.channel_base, self.channel_max, self.mapping_layers) < 1:
            raise ConfigError(
                f"model.stylegan2.w_dim={self.w_dim}, mapping_layers={self.mapping_layers}, channel_base="
                f"{self.channel_base}, channel_max={self.channel_max}: all must be >= 1"
            )
        if self.mapping_lr_mul <= 0 or self.conv_clamp < 0 or self.mp_res < 0:
            raise ConfigError(
                f"model.stylegan2.mapping_lr_mul={self.mapping_lr_mul}, conv_clamp={self.conv_clamp}, mp_res="
                f"{self.mp_res}: mapping_lr_mul must be > 0, the others >= 0"
            )


def opts(cfg: ModelConfig) -> StyleGAN2Config:
    """model.stylegan2, typed."""
    return cfg.section("stylegan2", StyleGAN2Config)


def check(cfg: ModelConfig) -> None:
    refuse_spectral_norm("stylegan2")(cfg)
    longest = max(cfg.image_shape[1:])
    if opts(cfg).channel_base < longest:
        raise ConfigError(
            f"model.stylegan2.channel_base={opts(cfg).channel_base} is below the image's longer side ({longest} px): "
            f"the channels at that resolution (channel_base // {longest}) would be 0; use at least {longest} "
            "(stylegan2-ada: 16384 or 32768)"
        )


def full(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays: the tests differentiate in it)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


# -- equalised learning rate ------------------------------------------------------------------------------
def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str, clamp: float = 0.0) -> torch.Tensor:
    """Bias, then lrelu(0.2) times sqrt(2) (gain-preserving) or linear, then the clamp when computing in
    fp16/bf16 (where it guards against overflow; in float32 it would only cost time)."""
    if b is not None:
        x = x + (b.view(1, -1, 1, 1) if x.ndim == 4 else b).to(x.dtype)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2) * SQRT2
    if clamp and x.dtype in (torch.float16, torch.bfloat16):
        x = x.clamp(-clamp, clamp)
    return x


class EqLinear(nn.Module):
    """Linear layer with weights stored N(0, 1/lr_mul^2) and scaled by lr_mul / sqrt(fan_in) at run time."""

    def __init__(
        self,
        cin: int,
        cout: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        act: str = "linear",
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init))) if bias else None
        self.weight_gain, self.bias_gain, self.act = lr_mul / math.sqrt(cin), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        return bias_act(F.linear(x, w), b, self.act)


class EqConv(nn.Module):
    """D's convolution: equalised lr, optional 2x downsampling (FIR blur then stride 2, as conv2d_resample)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        f: torch.Tensor | None,
        bias: bool = True,
        act: str = "lrelu",
        down: bool = False,
        clamp: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.weight_gain, self.k, self.act, self.down, self.clamp = (
            1 / math.sqrt(cin * k * k),
            k,
            act,
            down,
            clamp,
        )
        self.f: torch.Tensor | None
        self.register_buffer("f", f, persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w, f = (self.weight * self.weight_gain).to(x.dtype), self.f
        if self.down and f is None:
            x = F.avg_pool2d(F.conv2d(x, w, padding=self.k // 2), 2)
        elif self.down and self.k == 1:
            x = F.conv2d(downsample2d(x, f), w)
        elif self.down and f is not None:  # pad (len(f) - 2 + k - 1) / 2 each side, blur, stride 2: exactly H / 2
            p = (len(f) - 2 + self.k - 1) // 2
            x = F.conv2d(upfirdn2d(x, f, pad=(p, p)), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.k // 2)
        out = bias_act(x, self.bias, self.act, self.clamp * gain)
        return out * gain if gain != 1.0 else out


# -- mapping -------------------------------------------------------------------------------------------------
def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(1, keepdim=True) + eps).rsqrt()


class Mapping(nn.Module):
    """z (and a class embedding) -> w, broadcast to every layer; the buffer w_avg is truncation's centre.
    z_dim 0 and num_ws 0: D's label mapping (stylegan2-ada's conditional D maps the embedded label through its
    own 8-layer network to the projection vector)."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, layers: int, num_classes: int, lr_mul: float) -> None:
        super().__init__()
        self.num_ws, self.num_classes = num_ws, num_classes
        self.embed = EqLinear(num_classes, w_dim) if num_classes else None
        dims = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * layers
        self.fcs = nn.ModuleList(
            EqLinear(a, b, lr_mul=lr_mul, act="lrelu") for a, b in zip(dims, dims[1:], strict=False)
        )
        self.w_avg: torch.Tensor
        self.register_buffer("w_avg", torch.zeros(w_dim) if num_ws else None)

    def forward(
        self, z: torch.Tensor | None, y: torch.Tensor | None, psi: float = 1.0, cutoff: int | None = None
    ) -> torch.Tensor:
        """psi < 1: w pulled towards w_avg (truncation), in the first `cutoff` layers only when given (the
        reference's truncation_cutoff)."""
        with _full_precision((z if z is not None else y).device):  # type: ignore[union-attr]
            return self._forward(z, y, psi, cutoff)

    def _forward(self, z: torch.Tensor | None, y: torch.Tensor | None, psi: float, cutoff: int | None) -> torch.Tensor:
        pieces = [normalize_2nd_moment(full(z))] if z is not None else []  # None: D's label mapping
        if self.embed is not None:
            if y is None:
                raise ValueError("a class-conditional generator needs labels y")
            onehot = F.one_hot(y, self.num_classes).to(self.embed.weight.dtype)
            pieces.append(normalize_2nd_moment(self.embed(onehot)))
        x = torch.cat(pieces, 1) if len(pieces) > 1 else pieces[0]
        for fc in self.fcs:
            x = fc(x)
        if not self.num_ws:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1.0:
            k = self.num_ws if cutoff is None else cutoff
            x = torch.cat([self.w_avg.lerp(x[:, :k], psi), x[:, k:]], 1)
        return x


# -- synthesis -----------------------------------------------------------------------------------------------
def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / ||w * s||: per image and output channel, the scale that gives unit-variance outputs."""
    w = weight.unsqueeze(0) * styles[:, None, :, None, None]
    return (w.square().sum((2, 3, 4)) + 1e-8).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: bool = False,
    f: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulate the input channels by the styles, convolve with the shared weight, demodulate the outputs:
    equal to StyleGAN2's per-image weights (w * s / ||w * s||) without a grouped conv (stylegan2-ada's
    fused_modconv=False path: one batched conv, which channels_last and every backend run well).
    With `up`: 2x upsampling as conv2d_resample does it (transposed stride-2 conv, then the FIR filter with
    gain 4), or bilinear upsampling before the conv."""
    k = weight.shape[-1]
    if x.dtype == torch.float16 and demodulate:  # pre-normalise against fp16 overflow (as stylegan2-ada)
        weight = weight * (1 / math.sqrt(weight[0].numel()) / weight.norm(float("inf"), (1, 2, 3), True))
        styles = styles / styles.norm(float("inf"), 1, True)
    dcoefs = demod_coefficients(full(weight), full(styles)) if demodulate else None
    x = x * styles.to(x.dtype)[:, :, None, None]
    w = weight.to(x.dtype)
    if up and f is not None:
        # conv2d_resample's padding for up=2 (pad p = k // 2): the transposed conv grows H to 2H + k - 2, the
        # filter's padding brings it back to exactly 2H
        p, n = k // 2, len(f)
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
        x = upfirdn2d(x, f, pad=(p + (n + 1) // 2 - (k - 1), p + (n - 2) // 2 - (k - 2)), gain=4.0)
    else:
        x = F.conv2d(upsample2d(x, None) if up else x, w, padding=k // 2)
    return x * dcoefs.to(x.dtype)[:, :, None, None] if dcoefs is not None else x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up), noise times a learned strength, bias, lrelu, optional clamp."""

    def __init__(
        self,
        cin: int,
        cout: int,
        w_dim: int,
        res: tuple[int, int],
        f: torch.Tensor | None,
        up: bool,
        clamp: float,
    ) -> None:
        super().__init__()
        self.affine = EqLinear(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.noise_const: torch.Tensor
        self.f: torch.Tensor | None
        self.register_buffer("noise_const", torch.randn(*res))
        self.register_buffer("f", f, persistent=False)
        self.up, self.res, self.clamp = up, res, clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, f=self.f)
        n = self.noise_const if noise is None else noise
        x = x + (n * self.noise_strength).to(x.dtype)
        return bias_act(x, self.bias, "lrelu", self.clamp * SQRT2 if self.clamp else 0.0)


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation (the style carries the 1/sqrt(fan_in) gain)."""

    def __init__(self, cin: int, channels: int, w_dim: int, clamp: float) -> None:
        super().__init__()
        self.affine = EqLinear(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.gain, self.clamp = 1 / math.sqrt(cin), clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.gain, demodulate=False)
        return bias_act(x, self.bias, "linear", self.clamp)


def channels(res: tuple[int, int], cfg: ModelConfig) -> int:
    """min(base // r, max) with r the longer side at that stage."""
    return min(opts(cfg).channel_base // max(res), opts(cfg).channel_max)


def resolutions(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(H, W) of every block, coarse to fine: from the `stages` start size, doubling."""
    (h0, w0), n = stages(cfg)
    return [(h0 * 2**i, w0 * 2**i) for i in range(n + 1)]


def mixed_precision_at(res: tuple[int, int], cfg: ModelConfig) -> bool:
    """The model.stylegan2.mp_res highest resolutions run under the run's autocast; the rest in float32."""
    return res in resolutions(cfg)[::-1][: opts(cfg).mp_res]


class SynthesisBlock(nn.Module):
    def __init__(
        self, cin: int, cout: int, res: tuple[int, int], first: bool, cfg: ModelConfig, f: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.res, self.first = res, first
        self.mp = mixed_precision_at(res, cfg)
        clamp = opts(cfg).conv_clamp if self.mp else 0.0
        if first:
            self.const = nn.Parameter(torch.randn(cout, *res))
            self.convs = nn.ModuleList([SynthesisLayer(cout, cout, opts(cfg).w_dim, res, f, False, clamp)])
        else:
            self.convs = nn.ModuleList(
                [
                    SynthesisLayer(cin, cout, opts(cfg).w_dim, res, f, True, clamp),
                    SynthesisLayer(cout, cout, opts(cfg).w_dim, res, f, False, clamp),
                ]
            )
        self.torgb = ToRGB(cout, cfg.image_shape[0], opts(cfg).w_dim, clamp)
        self.f: torch.Tensor | None
        self.register_buffer("f", f, persistent=False)

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise: list[torch.Tensor | None],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ws: (N, len(convs) + 1, w_dim), the last one for toRGB (shared with the next block's first conv)."""
        ctx = contextlib.nullcontext() if self.mp else _full_precision(ws.device)
        with ctx:
            if x is None:
                x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            if not self.mp:
                x = full(x)
            for i, conv in enumerate(self.convs):
                x = conv(x, ws[:, i], noise[i])
            y = full(self.torgb(x, ws[:, len(self.convs)]))
        img = y if img is None else upsample2d(img, self.f) + y
        return x, img


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, enabled=False)


class Generator(nn.Module):
    """G(z, y=None, mix=None, noise=None, return_ws=False) -> images in [0, 1] (and the ws when asked)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.noise_dim, self.num_classes, self.truncation = cfg.noise_dim, cfg.num_classes, 1.0
        self.truncation_cutoff: int | None = None  # truncate only the first this many layers' w (None: all)
        res = resolutions(cfg)
        f = fir_filter() if opts(cfg).resample == "fir" else None
        chans = [channels(r, cfg) for r in res]
        blocks = [SynthesisBlock(chans[max(i - 1, 0)], chans[i], r, i == 0, cfg, f) for i, r in enumerate(res)]
        self.blocks = nn.ModuleList(blocks)
        self.convs_per_block = [1 if b.first else 2 for b in blocks]
        self.noise_res = [b.res for b, n in zip(blocks, self.convs_per_block, strict=True) for _ in range(n)]
        self.num_ws = 1 + sum(self.convs_per_block)
        self.mapping = Mapping(
            cfg.noise_dim,
            opts(cfg).w_dim,
            self.num_ws,
            opts(cfg).mapping_layers,
            cfg.num_classes,
            opts(cfg).mapping_lr_mul,
        )

    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """(1, H, W) of every noise input in order: the trainer draws (N, 1, H, W) for each."""
        return [(1, *r) for r in self.noise_res]

    def styles(
        self, z: torch.Tensor, y: torch.Tensor | None, mix: tuple[torch.Tensor, int] | None = None
    ) -> torch.Tensor:
        """ws for every layer; with mix = (z2, cutoff): layers from cutoff on take z2's w (style mixing)."""
        ws = self.mapping(z, y, self.truncation, self.truncation_cutoff)
        if mix is not None and 0 < mix[1] < self.num_ws:
            ws2 = self.mapping(mix[0], y, self.truncation, self.truncation_cutoff)
            ws = torch.cat([ws[:, : mix[1]], ws2[:, mix[1] :]], 1)
        return ws

    def synthesis(self, ws: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = img = None
        k = j = 0
        for block, n in zip(self.blocks, self.convs_per_block, strict=True):
            block_noise: list[torch.Tensor | None] = list(noise[j : j + n]) if noise is not None else [None] * n
            x, img = block(x, img, ws[:, k : k + n + 1], block_noise)
            k, j = k + n, j + n
        assert img is not None
        return (img + 1) / 2

    def forward(
        self,
        z: torch.Tensor,
        y: torch.Tensor | None = None,
        mix: tuple[torch.Tensor, int] | None = None,
        noise: list[torch.Tensor] | None = None,
        return_ws: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        ws = self.styles(z, y, mix)
        img = self.synthesis(ws, noise)
        return (img, ws) if return_ws else img


@torch.no_grad()
def track_w_avg(G: Generator, z: torch.Tensor, y: torch.Tensor | None, beta: float) -> None:
    """stylegan2-ada's tracked centre of truncation: w_avg moves to the mean w of a batch, w_avg_beta kept
    (the reference moves it at each training-mode mapping call; the trainer calls this once per G step)."""
    w = G.mapping(z, y)[:, 0]
    G.mapping.w_avg.copy_(w.mean(0).lerp(G.mapping.w_avg, beta))


@torch.no_grad()
def update_w_avg(G: Generator, n: int = 10_000, seed: int = 0) -> torch.Tensor:
    """Truncation's centre: the mean of w over n latents (seeded), stored in G.mapping.w_avg (so checkpoints
    and exports carry it). A conditional G: the mean over uniformly drawn classes."""
    mapping = G.mapping
    g = torch.Generator().manual_seed(seed)
    dev = mapping.w_avg.device
    total = torch.zeros(mapping.w_avg.shape, dtype=torch.float64, device=dev)
    for start in range(0, n, 1000):
        m = min(1000, n - start)
        z = torch.randn(m, G.noise_dim, generator=g).to(dev)
        y = torch.randint(0, mapping.num_classes, (m,), generator=g).to(dev) if mapping.num_classes else None
        total += mapping(z, y)[:, 0].double().sum(0)
    mapping.w_avg.copy_((total / n).to(mapping.w_avg.dtype))
    return mapping.w_avg


# -- discriminator ---------------------------------------------------------------------------------------------
class DBlock(nn.Module):
    """Residual: two 3x3 convs (the second 2x down) plus a 1x1 down shortcut, both scaled by sqrt(1/2)."""

    def __init__(self, cin: int, cout: int, f: torch.Tensor | None, clamp: float, mp: bool) -> None:
        super().__init__()
        self.conv0 = EqConv(cin, cin, 3, f, clamp=clamp)
        self.conv1 = EqConv(cin, cout, 3, f, down=True, clamp=clamp)
        self.skip = EqConv(cin, cout, 1, f, bias=False, act="linear", down=True)
        self.mp = mp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = contextlib.nullcontext() if self.mp else _full_precision(x.device)
        with ctx:
            x = x if self.mp else full(x)
            s = self.skip(x, gain=math.sqrt(0.5))
            return s + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        res = resolutions(cfg)[::-1]  # fine to coarse
        f = fir_filter() if opts(cfg).resample == "fir" else None
        self.num_classes = cfg.num_classes
        top = channels(res[0], cfg)
        self.fromrgb = EqConv(d_in_channels(cfg), top, 1, f)
        mp = [mixed_precision_at(r, cfg) for r in res]
        self.blocks = nn.ModuleList(
            DBlock(channels(r, cfg), channels(res[i + 1], cfg), f, opts(cfg).conv_clamp if mp[i] else 0.0, mp[i])
            for i, r in enumerate(res[:-1])
        )
        c, s0 = channels(res[-1], cfg), res[-1]
        self.mbstd = MinibatchStd(cfg.mbstd_group, mbstd_channels(cfg, 1), c)
        self.conv = EqConv(c + self.mbstd.channels, c, 3, f)
        self.fc = EqLinear(c * s0[0] * s0[1], c, act="lrelu")
        self.cmap_dim = c if cfg.num_classes else 1
        self.out = EqLinear(c, self.cmap_dim)
        # conditional: the label's projection vector from its own 8-layer mapping (as stylegan2-ada's D)
        self.mapping = Mapping(0, c, 0, 8, cfg.num_classes, opts(cfg).mapping_lr_mul) if cfg.num_classes else None

    def input_blocks(self) -> list[nn.Module]:
        """Blocks from the input side (model.d_freeze counts them): the top resolution's with fromRGB."""
        return [nn.ModuleList([self.fromrgb, self.blocks[0]]), *list(self.blocks)[1:]]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, batches: int = 1) -> torch.Tensor:
        """batches: how many batches x holds, one after another (minibatch std groups each alone)."""
        x = self.fromrgb(x * 2 - 1)
        for block in self.blocks:
            x = block(x)
        with _full_precision(x.device):
            x = self.conv(self.mbstd(full(x), batches))
            x = self.out(self.fc(x.flatten(1)))
            if self.mapping is None:
                return x.squeeze(1)
            if y is None:
                raise ValueError("a class-conditional discriminator needs labels y")
            cmap = self.mapping(None, y)
            return (x * cmap).sum(1) / np.sqrt(self.cmap_dim)


FAMILY = Family(
    "stylegan2",
    Generator,
    Discriminator,
    output="(x + 1) / 2 of the synthesis output x, unclamped: mostly in [0, 1]; clamp before display",
    section=StyleGAN2Config,
    check=check,
    shape_keys=("w_dim", "mapping_layers", "channel_base", "channel_max"),
    warn_keys=("resample",),
    old_keys={
        "w_dim": "w_dim",
        "mapping_layers": "mapping_layers",
        "mapping_lr_mul": "mapping_lr_mul",
        "sg_channel_base": "channel_base",
        "sg_channel_max": "channel_max",
        "sg_resample": "resample",
        "sg_mp_res": "mp_res",
        "sg_conv_clamp": "conv_clamp",
    },
    parts=("style",),
    d_batches=True,
)
