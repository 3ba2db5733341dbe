"""The tutorial's MLP family: generator and discriminator, widths and depth from ModelConfig. Pure modules: no I/O."""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.config import ConfigError, ModelConfig
from distgan.models.family import Family
from distgan.models.layers import apply_spectral_norm


def _mlp(widths: list[int], activation: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU() if activation == "relu" else nn.LeakyReLU(0.2))
    return layers


def _init(module: nn.Module, cfg: ModelConfig) -> None:
    if cfg.init == "default":
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, cfg.init_std)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """noise -> hidden... -> C*H*W -> sigmoid: images in [0, 1], shaped (B, C, H, W)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.image_shape = tuple(cfg.image_shape)
        self.noise_dim, self.num_classes = cfg.noise_dim, 0
        self.net = nn.Sequential(*_mlp([cfg.noise_dim, *cfg.g_hidden, math.prod(self.image_shape)], cfg.activation))
        _init(self, cfg)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.net(z)).view(-1, *self.image_shape)


class Discriminator(nn.Module):
    """image -> hidden... -> one logit. Logits, not probabilities: the losses take logits (stable under AMP)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(*_mlp([math.prod(cfg.image_shape) * cfg.d_pack, *cfg.d_hidden, 1], cfg.activation))
        _init(self, cfg)
        if cfg.spectral_norm:
            apply_spectral_norm(self)

    def input_blocks(self) -> list[nn.Module]:
        """Blocks from the input side (model.d_freeze counts them): its linear layers."""
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


def _check(cfg: ModelConfig) -> None:
    if cfg.num_classes:
        raise ConfigError(
            f"model.num_classes={cfg.num_classes}: class-conditional models are dcgan, resnet, stylegan2 or r3gan "
            "(model.arch)"
        )
    if cfg.mbstd_channels > 0:
        raise ConfigError(
            f"model.mbstd_channels={cfg.mbstd_channels} with model.arch=mlp: minibatch std appends feature maps to a "
            "conv D's coarsest stage, which the mlp has not; use model.d_pack for the mlp's mode coverage"
        )


FAMILY = Family("mlp", Generator, Discriminator, output="sigmoid, values in [0, 1]", check=_check)
