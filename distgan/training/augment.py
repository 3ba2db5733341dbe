"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of everything D sees, real and fake alike.

The policy's operations follow the published DiffAugment_pytorch.py (colour: brightness, saturation, contrast;
translation by up to 1/8 of the size with zero padding; cutout of a half-size square), applied in its [-1, 1]
range. Written here rather than imported: the reference draws its random numbers inside each op from the
global RNG, and distgan needs them drawn for the *global* batch from one seeded generator that every rank
holds, each rank keeping its own rows. Then 2 ranks augment exactly what 1 process does with the same seed,
and a resume continues the same stream (the generator state is checkpointed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distgan.config import parse_augment
from distgan.training.ada import AdaptiveAugment
from distgan.training.part import PartContext, StepPart
from distgan.utils.draws import GlobalDraws, stream_seed


class DiffAugment(StepPart):
    """Call on all ranks with the same sequence of calls: each call draws parameters for `global_n` images."""

    draws: GlobalDraws  # always drawing (StepPart's may be None)
    state_name = "augment"

    def __init__(self, policy: str, seed: int, rank: int, world: int) -> None:
        self.ops = parse_augment(policy)
        self.rank, self.world = rank, world
        self.gen = torch.Generator().manual_seed(stream_seed(seed, "augment"))
        self.draws = GlobalDraws(self.gen, rank, world)

    # a component with state of its own, registered with the Checkpointer as "augment"
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["gen"])

    def _draw(self, global_n: int, *shape: int, low: int | None = None, high: int | None = None) -> torch.Tensor:
        """Random numbers for the global batch; this rank's rows (its contiguous share, as the loader slices)."""
        if low is None:
            return self.draws.rows(global_n, lambda n: torch.rand(n, *shape, generator=self.gen))
        assert high is not None
        return self.draws.rows(global_n, lambda n: torch.randint(low, high, (n, *shape), generator=self.gen))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """x: this rank's (b, C, H, W) images in [0, 1]; the global batch is b * world."""
        if not self.ops:
            return x
        n, dev = len(x) * self.world, x.device
        x = x * 2 - 1
        for op in self.ops:
            if op == "color":
                r = self._draw(n, 3).to(dev, x.dtype)
                x = x + (r[:, 0] - 0.5)[:, None, None, None]
                mean = x.mean(1, keepdim=True)
                x = (x - mean) * (r[:, 1] * 2)[:, None, None, None] + mean
                mean = x.mean((1, 2, 3), keepdim=True)
                x = (x - mean) * (r[:, 2] + 0.5)[:, None, None, None] + mean
            elif op == "translation":
                x = _translate(x, self._draw(n, 2, low=0, high=2**31 - 1).to(dev))
            else:
                x = _cutout(x, self._draw(n, 2, low=0, high=2**31 - 1).to(dev))
        return (x + 1) / 2


def _translate(x: torch.Tensor, r: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by integers in [-s, s] (s = ratio * size, rounded), filling with zeros."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (r[:, 0] % (2 * sh + 1) - sh)[:, None, None]
    dx = (r[:, 1] % (2 * sw + 1) - sw)[:, None, None]
    rows = (torch.arange(h, device=x.device)[None, :, None] + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device)[None, None, :] + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (b, h+2, w+2, C): the border row/column is zero
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, r: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a (ratio * size) square at a random centre in each image (clipped at the border)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (r[:, 0] % (h + 1 - ch % 2))[:, None, None]
    cx = (r[:, 1] % (w + 1 - cw % 2))[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch) & (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)
    return x * (~inside).to(x.dtype)[:, None]


def build_part(c: PartContext) -> DiffAugment | AdaptiveAugment:
    """train.augment: ada -> the adaptive pipeline (ada.py); else DiffAugment with the policy (empty: a part with
    nothing to do, whose stream every checkpoint still holds as "augment")."""
    if parse_augment(c.cfg.train.augment) == ("ada",):
        return AdaptiveAugment(c.cfg.train, c.cfg.train.seed, c.rank, c.world)
    return DiffAugment(c.cfg.train.augment, c.cfg.train.seed, c.rank, c.world)
