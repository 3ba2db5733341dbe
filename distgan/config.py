"""Typed run configuration: YAML preset + dotted CLI overrides, validated before anything is built."""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config key or value a user must fix; the message names it and says how."""


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
    """stylegan2: images per minibatch-standard-deviation group (consecutive images; each rank's batch must
    be a multiple)."""
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

    def __post_init__(self) -> None:
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
        if self.mapping_lr_mul <= 0 or self.sg_conv_clamp < 0 or self.sg_mp_res < 0:
            raise ConfigError(
                f"model.mapping_lr_mul={self.mapping_lr_mul}, sg_conv_clamp={self.sg_conv_clamp}, sg_mp_res="
                f"{self.sg_mp_res}: mapping_lr_mul must be > 0, the others >= 0"
            )


@dataclass(frozen=True)
class OptimConfig:
    lr_g: float = 2e-4
    """Adam learning rate of G."""
    lr_d: float = 2e-4
    """Adam learning rate of D."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam (beta1, beta2), shared by both networks."""
    eps: float = 1e-8
    """Adam epsilon."""
    lr_decay: str = "none"
    """none | linear | cosine: both learning rates fall to lr_min_ratio of their value by the last step (the
    decay curve, which beta2_final, train.gamma_min_ratio and train.ema_grow follow too)."""
    decay_start: float = 0.5
    """Fraction of the decay's span after which it begins (pix2pix decays over the second half)."""
    decay_kimg: float = 0.0
    """The decay's span in thousands of images, after which the values hold (R3GAN: 20,000); 0: the run's steps."""
    lr_min_ratio: float = 0.0
    """Learning rate at the end of the decay, as a fraction of the initial one."""
    beta2_final: float = -1.0
    """Adam's beta2 at the end of the decay, moving from betas[1] along the decay curve (R3GAN: 0.9 -> 0.99);
    -1: beta2 stays."""
    fused: bool = False
    """Adam's fused kernel (one launch for all parameters: the fastest on a GPU). Off by default: it rounds
    differently from the default implementation, so a run's numbers would change with it."""

    def __post_init__(self) -> None:
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"optim.{name}={getattr(self, name)}: a learning rate must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)}: give two values in [0, 1)")
        if self.eps <= 0:
            raise ConfigError(f"optim.eps={self.eps}: must be > 0")
        if self.decay_kimg < 0 or not (self.beta2_final == -1 or 0 <= self.beta2_final < 1):
            raise ConfigError(
                f"optim.decay_kimg={self.decay_kimg}, optim.beta2_final={self.beta2_final}: decay_kimg must be "
                ">= 0, beta2_final in [0, 1) or -1 (constant)"
            )
        if self.lr_decay not in ("none", "linear", "cosine"):
            raise ConfigError(f"optim.lr_decay={self.lr_decay!r}: use none, linear or cosine")
        if not (0 <= self.decay_start < 1 and 0 <= self.lr_min_ratio <= 1):
            raise ConfigError(
                f"optim.decay_start={self.decay_start}, optim.lr_min_ratio={self.lr_min_ratio}: "
                "decay_start must be in [0, 1), lr_min_ratio in [0, 1]"
            )


AUGMENT_OPS = ("color", "translation", "cutout")


