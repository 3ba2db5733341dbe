"""StyleGAN2's training-time parts: style mixing, per-layer noise and the lazy path-length regulariser.

Their random numbers come from one seeded stream drawn for the global batch, each rank keeping its rows (as ADA
does): 2 ranks then draw what 1 process draws, and a resume continues the stream (registered with the
Checkpointer as "stylegan", with the path-length running mean).

Path length (Karras et al. 2020, sec. 3.2): for images g(w) and y ~ N(0, I) / sqrt(H W), the penalty is
(||J_w^T y|| - a)^2 with a the running mean of the length (decay train.pl_decay), applied every train.pl_every G
steps with weight train.pl_weight * pl_every (lazy). The batch shrink takes every pl_batch_shrink-th image of
the main G forward's fakes rather than a second, smaller forward: the same distribution of images, one forward
instead of two (DDP counts one forward per backward), and on any number of ranks the same images (each rank's
share of a strided subset is the strided subset of its share). The running mean moves by the mean length over
all ranks (all-reduced), so every rank keeps the same value and 2 ranks compute what 1 process does; stylegan2-ada
keeps a per-GPU mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from distgan.config import Config
from distgan.models import family_of
from distgan.training.part import PartContext, StepPart
from distgan.utils.draws import GlobalDraws, stream_seed


class StyleTraining(StepPart):
    """Call on all ranks with the same sequence of calls."""

    draws: GlobalDraws  # always drawing (StepPart's may be None)
    state_name = "stylegan"

    def __init__(self, config: Config, G: nn.Module, rank: int, world: int) -> None:
        cfg = config.train
        self.mixing, self.rank, self.world = cfg.style_mixing, rank, world
        # pl_every and the weight's laziness live in step.build_phases; this object needs the rest
        self.pl_weight, self.pl_decay, self.shrink = cfg.pl_weight, cfg.pl_decay, cfg.pl_batch_shrink
        self.num_ws: int = G.num_ws  # type: ignore[assignment]
        self.noise_dim: int = G.noise_dim  # type: ignore[assignment]
        self.shapes: list[tuple[int, int, int]] = G.noise_shapes()  # type: ignore[operator]
        self.gen = torch.Generator().manual_seed(stream_seed(cfg.seed, "stylegan"))
        self.draws = GlobalDraws(self.gen, rank, world)
        self.pl_mean = torch.zeros((), dtype=torch.float64)
        self.w_avg_beta, self.seed, self.g_steps = cfg.w_avg_beta, cfg.seed, 0
        self.G, self.global_n = G, cfg.batch_size  # the plain G whose w_avg moves, and how many latents
        self.device = next(G.parameters()).device
        self.num_classes: int = G.num_classes  # type: ignore[assignment]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "pl_mean": self.pl_mean.clone(), "g_steps": self.g_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.pl_mean = state["pl_mean"].clone().double()
        self.g_steps = int(state.get("g_steps", 0))  # checkpoints before w_avg was tracked

    def after_g(self) -> None:
        """After each G step: truncation's centre follows G (stylegan2.track_w_avg). Its latents come from a
        stream seeded by the G step and drawn for the global batch on every rank, so every rank moves w_avg
        alike with no communication, 2 ranks as 1 process, and a resume continues it."""
        if self.w_avg_beta >= 1:
            return
        from distgan.models.stylegan2 import track_w_avg

        gen = torch.Generator().manual_seed(stream_seed(self.seed, "w_avg", index=self.g_steps))
        n, k = self.global_n, self.num_classes
        z = torch.randn(n, self.noise_dim, generator=gen).to(self.device)
        y = torch.randint(0, k, (n,), generator=gen).to(self.device) if k else None
        track_w_avg(self.G, z, y, self.w_avg_beta)  # type: ignore[arg-type]
        self.g_steps += 1

    def _draw(self, global_n: int, *shape: int) -> torch.Tensor:
        return self.draws.rows(global_n, lambda n: torch.randn(n, *shape, generator=self.gen))

    def g_inputs(self, global_n: int, device: torch.device, due: set[str]) -> dict[str, Any]:
        """G's extra inputs for one step: mixing latents and cutoff (mixing in a train.style_mixing share of
        batches, cutoff uniform in [1, num_ws)), the per-layer noise, and whether to return the ws (the path
        length's phase, Greg, is due)."""
        want_ws = "Greg" in due
        u, cut = (
            torch.rand((), generator=self.gen),
            torch.randint(1, max(self.num_ws, 2), (), generator=self.gen),
        )
        cutoff = int(cut) if float(u) < self.mixing else self.num_ws
        z2 = self._draw(global_n, self.noise_dim).to(device)
        noise = [self._draw(global_n, *s).to(device) for s in self.shapes]
        return {"mix": (z2, cutoff), "noise": noise, **({"return_ws": True} if want_ws else {})}

    def penalty(
        self, all_reduce: Callable[[torch.Tensor], torch.Tensor], report: Callable[[str, torch.Tensor], None]
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The path-length term for phases.build_phases: pl_penalty with the run's all-reduce, reporting pl_mean."""

        def term(fake: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
            value = self.pl_penalty(fake, ws, all_reduce, len(fake) * self.world)
            report("pl_mean", self.pl_mean.detach().float())
            return value

        return term

    def pl_penalty(
        self,
        fake: torch.Tensor,
        ws: torch.Tensor,
        all_reduce: Callable[[torch.Tensor], torch.Tensor],
        global_n: int,
    ) -> torch.Tensor:
        """(||J_w^T y|| - a)^2 averaged over this rank's every shrink-th image; moves a (all ranks alike). With
        micro-batches (train.batch_per_device) a moves once per micro-batch, by its mean, as stylegan2-ada's
        rounds do."""
        _, c, h, w = fake.shape
        # y times 2: G's images are (x + 1) / 2, so <x, y> of StyleGAN2's [-1, 1] images is <fake, 2 y> plus a
        # constant, and lengths, pl_mean and pl_weight keep StyleGAN2's scale
        y = self._draw(global_n // self.shrink, c, h, w).to(fake.device, fake.dtype) * (2 / math.sqrt(h * w))
        lengths = path_lengths(fake, ws, y, self.shrink)
        total = all_reduce(
            torch.stack(
                [
                    lengths.detach().double().sum(),
                    torch.tensor(len(lengths), dtype=torch.float64, device=lengths.device),
                ]
            )
        )
        mean = total[0] / total[1]
        self.pl_mean = self.pl_mean.to(mean.device).lerp(mean, self.pl_decay)
        return (lengths - self.pl_mean.to(lengths.dtype)).square().mean()


def path_lengths(fake: torch.Tensor, ws: torch.Tensor, y: torch.Tensor, shrink: int) -> torch.Tensor:
    """||J_w^T y|| of every shrink-th image, differentiable (create_graph): the sum over its layers' w of the
    squared gradient of <g(w), y>, averaged over layers, square-rooted (StyleGAN2's pl_lengths)."""
    (grad,) = torch.autograd.grad((fake[::shrink] * y).sum(), ws, create_graph=True)
    grad = grad[::shrink]
    return (grad if grad.dtype == torch.float64 else grad.float()).square().sum(2).mean(1).sqrt()


def build_part(c: PartContext) -> StyleTraining | None:
    """The family's StyleGAN training (Family.parts holds "style": stylegan2's mixing, noise, path length, w_avg)."""
    if "style" not in family_of(c.cfg.model).parts:
        return None
    return StyleTraining(c.cfg, c.G, c.rank, c.world)
