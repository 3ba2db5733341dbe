"""G and D of a run: built as the config says, prepared by Accelerate, with their optimizers, G's moving average and
the networks' part of a checkpoint.

The plain networks (no DDP, no torch.compile) are what the EMA copies, what samples, metrics and checkpoints use
(a CUDA-graph replay's outputs live only until the next step; a sample grid must not depend on that), and D in
G's phase (compiled on its own when train.compile): nothing of D is all-reduced there (its parameters are frozen,
so it has no gradient to reduce) and DDP's reducer never sees a forward without backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from torch import nn

from distgan.config import Config
from distgan.dist import sync_batchnorm
from distgan.models import build_discriminator, build_generator
from distgan.run.checkpoint_read import strip_prefixes
from distgan.training.ema import EMA
from distgan.training.warmstart import freeze_d


def build_networks(cfg: Config) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.optim.Optimizer]:
    """G, D and their Adam optimizers, as the config says (before Accelerate wraps them)."""
    G, D = build_generator(cfg.model), build_discriminator(cfg.model)
    freeze_d(D, cfg.model.d_freeze)  # before the optimizer: frozen blocks have no Adam state
    betas = (cfg.optim.betas[0], cfg.optim.betas[1])
    fused = cfg.optim.fused or None  # None: PyTorch picks (multi-tensor on a GPU, a loop on a CPU)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=betas, eps=cfg.optim.eps, fused=fused)
    opt_d = torch.optim.Adam(
        [p for p in D.parameters() if p.requires_grad], lr=cfg.optim.lr_d, betas=betas, eps=cfg.optim.eps, fused=fused
    )
    return G, D, opt_g, opt_d


@dataclass
class Networks:
    """What the step trains and the run keeps: G and D as Accelerate prepared them (DDP, compile), the plain ones,
    D for G's phase, both optimizers and G's moving average (None without train.ema_kimg)."""

    acc: Accelerator
    G: nn.Module
    D: nn.Module
    G_plain: nn.Module
    D_plain: nn.Module
    D_for_g: Callable[..., torch.Tensor]
    opt_g: AcceleratedOptimizer
    opt_d: AcceleratedOptimizer
    ema: EMA | None

    def sample_model(self) -> nn.Module:
        """The generator that samples and metrics use: the EMA when there is one."""
        return self.ema.model if self.ema is not None else self.G_plain

    def release(self) -> None:
        """After the run: the plain networks in place of the DDP wrappers (dist.end destroys the group next)."""
        self.G, self.D = self.G_plain, self.D_plain

    def state_dict(self) -> dict[str, Any]:
        return {
            "G": strip_prefixes(self.G_plain.state_dict()),
            "D": strip_prefixes(self.D_plain.state_dict()),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
            "G_ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any], cfg: Config) -> None:
        """The weights and optimizer states of a checkpoint; then the config's learning rates, betas and eps (a
        resume with new optim.* values goes on with them, as its warning says; a decay schedule moves lr and beta2
        from these values every step)."""
        load_net(self.G_plain, strip_prefixes(state["G"]), "G")
        load_net(self.D_plain, strip_prefixes(state["D"]), "D")
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.acc.scaler is not None and state.get("scaler"):
            self.acc.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:  # a checkpoint from a run without EMA starts the average from G
            self.ema.load_state_dict(strip_prefixes(state.get("G_ema") or state["G"]))
        o = cfg.optim
        for opt, lr in ((self.opt_g, o.lr_g), (self.opt_d, o.lr_d)):
            for group in opt.param_groups:
                group["lr"], group["betas"], group["eps"] = lr, (o.betas[0], o.betas[1]), o.eps


def prepare_networks(
    cfg: Config,
    acc: Accelerator,
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
) -> Networks:
    """Cross-rank batch norm in G, channels_last, Accelerate's prepare (DDP, compile), D for G's phase, the EMA."""
    if cfg.model.sync_bn and acc.num_processes > 1:
        G = sync_batchnorm(G, acc.device)
    if cfg.train.channels_last:  # 4-D weights only; the stubs lack this overload of Module.to
        G = G.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        D = D.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    G_w, D_w, opt_g_w, opt_d_w = acc.prepare(G, D, opt_g, opt_d)
    G_plain = acc.unwrap_model(G_w, keep_torch_compile=False)
    D_plain = acc.unwrap_model(D_w, keep_torch_compile=False)
    D_for_g = torch.compile(D_plain, mode=cfg.train.compile_mode) if cfg.train.compile else D_plain
    ema = EMA(G_plain) if cfg.train.ema_kimg > 0 else None
    return Networks(acc, G_w, D_w, G_plain, D_plain, D_for_g, opt_g_w, opt_d_w, ema)


def load_net(net: nn.Module, weights: dict[str, torch.Tensor], name: str) -> None:
    """load_state_dict, with what does not fit named in one line with its likely cause (the Checkpointer
    turns it into a CheckpointError naming the file)."""
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k} {tuple(weights[k].shape)} -> {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        net.load_state_dict(weights)
        return
    if name == "D" and "embed.weight" in unexpected and any(k.startswith("mapping.") for k in missing):
        cause = (
            "a conditional stylegan2 checkpoint from before D mapped its label through its own network "
            "(D.embed became D.mapping on 2026-12-02, as stylegan2-ada's D); it cannot continue as a resume: "
            "start a new run from it with train.init_from=THAT_FOLDER train.init_skip=['mapping.*']"
        )
    else:
        cause = (
            "the model settings differ from the run that wrote it, or another version of distgan named "
            "these layers otherwise; resume with that config and version, or start fresh with ckpt.resume=''"
        )
    found = [
        f"missing {', '.join(missing[:6])}" if missing else "",
        f"unexpected {', '.join(unexpected[:6])}" if unexpected else "",
        f"other shapes {', '.join(shapes[:4])}" if shapes else "",
    ]
    raise RuntimeError(f"{name}'s weights do not fit: {'; '.join(p for p in found if p)}. Likely {cause}")