def parse_augment(policy: str) -> tuple[str, ...]:
    """train.augment's comma-separated list -> operation names, refusing unknown ones by name; `ada` alone."""
    ops = tuple(p.strip() for p in policy.split(",") if p.strip())
    if "ada" in ops:
        if ops != ("ada",):
            raise ConfigError(f"train.augment={policy!r}: ada is a pipeline of its own; give it alone")
        return ops
    bad = [p for p in ops if p not in AUGMENT_OPS]
    if bad:
        raise ConfigError(
            f"train.augment={policy!r}: unknown {', '.join(bad)}; use a comma-separated subset of "
            + ", ".join(AUGMENT_OPS)
            + " (DiffAugment), or ada"
        )
    return ops


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
"""torch.compile modes that capture CUDA graphs (inductor's triton.cudagraphs on)."""


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 100
    """Global batch (images per optimizer step over all processes): 100 means the same on 1 and on 8."""
    batch_per_device: int = 0
    """Images per forward pass on a device (StyleGAN3's --batch-gpu): each rank's share of batch_size runs in
    micro-batches of this size with gradients accumulated, so the optimizer still sees batch_size images and
    the training curve does not change; 0: the whole share in one pass."""
    epochs: int = 100
    """Passes over the training data."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: run all epochs); for smoke tests and debugging."""
    seed: int = 0
    """Base seed; each rank derives its own from it."""
    precision: str = "no"
    """Mixed precision: no | fp16 | bf16."""
    log_every: int = 100
    """Steps between metric reductions (one host sync), metrics.jsonl rows and console lines."""
    print_every_epochs: int = 10
    """Epochs between the tutorial's loss print-outs."""
    sample_every_epochs: int = 10
    """Epochs between sample images from the fixed noise (1x10 strip and 8x8 grid)."""
    sample_every: int = 0
    """Steps between sample images instead (0: use sample_every_epochs)."""
    out_dir: str = "runs"
    """Parent folder of run directories."""
    run_name: str = ""
    """Run directory name (default: config name + time)."""
    debug_checks: bool = False
    """Extra checks for debugging: finite losses every step, replica consistency at each log step."""
    dist_timeout_s: int = 600
    """Seconds a collective may wait before the job is declared hung."""
    init_from: str = ""
    """Start from another run's weights (any data): a checkpoint folder, a run's final/ folder or an export
    folder; fresh optimizers, counters and schedules (distgan/warmstart.py). A resume of this run wins."""
    init_skip: list[str] = field(default_factory=list)
    """init_from: tensors (fnmatch patterns of their names, e.g. '*embed*') left at their fresh initialisation,
    for layers whose shape changed (a new class count); any other mismatch is refused by name."""
    ema_kimg: float = 10.0
    """Half-life of G's exponential moving average, in thousands of images (0: no EMA). Samples use the EMA."""
    ema_rampup: float = 0.05
    """Early on the half-life is at most this fraction of the images seen so far (StyleGAN's ramp-up; 0: none)."""
    ema_grow: bool = False
    """The half-life grows from 0 to ema_kimg along optim's decay curve (R3GAN's EMA schedule), instead of
    the ramp-up."""
    compile: bool = False
    """torch.compile G and D (inductor); the first steps are slow while it compiles."""
    compile_mode: str = "default"
    """train.compile's mode (torch.compile's): default, reduce-overhead (CUDA graphs: each compiled forward and
    backward replays as one launch, for small launch-bound models on a GPU; on a CPU the same as default),
    max-autotune, or max-autotune-no-cudagraphs."""
    channels_last: bool = False
    """Conv families: NHWC memory layout for G, D and the batches (faster convolutions on tensor-core GPUs)."""
    loss: str = "ns"
    """Adversarial loss: ns (the tutorial's log loss, non-saturating for G), hinge (SNGAN, BigGAN) or rpgan
    (relativistic pairing, R3GAN: each real's logit against its paired fake's)."""
    d_steps: int = 1
    """D updates per G update: every batch trains D, every d_steps-th batch also trains G (WGAN's n_critic)."""
    r1_gamma: float = 0.0
    """Weight of the R1 penalty (gamma/2) * E||grad D(x)||^2 on real images (StyleGAN2; 0: off)."""
    r1_every: int = 16
    """Lazy R1 and R2: applied on every r1_every-th D step, scaled by r1_every (StyleGAN2's schedule; 1: every
    step, as R3GAN)."""
    r2_gamma: float = 0.0
    """Weight of the R2 penalty (gamma/2) * E||grad D(G(z))||^2 on fakes (R3GAN uses R1 and R2 with one gamma;
    0: off)."""
    gamma_min_ratio: float = 1.0
    """R1's and R2's weights follow optim's decay curve to this fraction of r1_gamma and r2_gamma (R3GAN: 0.1;
    1: constant)."""
    augment: str = ""
    """Augmentation of everything D sees: a DiffAugment policy (a comma-separated subset of color, translation,
    cutout) or ada (adaptive discriminator augmentation, StyleGAN2-ADA's bgc pipeline)."""
    ada_target: float = 0.6
    """ADA: the target of r_t = E[sign(D(real))]; p rises while D is surer than this (0: p stays at ada_p)."""
    ada_p: float = 0.0
    """ADA: the initial augmentation probability (with ada_target=0: the fixed p)."""
    ada_p_max: float = 1.0
    """ADA: the cap on p."""
    ada_kimg: float = 500.0
    """ADA: thousands of images for p to move from 0 to 1 at most (the paper's speed: 500)."""
    ada_interval: int = 4
    """ADA: D steps between adjustments of p."""
    ada_ops: str = "bgc"
    """ADA: the operations: bgc (the paper's default), bg (no colour: grey data), b, or a comma list of xflip,
    rotate90, xint, scale, rotate, aniso, xfrac, brightness, contrast, lumaflip, hue, saturation."""
    style_mixing: float = 0.9
    """stylegan2: share of batches whose fakes mix two latents' styles at a random layer (StyleGAN2: 0.9)."""
    pl_weight: float = 2.0
    """stylegan2: weight of the path-length penalty (StyleGAN2: 2; 0: off)."""
    pl_every: int = 4
    """stylegan2: lazy path length: applied on every pl_every-th G step, scaled by pl_every."""
    pl_decay: float = 0.01
    """stylegan2: decay of the running mean of path lengths."""
    pl_batch_shrink: int = 2
    """stylegan2: the penalty uses every pl_batch_shrink-th fake of the G step (each rank's batch a multiple)."""
    time_phases: bool = False
    """Measure data wait / D step / G step / logging per step (synchronises a GPU each step: benchmarks only)."""

    @property
    def cudagraphs(self) -> bool:
        """torch.compile captures CUDA graphs: each step must be marked (cudagraph_mark_step_begin) before it."""
        return self.compile and self.compile_mode in CUDAGRAPH_MODES

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batch_per_device < 0:
            raise ConfigError(
                f"train.batch_size={self.batch_size}, train.batch_per_device={self.batch_per_device}: "
                "batch_size must be >= 1, batch_per_device >= 0"
            )
        if not 0 <= self.seed < 2**31:
            raise ConfigError(f"train.seed={self.seed}: give a seed in 0..2^31-1")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs={self.epochs}: must be >= 1")
        if self.ema_kimg < 0 or self.ema_rampup < 0:
            raise ConfigError(
                f"train.ema_kimg={self.ema_kimg}, train.ema_rampup={self.ema_rampup}: must be >= 0"
            )
        if self.sample_every < 0:
            raise ConfigError(f"train.sample_every={self.sample_every}: must be >= 0 (0 = by epochs)")
        if self.max_steps < 0:
            raise ConfigError(f"train.max_steps={self.max_steps}: must be >= 0 (0 = no limit)")
        if self.loss not in ("ns", "hinge", "rpgan"):
            raise ConfigError(f"train.loss={self.loss!r}: use 'ns' (the tutorial's), 'hinge' or 'rpgan'")
        if self.d_steps < 1 or self.r1_every < 1 or self.r1_gamma < 0 or self.r2_gamma < 0:
            raise ConfigError(
                f"train.d_steps={self.d_steps}, train.r1_every={self.r1_every}, train.r1_gamma={self.r1_gamma}, "
                f"train.r2_gamma={self.r2_gamma}: d_steps and r1_every must be >= 1, the gammas >= 0"
            )
        if not 0 <= self.gamma_min_ratio <= 1:
            raise ConfigError(f"train.gamma_min_ratio={self.gamma_min_ratio}: must be in [0, 1]")
        parse_augment(self.augment)
        if not (0 <= self.ada_p <= self.ada_p_max <= 1 and 0 <= self.ada_target < 1 and self.ada_kimg > 0
                and self.ada_interval >= 1):  # fmt: skip
            raise ConfigError(
                f"train.ada_p={self.ada_p}, ada_p_max={self.ada_p_max}, ada_target={self.ada_target}, "
                f"ada_kimg={self.ada_kimg}, ada_interval={self.ada_interval}: need 0 <= ada_p <= ada_p_max <= 1, "
                "0 <= ada_target < 1, ada_kimg > 0, ada_interval >= 1"
            )
        if not (0 <= self.style_mixing <= 1 and self.pl_weight >= 0 and self.pl_every >= 1
                and 0 < self.pl_decay <= 1 and self.pl_batch_shrink >= 1):  # fmt: skip
            raise ConfigError(
                f"train.style_mixing={self.style_mixing}, pl_weight={self.pl_weight}, pl_every={self.pl_every}, "
                f"pl_decay={self.pl_decay}, pl_batch_shrink={self.pl_batch_shrink}: need style_mixing in [0, 1], "
                "pl_weight >= 0, pl_every >= 1, pl_decay in (0, 1], pl_batch_shrink >= 1"
            )
        if self.compile_mode not in COMPILE_MODES or (self.compile_mode != "default" and not self.compile):
            raise ConfigError(
                f"train.compile_mode={self.compile_mode!r}: use one of {', '.join(COMPILE_MODES)}, together with "
                "train.compile=true"
            )
        if self.compile and (self.r1_gamma or self.r2_gamma):
            raise ConfigError(
                "train.compile with train.r1_gamma or train.r2_gamma > 0: R1 and R2 differentiate D's input "
                "gradient (double backward), which torch.compile cannot trace; set train.compile=false or the "
                "gammas to 0"
            )
        if self.precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"train.precision={self.precision!r}: use 'no', 'fp16' or 'bf16'")
        for name in ("log_every", "print_every_epochs", "sample_every_epochs", "dist_timeout_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)}: must be >= 1")


