"""Model families by name (`model.arch`): adding a family is one module here plus one registry entry.

Each family gives a generator G(z, y=None) -> images in [0, 1] (attributes `noise_dim`, `num_classes`) and a
discriminator D(x, y=None) -> one logit per image; y (class labels) only when model.num_classes > 0.
Pure modules: no I/O, no ranks, no environment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from distgan.config import ConfigError, ModelConfig
from distgan.models import dcgan, mlp, r3gan, resnet, stylegan2


@dataclass(frozen=True)
class Family:
    generator: Callable[[ModelConfig], nn.Module]
    discriminator: Callable[[ModelConfig], nn.Module]
    d_parts: bool = False
    """D(x, y, parts=k) groups images within each of k consecutive batches of x (minibatch std): the trainer
    passes parts=2 where one forward holds reals then fakes."""


FAMILIES: dict[str, Family] = {
    "mlp": Family(mlp.Generator, mlp.Discriminator),
    "dcgan": Family(dcgan.Generator, dcgan.Discriminator, d_parts=True),
    "resnet": Family(resnet.Generator, resnet.Discriminator, d_parts=True),
    "stylegan2": Family(stylegan2.Generator, stylegan2.Discriminator, d_parts=True),
    "r3gan": Family(r3gan.Generator, r3gan.Discriminator, d_parts=True),
}


def family(cfg: ModelConfig) -> Family:
    check(cfg)
    if cfg.num_classes < 0:
        raise ConfigError("model.num_classes=-1 must be resolved from the data's manifest before building")
    return FAMILIES[cfg.arch]


def check(cfg: ModelConfig) -> None:
    """What the family decides about a config, checked when a run loads it (before its run directory is
    touched) and again when the networks are built."""
    if cfg.arch not in FAMILIES:
        raise ConfigError(f"model.arch={cfg.arch!r}: use one of {', '.join(sorted(FAMILIES))}")
    if cfg.num_classes and cfg.arch == "mlp":
        raise ConfigError(
            f"model.num_classes={cfg.num_classes}: class-conditional models are dcgan, resnet, stylegan2 or r3gan "
            "(model.arch)"
        )
    if cfg.arch == "mlp" and cfg.mbstd_channels > 0:
        raise ConfigError(
            f"model.mbstd_channels={cfg.mbstd_channels} with model.arch=mlp: minibatch std appends feature maps to a "
            "conv D's coarsest stage, which the mlp has not; use model.d_pack for the mlp's mode coverage"
        )
    if cfg.arch in ("stylegan2", "r3gan") and cfg.spectral_norm:
        raise ConfigError(
            f"model.spectral_norm=true with model.arch={cfg.arch}: its D is regularised by gradient penalties "
            "(train.r1_gamma, train.r2_gamma), not spectral norm; set model.spectral_norm=false"
        )


def noise_dim(G: nn.Module) -> int:
    """Length of a generator's input noise (every family's generator has the attribute)."""
    dim = getattr(G, "noise_dim", None)
    if not isinstance(dim, int):
        raise TypeError(f"{type(G).__name__} has no integer noise_dim")
    return dim


def num_classes(G: nn.Module) -> int:
    """Classes a generator is conditioned on (0: unconditional)."""
    return int(getattr(G, "num_classes", 0) or 0)


def build_generator(cfg: ModelConfig) -> nn.Module:
    return family(cfg).generator(cfg)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    return family(cfg).discriminator(cfg)
