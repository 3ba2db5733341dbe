"""A preset's step written by hand (the baseline of benchmarks/presets.py) and what that step costs, counted.

The bare step honours the preset's config as a user would by hand: train.precision (bf16 autocast around the
forwards, as Accelerate does), train.channels_last, optim.fused (Adam's fused kernel), train.compile
(torch.compile of G and D); fp16 needs a loss scaler and is measured for the MLP in benchmarks/throughput.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

BUCKET_BYTES = 25 * 2**20  # DDP's default bucket_cap_mb


def preset_config(preset: str, data: str, overrides: list[str] | None = None, classes: int = 10) -> Any:
    """The preset's config (plus overrides); a conditional preset's `num_classes: -1` set to `classes`."""
    from distgan.configure import load_config

    args = [f"data.path={data}", *(overrides or [])]
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml", args)
    if cfg.model.num_classes == -1:
        cfg = load_config(ROOT / "configs" / f"{preset}.yaml", [*args, f"model.num_classes={classes}"])
    return cfg


def bare_step(  # noqa: PLR0915 (the bare loop is written out in one place on purpose: it is the baseline)
    cfg: Any, images: Any, labels: Any, dev: Any, foreach: bool | None = None
) -> Callable[[int], None]:
    """The hand-written step i of a preset: what a user would write without distgan.
    foreach: Adam's implementation (None: PyTorch's default for the device, multi-tensor on a GPU)."""
    from distgan.config import parse_augment
    from distgan.models import build_discriminator, build_generator
    from distgan.training import losses
    from distgan.training.augment import DiffAugment
    from distgan.training.ema import ema_beta

    m, t, o = cfg.model, cfg.train, cfg.optim
    torch.manual_seed(0)
    G, D = build_generator(m).to(dev), build_discriminator(m).to(dev)
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    if t.channels_last:
        G, D = G.to(memory_format=fmt), D.to(memory_format=fmt)
    G_ema = build_generator(m).to(dev).eval().requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    adam = {"betas": (o.betas[0], o.betas[1]), "eps": o.eps, "fused": o.fused or None}
    if not o.fused:
        adam["foreach"] = foreach
    opt_g = torch.optim.Adam(G.parameters(), lr=o.lr_g, **adam)
    opt_d = torch.optim.Adam(D.parameters(), lr=o.lr_d, **adam)
    loss_fns = losses.LOSSES[t.loss]
    d_loss, g_loss = loss_fns.d, loss_fns.g
    aug = DiffAugment(t.augment, 0, 0, 1).augment if parse_augment(t.augment) else None
    Gc, Dc = (torch.compile(G, mode=t.compile_mode), torch.compile(D, mode=t.compile_mode)) if t.compile else (G, D)
    x_all = torch.as_tensor(images).to(dev)
    y_all = torch.as_tensor(labels).to(dev)
    k, b = m.num_classes, t.batch_size
    style = m.arch == "stylegan2"
    pl_mean = torch.zeros((), device=dev)

    def style_inputs(pl: bool) -> dict:
        """stylegan2: mixing latents and cutoff, per-layer noise, the ws for path length."""
        if not style:
            return {}
        cut = int(torch.randint(1, G.num_ws, ())) if float(torch.rand(())) < t.style_mixing else G.num_ws
        noise = [torch.randn(b, *shape, device=dev) for shape in G.noise_shapes()]
        return {"mix": (torch.randn(b, m.noise_dim, device=dev), cut), "noise": noise, "return_ws": pl}

    def autocast() -> contextlib.AbstractContextManager:
        if t.precision == "bf16":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(i: int) -> None:
        if t.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        idx = torch.randint(0, len(x_all), (b,), device=dev)
        real = x_all[idx].float().div_(255).contiguous(memory_format=fmt)
        y_real = y_all[idx] if k else None
        y_fake = torch.randint(0, k, (b,), device=dev) if k else None
        g_now, r1 = (i + 1) % t.d_steps == 0, t.r1_gamma > 0 and i % t.r1_every == 0
        pl = style and g_now and t.pl_weight > 0 and ((i + 1) // t.d_steps - 1) % t.pl_every == 0
        with torch.set_grad_enabled(g_now), autocast():
            out = Gc(torch.randn(b, m.noise_dim, device=dev), y_fake, **style_inputs(pl))
        fake, ws = (out[0].float(), out[1]) if pl else (out.float(), None)
        if r1:
            real.requires_grad_(True)
        x = torch.cat([aug(real), aug(fake.detach())] if aug else [real, fake.detach()])
        with autocast():
            logits = Dc(x, torch.cat([y_real, y_fake]) if k else None).float()
        loss = d_loss(*logits.split(b))
        if r1:
            loss = loss + losses.r1_penalty(logits[:b], real) * (t.r1_gamma / 2 * t.r1_every)
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        if g_now:
            D.requires_grad_(False).eval()
            with autocast():
                gen = Dc(aug(fake) if aug else fake, y_fake).float()
                ref = (
                    Dc(aug(real.detach()) if aug else real.detach(), y_real).float() if loss_fns.g_needs_real else None
                )
            loss_g = g_loss(ref, gen)
            if pl:  # StyleGAN2's path length on every shrink-th fake, by hand
                s, (_, c, h, w) = t.pl_batch_shrink, fake.shape
                noise = torch.randn(b // s, c, h, w, device=dev) / (h * w) ** 0.5
                (grad,) = torch.autograd.grad((fake[::s] * noise).sum(), ws, create_graph=True)
                lengths = grad[::s].square().sum(2).mean(1).sqrt()
                pl_mean.lerp_(lengths.detach().mean(), t.pl_decay)
                loss_g = loss_g + (lengths - pl_mean).square().mean() * (t.pl_weight * t.pl_every)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            D.requires_grad_(True).train()
            if t.ema_kimg:
                beta = ema_beta(b * t.d_steps, (i + 1) * b, t.ema_kimg, t.ema_rampup)
                with torch.no_grad():
                    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1 - beta)
                    for be, bg in zip(G_ema.buffers(), G.buffers(), strict=True):
                        be.copy_(bg)

    return step


class _OpCount(TorchDispatchMode):
    """Counts the ops a step dispatches (views excluded: they launch no kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not getattr(func, "is_view", False):
            self.ops += 1
        return func(*args, **(kwargs or {}))


def flops_per_image(cfg: Any) -> float:
    """Matmul and convolution FLOPs of one training step per image (forward and backward of both phases, lazy
    R1 and D steps amortised over their cycle), counted on the CPU at a small batch (they scale with it)."""
    return count(cfg)["flops_per_image"]


def count(cfg: Any, batch: int = 4) -> dict:
    """Exact costs of one step of this config: FLOPs per image, ops dispatched, parameters, all-reduced bytes.

    The op count is taken with multi-tensor Adam (a GPU's default) and without compile or autocast."""
    from distgan.models import build_discriminator, build_generator

    m, t = cfg.model, cfg.train
    cycle = math.lcm(t.d_steps, t.r1_every if t.r1_gamma > 0 else 1)
    train = dataclasses.replace(
        t, batch_size=batch, compile=False, compile_mode="default", precision="no", channels_last=False
    )
    small = dataclasses.replace(cfg, train=train)
    images = torch.randint(0, 256, (64, *m.image_shape), dtype=torch.uint8)
    labels = torch.randint(0, max(1, m.num_classes), (64,))
    step = bare_step(small, images, labels, torch.device("cpu"), foreach=True)
    step(0)  # lazy state (Adam moments, spectral-norm vectors) outside the count
    flops, ops = FlopCounterMode(display=False), _OpCount()
    with flops, ops:
        for i in range(cycle):
            step(1 + i)
    G, D = build_generator(m), build_discriminator(m)
    p_g = sum(p.numel() for p in G.parameters() if p.requires_grad)
    p_d = sum(p.numel() for p in D.parameters() if p.requires_grad)
    bn = [mod for mod in G.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)] if m.sync_bn else []
    # per step: D's DDP buckets every step, G's every d_steps-th; SyncBatchNorm on a GPU: one collective in each
    # BN forward (every step: the fakes; mean and inverse std per channel) and one in each backward (G steps)
    channels = sum(mod.num_features for mod in bn)
    return {
        "batch": t.batch_size,
        "d_steps": t.d_steps,
        "params_g": p_g,
        "params_d": p_d,
        "grad_bytes_per_step": 4 * (p_d + p_g / t.d_steps),
        "bn_bytes_per_step": 4 * channels * (2 + 2 / t.d_steps),
        "allreduce_calls_per_step": math.ceil(4 * p_d / BUCKET_BYTES)
        + math.ceil(4 * p_g / BUCKET_BYTES) / t.d_steps
        + len(bn) * (1 + 1 / t.d_steps),
        "flops_per_image": flops.get_total_flops() / cycle / batch,
        "ops_per_step": ops.ops / cycle,
    }
