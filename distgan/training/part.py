"""What a part of the GAN step is: anything beyond its loss terms that the step must call at a known moment (DiffAugment
and ADA, PacGAN's packing, StyleGAN's mixing, noise and tracked w_avg, the EMA).

GANStep (step.py) owns the step and calls every part's hooks in one order, each a no-op unless a part has something
to do. Each part's module has a `build_part(context)` that makes it, or None when the config does not ask for it;
training/build.py lists those functions in the order the hooks run (PARTS), and registers the state of every part
that names one (`state_name`) with the checkpointer. A new part is one module and one line in that list
(docs/architecture.md walks through one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distgan.config import Config
from distgan.utils.draws import GlobalDraws


class StepPart:
    state_name: str | None = None
    """Its key in a checkpoint's state.pt when it has state across resumes (`state_dict`/`load_state_dict`)."""
    draws: GlobalDraws | None = None
    """Random numbers drawn for the global batch: GANStep tells them which micro-batch runs."""

    def g_inputs(self, global_n: int, device: torch.device, due: set[str]) -> dict[str, Any]:
        """Before the step: G's extra inputs for it (StyleGAN: mixing latents, layer noise, return_ws)."""
        return {}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Every batch D judges, the reals and the fakes apart (each is one global batch of draws): DiffAugment, ADA."""
        return x

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """Every batch D judges, after augmentation ([reals, fakes] or fakes alone): PacGAN's packing."""
        return x

    def observe(self, real_logits: torch.Tensor) -> None:
        """After the step's phases: D's raw outputs on this rank's (augmented) reals (ADA's statistic)."""

    def after_g(self) -> None:
        """After each optimizer step of G (stylegan2's tracked w_avg, then the EMA)."""

    def after_step(
        self,
        all_reduce: Callable[[torch.Tensor], torch.Tensor],
        images_per_step: int,
        report: Callable[[str, Any], None],
    ) -> None:
        """After the whole step, on every rank (ADA moves p from the all-reduced statistic)."""


@dataclass
class PartContext:
    """What a part is built from: the run's config, this rank's place, G as the step trains it, the EMA of G and the
    loop's counters (training/build.py makes one per run)."""

    cfg: Config
    rank: int
    world: int
    G: nn.Module
    """G without DDP or compile: StyleGAN's tracked w_avg moves in it, the EMA follows it."""
    ema: Any
    """The EMA of G (training/ema.py), or None without train.ema_kimg."""
    counters: Any
    """The loop's counters: images_seen before the step, curve (optim's decay curve) at it."""
