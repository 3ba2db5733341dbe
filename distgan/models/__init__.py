"""Model families by name (`model.arch`): adding a family is one module here plus one line in FAMILIES.

Each family's module declares `FAMILY` (models/family.py): its networks, its `model.<family>` config section, its
checks, resume shape keys, batch norm and the training parts it brings. Each gives a generator G(z, y=None) ->
images (attributes `noise_dim`, `num_classes`) and a discriminator D(x, y=None) -> one logit per input; y (class
labels) only when model.num_classes > 0. Pure modules: no I/O, no ranks, no environment.
"""

from __future__ import annotations

from torch import nn

from distgan.config import ConfigError, ModelConfig
from distgan.models import dcgan, mlp, r3gan, resnet, stylegan2
from distgan.models.family import Family

FAMILIES: dict[str, Family] = {}
"""Every family by model.arch, filled by `register`."""


def register(f: Family) -> None:
    """Makes a family known to the networks' builders, the step and the config loader (distgan/configure.py reads
    its model.<name> section, checks and old keys from here); a family in another package calls it once."""
    FAMILIES[f.name] = f


for _f in (
    mlp.FAMILY,
    dcgan.FAMILY,
    resnet.FAMILY,
    stylegan2.FAMILY,
    r3gan.FAMILY,
):  # the one list of families
    register(_f)


def family_of(cfg: ModelConfig) -> Family:
    """The config's family, with what it refuses checked (again, for a ModelConfig made in code: a loaded one was
    checked by distgan/configure.py)."""
    if cfg.num_classes < 0:
        raise ConfigError("model.num_classes=-1 must be resolved from the data's manifest before building")
    if cfg.arch not in FAMILIES:
        raise ConfigError(f"model.arch={cfg.arch!r}: use one of {', '.join(sorted(FAMILIES))}")
    family = FAMILIES[cfg.arch]
    family.check(cfg)
    return family


def shape_keys(cfg: ModelConfig) -> tuple[str, ...]:
    """The family's section keys whose change makes saved weights unusable, as dotted config keys."""
    f = FAMILIES[cfg.arch]
    return tuple(f"model.{f.name}.{k}" for k in f.shape_keys)


def warn_keys(cfg: ModelConfig) -> tuple[str, ...]:
    f = FAMILIES[cfg.arch]
    return tuple(f"model.{f.name}.{k}" for k in f.warn_keys)


def noise_dim(G: nn.Module) -> int:
    """Length of a generator's input noise (every family's generator has the attribute)."""
    dim = getattr(G, "noise_dim", None)
    if not isinstance(dim, int):
        raise TypeError(f"{type(G).__name__} has no integer noise_dim")
    return dim


def num_classes(G: nn.Module) -> int:
    """Classes a generator is conditioned on (0: unconditional)."""
    return int(getattr(G, "num_classes", 0) or 0)


def parameter_counts(cfg: ModelConfig) -> tuple[int, int]:
    """(G's, D's) parameter counts, the networks built on the meta device: nothing is allocated, so a width of
    10^8 is counted, not attempted."""
    import torch

    with torch.device("meta"):
        return tuple(
            sum(p.numel() for p in build(cfg).parameters()) for build in (build_generator, build_discriminator)
        )  # type: ignore[return-value]


def build_generator(cfg: ModelConfig) -> nn.Module:
    return family_of(cfg).generator(cfg)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    return family_of(cfg).discriminator(cfg)
