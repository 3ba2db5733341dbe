"""Model families by name (`model.arch`): adding a family is one module here plus one registry entry.

Each family gives a generator (noise -> images in [0, 1], with a `noise_dim` attribute) and a discriminator
(images -> one logit per image). Pure modules: no I/O, no ranks, no environment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from distgan.config import ConfigError, ModelConfig
from distgan.models import mlp


@dataclass(frozen=True)
class Family:
    generator: Callable[[ModelConfig], nn.Module]
    discriminator: Callable[[ModelConfig], nn.Module]


FAMILIES: dict[str, Family] = {
    "mlp": Family(mlp.Generator, mlp.Discriminator),
}


def family(cfg: ModelConfig) -> Family:
    if cfg.arch not in FAMILIES:
        raise ConfigError(f"model.arch={cfg.arch!r}: use one of {', '.join(sorted(FAMILIES))}")
    return FAMILIES[cfg.arch]


def noise_dim(G: nn.Module) -> int:
    """Length of a generator's input noise (every family's generator has the attribute)."""
    dim = getattr(G, "noise_dim", None)
    if not isinstance(dim, int):
        raise TypeError(f"{type(G).__name__} has no integer noise_dim")
    return dim


def build_generator(cfg: ModelConfig) -> nn.Module:
    return family(cfg).generator(cfg)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    return family(cfg).discriminator(cfg)
