"""data.* and model.*: where the images come from and which networks are built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from distgan.config.errors import ConfigError, check_finite

S = TypeVar("S")


@dataclass(frozen=True)
class DataConfig:
    path: str = "data/mnist"
    """Shards: a folder with manifest.json, a path/brace pattern, a `::`-separated list, pipe:... or http(s)://."""
    split: str = "train"
    """Split of the manifest to read when `path` is a folder."""
    manifest: str = ""
    """Manifest for shard specs that are not a folder (default: manifest.json beside the first shard)."""
    workers: int = 1
    """DataLoader worker processes per rank (0: read in the training process)."""
    shuffle_buffer: int = 10000
    """Samples shuffled together inside each reader's stream (shard order is shuffled too)."""
    on_error: str = "skip"
    """skip: warn, count and go on past an undecodable sample or truncated shard; raise: stop the job."""
    mirror: bool = False
    """x-flips (StyleGAN2-ADA's --mirror): each sample is flipped left-right in about half of the epochs, decided
    by (seed, epoch, sample index), so the same on resume and for any number of ranks and workers. Not for
    digits or text."""

    def __post_init__(self) -> None:
        check_finite(self, "data")
        if self.on_error not in ("skip", "raise"):
            raise ConfigError(f"data.on_error={self.on_error!r}: use 'skip' or 'raise'")
        if self.workers < 0:
            raise ConfigError(f"data.workers={self.workers}: must be >= 0")
        if self.shuffle_buffer < 1:
            raise ConfigError(f"data.shuffle_buffer={self.shuffle_buffer}: must be >= 1 (1 disables it)")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "mlp"
    """Model family (distgan/models): mlp (the tutorial's fully connected G and D), dcgan, resnet, stylegan2,
    r3gan."""
    noise_dim: int = 128
    """Length of G's input noise vector."""
    g_hidden: list[int] = field(default_factory=lambda: [256])
    """Hidden widths of G, input to output; its length is G's depth."""
    d_hidden: list[int] = field(default_factory=lambda: [256])
    """Hidden widths of D."""
    image_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    """C, H, W of the images G makes and D judges; must agree with the data."""
    activation: str = "relu"
    """Hidden activation: relu (the tutorial) or leaky_relu (slope 0.2)."""
    init: str = "normal"
    """normal: weights N(0, init_std), zero biases (the tutorial); default: PyTorch's own initialisation."""
    init_std: float = 0.01
    """Standard deviation of the normal initialisation (DCGAN: 0.02)."""
    g_channels: int = 64
    """dcgan/resnet: channels of G's finest stage; each coarser stage doubles them, up to 8x."""
    d_channels: int = 64
    """dcgan/resnet: channels of D's finest stage; each coarser stage doubles them, up to 8x."""
    g_norm: str = "batch"
    """dcgan/resnet: normalisation in G: batch (class-conditional when num_classes > 0) or none."""
    sync_bn: bool = True
    """G's batch norm takes its statistics over the global batch (all ranks), so 2 ranks compute what 1
    process does; false: each rank's own batch (cheaper, results depend on the number of ranks)."""
    spectral_norm: bool = False
    """dcgan/resnet: spectral norm on every layer of D (SNGAN)."""
    d_freeze: int = 0
    """Freeze D's first N blocks from the input side (FreezeD, Mo et al. 2020; StyleGAN2-ADA's --freezed), for
    fine-tuning with train.init_from."""
    num_classes: int = 0
    """Class-conditional G and D (conditional BN, projection D) over this many classes; 0: unconditional;
    -1: the number of classes in the data's manifest."""
    mbstd_group: int = 4
    """Images per minibatch-standard-deviation group (D's epilogue, where mbstd_channels > 0): the groups stride
    over each rank's batch as stylegan2-ada's do (image i of n joins group i mod n / group); each rank's batch
    must be a multiple."""
    mbstd_channels: int = -1
    """Minibatch-std features D appends at its coarsest stage (stylegan2-ada's mbstd_num_channels): -1 the
    family's default (stylegan2: 1; dcgan, resnet, r3gan: 0), 0 off, n > 0 (D's coarsest width a multiple)."""
    d_pack: int = 1
    """PacGAN's packing (Lin et al. 2018): D judges this many images at once, stacked along channels, reals with
    reals and fakes with fakes; 1: off. Each rank's batch (and micro-batch) must be a multiple of it."""
    sections: dict[str, Any] = field(default_factory=dict)
    """The families' own sections, written model.<family> (model.stylegan2.channel_base): each family declares its
    dataclass in its module (distgan/models); the loader keeps each here by name, as that dataclass."""

    def section(self, family: str, cls: type[S]) -> S:
        """model.<family>, typed: the loaded section; one given in code as a mapping, made; else its defaults."""
        value = self.sections.get(family)
        if isinstance(value, cls):
            return value
        return cls(**value) if isinstance(value, dict) else cls()

    def __post_init__(self) -> None:  # noqa: C901, PLR0912 (a flat list of independent checks)
        check_finite(self, "model")
        if self.noise_dim < 1:
            raise ConfigError(f"model.noise_dim={self.noise_dim}: must be >= 1")
        for name in ("g_hidden", "d_hidden"):
            widths = getattr(self, name)
            if not widths or any(w < 1 for w in widths):
                raise ConfigError(f"model.{name}={list(widths)}: give at least one width, all >= 1")
        if len(self.image_shape) != 3 or any(s < 1 for s in self.image_shape):
            raise ConfigError(f"model.image_shape={list(self.image_shape)}: give [C, H, W], all >= 1")
        if self.image_shape[0] not in (1, 3):
            raise ConfigError(f"model.image_shape channels={self.image_shape[0]}: use 1 (grey) or 3 (RGB)")
        if self.activation not in ("relu", "leaky_relu"):
            raise ConfigError(f"model.activation={self.activation!r}: use 'relu' or 'leaky_relu'")
        if self.init not in ("normal", "xavier", "default"):
            raise ConfigError(f"model.init={self.init!r}: use 'normal', 'xavier' or 'default'")
        if self.g_channels < 1 or self.d_channels < 1:
            raise ConfigError(f"model.g_channels={self.g_channels}, model.d_channels={self.d_channels}: must be >= 1")
        if self.g_norm not in ("batch", "none"):
            raise ConfigError(f"model.g_norm={self.g_norm!r}: use 'batch' or 'none'")
        if self.num_classes < -1:
            raise ConfigError(
                f"model.num_classes={self.num_classes}: use 0 (unconditional), N classes, or -1 (from the data)"
            )
        if self.init_std <= 0:
            raise ConfigError(f"model.init_std={self.init_std}: must be > 0")
        if self.d_freeze < 0:
            raise ConfigError(f"model.d_freeze={self.d_freeze}: give a number of D blocks >= 0")
        if self.mbstd_group < 1:
            raise ConfigError(f"model.mbstd_group={self.mbstd_group}: must be >= 1")
        if self.d_pack < 1 or self.mbstd_channels < -1:
            raise ConfigError(
                f"model.d_pack={self.d_pack}, model.mbstd_channels={self.mbstd_channels}: d_pack must be >= 1 (1: "
                "no packing), mbstd_channels >= 0 (or -1: the family's default)"
            )
        if self.d_pack > 1 and self.num_classes:
            raise ConfigError(
                f"model.d_pack={self.d_pack} with model.num_classes={self.num_classes}: a packed D judges several "
                "images at once, and their classes differ; packing is for unconditional models (model.num_classes=0)"
            )
