"""G, D and their optimizers as the config says, and the learning-rate schedule (a pure function of the step)."""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.config import Config, OptimConfig, TrainConfig
from distgan.models import build_discriminator, build_generator
from distgan.training.warmstart import freeze_d


def build_networks(cfg: Config) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.optim.Optimizer]:
    """G, D and their Adam optimizers, as the config says (before Accelerate wraps them)."""
    G, D = build_generator(cfg.model), build_discriminator(cfg.model)
    freeze_d(D, cfg.model.d_freeze)  # before the optimizer: frozen blocks have no Adam state
    betas = (cfg.optim.betas[0], cfg.optim.betas[1])
    fused = cfg.optim.fused or None  # None: PyTorch picks (multi-tensor on a GPU, a loop on a CPU)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=betas, eps=cfg.optim.eps, fused=fused)
    opt_d = torch.optim.Adam(
        [p for p in D.parameters() if p.requires_grad],
        lr=cfg.optim.lr_d,
        betas=betas,
        eps=cfg.optim.eps,
        fused=fused,
    )
    return G, D, opt_g, opt_d


def decay_curve(optim: OptimConfig, step: int, total: int, batch_size: int = 0) -> float:
    """How far the decay has gone at a step, 0 (initial values) to 1 (final): a pure function of the step, so a
    resume needs no scheduler state. Its span is the run's `total` steps, or optim.decay_kimg thousand images
    (R3GAN's schedules, whatever the run's length: then batch_size converts images to steps)."""
    if optim.lr_decay == "none":
        return 0.0
    span = optim.decay_kimg * 1000 / batch_size if optim.decay_kimg and batch_size else total
    start = optim.decay_start * span
    if step <= start:
        return 0.0
    t = min(1.0, (step - start) / max(1.0, span - start))
    return t if optim.lr_decay == "linear" else 0.5 * (1 - math.cos(math.pi * t))


def lr_factor(optim: OptimConfig, step: int, total: int, batch_size: int = 0) -> float:
    """Learning-rate multiplier at a step: 1 down to lr_min_ratio along the decay curve."""
    return 1.0 - (1.0 - optim.lr_min_ratio) * decay_curve(optim, step, total, batch_size)


def beta2_at(optim: OptimConfig, curve: float) -> float:
    """Adam's beta2 on the decay curve: betas[1], moving to beta2_final (R3GAN: 0.9 -> 0.99) when it is set."""
    b2 = optim.betas[1]
    return b2 if optim.beta2_final == -1 else b2 + (optim.beta2_final - b2) * curve


def set_schedule(
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    optim: OptimConfig,
    step: int,
    total: int,
    batch_size: int,
) -> float:
    """Both optimizers at a step of the decay curve (lr_g / lr_d times the lr factor, beta2 when it moves);
    returns the curve's value, which R1/R2's gamma and the EMA's growth follow too."""
    curve = decay_curve(optim, step, total, batch_size)
    factor = 1.0 - (1.0 - optim.lr_min_ratio) * curve
    for opt, base in ((opt_g, optim.lr_g), (opt_d, optim.lr_d)):
        for group in opt.param_groups:
            group["lr"] = base * factor
            if optim.beta2_final != -1:
                group["betas"] = (group["betas"][0], beta2_at(optim, curve))
    return curve


def gamma_factor(train: TrainConfig, curve: float) -> float:
    """R1's and R2's weights at a point of the decay curve, as a fraction of r1_gamma / r2_gamma."""
    return 1.0 - (1.0 - train.gamma_min_ratio) * curve
