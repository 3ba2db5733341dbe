"""What a model family declares about itself, in its own module (one `FAMILY = Family(...)` each): the registry
(distgan/models/__init__.py) lists them, and everything that once asked `arch == ...` asks the family instead."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from distgan.config import ConfigError, ModelConfig


def no_check(cfg: ModelConfig) -> None:
    """A family with nothing to refuse beyond the common checks."""


def never(cfg: ModelConfig) -> bool:
    return False


@dataclass(frozen=True)
class Family:
    name: str
    """model.arch."""
    generator: Callable[[ModelConfig], nn.Module]
    """G(z, y=None) -> images (attributes noise_dim, num_classes)."""
    discriminator: Callable[[ModelConfig], nn.Module]
    """D(x, y=None[, batches]) -> one logit per input."""
    output: str
    """What G returns, for generator.json (`distgan export`)."""
    section: type | None = None
    """Its frozen dataclass under model.<name> (None: no settings of its own)."""
    check: Callable[[ModelConfig], None] = no_check
    """What the family refuses in a whole model config (run when the config loads): raise ConfigError."""
    shape_keys: tuple[str, ...] = ()
    """Fields of its section whose change makes saved weights unusable (a resume refuses them)."""
    warn_keys: tuple[str, ...] = ()
    """Fields of its section a resume accepts but names (they change what the same weights compute)."""
    old_keys: dict[str, str] = field(default_factory=dict)
    """Flat model.* keys of before its section (sg_channel_base) -> the section's field; still read, with a
    warning, from configs, command lines and checkpoints."""
    batch_norm: Callable[[ModelConfig], bool] = never
    """Whether G normalises over the batch (micro-batches would then change what G computes)."""
    parts: tuple[str, ...] = ()
    """The parts of the step it brings (training/part.py; their modules make them): "style" (StyleGAN2's mixing,
    layer noise, path length and tracked w_avg)."""
    d_batches: bool = False
    """D(x, y, batches=k) groups images within each of k consecutive batches of x (minibatch std): the step
    passes batches=2 where one forward holds reals then fakes."""


def refuse_spectral_norm(arch: str) -> Callable[[ModelConfig], None]:
    """The check of a family whose D is regularised by gradient penalties."""

    def check(cfg: ModelConfig) -> None:
        if cfg.spectral_norm:
            raise ConfigError(
                f"model.spectral_norm=true with model.arch={arch}: its D is regularised by gradient penalties "
                "(train.r1_gamma, train.r2_gamma), not spectral norm; set model.spectral_norm=false"
            )

    return check
