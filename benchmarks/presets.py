"""Each preset's training rate in distgan against a bare PyTorch loop of the same networks, side by side.

usage: python benchmarks/presets.py [--presets mnist_dcgan ...] [--repeats 3] [--seconds 20]
       [--data data/mnist] [--json benchmarks/presets.json]

The bare loop is what a user would write by hand for the same preset: the same G and D modules (built from
the preset's model config), the same loss, batch, Adam settings, lazy R1 schedule, DiffAugment policy, D steps
per G step and EMA update, over the uint8 images held in memory; no Accelerate, no loader, no statistics, no
logging, no checkpoints. distgan runs `distgan/train.py configs/PRESET.yaml` from shards on local disk with
the preset's own logging and sampling (evaluation off: it is measured separately in docs/evaluation.md).
MNIST presets read --data; the 64x64 RGB presets read generated RGB shards written to a temporary folder
(on a CPU they take ~10 s a step at batch 64: one repeat of a 3x longer window, 2 warm-up steps).
Every measurement is a fresh process; bare and distgan alternate; figures are medians with their range.
Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PRESETS = ["mnist_mlp", "mnist_dcgan", "mnist_dcgan_cond", "rgb64_dcgan", "rgb64_resnet"]


def bare_loop(preset: str, data: str, seconds: float, warmup: int) -> dict:
    import torch

    from distgan import losses
    from distgan.augment import DiffAugment
    from distgan.config import load_config
    from distgan.data.records import read_split
    from distgan.dist import set_threads
    from distgan.ema import ema_beta
    from distgan.models import build_discriminator, build_generator

    set_threads()
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml", [f"data.path={data}"])
    images, labels = read_split(data, "train")
    if cfg.model.num_classes == -1:
        cfg = load_config(ROOT / "configs" / f"{preset}.yaml", [f"data.path={data}", "model.num_classes=10"])
    m, t, o = cfg.model, cfg.train, cfg.optim
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    G, D = build_generator(m).to(dev), build_discriminator(m).to(dev)
    G_ema = build_generator(m).to(dev).eval().requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    opt_g = torch.optim.Adam(G.parameters(), lr=o.lr_g, betas=(o.betas[0], o.betas[1]))
    opt_d = torch.optim.Adam(D.parameters(), lr=o.lr_d, betas=(o.betas[0], o.betas[1]))
    d_loss, g_loss = losses.LOSSES[t.loss]
    aug = DiffAugment(t.augment, 0, 0, 1)
    x_all = torch.from_numpy(images).to(dev)
    y_all = torch.from_numpy(labels).to(dev)
    k, b = m.num_classes, t.batch_size

    def step(i: int) -> None:
        idx = torch.randint(0, len(x_all), (b,), device=dev)
        real = x_all[idx].float().div_(255)
        y_real = y_all[idx] if k else None
        y_fake = torch.randint(0, k, (b,), device=dev) if k else None
        g_now, r1 = (i + 1) % t.d_steps == 0, t.r1_gamma > 0 and i % t.r1_every == 0
        with torch.set_grad_enabled(g_now):
            fake = G(torch.randn(b, m.noise_dim, device=dev), y_fake)
        if r1:
            real.requires_grad_(True)
        x = torch.cat([aug(real), aug(fake.detach())] if aug else [real, fake.detach()])
        logits = D(x, torch.cat([y_real, y_fake]) if k else None)
        loss = d_loss(*logits.split(b))
        if r1:
            loss = loss + losses.r1_penalty(logits[:b], real) * (t.r1_gamma / 2 * t.r1_every)
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        if g_now:
            D.requires_grad_(False).eval()
            loss_g = g_loss(D(aug(fake) if aug else fake, y_fake))
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

    for i in range(warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step(warmup + n)
        n += 1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return {"img_per_s": n * b / (time.perf_counter() - t0), "steps": n}


def distgan_run(preset: str, data: str, steps: int, out: Path) -> dict:
    """2 x steps steps, logged every `steps`: the rate is the second interval's (the first holds warm-up)."""
    run_name = f"{preset}-{time.time_ns()}"
    args = [str(ROOT / "configs" / f"{preset}.yaml"), f"data.path={data}", f"train.max_steps={2 * steps}",
            f"train.log_every={steps}", "eval.every=0", f"train.out_dir={out}", f"train.run_name={run_name}",
            "track.plot=false", "track.wandb=offline"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "distgan" / "train.py"), *args], capture_output=True,
                         text=True, env=env)  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"distgan {preset} failed:\n{res.stderr[-3000:]}")
    rows = [json.loads(r) for r in (out / run_name / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_d" in r]
    first, last = rows[0], rows[-1]  # steady state: from the first log row (after warm-up) to the last
    return {"img_per_s": (last["images_seen"] - first["images_seen"]) / (last["time"] - first["time"])}


def child(**kw: object) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(kw)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"bare loop failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def rgb_data(out: Path, n: int = 2048) -> str:
    """Generated 64x64 RGB shards: smooth colour blobs (decoded and batched like any user's images)."""
    import numpy as np

    from distgan.data.source import Split, write_shards

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    images = np.empty((n, 64, 64, 3), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(16, 48, 2).tolist() + [rng.uniform(6, 20)]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        images[i] = (255 * blob * rng.uniform(0.3, 1.0, 3)).astype(np.uint8)
    write_shards(out, {"train": Split(images, np.zeros(n, np.int64))}, [], "generated", 512, 128)
    return str(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=PRESETS)
    p.add_argument("--data", default="data/mnist", help="MNIST shards for the mnist_* presets")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0, help="timed window of each measurement")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "presets.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(bare_loop(**json.loads(args.child))))
        return 0

    import torch
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    results: dict = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
                     "repeats": args.repeats, "date": time.strftime("%Y-%m-%d"), "rows": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out, rgb = Path(tmp), ""
        for preset in args.presets:
            if preset.startswith("rgb64") and not rgb:
                rgb = rgb_data(out / "rgb64")
            data = rgb if preset.startswith("rgb64") else args.data
            bare, ours = [], []
            slow = preset.startswith("rgb64") and not torch.cuda.is_available()  # ~10 s a step on 2 CPU cores
            repeats, seconds, warmup = (1, 3 * args.seconds, 2) if slow else (args.repeats, args.seconds, 20)
            for r in range(repeats):
                console.print(f"{preset}: repeat {r + 1}/{repeats}", style="dim")
                b = child(preset=preset, data=data, seconds=seconds, warmup=warmup)
                bare.append(b["img_per_s"])
                # as many timed steps as the bare loop's window, after a first interval of warm-up
                ours.append(distgan_run(preset, data, max(2, b["steps"]), out)["img_per_s"])
            ratios = [o / b for o, b in zip(ours, bare, strict=True)]
            med = statistics.median
            results["rows"].append({"preset": preset, "bare_img_per_s": med(bare), "distgan_img_per_s": med(ours),
                                    "ratio": med(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                                    "repeats": repeats, "seconds": seconds})  # fmt: skip
    table = Table(title=f"presets: distgan / bare loop, {device}, median of the repeats")
    for col in ("preset", "repeats", "bare img/s", "distgan img/s", "distgan / bare (range)"):
        table.add_column(col, justify="right")
    for row in results["rows"]:
        table.add_row(row["preset"], str(row["repeats"]), f"{row['bare_img_per_s']:,.0f}", f"{row['distgan_img_per_s']:,.0f}",
                      f"{row['ratio']:.3f} ({row['ratio_min']:.3f}-{row['ratio_max']:.3f})")  # fmt: skip
    console.print(table)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
