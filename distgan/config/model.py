"""data.* and model.*: where the images come from and which networks are built."""

from __future__ import annotations

from dataclasses import dataclass, field

from distgan.config.errors import ConfigError, check_finite


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
    w_dim: int = 512
    """stylegan2: width of the intermediate latent w (and of the mapping network)."""
    mapping_layers: int = 8
    """stylegan2: depth of the mapping network z -> w (StyleGAN2: 8; stylegan2-ada's paper256 and cifar: 2)."""
    mapping_lr_mul: float = 0.01
    """stylegan2: learning-rate multiplier of the mapping network (equalised lr: its weights move 100x slower)."""
    sg_channel_base: int = 16384
    """stylegan2: channels at resolution r are min(sg_channel_base // r, sg_channel_max) (32768 for 256+ px
    in StyleGAN2's paper configs, 16384 for stylegan2-ada's paper256)."""
    sg_channel_max: int = 512
    """stylegan2: the cap on channels per layer."""
    sg_resample: str = "fir"
    """stylegan2: 2x resampling: fir (StyleGAN2's [1, 3, 3, 1] filter) or bilinear."""
    sg_mp_res: int = 4
    """stylegan2: under train.precision bf16/fp16 only the layers of this many highest resolutions run in
    reduced precision (stylegan2-ada's num_fp16_res), the rest and the mapping network in float32."""
    sg_conv_clamp: float = 256.0
    """stylegan2: the reduced-precision layers clamp their outputs to +- this (0: no clamp)."""
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
    r3_channel_base: int = 24576
    """r3gan: channels at resolution r are min(r3_channel_base // r, r3_channel_max), r the longer side, rounded
    down to a multiple of r3_group_channels (R3GAN's FFHQ-256: 768 up to 32 px, then halving: 24576 and 768)."""
    r3_channel_max: int = 768
    """r3gan: the cap on channels per stage."""
    r3_blocks: int = 2
    """r3gan: residual blocks per stage (R3GAN: 2)."""
    r3_expansion: int = 2
    """r3gan: the inverted bottleneck's expansion of a block's channels (R3GAN: 2)."""
    r3_group_channels: int = 16
    """r3gan: channels per group of a block's grouped 3x3 conv; cardinality = expanded channels / this (R3GAN:
    2 * 768 / 96 = 16)."""

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
            raise ConfigError(
                f"model.g_channels={self.g_channels}, model.d_channels={self.d_channels}: must be >= 1"
            )
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
        if self.sg_resample not in ("fir", "bilinear"):
            raise ConfigError(f"model.sg_resample={self.sg_resample!r}: use 'fir' or 'bilinear'")
        if (
            min(self.w_dim, self.sg_channel_base, self.sg_channel_max, self.mbstd_group) < 1
            or self.mapping_layers < 1
        ):
            raise ConfigError(
                f"model.w_dim={self.w_dim}, mapping_layers={self.mapping_layers}, sg_channel_base="
                f"{self.sg_channel_base}, sg_channel_max={self.sg_channel_max}, mbstd_group={self.mbstd_group}: "
                "all must be >= 1"
            )
        if min(self.r3_channel_base, self.r3_channel_max, self.r3_blocks, self.r3_expansion,
               self.r3_group_channels) < 1:  # fmt: skip
            raise ConfigError(
                f"model.r3_channel_base={self.r3_channel_base}, r3_channel_max={self.r3_channel_max}, r3_blocks="
                f"{self.r3_blocks}, r3_expansion={self.r3_expansion}, r3_group_channels={self.r3_group_channels}: "
                "all must be >= 1"
            )
        longest = max(self.image_shape[1:])
        if self.arch == "stylegan2" and self.sg_channel_base < longest:
            raise ConfigError(
                f"model.sg_channel_base={self.sg_channel_base} is below the image's longer side ({longest} px): the "
                f"channels at that resolution (sg_channel_base // {longest}) would be 0; use at least {longest} "
                "(stylegan2-ada: 16384 or 32768)"
            )
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
        if self.arch == "r3gan" and self.r3_group_channels > self.r3_channel_max:
            raise ConfigError(
                f"model.r3_group_channels={self.r3_group_channels} is above model.r3_channel_max="
                f"{self.r3_channel_max}: stages are at least one group wide, so every stage would be widened past "
                f"the cap. Use r3_group_channels <= {self.r3_channel_max}"
            )
        if self.mapping_lr_mul <= 0 or self.sg_conv_clamp < 0 or self.sg_mp_res < 0:
            raise ConfigError(
                f"model.mapping_lr_mul={self.mapping_lr_mul}, sg_conv_clamp={self.sg_conv_clamp}, sg_mp_res="
                f"{self.sg_mp_res}: mapping_lr_mul must be > 0, the others >= 0"
            )
