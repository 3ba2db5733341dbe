"""Your own images: conversion speed (256-px JPEG -> 64-px shards) per core and with all cores, and the loader's
rate on 64x64 RGB shards against the rate a 64x64 model trains at on the same machine, in one run.

usage: python benchmarks/images.py [--n 2000] [--repeats 3] [--json benchmarks/images.json]

The JPEGs are generated (smooth colour fields with noise, quality 90, 256x256), written once to a temporary
folder and read from the page cache like a warm local disk. Conversion runs `distgan data images` in a fresh
process (listing, decode with draft, Lanczos resize, shards, manifest: the whole command). The loader reads
the converted dataset repeated to 20,000 images with data.workers=1; the model rate is distgan's rgb64_dcgan
preset in fp32 at batch 64 (steps 10-30 of one run, from metrics.jsonl). Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_jpegs(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    folder.mkdir(parents=True)
    for i in range(n):
        a, b, c = rng.uniform(0, 6, 3)
        base = np.stack([np.sin(a * xx + b * yy), np.cos(b * xx - c * yy), np.sin(c * (xx + yy))], -1)
        arr = ((base + 1) * 110 + rng.normal(0, 8, (256, 256, 3))).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        (folder / f"{i:06d}.jpg").write_bytes(buf.getvalue())


def convert(src: Path, out: Path, workers: int) -> float:
    cmd = [
        sys.executable,
        "-m",
        "distgan.cli",
        "data",
        "images",
        str(src),
        "--out",
        str(out),
        "--size",
        "64",
        "--workers",
        str(workers),
        "--shard-size",
        "1000",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t0


def loader_rate(data: Path, n_target: int = 20000) -> float:
    from distgan.config import DataConfig
    from distgan.data.loader import Loader

    loader = Loader(DataConfig(path=str(data), workers=1), 64, 0, 1, 0, (3, 64, 64))
    n, t0, epoch = 0, time.perf_counter(), 0
    while n < n_target:
        for b in loader.epoch(epoch):
            n += len(b["label"])
        epoch += 1
    return n / (time.perf_counter() - t0)


def model_rate(data: Path, out: Path) -> float:
    args = [
        str(ROOT / "configs" / "rgb64_dcgan.yaml"),
        f"data.path={data}",
        "train.max_steps=30",
        "train.log_every=10",
        f"train.out_dir={out}",
        "train.run_name=m",
        "track.wandb=disabled",
        "track.plot=false",
        "ckpt.resume=",
        "eval.every=0",
    ]
    subprocess.run([sys.executable, str(ROOT / "distgan" / "train.py"), *args], check=True, capture_output=True)
    rows = [json.loads(r) for r in (out / "m" / "metrics.jsonl").read_text().splitlines() if '"loss_d"' in r]
    first, last = rows[0], rows[-1]
    return (last["images_seen"] - first["images_seen"]) / (last["time"] - first["time"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="generated 256x256 JPEGs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "images.json"))
    args = p.parse_args()
    from rich.console import Console

    console = Console()
    cores = len(os.sched_getaffinity(0))
    res: dict = {"cores": cores, "n": args.n, "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        console.print(f"writing {args.n} JPEGs (256x256)", style="dim")
        make_jpegs(t / "jpegs", args.n)
        for workers in sorted({1, cores}):
            times = []
            for r in range(args.repeats):
                times.append(convert(t / "jpegs", t / f"out{workers}-{r}", workers))
            rate = args.n / statistics.median(times)
            res[f"convert_img_per_s_{workers}w"] = rate
            console.print(
                f"convert 256-px JPEG -> 64 px, {workers} worker(s): {rate:,.0f} img/s ({rate / workers:,.0f} per core)"
            )
        # the loader on a 20k-image 64x64 RGB dataset: the converted images, repeated
        from distgan.data.records import read_split
        from distgan.data.shard_writer import Split, write_shards

        images, labels = read_split(str(t / "out1-0"), "train")
        reps = -(-20000 // len(images))
        x = images.transpose(0, 2, 3, 1).repeat(reps, 0)[:20000]
        write_shards(t / "big", {"train": Split(x, labels.repeat(reps)[:20000])}, [], "bench", 5000, 1000)
        loads = [loader_rate(t / "big") for _ in range(args.repeats)]
        res["loader_img_per_s_1worker"] = statistics.median(loads)
        models = [model_rate(t / "big", t / "m0")]  # slow on a CPU: one run, 20 timed steps
        res["rgb64_dcgan_train_img_per_s"] = statistics.median(models)
        res["loader_over_training"] = res["loader_img_per_s_1worker"] / res["rgb64_dcgan_train_img_per_s"]
        console.print(
            f"loader, 64x64 RGB, 1 worker: {res['loader_img_per_s_1worker']:,.0f} img/s; rgb64_dcgan "
            f"trains at {res['rgb64_dcgan_train_img_per_s']:,.0f} img/s: loader "
            f"{res['loader_over_training']:.0f}x the training rate"
        )
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
