"""The decay schedule: learning rates, Adam's beta2, R1/R2's gamma and the EMA's growth on one curve, a pure
function of the step (a resume needs no scheduler state)."""

from __future__ import annotations

import math

import torch

from distgan.config import OptimConfig, TrainConfig


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
