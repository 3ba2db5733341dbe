"""optim.* and train.*: the optimisers, schedules, losses, penalties, augmentation and the step."""

from __future__ import annotations

from dataclasses import dataclass, field

from distgan.config.errors import ConfigError, check_finite


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
        check_finite(self, "optim")
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
    if ops in (("none",), ("off",)):  # how most tools spell it; "" works too
        return ()
    if "ada" in ops:
        if ops != ("ada",):
            raise ConfigError(f"train.augment={policy!r}: ada is a pipeline of its own; give it alone")
        return ops
    bad = [p for p in ops if p not in AUGMENT_OPS]
    if bad:
        raise ConfigError(
            f"train.augment={policy!r}: unknown {', '.join(bad)}; use a comma-separated subset of "
            + ", ".join(AUGMENT_OPS)
            + " (DiffAugment), or ada; none (or an empty value) for no augmentation"
        )
    return ops


GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def parse_ada_ops(spec: str) -> tuple[str, ...]:
    """train.ada_ops (StyleGAN2-ADA's names; training/ada.py applies them): bgc (its default: blit, geometric,
    colour), bg, b, or a comma list of names."""
    blit, geom = GEOMETRIC[:3], GEOMETRIC[3:]
    named = {
        "bgc": GEOMETRIC + COLOUR,
        "bg": GEOMETRIC,
        "b": blit,
        "g": geom,
        "c": COLOUR,
        "gc": geom + COLOUR,
    }
    if spec in named:
        return named[spec]
    ops = tuple(o.strip() for o in spec.split(",") if o.strip())
    bad = [o for o in ops if o not in GEOMETRIC + COLOUR]
    if bad or not ops:
        raise ConfigError(f"train.ada_ops={spec!r}: use bgc, bg, b or a comma list of {', '.join(GEOMETRIC + COLOUR)}")
    return ops


LOSS_NAMES = ("ns", "hinge", "rpgan")
"""train.loss's values: the losses of training/losses.py (tests/unit/test_family.py checks the two agree)."""

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
    folder; fresh optimizers, counters and schedules (distgan/training/warmstart.py). A resume of this run wins."""
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
    cutout) or ada (adaptive discriminator augmentation, StyleGAN2-ADA's bgc pipeline); none or empty: off."""
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
    w_avg_beta: float = 0.995
    """stylegan2: truncation's centre (G.mapping.w_avg) moves to the mean w of a global batch after each G step,
    keeping this share (stylegan2-ada's w_avg_beta), so checkpoints and exports carry their own."""
    time_phases: bool = False
    """Measure data wait / D step / G step / logging per step (synchronises a GPU each step: benchmarks only)."""

    @property
    def cudagraphs(self) -> bool:
        """torch.compile captures CUDA graphs: each step must be marked (cudagraph_mark_step_begin) before it."""
        return self.compile and self.compile_mode in CUDAGRAPH_MODES

    def __post_init__(self) -> None:  # noqa: C901, PLR0912 (a flat list of independent checks)
        check_finite(self, "train")
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
            raise ConfigError(f"train.ema_kimg={self.ema_kimg}, train.ema_rampup={self.ema_rampup}: must be >= 0")
        if self.sample_every < 0:
            raise ConfigError(f"train.sample_every={self.sample_every}: must be >= 0 (0 = by epochs)")
        if self.max_steps < 0:
            raise ConfigError(f"train.max_steps={self.max_steps}: must be >= 0 (0 = no limit)")
        parse_ada_ops(self.ada_ops)  # refused at load by name, not when the pipeline is built
        if self.loss not in LOSS_NAMES:
            raise ConfigError(f"train.loss={self.loss!r}: use one of {', '.join(LOSS_NAMES)} (training/losses.py)")
        if self.d_steps < 1 or self.r1_every < 1 or self.r1_gamma < 0 or self.r2_gamma < 0:
            raise ConfigError(
                f"train.d_steps={self.d_steps}, train.r1_every={self.r1_every}, train.r1_gamma={self.r1_gamma}, "
                f"train.r2_gamma={self.r2_gamma}: d_steps and r1_every must be >= 1, the gammas >= 0"
            )
        if not 0 <= self.gamma_min_ratio <= 1:
            raise ConfigError(f"train.gamma_min_ratio={self.gamma_min_ratio}: must be in [0, 1]")
        parse_augment(self.augment)
        if not (
            0 <= self.ada_p <= self.ada_p_max <= 1
            and 0 <= self.ada_target < 1
            and self.ada_kimg > 0
            and self.ada_interval >= 1
        ):
            raise ConfigError(
                f"train.ada_p={self.ada_p}, ada_p_max={self.ada_p_max}, ada_target={self.ada_target}, "
                f"ada_kimg={self.ada_kimg}, ada_interval={self.ada_interval}: need 0 <= ada_p <= ada_p_max <= 1, "
                "0 <= ada_target < 1, ada_kimg > 0, ada_interval >= 1"
            )
        if not 0 <= self.w_avg_beta <= 1:
            raise ConfigError(f"train.w_avg_beta={self.w_avg_beta}: give a share in [0, 1] (stylegan2-ada: 0.995)")
        if not (
            0 <= self.style_mixing <= 1
            and self.pl_weight >= 0
            and self.pl_every >= 1
            and 0 < self.pl_decay <= 1
            and self.pl_batch_shrink >= 1
        ):
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
