"""Residual G and D in the style of SNGAN and BigGAN (Miyato et al. 2018; Brock et al. 2019), 28-128 px.

G block: norm, ReLU, 2x nearest upsample, 3x3 conv, norm, ReLU, 3x3 conv; shortcut: upsample, 1x1 conv.
D block: ReLU, 3x3 conv, ReLU, 3x3 conv, 2x2 average pool; shortcut: 1x1 conv, pool (the first block skips
the leading ReLU and pools its shortcut first: SNGAN's "optimized" block). D's last block (after minibatch
std, where on) ends with ReLU, a sum over positions and the projection head; like DCGAN's, it has no batch norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = g_norm(cfg, cin), g_norm(cfg, cout)
        # with batch norm every path from these layers ends in a BN (the next block's, or G's last), which
        # cancels a per-channel constant: a bias would get no gradient and do nothing
        bias = cfg.g_norm != "batch"
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.skip = nn.Conv2d(cin, cout, 1, bias=bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool, first: bool) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if (cin != cout or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.skip is not None:
            if self.first and self.down:
                s = self.skip(F.avg_pool2d(s, 2))
            else:
                s = self.skip(s)
                s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.noise_dim, self.num_classes = cfg.noise_dim, cfg.num_classes
        self.s0, n = stages(cfg)
        w = widths(cfg.g_channels, n)
        self.c0 = w[0]
        self.fc = nn.Linear(cfg.noise_dim, w[0] * self.s0[0] * self.s0[1], bias=cfg.g_norm != "batch")
        self.blocks = nn.ModuleList(GBlock(a, b, cfg) for a, b in zip([w[0], *w[:-1]], w, strict=True))
        self.norm = g_norm(cfg, w[-1])
        self.out = nn.Conv2d(w[-1], cfg.image_shape[0], 3, 1, 1)
        init_weights(self, cfg)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z).view(-1, self.c0, *self.s0)  # -1, not len(z): exportable for any batch
        for block in self.blocks:
            h = block(h, y)
        return torch.sigmoid(self.out(F.relu(self.norm(h, y))))


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _, n = stages(cfg)
        w = widths(cfg.d_channels, n)[::-1]  # fine to coarse
        ins = [d_in_channels(cfg), *w[:-1]]
        blocks = [DBlock(a, b, down=True, first=i == 0) for i, (a, b) in enumerate(zip(ins, w, strict=True))]
        self.mbstd = MinibatchStd(cfg.mbstd_group, mbstd_channels(cfg, 0), w[-1])
        blocks.append(DBlock(w[-1] + self.mbstd.channels, w[-1], down=False, first=False))  # the coarsest stage
        self.blocks = nn.Sequential(*blocks)
        self.head = Projection(w[-1], cfg)
        init_weights(self, cfg)
        if cfg.spectral_norm:
            apply_spectral_norm(self)

    def input_blocks(self) -> list[nn.Module]:
        """Blocks from the input side (model.d_freeze counts them)."""
        return list(self.blocks)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, batches: int = 1) -> torch.Tensor:
        """batches: how many batches x holds, one after another (minibatch std groups each alone)."""
        h = x
        *downs, last = self.blocks  # minibatch std (where on) before the coarsest stage
        for block in downs:
            h = block(h)
        h = F.relu(last(self.mbstd(h, batches))).sum((2, 3))
        return self.head(h, y)


FAMILY = Family(
    "resnet",
    Generator,
    Discriminator,
    output="sigmoid, values in [0, 1]",
    batch_norm=lambda cfg: cfg.g_norm == "batch",
    d_batches=True,
)
