"""PacGAN's packing (Lin et al., NeurIPS 2018) as a part of the step.

D judges `model.d_pack` images at once, stacked along channels: the batch is cut into consecutive runs of m
images, and GANStep hands D [reals, fakes] with each half a multiple of m, so a pack never mixes reals and fakes.
D's first layer is built for m times the image's channels (models/layers.d_in_channels); R1 and R2 are taken on
the packed inputs, so a pack's squared gradient norm is the sum of its images' (losses.gradient_penalty).
Conditional models are refused at config load (a pack's images would have different classes), and so is a batch
that does not split into packs and minibatch-std groups (configure.check_run).
"""

from __future__ import annotations

import torch

from distgan.training.part import PartContext, StepPart


def pack(x: torch.Tensor, m: int) -> torch.Tensor:
    """(n, C, H, W) -> (n / m, m * C, H, W): images km .. km + m - 1 become pack k, in that channel order."""
    n = x.shape[0]
    if n % m:
        raise ValueError(f"packing: a batch of {n} images does not split into packs of {m}")
    return x.reshape(n // m, m * x.shape[1], *x.shape[2:])


class Pack(StepPart):
    def __init__(self, m: int) -> None:
        self.m = m

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        return pack(x, self.m)


def build_part(c: PartContext) -> Pack | None:
    """model.d_pack > 1: D judges packs of that many images (their divisibility was checked at load)."""
    return Pack(c.cfg.model.d_pack) if c.cfg.model.d_pack > 1 else None
