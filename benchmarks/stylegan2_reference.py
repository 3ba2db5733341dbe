"""distgan's StyleGAN2 G and D against stylegan2-ada-pytorch's own networks.py, with the same weights.

The part tests check each layer against its definition; this checks the assembled networks against the
reference code (block order, which w feeds which layer, toRGB skips, the residual D, minibatch std, the
conditional mapping and projection). It needs a checkout of NVlabs/stylegan2-ada-pytorch (pure Python on a
CPU: its custom CUDA ops fall back to their reference paths), so it is a check to run, not a CI test:

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/sg2ada
    python benchmarks/stylegan2_reference.py --ref /tmp/sg2ada

Every parameter is set to random values (so zero-initialised biases and noise strengths count), ours are copied
into theirs by name, and G (noise_mode='const', our fixed noise buffers), the mapping and D are compared.
Exits 1 when a maximum absolute difference exceeds --tol.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

from distgan.config import ModelConfig
from distgan.models import build_discriminator, build_generator
from distgan.run.stylegan2_ada import their_name


def copy_into(ours: nn.Module, theirs: nn.Module, net: str, res: int) -> None:
    sd, used = theirs.state_dict(), set()
    for n, t in [*ours.named_parameters(), *ours.named_buffers()]:
        if n.endswith(".f"):  # our FIR filter buffers: theirs are resample_filter, fixed alike
            continue
        rn = their_name(n, net, res)
        if rn not in sd or sd[rn].shape != t.shape:
            raise SystemExit(f"{net}: our {n} has no counterpart {rn} of shape {tuple(t.shape)}")
        sd[rn] = t.detach().clone()
        used.add(rn)
    left = [k for k in sd if k not in used and "resample_filter" not in k]
    if left:
        raise SystemExit(f"{net}: reference tensors not set from ours: {left}")
    theirs.load_state_dict(sd)


def compare(ref: object, res: int, channels: int, classes: int) -> dict[str, float]:
    torch.manual_seed(res + channels + classes)
    base, cmax, zd, wd = 512, 64, 32, 32
    cfg = ModelConfig(
        arch="stylegan2",
        image_shape=[channels, res, res],
        noise_dim=zd,
        mbstd_group=4,
        num_classes=classes,
        sections={"stylegan2": dict(w_dim=wd, mapping_layers=2, channel_base=base, channel_max=cmax)},
    )
    G, D = build_generator(cfg), build_discriminator(cfg)
    common = dict(channel_base=base, channel_max=cmax, num_fp16_res=0, conv_clamp=None)
    RG = ref.Generator(
        z_dim=zd,
        c_dim=classes,
        w_dim=wd,
        img_resolution=res,
        img_channels=channels,  # type: ignore[attr-defined]
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=common,
    )
    RD = ref.Discriminator(
        c_dim=classes,
        img_resolution=res,
        img_channels=channels,  # type: ignore[attr-defined]
        epilogue_kwargs=dict(mbstd_group_size=4),
        **common,
    )
    with torch.no_grad():
        for m in (G, D):
            for p in m.parameters():
                p.copy_(torch.randn_like(p) * (0.3 if p.ndim <= 1 else 1.0))
    copy_into(G, RG, "G", res)
    copy_into(D, RD, "D", res)
    z = torch.randn(8, zd)
    y = torch.arange(8) % classes if classes else None
    c = F.one_hot(y, classes).float() if y is not None else torch.zeros(8, 0)
    with torch.no_grad():
        ws, rws = G.mapping(z, y), RG.mapping(z, c)
        img, rimg = G.synthesis(ws), (RG.synthesis(rws, noise_mode="const") + 1) / 2  # ours in [0, 1]
        # two minibatch-std groups of 4, strided over the batch in both
        x = torch.rand(8, channels, res, res)
        d, rd = D(x, y), RD(x * 2 - 1, c).squeeze(1)  # ours reads [0, 1]
    return {
        "mapping": (ws - rws).abs().max().item(),
        "G": (img - rimg).abs().max().item(),
        "D": (d - rd).abs().max().item(),
        "D_scale": rd.abs().max().item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="a checkout of NVlabs/stylegan2-ada-pytorch")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    sys.path.insert(0, args.ref)
    from training import networks as ref  # type: ignore[import-not-found]

    worst = 0.0
    for res, channels, classes in [(32, 1, 0), (32, 3, 10), (64, 3, 0)]:
        diffs = compare(ref, res, channels, classes)
        worst = max(worst, diffs["mapping"], diffs["G"], diffs["D"] / max(diffs["D_scale"], 1e-3))
        print(
            f"{res}px C={channels} classes={classes}: max |ours - reference| mapping {diffs['mapping']:.2e}  "
            f"G {diffs['G']:.2e}  D {diffs['D']:.2e} (D's outputs up to {diffs['D_scale']:.3g})"
        )
    print("match" if worst <= args.tol else f"MISMATCH (worst {worst:.2e} > {args.tol})")
    sys.exit(0 if worst <= args.tol else 1)


if __name__ == "__main__":
    main()
