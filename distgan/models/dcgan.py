"""DCGAN (Radford et al. 2016) at any size the stages allow (28, 32, 64, 128, 32x48, 64x96, ...), grey or RGB.

G: noise -> linear to (c0, s0h, s0w) -> [norm, ReLU, 4x4 stride-2 transposed conv] per stage -> sigmoid.
D: [4x4 stride-2 conv, LeakyReLU 0.2] per stage down to s0 -> [minibatch std] -> flatten -> projection head. D has
no batch norm: it runs on real and fake halves together and twice per step, where batch statistics would couple them.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.config import ModelConfig
from distgan.models.family import Family
from distgan.models.layers import (
    MinibatchStd,
    Projection,
    apply_spectral_norm,
    d_in_channels,
    g_norm,
    init_weights,
    mbstd_channels,
    stages,
    widths,
)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        channels = cfg.image_shape[0]
        self.noise_dim, self.num_classes = cfg.noise_dim, cfg.num_classes
        self.s0, n = stages(cfg)
        w = widths(cfg.g_channels, n)
        self.c0 = w[0]
        bias = cfg.g_norm != "batch"  # a bias right before batch norm is cancelled by it: no gradient, no use
        self.fc = nn.Linear(cfg.noise_dim, w[0] * self.s0[0] * self.s0[1], bias=bias)
        self.norms = nn.ModuleList(g_norm(cfg, c) for c in w)
        outs = [*w[1:], channels]
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(a, b, 4, 2, 1, bias=bias or i == n - 1)
            for i, (a, b) in enumerate(zip(w, outs, strict=True))
        )
        init_weights(self, cfg)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z).view(-1, self.c0, *self.s0)  # -1, not len(z): exportable for any batch
        for norm, up in zip(self.norms, self.ups, strict=True):
            h = up(torch.relu(norm(h, y)))
        return torch.sigmoid(h)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s0, n = stages(cfg)
        w = widths(cfg.d_channels, n)[::-1]  # fine to coarse
        ins = [d_in_channels(cfg), *w[:-1]]
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1) for a, b in zip(ins, w, strict=True))
        self.mbstd = MinibatchStd(cfg.mbstd_group, mbstd_channels(cfg, 0), w[-1])
        self.head = Projection((w[-1] + self.mbstd.channels) * s0[0] * s0[1], cfg)
        init_weights(self, cfg)
        if cfg.spectral_norm:
            apply_spectral_norm(self)

    def input_blocks(self) -> list[nn.Module]:
        """Blocks from the input side (model.d_freeze counts them)."""
        return list(self.downs)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, batches: int = 1) -> torch.Tensor:
        """batches: how many batches x holds, one after another (minibatch std groups each alone)."""
        h = x
        for down in self.downs:
            h = nn.functional.leaky_relu(down(h), 0.2)
        return self.head(self.mbstd(h, batches).flatten(1), y)


FAMILY = Family(
    "dcgan",
    Generator,
    Discriminator,
    output="sigmoid, values in [0, 1]",
    batch_norm=lambda cfg: cfg.g_norm == "batch",
    d_batches=True,
)
