"""stylegan2-ada-pytorch's own training step on MNIST, to tell a fault of ours from a property of the recipe.

Runs the reference's networks.py and loss.py (StyleGAN2Loss: non-saturating loss, lazy R1 every 16 D steps,
lazy path length every 4 G steps, style mixing 0.9) with training_loop.py's phase logic (lr and betas scaled by
interval / (interval + 1), gain = interval, gradients nan_to_num'd) and its EMA with ramp-up, at the widths of
configs/mnist_stylegan2.yaml (channels min(1024 // r, 64), w 128, 2-layer mapping, batch 32, lr 0.0025, betas
(0, 0.99)). The reference needs power-of-two sizes, so MNIST is resized to 32 px (bilinear). R1's gamma is
theirs: on [-1, 1] images, 4x ours on [0, 1] (default 0.04 = the preset's 0.01).

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/sg2ada
    OMP_NUM_THREADS=1 python benchmarks/stylegan2_reference_loop.py --ref /tmp/sg2ada --steps 1000 --out grid.png

Prints D's outputs and the EMA generator's pixel std over latents (real MNIST: 0.177) every 100 steps and saves
an 8x8 grid of the EMA generator (noise_mode='const', as our grids).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def mnist32(root: Path) -> torch.Tensor:
    with gzip.open(root / "train-images-idx3-ubyte.gz") as f:
        raw = f.read()
    x = torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28).copy()).float() / 255
    return F.interpolate(x, size=32, mode="bilinear", align_corners=False) * 2 - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="a checkout of NVlabs/stylegan2-ada-pytorch")
    ap.add_argument("--mnist", default="../shared/data/mnist", help="folder with MNIST's IDX .gz files")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--gamma", type=float, default=0.04)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reference_grid.png")
    args = ap.parse_args()
    sys.path.insert(0, args.ref)
    from training import networks as ref  # type: ignore[import-not-found]
    from training.loss import StyleGAN2Loss  # type: ignore[import-not-found]

    torch.manual_seed(args.seed)
    x = mnist32(Path(args.mnist))
    common = dict(channel_base=1024, channel_max=64, num_fp16_res=0, conv_clamp=None)
    G = ref.Generator(
        z_dim=128,
        c_dim=0,
        w_dim=128,
        img_resolution=32,
        img_channels=1,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=common,
    )
    D = ref.Discriminator(
        c_dim=0, img_resolution=32, img_channels=1, epilogue_kwargs=dict(mbstd_group_size=4), **common
    )
    G_ema = copy.deepcopy(G).eval()
    loss = StyleGAN2Loss("cpu", G.mapping, G.synthesis, D, r1_gamma=args.gamma)
    phases = []
    for name, module, interval in [("G", G, 4), ("D", D, 16)]:
        r = interval / (interval + 1)
        opt = torch.optim.Adam(module.parameters(), lr=0.0025 * r, betas=(0.0, 0.99**r), eps=1e-8)
        phases += [(name + "main", module, opt, 1), (name + "reg", module, opt, interval)]
    batch, nimg, t0, none = 32, 0, time.time(), torch.zeros(32, 0)
    for step in range(args.steps):
        real = x[torch.randint(0, len(x), (batch,))]
        for name, module, opt, interval in phases:
            if step % interval:
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            loss.accumulate_gradients(
                phase=name,
                real_img=real,
                real_c=none,
                gen_z=torch.randn(batch, 128),
                gen_c=none,
                sync=True,
                gain=interval,
            )
            module.requires_grad_(False)
            for p in module.parameters():
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            opt.step()
        nimg += batch
        beta = 0.5 ** (batch / max(min(10_000, nimg * 0.05), 1e-8))
        with torch.no_grad():
            for pe, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                pe.copy_(p.lerp(pe, beta))
            for be, b in zip(G_ema.buffers(), G.buffers(), strict=True):
                be.copy_(b)
            if (step + 1) % 100 == 0:
                rl, fl = D(real, none), D(G(torch.randn(batch, 128), none), none)
                img = (G_ema(torch.randn(64, 128), torch.zeros(64, 0), noise_mode="const") + 1) / 2
                print(
                    f"step {step + 1} {time.time() - t0:.0f}s D(real) {torch.sigmoid(rl).mean():.3f} "
                    f"D(fake) {torch.sigmoid(fl).mean():.3f} EMA pixel std over z {img.std(0).mean():.4f}",
                    flush=True,
                )
    with torch.no_grad():
        img = (G_ema(torch.randn(64, 128), torch.zeros(64, 0), noise_mode="const") + 1) / 2
    grid = img.clamp(0, 1).reshape(8, 8, 32, 32).permute(0, 2, 1, 3).reshape(256, 256)
    Image.fromarray((grid.numpy() * 255).round().astype(np.uint8)).save(args.out)
    print(f"real MNIST pixel std over images {((x[:5000] + 1) / 2).std(0).mean():.4f}; grid {args.out}")


if __name__ == "__main__":
    main()
