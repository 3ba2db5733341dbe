"""Exponential moving average of G's weights, with StyleGAN's half-life in images and ramp-up.

Every rank updates its own copy from identical G parameters, so the copies agree without communication.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import nn

from distgan.config import TrainConfig
from distgan.training.part import PartContext, StepPart


def ema_beta(batch_size: int, images_seen: int, ema_kimg: float, rampup: float, grow: float | None = None) -> float:
    """Decay per step: the average's half-life is ema_kimg*1000 images (less during ramp-up); with `grow`
    (train.ema_grow: the decay curve's value, 0 to 1) it is ema_kimg*1000*grow instead (R3GAN's schedule)."""
    ema_nimg = ema_kimg * 1000
    if grow is not None:
        ema_nimg *= grow
    elif rampup:
        ema_nimg = min(ema_nimg, images_seen * rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


class EMA:
    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        ema_p: list[torch.Tensor] = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1.0 - beta)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


class Counters(Protocol):
    images_seen: int  # before the step being taken
    curve: float  # optim's decay curve at this step (train.ema_grow follows it)


class EMAUpdate(StepPart):
    """The EMA as a part of the step: after each G step, the average moves towards G (its half-life counts the
    images since the previous G step; it copies G's buffers, stylegan2's w_avg among them, so it runs last)."""

    def __init__(self, ema: EMA, G: nn.Module, cfg: TrainConfig, counters: Counters) -> None:
        self.ema, self.G, self.cfg, self.counters = ema, G, cfg, counters

    def after_g(self) -> None:
        t, c = self.cfg, self.counters
        beta = ema_beta(
            t.batch_size * t.d_steps,
            c.images_seen + t.batch_size,
            t.ema_kimg,
            t.ema_rampup,
            c.curve if t.ema_grow else None,
        )
        self.ema.update(self.G, beta)


def build_part(c: PartContext) -> EMAUpdate | None:
    """The EMA's update after each G step, when the run keeps one (train.ema_kimg > 0); it runs last of the parts
    (it copies G's buffers, stylegan2's w_avg among them)."""
    return EMAUpdate(c.ema, c.G, c.cfg.train, c.counters) if c.ema is not None else None
