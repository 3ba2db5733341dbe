"""Where grey backgrounds come from: each run's generator output range and D's margin over training.

usage: python benchmarks/output_range.py RUN_DIR [RUN_DIR ...] [--n 2000] [--data data/stackedmnist]

For the newest checkpoint's EMA generator: the background level (each image channel's median pixel, averaged:
MNIST's is 0, so a grey background shows as a median well above 0), the share of pixels G puts outside [0, 1]
(what a linear output layer can do and a clamp then hides), and the share of nearly-black pixels against the
real images'. From metrics.jsonl: D's margin (mean sigmoid(D(real)) - mean sigmoid(D(fake)), as logged) and its
loss at every logged step, which say how soon and how far D tells G's images apart. Prints figures
(docs/evaluation.md, issue 44 item 3); it is not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from distgan.data.records import read_split  # noqa: E402
from distgan.run.checkpoint_read import complete_checkpoints  # noqa: E402
from distgan.run.plots import read_metrics  # noqa: E402
from distgan.run.sample import generate, latents, load_generator  # noqa: E402


def image_stats(x: torch.Tensor) -> dict[str, float]:
    """x: (N, C, H, W) in G's [0, 1] output space, unclamped."""
    flat = x.flatten(2)
    return {
        "background": float(flat.median(dim=2).values.mean()),
        "below_0": float((x < 0).float().mean()),
        "above_1": float((x > 1).float().mean()),
        "black": float((x < 0.05).float().mean()),
    }


def margins(run: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["d_real"] - r["d_fake"], r["loss_d"]) for r in read_metrics(run) if "d_real" in r]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=2000, help="samples per run")
    ap.add_argument("--data", default="data/stackedmnist", help="the real images' shards, for their figures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    real, _ = read_split(args.data, "train")
    real_t = torch.from_numpy(real[: args.n]).float().div(255)
    real_t = real_t.permute(0, 3, 1, 2) if real_t.ndim == 4 else real_t[:, None]
    s = image_stats(real_t)
    print(f"real ({args.data}): background {s['background']:.3f}, black {100 * s['black']:.1f}%")
    for run in args.runs:
        ckpt = complete_checkpoints(run / "checkpoints")[-1]
        G, _ = load_generator(ckpt, ema=True)
        with torch.no_grad():
            x = generate(G.eval(), latents(G, args.n, 123), None)
        s = image_stats(x)
        m = margins(run)
        curve = ", ".join(f"{step}: {mg:.2f} / {loss:.3f}" for step, mg, loss in m[:: max(1, len(m) // 6)])
        print(
            f"{run.name} ({ckpt.name}): background {s['background']:.3f}, black {100 * s['black']:.1f}%, "
            f"outside [0, 1] {100 * s['below_0']:.1f}% below, {100 * s['above_1']:.1f}% above; "
            f"D margin / loss_d by step: {curve}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
