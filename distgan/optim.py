"""G, D and their optimizers as the config says, and the learning-rate schedule (a pure function of the step)."""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.config import Config, OptimConfig
from distgan.models import build_discriminator, build_generator
from distgan.warmstart import freeze_d


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


def lr_factor(optim: OptimConfig, step: int, total: int) -> float:
    """Learning-rate multiplier at a step: a pure function of the step, so a resume needs no scheduler state."""
    start = optim.decay_start * total
    if optim.lr_decay == "none" or step <= start:
        return 1.0
    t = min(1.0, (step - start) / max(1.0, total - start))
    shape = 1 - t if optim.lr_decay == "linear" else 0.5 * (1 + math.cos(math.pi * t))
    return optim.lr_min_ratio + (1 - optim.lr_min_ratio) * shape