@dataclass(frozen=True)
class TrackConfig:
    wandb: str = "auto"
    """wandb mode: auto (online with credentials, else offline; WANDB_MODE wins) | online | offline | disabled."""
    project: str = "distgan"
    """wandb project."""
    entity: str = ""
    """wandb entity (team or user); empty: your default."""
    name: str = ""
    """wandb run name (default: the run directory's name)."""
    group: str = ""
    """wandb group (default: the run directory's name, so requeued offline segments group together)."""
    tags: list[str] = field(default_factory=list)
    """wandb tags."""
    notes: str = ""
    """wandb notes."""
    init_timeout_s: int = 60
    """Seconds `online` may wait for the server before falling back to offline."""
    plot: bool = True
    """Write plots/losses.png at the end of a run."""

    def __post_init__(self) -> None:
        if self.wandb not in ("auto", "online", "offline", "disabled"):
            raise ConfigError(f"track.wandb={self.wandb!r}: use auto, online, offline or disabled")
        if self.init_timeout_s < 1:
            raise ConfigError(f"track.init_timeout_s={self.init_timeout_s}: must be >= 1")


@dataclass(frozen=True)
class CkptConfig:
    every: int = 0
    """Steps between checkpoints (0: only at the end and on a stop signal)."""
    keep: int = 3
    """Complete checkpoints kept (oldest removed first, only after a newer one is complete)."""
    resume: str = "auto"
    """auto: continue from the newest complete checkpoint of this run directory if any; '': start fresh;
    or a checkpoint folder path."""
    dir: str = ""
    """Checkpoint folder (default RUN_DIR/checkpoints). On several nodes it must be on a shared filesystem."""
    stop_check_every: int = 10
    """Steps between the collective check for a stop signal (SIGUSR1/SIGTERM); one small all-reduce."""

    def __post_init__(self) -> None:
        if self.every < 0 or self.keep < 1 or self.stop_check_every < 1:
            raise ConfigError(
                f"ckpt.every={self.every}, ckpt.keep={self.keep}, ckpt.stop_check_every={self.stop_check_every}: "
                "every must be >= 0, keep and stop_check_every >= 1"
            )


INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
"""sha256 of torch-fidelity's weights-inception-2015-12-05-6726825d.pth, the standard FID network's weights."""
METRIC_GROUPS = {
    "mnistcnn": ("fid_mnistcnn", "is_mnistcnn", "classes_covered", "class_kl_uniform", "precision", "recall"),
    "fid_inception": ("fid_inception",),
    "kid_inception": ("kid_inception",),
    "pr_inception": ("precision_inception", "recall_inception"),
    "is_inception": ("is_inception",),
    "stackedmnist": ("mode_kl_uniform", "modes_covered"),
}
"""What eval.metrics may list, and the numbers each gives (plus _std companions; cond_accuracy with mnistcnn)."""
INCEPTION_METRICS = ("fid_inception", "kid_inception", "pr_inception", "is_inception")


@dataclass(frozen=True)
class EvalConfig:
    every: int = 0
    """Steps between sample-quality evaluations during training (0: none; also run once at the end when > 0)."""
    metrics: list[str] = field(default_factory=list)
    """Any of mnistcnn (the MNIST-classifier set), fid_inception, kid_inception, pr_inception, is_inception,
    inception (all four), or stackedmnist (modes covered of 1,000, KL to uniform). Empty: stackedmnist for
    StackedMNIST data, mnistcnn for labelled grey data or with eval.classifier, else all four Inception metrics."""
    n_samples: int = 10000
    """Generated images per evaluation, split across ranks."""
    batch_size: int = 500
    """Images per generator / feature-network forward pass on each rank."""
    real_split: str = ""
    """Split of data.path the samples are compared with. Empty: test for mnistcnn (the classifier trains on
    train), train for the Inception metrics (StyleGAN2-ADA's *_full: the data the GAN learned from)."""
    n_real: int = 50000
    """Real images behind the Inception statistics: the split's first n_real in shard order (all when fewer)."""
    classifier: str = ""
    """Classifier weights (.safetensors from `distgan eval classifier`); empty: trained on data.path's train split
    on first use and cached by the dataset's checksum."""
    cache_dir: str = ""
    """Where classifiers and real-data statistics are cached (default: $DISTGAN_CACHE or ~/.cache/distgan)."""
    classifier_epochs: int = 3
    """Epochs of classifier training when it is not cached yet."""
    inception_weights: str = ""
    """torch-fidelity's Inception weights file; empty: its cache (torch.hub checkpoints), else downloaded there."""
    inception_sha256: str = INCEPTION_SHA256
    """The sha256 the weights file must have; the standard file's unless you measure with other weights."""
    inception_download: bool = True
    """Download the weights at first use when they are not found (false on machines without internet)."""
    kid_subsets: int = 100
    """KID: subsets averaged (StyleGAN2-ADA's kid50k and torch-fidelity: 100)."""
    kid_subset_size: int = 1000
    """KID: images per subset (1000), fewer when there are fewer samples or real images."""
    k: int = 3
    """Neighbours defining the real and generated manifolds of precision/recall (Kynkaanniemi et al. 2019)."""
    best_metric: str = ""
    """Metric that picks the best checkpoint, kept as checkpoints/best (FID, KID and KL: lower is better; others
    higher). Empty: the first FID measured."""
    seed: int = 12345
    """Noise seed of the evaluation samples: every evaluation sees the same noise."""

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ConfigError(f"eval.every={self.every}: must be >= 0 (0 = no evaluation during training)")
        for name in ("n_samples", "batch_size", "classifier_epochs", "k", "n_real", "kid_subsets",
                     "kid_subset_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"eval.{name}={getattr(self, name)}: must be >= 1")
        if self.n_samples <= self.k:
            raise ConfigError(f"eval.n_samples={self.n_samples} must exceed eval.k={self.k}")
        for m in self.metrics:
            if m not in METRIC_GROUPS and m != "inception":
                raise ConfigError(
                    f"eval.metrics: {m!r} unknown; use any of inception, {', '.join(METRIC_GROUPS)}"
                )
        if self.best_metric and self.best_metric not in LOWER_IS_BETTER:
            raise ConfigError(
                f"eval.best_metric={self.best_metric!r}: use one of {', '.join(sorted(LOWER_IS_BETTER))}"
            )
        if len(self.inception_sha256) != 64:
            raise ConfigError(f"eval.inception_sha256={self.inception_sha256!r}: give 64 hex digits")

    def groups(self) -> tuple[str, ...]:
        """The listed metric groups with `inception` spelled out (empty when automatic)."""
        out: list[str] = []
        for m in self.metrics:
            out += [g for g in (INCEPTION_METRICS if m == "inception" else (m,)) if g not in out]
        return tuple(out)


LOWER_IS_BETTER = {
    "fid_mnistcnn": True,
    "class_kl_uniform": True,
    "precision": False,
    "recall": False,
    "is_mnistcnn": False,
    "classes_covered": False,
    "cond_accuracy": False,
    "fid_inception": True,
    "kid_inception": True,
    "precision_inception": False,
    "recall_inception": False,
    "is_inception": False,
    "mode_kl_uniform": True,
    "modes_covered": False,
}
"""Metrics that can pick the best checkpoint, and their direction."""


@dataclass(frozen=True)
class Config:
    name: str = "distgan"
    """Preset name, used in run directory names."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        t, o = self.train, self.optim
        follows = [k for k, on in (("optim.beta2_final", o.beta2_final != -1),
                                   ("train.gamma_min_ratio", t.gamma_min_ratio != 1), ("train.ema_grow", t.ema_grow))
                   if on]  # fmt: skip
        if follows and o.lr_decay == "none":
            raise ConfigError(
                f"{', '.join(follows)} follow the decay curve, and optim.lr_decay=none draws none; set "
                "optim.lr_decay=cosine (with optim.lr_min_ratio=1 to keep the learning rates)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_world(self, num_processes: int) -> None:
        """Checks what depends on the launch, not only on the file."""
        if self.train.batch_size % num_processes:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} is not divisible by the {num_processes} processes; "
                f"the batch is global, so pick a multiple of {num_processes}"
            )


def cache_root(configured: str = "") -> Path:
    """distgan's download, classifier and statistics cache: the given folder, $DISTGAN_CACHE or ~/.cache/distgan."""
    return Path(configured or os.environ.get("DISTGAN_CACHE") or Path.home() / ".cache" / "distgan")


def _check_keys(given: Any, schema: type, prefix: str, origin: str) -> None:
    """Unknown keys fail with the closest valid one, before OmegaConf's generic message; so do sections that
    are not mappings and YAML booleans given to text fields."""
    if not isinstance(given, dict):
        where = f"section {prefix[:-1]!r}" if prefix else "the top level"
        raise ConfigError(
            f"{origin}: {where} must be a mapping of keys (like `train:` followed by indented `batch_size: 100`), "
            f"not {type(given).__name__} {given!r}"
        )
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in given.items():
        dotted = f"{prefix}{key}"
        if key in fields and fields[key].type in ("str", str) and isinstance(value, bool):
            raise ConfigError(
                f"{origin}: {dotted} is the boolean {value} (YAML reads unquoted no/yes/on/off/true/false as "
                f'booleans); quote the text: {key}: "{"no" if value is False else "yes"}"'
            )
        if key not in fields:
            candidates = [f"{prefix}{k}" for k in fields]
            close = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.5)
            if not close:
                close = difflib.get_close_matches(key, _all_keys(Config), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys here: {', '.join(candidates)}"
            raise ConfigError(f"unknown config key {dotted!r} (from {origin}){hint}")
        ftype = fields[key].type
        sub = _dataclass_of(ftype)
        if sub is not None:
            _check_keys(value, sub, f"{dotted}.", origin)


def changed_keys(
    saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...]
) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for each dotted key whose value differs between two config dicts."""
    out = []
    for key in keys:
        a, b = _lookup(saved, key), _lookup(current, key)
        if a != b:
            out.append((key, a, b))
    return out


def _lookup(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _field_type(dotted: str) -> Any:
    """The declared type of a dotted config key (None for an unknown key: _check_keys names it)."""
    schema: type | None = Config
    ftype: Any = None
    for part in dotted.split("."):
        fields = {f.name: f for f in dataclasses.fields(schema)} if schema else {}
        if part not in fields:
            return None
        ftype = fields[part].type
        schema = _dataclass_of(ftype)
    return ftype


def known_only(given: dict[str, Any], schema: type, prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """A saved config without the keys this version does not know (another version's), and their names."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in given.items():
        if key not in fields:
            dropped.append(f"{prefix}{key}")
            continue
        sub = _dataclass_of(fields[key].type)
        if sub is not None and isinstance(value, dict):
            value, more = known_only(value, sub, f"{prefix}{key}.")
            dropped.extend(more)
        kept[key] = value
    return kept, dropped


def _dataclass_of(ftype: Any) -> type | None:
    names = {
        c.__name__: c
        for c in (DataConfig, ModelConfig, OptimConfig, TrainConfig, TrackConfig, CkptConfig, EvalConfig)
    }
    return names.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))


