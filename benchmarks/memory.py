"""Peak memory of each preset's training step at its batch, with and without train.batch_per_device.

usage: python benchmarks/memory.py [--presets mnist_dcgan ...] [--steps 6] [--json benchmarks/memory.json]
       python benchmarks/memory.py --find-max --presets rgb64_stylegan2   # on a GPU: the largest per-device batch

Each measurement is a fresh `distgan/train.py` process on generated shards of the preset's shape; the figure is
the `peak_mem_mb` it logs (peak RSS on a CPU, peak allocated memory on a GPU). Presets with batch norm in G
(dcgan, resnet families) refuse accumulation, so their accumulated rows run with model.g_norm=none (said in the
table). --find-max (GPU): doubles batch_size = batch_per_device from 8 until a step fails (out of memory) and
reports the last that ran. Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESETS = ["mnist_mlp", "mnist_dcgan", "mnist_stylegan2", "rgb64_dcgan", "rgb64_resnet", "rgb64_stylegan2"]


def shards(shape: list[int], folder: Path) -> Path:
    import numpy as np

    from distgan.data.shard_writer import Split, write_shards

    c, h, w = shape
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (512, h, w) if c == 1 else (512, h, w, c), dtype=np.uint8)
    write_shards(folder, {"train": Split(images, np.zeros(512, np.int64))}, [], "memory benchmark", 256, 128)
    return folder


def peak(preset: str, data: Path, out: Path, steps: int, extra: list[str]) -> float | None:
    name = f"{preset}-{time.time_ns()}"
    args = [
        str(ROOT / "configs" / f"{preset}.yaml"),
        f"data.path={data}",
        f"train.max_steps={steps}",
        f"train.log_every={steps}",
        "eval.every=0",
        f"train.out_dir={out}",
        f"train.run_name={name}",
        "track.plot=false",
        "track.wandb=disabled",
        "train.sample_every=100000",
        "data.workers=0",
        "model.num_classes=0",
        *extra,
    ]
    res = subprocess.run([sys.executable, str(ROOT / "distgan" / "train.py"), *args], capture_output=True, text=True)
    if res.returncode != 0:
        return None
    rows = [json.loads(r) for r in (out / name / "metrics.jsonl").read_text().splitlines()]
    return max(r.get("peak_mem_mb", 0.0) for r in rows)


def main() -> None:
    from distgan.configure import load_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=PRESETS)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--find-max", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            cfg = load_config(ROOT / "configs" / f"{preset}.yaml")
            data = shards(list(cfg.model.image_shape), Path(tmp) / preset)
            bn = cfg.model.arch in ("dcgan", "resnet") and cfg.model.g_norm == "batch"
            b = cfg.train.batch_size
            if args.find_max:
                best, m = 0, 8
                while m <= 4096 and peak(preset, data, Path(tmp), 2, [f"train.batch_size={m}"]) is not None:
                    best, m = m, m * 2
                rows.append({"preset": preset, "largest_batch_per_device": best})
                print(f"{preset}: largest per-device batch that ran: {best}", flush=True)
                continue
            for m in (0, b // 2, b // 4):
                extra = [f"train.batch_per_device={m}"] + (["model.g_norm=none"] if bn and m else [])
                mb = peak(preset, data, Path(tmp), args.steps, extra)
                rows.append(
                    {
                        "preset": preset,
                        "batch": b,
                        "batch_per_device": m or b,
                        "g_norm_none": bn and bool(m),
                        "peak_mem_mb": mb,
                    }
                )
                print(
                    f"{preset}: batch {b}, per device {m or b}{' (g_norm none)' if bn and m else ''}: "
                    f"peak {mb if mb is None else round(mb)} MB",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
