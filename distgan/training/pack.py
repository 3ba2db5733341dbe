"""PacGAN's packing (Lin et al., NeurIPS 2018) as a part of the step, and the batch rule D's input obeys.

D judges `model.d_pack` images at once, stacked along channels: the batch is cut into consecutive runs of m
images, and GANStep hands D [reals, fakes] with each half a multiple of m, so a pack never mixes reals and fakes.
D's first layer is built for m times the image's channels (models/layers.d_in_channels); R1 and R2 are taken on
the packed inputs, so a pack's squared gradient norm is the sum of its images' (losses.gradient_penalty).
Conditional models are refused at config load (a pack's images would have different classes).
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.config import Config, ConfigError
from distgan.training.part import StepPart


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


def check_d_batch(cfg: Config, images: int, D: nn.Module) -> None:
    """What one pass of D on a rank sees (`images` reals, as many fakes) must split into packs, and the packs
    into minibatch-std groups (where D has them): refused at build, naming the keys, not at the first step."""
    m = cfg.model.d_pack
    if images % m:
        raise ConfigError(
            f"model.d_pack={m}: each rank's batch of {images} images (train.batch_size / processes, or "
            "train.batch_per_device) must be a multiple of it; change the batch or the pack size"
        )
    mbstd = getattr(D, "mbstd", None)
    packs, group = images // m, cfg.model.mbstd_group
    if mbstd is not None and mbstd.channels and packs % min(group, packs):
        raise ConfigError(
            f"model.mbstd_group={group}: each rank's batch ({packs} inputs of D: train.batch_size / processes, or "
            "train.batch_per_device, over model.d_pack) must be a multiple of it (minibatch std splits each batch "
            "D sees into groups of this size); change train.batch_size or the group"
        )