def _all_keys(schema: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(schema):
        sub = _dataclass_of(f.type)
        out.extend(_all_keys(sub, f"{prefix}{f.name}.") if sub else [f"{prefix}{f.name}"])
    return out


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), base: dict[str, Any] | None = None
) -> Config:
    """YAML file (or defaults, or a saved config as `base`) + `section.key=value` overrides -> validated Config."""
    layers: list[Any] = [OmegaConf.structured(Config)]
    if base is not None:
        layers.append(OmegaConf.create(base))
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found; presets live in configs/")
        try:
            file_cfg = OmegaConf.load(path)
        except Exception as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(file_cfg, DictConfig):
            raise ConfigError(
                f"config file {str(path)!r}: the top level must be a mapping of sections (data:, model:, train:, "
                f"...), not a {type(OmegaConf.to_container(file_cfg)).__name__}"
            )
        _check_keys(OmegaConf.to_container(file_cfg), Config, "", str(path))
        layers.append(file_cfg)
    dotted: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: write it as section.key=value, e.g. train.batch_size=256")
        key, _, raw = item.partition("=")
        key = key.strip()
        # a text field keeps the text typed: run_name=0123 is "0123", not YAML's octal 83
        dotted[key] = raw if _field_type(key) in ("str", str) else (_parse_value(raw) if raw else "")
    if dotted:
        nested = _nest(dotted)
        _check_keys(nested, Config, "", "command line")
        layers.append(OmegaConf.create(nested))
    try:
        merged = OmegaConf.merge(*layers)
        cfg = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        raise ConfigError(f"bad config value for {key or 'a key'!r}: {str(exc.msg).splitlines()[0]}") from exc
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    assert isinstance(cfg, Config)
    return cfg


