"""Building blocks shared by the convolutional families: class-aware norms, spectral norm, the projection head.

Pure modules: no ranks, no I/O. Cross-rank batch statistics are swapped in by distgan.dist.sync_batchnorm.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from distgan.config import ConfigError, ModelConfig


def stages(cfg: ModelConfig) -> tuple[tuple[int, int], int]:
    """((start height, start width), number of 2x stages): both sides halve together while each stays even and
    >= 4 after halving. 28 -> 7 and 2 stages (MNIST), 32 -> 4 and 3, 64 -> 4 and 4, 48 -> 6 and 3; non-square
    32x48 -> 4x6 and 3, 64x96 -> 4x6 and 4."""
    _, h, w = cfg.image_shape

    def halvings(size: int) -> int:
        n = 0
        while size % 2 == 0 and size // 2 >= 4:
            size, n = size // 2, n + 1
        return n

    n = min(halvings(h), halvings(w))
    if n == 0:
        raise ConfigError(
            f"model.image_shape={list(cfg.image_shape)}: {cfg.arch} needs at least 8x8 images, each side even"
        )
    return (h >> n, w >> n), n


def widths(base: int, n: int) -> list[int]:
    """Channels of n stages from coarse to fine: base * 2^(n-1), ..., base * 2, base; at most 8x base."""
    return [base * min(8, 2 ** (n - 1 - i)) for i in range(n)]


class ClassNorm(nn.Module):
    """BatchNorm whose scale and shift depend on the class (conditional BN, de Vries et al. 2017); without
    classes a plain affine BatchNorm. forward(x, y) either way, so blocks need not know which."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.shift = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        out = self.bn(x)
        if not self.num_classes:
            return out
        if y is None:
            raise ValueError("a class-conditional generator needs labels y")
        return out * self.gain(y)[:, :, None, None] + self.shift(y)[:, :, None, None]


class NoNorm(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return x


def g_norm(cfg: ModelConfig, channels: int) -> nn.Module:
    return ClassNorm(channels, cfg.num_classes) if cfg.g_norm == "batch" else NoNorm()


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral norm (Miyato et al. 2018) on every conv, linear and embedding of D, after initialisation: one
    power iteration per training-mode forward, none in eval mode (the trainer runs D in eval mode in G's
    phase, so the vectors advance once per D step)."""
    for m in list(module.modules()):
        if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding):
            spectral_norm(m)
    return module


class Projection(nn.Module):
    """D's output: w.h + b, plus <embed(y), h> with classes (the projection discriminator, Miyato & Koyama 2018)."""

    def __init__(self, features: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.num_classes = cfg.num_classes
        if cfg.num_classes:
            self.embed = nn.Embedding(cfg.num_classes, features)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        out = self.linear(h).squeeze(1)
        if self.num_classes:
            if y is None:
                raise ValueError("a class-conditional discriminator needs labels y")
            out = out + (self.embed(y) * h).sum(1)
        return out


def init_weights(module: nn.Module, cfg: ModelConfig) -> None:
    """normal: N(0, init_std) weights and zero biases (DCGAN: 0.02); xavier: Glorot uniform (SNGAN, BigGAN);
    default: PyTorch's own. Norms and embeddings keep their own initialisation."""
    if cfg.init == "default":
        return
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            if cfg.init == "normal":
                nn.init.normal_(m.weight, 0.0, cfg.init_std)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def d_in_channels(cfg: ModelConfig) -> int:
    """Channels of D's input: the image's, times model.d_pack (PacGAN stacks that many images along channels)."""
    return cfg.image_shape[0] * cfg.d_pack


def mbstd_channels(cfg: ModelConfig, family_default: int) -> int:
    """Minibatch-std channels D appends at its coarsest stage: model.mbstd_channels, or the family's default
    where it is -1 (stylegan2: 1, as stylegan2-ada; the other conv families: 0, off)."""
    return family_default if cfg.mbstd_channels < 0 else cfg.mbstd_channels


class MinibatchStd(nn.Module):
    """The layer form of minibatch_std for D's epilogue, over `features` channels; `channels` 0 passes x
    through unchanged. D's next layer takes features + channels."""

    def __init__(self, group: int, channels: int, features: int) -> None:
        super().__init__()
        if channels and features % channels:
            raise ConfigError(
                f"model.mbstd_channels={channels}: D's coarsest stage has {features} channels, which do not split "
                f"into {channels} groups; use a divisor of {features} (stylegan2-ada: 1)"
            )
        self.group, self.channels = group, channels

    def forward(self, x: torch.Tensor, batches: int = 1) -> torch.Tensor:
        return minibatch_std(x, self.group, self.channels, batches) if self.channels else x


def minibatch_std(x: torch.Tensor, group: int, num_channels: int = 1, batches: int = 1) -> torch.Tensor:
    """Append the std over groups of `group` images, averaged over channels and pixels (per group of
    C / num_channels channels): stylegan2-ada's MinibatchStdLayer, whose groups stride over the batch (image i of
    n joins group i mod n / group). `batches`: D's one forward over [reals, fakes] is two batches, each grouped
    alone as the reference's two forwards would be (reals and fakes never share a group)."""
    n, c, h, w = x.shape
    if c % num_channels:
        raise ValueError(f"minibatch std: {c} channels do not split into {num_channels} groups")
    if n % batches:
        raise ValueError(f"minibatch std: a batch of {n} does not split into {batches} batches")
    m = n // batches
    g = min(group, m)
    if m % g:
        raise ValueError(f"minibatch std: a batch of {m} does not split into groups of {g}")
    y = (x if x.dtype in (torch.float32, torch.float64) else x.float()).reshape(
        batches, g, m // g, num_channels, c // num_channels, h, w
    )
    y = (y - y.mean(1, keepdim=True)).square().mean(1)
    y = (y + 1e-8).sqrt().mean((3, 4, 5))  # (batches, m/g, F)
    y = y.reshape(batches, 1, m // g, num_channels, 1, 1).expand(-1, g, -1, -1, h, w).reshape(n, num_channels, h, w)
    return torch.cat([x, y.to(x.dtype)], 1)
