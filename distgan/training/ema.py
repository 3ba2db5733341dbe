"""Exponential moving average of G's weights, with StyleGAN's half-life in images and ramp-up.

Every rank updates its own copy from identical G parameters, so the copies agree without communication.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_size: int, images_seen: int, ema_kimg: float, rampup: float,
             grow: float | None = None) -> float:  # fmt: skip
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