def _parse_value(raw: str) -> Any:
    """YAML scalars and lists on the command line: `model.g_hidden=[512,512]`, `train.precision=bf16`."""
    if raw.strip().lower() in ("no", "yes", "on", "off", "y", "n"):
        return raw.strip()  # YAML 1.1 would make train.precision=no a boolean; bool fields still accept these
    try:
        parsed = OmegaConf.to_container(OmegaConf.create(f"v: {raw}"))
        return parsed["v"] if isinstance(parsed, dict) else raw
    except Exception:
        return raw


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: Path) -> None:
    from distgan.files import write_text

    write_text(path, to_yaml(cfg))


def config_from_dict(saved: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A checkpoint's saved config (keys added since it was written take their defaults) + overrides."""
    if not isinstance(saved, dict):
        raise ConfigError(f"the saved config is a {type(saved).__name__}, not a mapping of sections")
    base, dropped = known_only(saved, Config)
    if dropped:
        import logging

        logging.getLogger("distgan").warning(
            "the saved config has keys this version of distgan does not know (ignored): %s",
            ", ".join(dropped),
        )
    return load_config(None, overrides, base=base)


def resolve_num_classes(cfg: Config, classes: tuple[str, ...]) -> Config:
    """model.num_classes=-1 becomes the manifest's class count; a count the manifest contradicts is refused."""
    n = cfg.model.num_classes
    if n == -1:
        if not classes:
            raise ConfigError(
                f"model.num_classes=-1 takes the class count from the data's manifest, but data.path="
                f"{cfg.data.path!r} lists no classes; set model.num_classes=N (or 0 for unconditional)"
            )
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=len(classes)))
    if n > 0 and classes and len(classes) != n:
        raise ConfigError(
            f"model.num_classes={n} but data.path={cfg.data.path!r} has {len(classes)} classes "
            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); set model.num_classes={len(classes)} "
            "or -1"
        )
    return cfg
