"""Scaling on paper: per preset, what one training step costs and what 8 and 64 GPUs would make of it.

usage: python benchmarks/scaling.py [--presets ...] [--json benchmarks/scaling.json] [--measured presets-gpu.json]

Counted here, on any machine (exact, from the real modules): parameters of G and D, the gradient bytes DDP
all-reduces per step (D's every step, G's every `train.d_steps`-th step, fp32 gradients), the all-reduce calls
(25 MB DDP buckets, plus two per synchronised batch-norm layer of G), FLOPs per image of a whole step (D and G
phases, forward and backward, lazy R1 and D steps amortised over their cycle; matmuls and convolutions, counted
by torch.utils.flop_counter on the preset's own step) and ops dispatched per step.

Projected (a model with stated inputs, not a measurement):
    t_step(b)  = max(ops x t_op, flops_per_image x b / (peak x mfu))   host-bound or compute-bound, per GPU
    t_comm(N)  = sum over calls of [alpha(N) + 2 (N-1)/N x bytes / B(N)]   ring all-reduce, no overlap assumed
    efficiency = t_step / (t_step + t_comm)                                 (weak scaling: batch b per GPU)
with B(N), alpha(N) the NVLink figures inside one node (N <= 8) and the inter-node figures beyond. t_op (host
time per eager op) and mfu are assumptions (--t-op-us, --mfu); "graphed" is the same with t_op = the GPU's own
time per small kernel (--t-kernel-us), what CUDA graphs aim at: the host drops out, the step gets shorter, so
communication weighs more. With --measured (presets.py's
JSON from one GPU) t_step at the preset's batch is that measurement instead. The loader check compares the
img/s one node must read (8 GPUs at t_step) with the loader's measured img/s per core (benchmarks/loader.json,
images.json: one worker process is one core).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from costs import ROOT, count, preset_config  # noqa: E402
from presets import PRESETS  # noqa: E402


def allreduce_s(n: int, calls: float, nbytes: float, a: argparse.Namespace) -> float:
    """Ring all-reduce over n GPUs, no overlap with compute: latency per call plus bytes over the bus."""
    if n <= 1:
        return 0.0
    inside = n <= 8
    alpha = (a.alpha_intra_us if inside else a.alpha_inter_us) * 1e-6
    bw = (a.nvlink_gbs if inside else a.inter_gbs) * 1e9
    return calls * alpha + 2 * (n - 1) / n * nbytes / bw


def project(c: dict, a: argparse.Namespace, measured: dict[str, float]) -> dict:
    """Step and communication time, efficiency on 8 and 64 GPUs, and the smallest batch per GPU (a power of
    two) that keeps 90%; eager (host time per op) and graphed (none)."""
    out: dict[str, Any] = {}
    for mode, t_op in (("eager", a.t_op_us * 1e-6), ("graphed", a.t_kernel_us * 1e-6)):

        def t_step(b: int, t_op: float = t_op, mode: str = mode) -> float:
            if mode == "eager" and c["preset"] in measured and b == c["batch"]:
                return c["batch"] / measured[c["preset"]]
            return max(c["ops_per_step"] * t_op, c["flops_per_image"] * b / (a.peak_tflops * 1e12 * a.mfu))

        t = t_step(c["batch"])
        out[f"{mode}_t_step_ms"] = 1e3 * t
        out[f"{mode}_host_bound"] = c["ops_per_step"] * t_op * 1e3 >= out[f"{mode}_t_step_ms"]
        for n in (8, 64):
            comm = allreduce_s(n, c["allreduce_calls_per_step"], c["grad_bytes_per_step"] + c["bn_bytes_per_step"], a)
            out[f"{mode}_eff_{n}"] = t / (t + comm)
            b90 = next((b for b in (2**k for k in range(17)) if t_step(b) / (t_step(b) + comm) >= 0.9), None)
            out[f"{mode}_batch_90_{n}"] = b90  # per GPU; None: not below 65536
            out[f"{mode}_t_comm_ms_{n}"] = 1e3 * comm
        # what one node's loaders must deliver: at the preset's batch, and at the batch keeping 90% on 64 GPUs
        out[f"{mode}_node_img_per_s"] = 8 * c["batch"] / t
        b90 = out[f"{mode}_batch_90_64"]
        out[f"{mode}_node_img_per_s_90"] = 8 * b90 / t_step(b90) if b90 else None
    return out


def loader_rates() -> dict[str, float]:
    """Measured loader img/s of one worker process (one core): MNIST block shards and 64x64 RGB shards."""
    loader = json.loads((ROOT / "benchmarks" / "loader.json").read_text())
    images = json.loads((ROOT / "benchmarks" / "images.json").read_text())
    return {
        "mnist": loader["results"]["distgan blocks, 1 workers"]["median"],
        "rgb64": images["loader_img_per_s_1worker"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=[*PRESETS[:3], "mnist_dcgan_gpu", *PRESETS[3:]])
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "scaling.json"))
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    p.add_argument("--mfu", type=float, default=0.3, help="assumed share of the peak a conv step reaches")
    p.add_argument("--t-op-us", type=float, default=10.0, help="assumed host time per eager op, microseconds")
    p.add_argument("--t-kernel-us", type=float, default=2.0, help="assumed GPU time per kernel in a CUDA graph")
    p.add_argument("--nvlink-gbs", type=float, default=360.0, help="all-reduce bus bandwidth in one node, GB/s")
    p.add_argument("--inter-gbs", type=float, default=50.0, help="per GPU across nodes, GB/s (400 Gb/s NIC)")
    p.add_argument("--alpha-intra-us", type=float, default=10.0, help="latency of one all-reduce in a node")
    p.add_argument("--alpha-inter-us", type=float, default=30.0, help="latency of one all-reduce across nodes")
    p.add_argument("--cores-per-node", type=int, default=112)
    p.add_argument("--measured", help="presets.py JSON from one GPU: its img/s replace the modelled t_step")
    p.add_argument("--markdown", action="store_true", help="also print the table as markdown (for the docs)")
    a = p.parse_args()

    from rich.console import Console
    from rich.table import Table

    measured: dict[str, float] = {}
    if a.measured:
        measured = {r["preset"]: r["distgan_img_per_s"] for r in json.loads(Path(a.measured).read_text())["rows"]}
    rates = loader_rates()
    rows = []
    for preset in a.presets:
        row = {"preset": preset, **count(preset_config(preset, "unused"))}
        row.update(project(row, a, measured))
        per_core = rates["rgb64" if preset.startswith("rgb64") else "mnist"]
        for mode in ("eager", "graphed"):
            row[f"{mode}_loader_cores"] = row[f"{mode}_node_img_per_s"] / per_core
            at90 = row[f"{mode}_node_img_per_s_90"]
            row[f"{mode}_loader_cores_90"] = at90 / per_core if at90 else None
        rows.append(row)
    assumptions = {k: v for k, v in vars(a).items() if k not in ("presets", "json", "measured")}
    result = {
        "assumptions": assumptions,
        "loader_img_per_s_per_core": rates,
        "measured": measured,
        "rows": rows,
    }
    Path(a.json).write_text(json.dumps(result, indent=1) + "\n")

    console = Console(width=200)
    table = Table(title="per step, counted | projected (eager; graphed), batch per GPU = the preset's")
    for col in (
        "preset",
        "batch",
        "G / D params",
        "grad MB/step",
        "calls/step",
        "GFLOP/img",
        "ops/step",
        "t_step ms",
        "eff 8 GPUs",
        "eff 64 GPUs",
        "batch/GPU for 90% at 64",
        "loader cores/node",
        "at the 90% batch",
    ):
        table.add_column(col, justify="right")

    def pair(r: dict, key: str, fmt: str) -> str:
        if key.startswith("loader_cores"):  # can the node's CPU cores (less one per GPU process) feed it?
            room = a.cores_per_node - 8
            return "; ".join(
                "-"
                if r[f"{m}_{key}"] is None
                else f"{r[f'{m}_{key}']:{fmt}}" + ("" if r[f"{m}_{key}"] <= room else " (no)")
                for m in ("eager", "graphed")
            )
        v = [r[f"{m}_{key}"] for m in ("eager", "graphed")]
        return "; ".join("> 65536" if x is None else format(x, fmt) for x in v)

    for r in rows:
        table.add_row(
            r["preset"],
            str(r["batch"]),
            f"{r['params_g'] / 1e6:.2f}M / {r['params_d'] / 1e6:.2f}M",
            f"{r['grad_bytes_per_step'] / 2**20:.2f}",
            f"{r['allreduce_calls_per_step']:.1f}",
            f"{r['flops_per_image'] / 1e9:.3f}",
            f"{r['ops_per_step']:.0f}",
            pair(r, "t_step_ms", ".2f"),
            pair(r, "eff_8", ".2f"),
            pair(r, "eff_64", ".2f"),
            pair(r, "batch_90_64", "d"),
            pair(r, "loader_cores", ".1f"),
            pair(r, "loader_cores_90", ".1f"),
        )
    console.print(table)
    console.print(f"assumptions (not measurements): {assumptions}; JSON in {a.json}")
    if a.markdown:
        print(markdown(rows))
    return 0


def markdown(rows: list[dict]) -> str:
    """The docs' table: eager / graphed in each projected cell."""
    head = [
        "preset",
        "batch/GPU",
        "G / D params",
        "grad MB/step",
        "all-reduces/step",
        "GFLOP/img",
        "ops/step",
        "t_step ms",
        "eff. 8 GPUs",
        "eff. 64 GPUs",
        "batch/GPU for 90% on 64",
        "loader cores/node",
        "at the 90% batch",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def both(r: dict, key: str, fmt: str) -> str:
        v = [r[f"{m}_{key}"] for m in ("eager", "graphed")]
        none = "-" if key.startswith("loader") else "> 65536"
        return " / ".join(none if x is None else format(x, fmt) for x in v)

    for r in rows:
        cells = [
            f"`{r['preset']}`",
            str(r["batch"]),
            f"{r['params_g'] / 1e6:.2f}M / {r['params_d'] / 1e6:.2f}M",
            f"{r['grad_bytes_per_step'] / 2**20:.2f}",
            f"{r['allreduce_calls_per_step']:.1f}",
            f"{r['flops_per_image'] / 1e9:.3f}",
            f"{r['ops_per_step']:.0f}",
            both(r, "t_step_ms", ".2f"),
            both(r, "eff_8", ".2f"),
            both(r, "eff_64", ".2f"),
            both(r, "batch_90_64", "d"),
            both(r, "loader_cores", ".1f"),
            both(r, "loader_cores_90", ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
