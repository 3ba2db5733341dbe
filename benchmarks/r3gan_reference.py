"""distgan's R3GAN G, D and loss against brownvc/R3GAN's own code, with the same weights.

The part tests check the pieces against their definitions; this checks the assembled networks (stage order,
transition layers, grouped bottlenecks, bases, the conditional embeddings) and the loss terms as distgan's
phases compose them (RpGAN, R1, R2 and their gradients) against R3GAN/Networks.py and R3GAN/Trainer.py. It needs
a checkout of brownvc/R3GAN (pure Python on a CPU: its CUDA ops fall back to their reference paths), so it is a
check to run, not a CI test:

    git clone https://github.com/brownvc/R3GAN /tmp/r3gan
    python benchmarks/r3gan_reference.py --ref /tmp/r3gan

Every parameter is set to random values (so the zero-initialised last convs and biases count), ours are copied
into theirs by name. Their images are in [-1, 1] and ours in [0, 1]: their G's output is compared with ours
mapped back (2x - 1), and their D sees 2x - 1 of what ours sees. Exits 1 when a difference exceeds --tol.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from distgan.config import ModelConfig, TrainConfig
from distgan.models import build_discriminator, build_generator, r3gan
from distgan.models.layers import stages
from distgan.training import losses
from distgan.training.step import Batch, GANStep, StepOptions, build_phases

RENAMES = [
    (r"^stages\.(\d+)\.(\d+)\.", r"MainLayers.\1.Layers.\2."),
    (r"conv([123])\.weight$", r"LinearLayer\1.Layer.weight"),
    (r"act([12])\.bias$", r"NonLinearity\1.Bias"),
    (r"\.conv\.weight$", ".LinearLayer.Layer.weight"),
    (r"\.basis(\.weight)?$", r".Basis\1"),
    (r"\.linear\.weight$", ".LinearLayer.weight"),
    (r"^embed\.weight$", "EmbeddingLayer.weight"),
    (r"^out\.weight$", "AggregationLayer.Layer.weight"),
    (r"^fromrgb\.weight$", "ExtractionLayer.Layer.weight"),
]


def their_name(n: str) -> str:
    for pattern, repl in RENAMES:
        n = re.sub(pattern, repl, n)
    return n


def copy_into(ours: nn.Module, theirs: nn.Module, net: str) -> None:
    sd, used = theirs.state_dict(), set()
    for n, t in ours.named_parameters():
        rn = their_name(n)
        if rn not in sd or sd[rn].shape != t.shape:
            raise SystemExit(f"{net}: our {n} has no counterpart {rn} of shape {tuple(t.shape)}")
        sd[rn] = t.detach().clone()
        used.add(rn)
    left = [k for k in sd if k not in used and not k.endswith("Kernel")]
    if left:
        raise SystemExit(f"{net}: their {left[:5]} got no weights from ours")
    theirs.load_state_dict(sd)


def import_reference(path: str) -> types.ModuleType:
    sys.path.insert(0, path)
    if "pkg_resources" not in sys.modules:  # their conv2d_gradfix imports it; new setuptools dropped it
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)  # type: ignore[assignment]
    import R3GAN.Networks as networks  # noqa: N813 (their module)

    return networks


def reference_nets(ref: types.ModuleType, cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    _, chans = r3gan.plan(cfg)
    r3 = r3gan.opts(cfg)
    blocks = [r3.blocks] * len(chans)
    card = [c * r3.expansion // r3.group_channels for c in chans]
    cond = {"ConditionDimension": cfg.num_classes} if cfg.num_classes else {}
    G = ref.Generator(
        cfg.noise_dim,
        chans,
        card,
        blocks,
        r3.expansion,
        ConditionEmbeddingDimension=cfg.noise_dim if cfg.num_classes else 0,
        **cond,
    )
    D = ref.Discriminator(
        chans[::-1],
        card[::-1],
        blocks,
        r3.expansion,
        ConditionEmbeddingDimension=chans[0] if cfg.num_classes else 0,
        **cond,
    )
    if cfg.image_shape[0] != 3:  # theirs is RGB only; the same layers with our channel count
        G.AggregationLayer = ref.Convolution(chans[-1], cfg.image_shape[0], KernelSize=1)
        D.ExtractionLayer = ref.Convolution(cfg.image_shape[0], chans[0], KernelSize=1)
    (h0, w0), _ = stages(cfg)
    if (h0, w0) != (4, 4):  # theirs starts at 4x4 only (MNIST's 28 px starts at 7x7): their bases, resized
        gb = G.MainLayers[0].Layers[0]
        gb.Basis = nn.Parameter(torch.randn(chans[0], h0, w0))
        gb.forward = lambda x, gb=gb: gb.Basis.view(1, -1, h0, w0) * gb.LinearLayer(x).view(x.shape[0], -1, 1, 1)
        db = D.MainLayers[-1].Layers[-1]
        db.Basis = nn.Conv2d(chans[0], chans[0], (h0, w0), groups=chans[0], bias=False)
    return G, D


def check(
    ref: types.ModuleType,
    trainer_mod: types.ModuleType,
    cfg: ModelConfig,
    gamma: float,
    tol_net: float,
    tol_loss: float,
) -> float:
    """The worst relative difference, in units of tol_net (losses and gradients scaled to tol_loss)."""
    torch.manual_seed(0)
    G, D = build_generator(cfg).double(), build_discriminator(cfg).double()
    with torch.no_grad():
        for p in [*G.parameters(), *D.parameters()]:
            p.add_(torch.randn_like(p) * 0.05)  # on top of the init: zero layers and biases get values too
    rG, rD = reference_nets(ref, cfg)
    rG, rD = rG.double(), rD.double()
    for stage in [*rG.MainLayers, *rD.MainLayers]:
        stage.DataType = torch.float64  # their stages cast their input to this (float32, or bf16 per stage)
    for m in [*rG.modules(), *rD.modules()]:
        if hasattr(m, "Kernel"):
            m.Kernel = m.Kernel.float()  # their upfirdn2d takes a float32 filter (and casts it to x's dtype)
    copy_into(G, rG, "G")
    copy_into(D, rD, "D")
    n, k = 8, cfg.num_classes
    z = torch.randn(n, cfg.noise_dim, dtype=torch.float64)
    y = torch.randint(0, k, (n,)) if k else None
    c = F.one_hot(y, k).double() if y is not None else None
    real = torch.rand(n, *cfg.image_shape, dtype=torch.float64)
    worst = 0.0

    def diff(name: str, a: torch.Tensor, b: torch.Tensor, loss: bool = False) -> None:
        """loss: distgan computes losses in float32 (losses.py), so those compare to float32 rounding."""
        nonlocal worst
        d = float((a.detach() - b.detach()).abs().max() / b.detach().abs().max())
        worst = max(worst, d * (tol_net / tol_loss if loss else 1.0))
        print(f"  {name:<26} max |diff| / max |theirs| {d:.2e}  (max |theirs| {float(b.abs().max()):.2e})")

    with torch.no_grad():
        fake = G(z, y)
    diff("G(z, y)", fake * 2 - 1, rG(z, c))
    diff("D(x, y)", D(real, y), rD(real * 2 - 1, c))
    # D's phase: their AccumulateDiscriminatorGradients vs distgan's phases (RpGAN + gamma/2 (R1 + R2))
    t = TrainConfig(loss="rpgan", r1_gamma=gamma, r2_gamma=gamma, r1_every=1)
    loss = losses.LOSSES["rpgan"]
    phases = build_phases(t, loss)
    nets = SimpleNamespace(D=D, D_plain=D, D_for_g=D)
    step = GANStep(nets, phases, SimpleNamespace(report=lambda *a: None), StepOptions(g_needs_real=True))  # type: ignore[arg-type]
    b = Batch(real, z, y, y)
    ours_total = step.d_forward(b, fake.detach(), step.terms("D", {"D", "Dreg"}))[1]
    D.zero_grad()
    ours_total.backward()
    ours_d = [p.grad.clone() for p in D.parameters()]
    adv = trainer_mod.AdversarialTraining(lambda zz, cc: fake.detach() * 2 - 1, rD)
    rD.zero_grad()
    adv_l, _, r1, r2 = adv.AccumulateDiscriminatorGradients(z, real * 2 - 1, c, gamma)
    their_total = adv_l.mean() + gamma / 2 * (r1.mean() + r2.mean())
    diff("D loss (RpGAN + R1 + R2)", ours_total.detach(), their_total, loss=True)
    their_d = {n: p.grad for n, p in rD.named_parameters()}
    names = [their_name(n) for n, _ in D.named_parameters()]
    diff(
        "D's gradients",
        torch.cat([g.flatten() for g in ours_d]),
        torch.cat([their_d[n].flatten() for n in names]),
        loss=True,
    )
    # G's phase: their AccumulateGeneratorGradients vs distgan's (D on the detached reals beside the fakes)
    D.requires_grad_(False)
    rD.requires_grad_(False)
    G.zero_grad()
    fake = G(z, y)
    step.g_forward(b, fake, step.terms("G", {"G"}), None).backward()
    rG.zero_grad()
    adv = trainer_mod.AdversarialTraining(rG, rD)
    g_l, _ = adv.AccumulateGeneratorGradients(z, real * 2 - 1, c)
    diff(
        "G's gradients",
        torch.cat([p.grad.flatten() for p in G.parameters()]),
        torch.cat([dict(rG.named_parameters())[their_name(n)].grad.flatten() for n, _ in G.named_parameters()]),
        loss=True,
    )
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="a checkout of brownvc/R3GAN")
    ap.add_argument("--tol", type=float, default=1e-12, help="networks: max |diff| / max |theirs| (float64)")
    ap.add_argument("--tol-loss", type=float, default=1e-6, help="losses and gradients (float32 losses)")
    args = ap.parse_args()
    ref = import_reference(args.ref)
    import R3GAN.Trainer as trainer_mod  # noqa: N813 (their module)

    cases = [
        (
            "grey 28 px (MNIST)",
            ModelConfig(
                arch="r3gan",
                image_shape=[1, 28, 28],
                noise_dim=32,
                sections={"r3gan": dict(channel_base=1792, channel_max=64)},
            ),
        ),
        (
            "RGB 28 px (StackedMNIST)",
            ModelConfig(
                arch="r3gan",
                image_shape=[3, 28, 28],
                noise_dim=32,
                sections={"r3gan": dict(channel_base=1792, channel_max=64)},
            ),
        ),
        (
            "conditional RGB 32 px",
            ModelConfig(
                arch="r3gan",
                image_shape=[3, 32, 32],
                noise_dim=32,
                num_classes=10,
                sections={"r3gan": dict(channel_base=2048, channel_max=64)},
            ),
        ),
        (
            "RGB 64 px, 3 blocks",
            ModelConfig(
                arch="r3gan",
                image_shape=[3, 64, 64],
                noise_dim=32,
                sections={"r3gan": dict(channel_base=2048, channel_max=64, blocks=3)},
            ),
        ),
    ]
    worst = 0.0
    for name, cfg in cases:
        print(name)
        worst = max(worst, check(ref, trainer_mod, cfg, 0.5, args.tol, args.tol_loss))
    ok = worst <= args.tol
    print(
        f"{'match' if ok else 'MISMATCH'}: networks within {args.tol:.0e} (float64), losses and gradients within "
        f"{args.tol_loss:.0e} (float32 losses), relative to the largest of theirs; worst {worst / args.tol:.2f} "
        "of its tolerance"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
