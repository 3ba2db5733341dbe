"""distgan end to end against a bare PyTorch loop of the same model, side by side in one run.

usage: python benchmarks/throughput.py [--data data/mnist] [--batches 100 1024] [--repeats 3]
       [--precision no|bf16|fp16] [--compile [--compile-mode reduce-overhead]] [--procs 1 2]
       [--json benchmarks/throughput.json]

The baseline is the ceiling a user could write by hand: the same G and D (plain nn.Sequential), same batch,
precision and update order, over the uint8 MNIST tensor held on the device; no Accelerate, no loader, no
logging. distgan runs `distgan/train.py configs/mnist_mlp.yaml` from shards on local disk with its default
logging (metrics every `train.log_every`=100 steps, wandb offline here, sample grids). Every measurement is a
fresh process, baseline and distgan alternate, and each figure is the median of the repeats with its range.
distgan's rate is its steady state (from the first to the last metrics row, so logging, sampling and data
waits inside that window count); the time split comes from a separate run with train.time_phases=true.
Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- the baseline, run in a child process -------------------------------------------------------------------
def bare_loop(
    data: str,
    batch: int,
    steps: int,
    warmup: int,
    precision: str,
    compile_: bool,
    compile_mode: str = "default",
) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from distgan.config import CUDAGRAPH_MODES
    from distgan.data.records import read_split
    from distgan.dist import set_threads

    set_threads()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = torch.from_numpy(read_split(data, "train")[0]).to(dev)  # uint8 (N, 1, 28, 28) on the device
    G = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid()).to(dev)
    D = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 1)).to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")

    def step(real: torch.Tensor) -> None:
        if compile_ and compile_mode in CUDAGRAPH_MODES:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            fake = G(torch.randn(len(real), 128, device=dev))
            logits = D(torch.cat([real.flatten(1), fake.detach()])).squeeze(1)
            loss_d = F.softplus(-logits[: len(real)]).mean() + F.softplus(logits[len(real) :]).mean()
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        scaler.step(opt_d)
        D.requires_grad_(False)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss_g = F.softplus(-D(fake).squeeze(1)).mean()
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
        scaler.step(opt_g)
        D.requires_grad_(True)
        scaler.update()

    if compile_:  # the modules, as distgan does: one compiled step would fuse G's forward into D's backward
        G, D = (
            torch.compile(G, mode=compile_mode),
            torch.compile(D, mode=compile_mode),
        )  # (freed for G's then)
    n = len(images)
    order = torch.randperm(n, device=dev)
    pos = 0

    def batch_at() -> torch.Tensor:
        nonlocal pos, order
        if pos + batch > n:
            order, pos = torch.randperm(n, device=dev), 0
        idx = order[pos : pos + batch]
        pos += batch
        return images[idx].float().div_(255)

    for _ in range(warmup):
        step(batch_at())
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(batch_at())
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {
        "img_per_s": steps * batch / elapsed,
        "step_ms": 1000 * elapsed / steps,
        "peak_mem_mb": peak_mem(),
    }


def peak_mem() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- distgan, run through its real entry point -------------------------------------------------------------
def distgan_run(
    data: str,
    batch: int,
    steps: int,
    precision: str,
    compile_: bool,
    procs: int,
    phases: bool,
    out: Path,
    compile_mode: str = "default",
) -> dict:
    run_name = f"b{batch}-p{procs}-{'phases' if phases else 'rate'}-{time.time_ns()}"
    args = [
        str(ROOT / "configs" / "mnist_mlp.yaml"),
        f"data.path={data}",
        f"train.batch_size={batch}",
        f"train.max_steps={steps}",
        "train.log_every=100",
        f"train.precision={precision}",
        f"train.compile={str(compile_).lower()}",
        f"train.compile_mode={compile_mode}",
        f"train.time_phases={str(phases).lower()}",
        f"train.out_dir={out}",
        f"train.run_name={run_name}",
        "track.plot=false",
    ]
    script = str(ROOT / "distgan" / "train.py")
    if procs == 1:
        cmd = [sys.executable, script, *args]
    else:
        cfg = ROOT / "launch" / "accelerate" / ("cpu_2proc.yaml" if not _cuda() else "gpu_8.yaml")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg)]
        cmd += ["--num_processes", str(procs), "--main_process_port", str(_free_port()), script, *args]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"distgan run failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
    rows = [json.loads(r) for r in (out / run_name / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_d" in r]
    first, last = rows[0], rows[-1]  # steady state: from the first log row (after warm-up) to the last
    result = {
        "img_per_s": (last["images_seen"] - first["images_seen"]) / (last["time"] - first["time"]),
        "peak_mem_mb": max(r.get("peak_mem_mb", 0) for r in rows),
    }
    if phases:
        later = rows[1:]
        for k in ("time_data_ms", "time_d_ms", "time_g_ms", "time_log_ms", "time_other_ms"):
            result[k] = statistics.fmean(r[k] for r in later)
        result["step_ms"] = statistics.fmean(r["step_time_ms"] for r in later)
    return result


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child(kind: str, **kw) -> dict:
    """A fresh interpreter per measurement: no warm caches or peak memory carried across."""
    cmd = [sys.executable, __file__, "--child", kind, "--child-args", json.dumps(kw)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/mnist")
    p.add_argument("--batches", type=int, nargs="+", default=[100, 1024])
    p.add_argument("--steps", type=int, default=0, help="timed steps (default: 300,000 images' worth, >= 300)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    p.add_argument("--compile", action="store_true", help="torch.compile in both loops")
    p.add_argument("--compile-mode", default="default", help="with --compile: torch.compile's mode in both loops")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="distgan process counts at batch 100")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "throughput.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-args", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kw = json.loads(args.child_args)
        print(json.dumps(bare_loop(**kw)))
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    results: dict = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "precision": args.precision,
        "compile": args.compile,
        "compile_mode": args.compile_mode,
        "repeats": args.repeats,
        "date": time.strftime("%Y-%m-%d"),
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plan = [(b, 1) for b in args.batches] + [(args.batches[0], n) for n in args.procs if n != 1]
        for batch, procs in plan:
            steps = args.steps or max(300, 300_000 // batch)  # ~20 s windows: this VM's speed drifts
            bare, ours = [], []

            def ours_run(phases: bool, batch: int = batch, procs: int = procs, steps: int = steps) -> dict:
                return distgan_run(
                    args.data,
                    batch,
                    steps + 100,
                    args.precision,
                    args.compile,
                    procs,
                    phases,
                    out,
                    args.compile_mode,
                )

            for r in range(args.repeats):
                console.print(f"batch {batch}, {procs} process(es): repeat {r + 1}/{args.repeats}", style="dim")
                if procs == 1:
                    bare.append(
                        child(
                            "bare",
                            data=args.data,
                            batch=batch,
                            steps=steps,
                            warmup=50,
                            precision=args.precision,
                            compile_=args.compile,
                            compile_mode=args.compile_mode,
                        )
                    )
                ours.append(ours_run(phases=False))
            split = ours_run(phases=True)
            row = {
                "batch": batch,
                "processes": procs,
                "steps": steps,
                "distgan_img_per_s": summarize([o["img_per_s"] for o in ours]),
                "distgan_peak_mem_mb": max(o["peak_mem_mb"] for o in ours),
                "split_ms_per_step": {k: v for k, v in split.items() if k.startswith(("time_", "step_ms"))},
            }
            if bare:
                row["bare_img_per_s"] = summarize([b["img_per_s"] for b in bare])
                row["bare_peak_mem_mb"] = max(b["peak_mem_mb"] for b in bare)
                ratios = [o["img_per_s"] / b["img_per_s"] for o, b in zip(ours, bare, strict=True)]
                row["ratio"] = summarize(ratios)
            results["rows"].append(row)
    one = {r["batch"]: r for r in results["rows"] if r["processes"] == 1}
    for r in results["rows"]:
        if r["processes"] > 1:
            r["vs_1_process"] = r["distgan_img_per_s"]["median"] / one[r["batch"]]["distgan_img_per_s"]["median"]

    table = Table(
        title=f"distgan vs bare loop on {device}, precision {args.precision}, compile {args.compile}"
        + (f" ({args.compile_mode})" if args.compile else "")
    )
    for col in (
        "batch",
        "procs",
        "bare img/s",
        "distgan img/s",
        "ratio (range)",
        "data/D/G/log/other ms",
        "peak MB bare/ours",
    ):
        table.add_column(col, justify="right")
    for r in results["rows"]:
        s = r["split_ms_per_step"]
        split = "/".join(
            f"{s[k]:.2f}" for k in ("time_data_ms", "time_d_ms", "time_g_ms", "time_log_ms", "time_other_ms")
        )
        ratio = (
            f"{r['ratio']['median']:.3f} ({r['ratio']['min']:.3f}-{r['ratio']['max']:.3f})"
            if "ratio" in r
            else f"x{r['vs_1_process']:.2f} vs 1 proc"
        )
        bare = f"{r['bare_img_per_s']['median']:,.0f}" if "bare_img_per_s" in r else "-"
        mem = f"{r['bare_peak_mem_mb']:,.0f}" if "bare_peak_mem_mb" in r else "-"
        mem += f"/{r['distgan_peak_mem_mb']:,.0f}"
        table.add_row(
            str(r["batch"]),
            str(r["processes"]),
            bare,
            f"{r['distgan_img_per_s']['median']:,.0f}",
            ratio,
            split,
            mem,
        )
    console.print(table)
    path = Path(args.json)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
