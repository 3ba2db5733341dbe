"""Each preset's training rate in distgan against a bare PyTorch loop of the same networks, side by side.

usage: python benchmarks/presets.py [--presets mnist_dcgan ...] [--repeats 3] [--seconds 20]
       [--data data/mnist] [--json benchmarks/presets.json]

The bare loop is what a user would write by hand for the same preset: the same G and D modules (built from
the preset's model config), the same loss, batch, Adam settings, lazy R1 schedule, DiffAugment policy, D steps
per G step and EMA update, over the uint8 images held in memory; no Accelerate, no loader, no statistics, no
logging, no checkpoints. distgan runs `distgan/train.py configs/PRESET.yaml` from shards on local disk with
the preset's own logging and sampling (evaluation off: it is measured separately in docs/evaluation.md).
MNIST presets read --data; the 64x64 RGB presets read generated RGB shards written to a temporary folder
(on a CPU they take 1-9 s a step at batch 64: at most 3 repeats of a 3x longer window, 2 warm-up steps).
Every measurement is a fresh process; bare and distgan alternate; figures are medians with their range.
--set applies config overrides to both loops (precision, channels_last, optim.fused, compile: see costs.py).
--variant NAME=KEY=VALUE[,KEY=VALUE] (repeatable) adds distgan runs with those overrides on top of --set, in
the same repeats as the default run, in an order that rotates each repeat: an interleaved A/B whose ratio to
the default run of the same repeat cancels the machine's drift between repeats (a 2-core VM's speed moves by
more than a channels_last or compile effect between sittings). Each variant is reported against the same
repeat's bare loop (without the variant's overrides: what it gains over the loop a user would write) and
against distgan's default run.
TFLOP/s is distgan's rate times the step's matmul/conv FLOPs per image (costs.py counts them); MFU divides it
by the GPU's dense bf16 peak.
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
from costs import bare_step, flops_per_image, preset_config  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
"""Dense bf16 tensor-core peaks (vendor data sheets, SXM parts): the denominator of MFU. CPUs: none."""
PRESETS = ["mnist_mlp", "mnist_dcgan", "mnist_dcgan_cond", "mnist_stylegan2", "rgb64_dcgan", "rgb64_resnet"]


def bare_loop(preset: str, data: str, seconds: float, warmup: int, overrides: list[str]) -> dict:
    import torch

    from distgan.data.records import read_split
    from distgan.dist import set_threads

    set_threads()
    cfg = preset_config(preset, data, overrides)
    images, labels = read_split(data, "train")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    step = bare_step(cfg, torch.from_numpy(images), torch.from_numpy(labels), dev)
    b = cfg.train.batch_size

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


def distgan_run(preset: str, data: str, steps: int, out: Path, overrides: list[str]) -> dict:
    """2 x steps steps, logged every `steps`: the rate is the second interval's (the first holds warm-up)."""
    run_name = f"{preset}-{time.time_ns()}"
    args = [
        str(ROOT / "configs" / f"{preset}.yaml"),
        f"data.path={data}",
        f"train.max_steps={2 * steps}",
        f"train.log_every={steps}",
        "eval.every=0",
        f"train.out_dir={out}",
        f"train.run_name={run_name}",
        "track.plot=false",
        "track.wandb=offline",
        *overrides,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(
        [sys.executable, str(ROOT / "distgan" / "train.py"), *args], capture_output=True, text=True, env=env
    )
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

    from distgan.data.shard_writer import Split, write_shards

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    images = np.empty((n, 64, 64, 3), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(16, 48, 2).tolist() + [rng.uniform(6, 20)]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        images[i] = (255 * blob * rng.uniform(0.3, 1.0, 3)).astype(np.uint8)
    write_shards(out, {"train": Split(images, np.zeros(n, np.int64))}, [], "generated", 512, 128)
    return str(out)


def summary_row(name: str, rates: list[float], bare: list[float], flops: float, peak: float | None) -> dict:
    """One table row: distgan's rates against the same repeats' bare loop, medians and ranges."""
    med = statistics.median
    ratios = [o / b for o, b in zip(rates, bare, strict=True)]
    return {
        "preset": name,
        "bare_img_per_s": med(bare),
        "distgan_img_per_s": med(rates),
        "ratio": med(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "flops_per_image": flops,
        "distgan_tflops": flops * med(rates) / 1e12,
        "mfu": flops * med(rates) / peak if peak else None,
    }


def parse_variants(specs: list[str], p: argparse.ArgumentParser) -> dict[str, list[str]]:
    variants: dict[str, list[str]] = {}
    for spec in specs:
        name, _, sets = spec.partition("=")
        if not name or "=" not in sets or name in variants:
            p.error(f"--variant {spec!r}: write NAME=KEY=VALUE[,KEY=VALUE], each NAME once")
        variants[name] = sets.split(",")
    return variants


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=PRESETS)
    p.add_argument("--data", default="data/mnist", help="MNIST shards for the mnist_* presets")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0, help="timed window of each measurement")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "presets.json"))
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for both loops, e.g. train.precision=bf16 train.channels_last=true",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE[,KEY=VALUE]",
        help="distgan with extra overrides, interleaved with the default run, e.g. cl=train.channels_last=true",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    variants = parse_variants(args.variant, p)
    if args.child:
        print(json.dumps(bare_loop(**json.loads(args.child))))
        return 0

    import torch
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    peak = next((v for k, v in PEAK_BF16.items() if k in device), None)
    results: dict = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "repeats": args.repeats,
        "date": time.strftime("%Y-%m-%d"),
        "overrides": args.set,
        "peak_bf16_flops": peak,
        "variants": variants,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        out, rgb = Path(tmp), ""
        for preset in args.presets:
            if preset.startswith("rgb64") and not rgb:
                rgb = rgb_data(out / "rgb64")
            data = rgb if preset.startswith("rgb64") else args.data
            bare, ours = [], []
            extra: dict[str, list[float]] = {name: [] for name in variants}
            slow = preset.startswith("rgb64") and not torch.cuda.is_available()  # ~10 s a step on 2 CPU cores
            repeats, seconds, warmup = (
                (min(3, args.repeats), 3 * args.seconds, 2) if slow else (args.repeats, args.seconds, 20)
            )
            for r in range(repeats):
                console.print(f"{preset}: repeat {r + 1}/{repeats}", style="dim")
                b = child(preset=preset, data=data, seconds=seconds, warmup=warmup, overrides=args.set)
                bare.append(b["img_per_s"])
                # as many timed steps as the bare loop's window, after a first interval of warm-up; the default
                # run and the variants in an order rotated by one each repeat
                runs = [("", [])] + list(variants.items())
                k = r % len(runs)
                for name, sets in runs[k:] + runs[:k]:
                    rate = distgan_run(preset, data, max(2, b["steps"]), out, args.set + sets)["img_per_s"]
                    (extra[name] if name else ours).append(rate)
            flops = flops_per_image(preset_config(preset, data, args.set))
            results["rows"].append(
                {
                    **summary_row(preset, ours, bare, flops, peak),
                    "repeats": repeats,
                    "seconds": seconds,
                    "raw": {"bare": bare, "distgan": ours, **extra},
                }
            )
            for name, rates in extra.items():
                vs_ours = [v / o for v, o in zip(rates, ours, strict=True)]
                results["rows"].append(
                    {
                        **summary_row(f"{preset} + {name}", rates, bare, flops, peak),
                        "vs_default": statistics.median(vs_ours),
                        "vs_default_min": min(vs_ours),
                        "vs_default_max": max(vs_ours),
                        "repeats": repeats,
                        "seconds": seconds,
                    }
                )
    table = Table(title=f"presets: distgan / bare loop, {device}, median of the repeats")
    for col in (
        "preset",
        "repeats",
        "bare img/s",
        "distgan img/s",
        "distgan / bare (range)",
        "TFLOP/s",
        "MFU",
        "÷ default (range)",
    ):
        table.add_column(col, justify="right")
    for row in results["rows"]:
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "-"
        table.add_row(
            row["preset"],
            str(row["repeats"]),
            f"{row['bare_img_per_s']:,.0f}",
            f"{row['distgan_img_per_s']:,.0f}",
            f"{row['ratio']:.3f} ({row['ratio_min']:.3f}-{row['ratio_max']:.3f})",
            f"{row['distgan_tflops']:.3f}",
            mfu,
            f"{row['vs_default']:.3f} ({row['vs_default_min']:.3f}-{row['vs_default_max']:.3f})"
            if "vs_default" in row
            else "-",
        )
    console.print(table)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
