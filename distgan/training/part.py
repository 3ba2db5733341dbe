"""What a part of the GAN step is: anything beyond its loss terms that the step must call at a known moment
(EMA, DiffAugment and ADA, PacGAN's packing, StyleGAN's mixing, noise and tracked w_avg).

GANStep (phases.py) owns the step and calls every part's hooks in one order, each a no-op unless a part has
something to do; the Trainer only builds the parts (in the order their hooks run) and keeps the counters.
A part with state across resumes has `state_dict`/`load_state_dict` and is registered by training/build.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distgan.utils.draws import GlobalDraws


class StepPart:
    draws: GlobalDraws | None = None
    """Random numbers drawn for the global batch: GANStep tells them which micro-batch runs."""

    def g_inputs(self, global_n: int, device: torch.device, due: set[str]) -> dict[str, Any]:
        """Before the step: G's extra inputs for it (StyleGAN: mixing latents, layer noise, return_ws)."""
        return {}

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
