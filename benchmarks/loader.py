"""Loader throughput on MNIST train: our block shards vs per-sample PNG shards, 0/1/2 workers, against
iterating the same uint8 array in memory and against the rate the tutorial's model trains at, all in one run.

usage: python benchmarks/loader.py [--shards data/mnist] [--repeats 3] [--json benchmarks/loader.json]
Prints figures; it is not a test. Shards are made from ../shared/data/mnist (or the wheel route) if missing.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import webdataset as wds  # noqa: E402
from PIL import Image  # noqa: E402

from distgan.config import DataConfig, ModelConfig  # noqa: E402
from distgan.data.loader import Loader  # noqa: E402
from distgan.data.shards import resolve  # noqa: E402
from distgan.models import build_discriminator, build_generator  # noqa: E402
from distgan.training import losses  # noqa: E402

BATCH = 100


def ensure_shards(path: Path) -> Path:
    if (path / "manifest.json").is_file():
        return path
    from distgan.cli import main

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    args = ["data", "mnist", "--out", str(path)] + (["--from", str(shared)] if shared.is_dir() else [])
    assert main(args) == 0
    return path


def load_train(path: Path) -> tuple[np.ndarray, np.ndarray]:
    loader = Loader(DataConfig(path=str(path), workers=0, shuffle_buffer=1), BATCH, 0, 1, 0, (1, 28, 28))
    images = np.zeros((loader.dataset.samples, 28, 28), np.uint8)
    labels = np.zeros(loader.dataset.samples, np.int64)
    for b in loader.epoch(0):
        images[b["index"].numpy()] = b["image"][:, 0].numpy()
        labels[b["index"].numpy()] = b["label"].numpy()
    return images, labels


def write_png_shards(images: np.ndarray, labels: np.ndarray, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / "train-%06d.tar"), maxcount=10000, verbose=0) as sink:
        for i in range(len(images)):
            buf = io.BytesIO()
            Image.fromarray(images[i]).save(buf, format="PNG")
            sink.write({"__key__": f"{i:06d}", "png": buf.getvalue(), "cls": int(labels[i])})
    return out


def time_loader(path: Path, workers: int, limit: int | None = None) -> float:
    loader = Loader(DataConfig(path=str(path), workers=workers), BATCH, 0, 1, 0, (1, 28, 28))
    n, t0 = 0, time.perf_counter()
    for b in loader.epoch(0):
        n += len(b["label"])
        if limit and n >= limit:
            break
    return n / (time.perf_counter() - t0)


def time_memory(images: np.ndarray) -> float:
    x = torch.from_numpy(images)
    t0 = time.perf_counter()
    perm = torch.randperm(len(x))
    n = 0
    for i in range(0, len(x) - BATCH + 1, BATCH):
        batch = x[perm[i : i + BATCH]]
        n += len(batch)
    return n / (time.perf_counter() - t0)


def time_model(images: np.ndarray, steps: int = 300) -> float:
    """The tutorial's model, trained as distgan trains it, with data already in memory."""
    cfg = ModelConfig()
    G, D = build_generator(cfg), build_discriminator(cfg)
    og, od = torch.optim.Adam(G.parameters(), 2e-4), torch.optim.Adam(D.parameters(), 2e-4)
    x = torch.from_numpy(images[: steps * BATCH]).float().div(255).view(-1, 1, 28, 28)
    t0 = time.perf_counter()
    for i in range(steps):
        real, z = x[i * BATCH : (i + 1) * BATCH], torch.randn(BATCH, 128)
        fake = G(z)
        r, f = D(torch.cat([real, fake.detach()])).split(BATCH)
        od.zero_grad()
        losses.d_ns(r, f).backward()
        od.step()
        D.requires_grad_(False)
        og.zero_grad()
        losses.g_ns(None, D(fake)).backward()
        og.step()
        D.requires_grad_(True)
    return steps * BATCH / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default="data/mnist")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    shards = ensure_shards(Path(args.shards))
    images, labels = load_train(shards)
    tmp = Path(tempfile.mkdtemp(prefix="distgan-bench-"))
    png = write_png_shards(images, labels, tmp / "png")
    print(f"MNIST train: {resolve(str(shards)).samples} images; torch threads {torch.get_num_threads()}")
    cases = {
        "in-memory uint8 array": lambda: time_memory(images),
        "tutorial model training": lambda: time_model(images),
    }
    for w in (0, 1, 2):
        cases[f"distgan blocks, {w} workers"] = lambda w=w: time_loader(shards, w)
    for w in (0, 1, 2):
        cases[f"per-sample PNG, {w} workers"] = lambda w=w: time_loader(png, w, limit=30000)
    results = {}
    for name, fn in cases.items():
        rates = [fn() for _ in range(args.repeats)]
        results[name] = {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}
    train_rate = results["tutorial model training"]["median"]
    mem = results["in-memory uint8 array"]["median"]
    print(f"\n{'case':32s} {'img/s (median)':>15s} {'spread':>21s} {'x training':>11s} {'/ in-memory':>12s}")
    for name, r in results.items():
        spread = f"{r['min']:,.0f}-{r['max']:,.0f}"
        print(
            f"{name:32s} {r['median']:15,.0f} {spread:>21s} {r['median'] / train_rate:11.1f} {r['median'] / mem:12.3f}"
        )
    best = max(v["median"] for k, v in results.items() if k.startswith("distgan"))
    verdict = "meets" if best >= 10 * train_rate else "MISSES"
    print(f"\nbest distgan loader rate = {best / train_rate:.1f}x the training rate ({verdict} the 10x target)")
    if args.json:
        Path(args.json).write_text(json.dumps({"batch": BATCH, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
