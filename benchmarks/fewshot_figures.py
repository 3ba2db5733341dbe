"""Figures of the small-data comparison (docs/evaluation.md): ADA's p and r_t curves per subset and seed, and
the final sample grids side by side. Reads the runs benchmarks/fewshot.sh wrote.

usage: python benchmarks/fewshot_figures.py [--runs runs/fewshot] [--out docs/quality]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def curves(runs: Path, out: Path, sizes: list[int]) -> None:
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.2), squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=True):
        for seed_dir in sorted((runs / f"n{n}-ada").glob("seed=*")):
            rows = [json.loads(r) for r in (seed_dir / "metrics.jsonl").read_text().splitlines()]
            rows = [r for r in rows if "ada_p" in r]
            steps = [r["step"] for r in rows]
            line = ax.plot(steps, [r["ada_p"] for r in rows], label=f"p, {seed_dir.name}")[0]
            ax.plot(
                steps,
                [r["ada_rt"] for r in rows],
                "--",
                color=line.get_color(),
                alpha=0.6,
                label=f"r_t, {seed_dir.name}",
            )
        ax.axhline(0.6, color="grey", lw=0.8, ls=":")
        ax.set_title(f"ADA on {n:,} images: p (solid) and r_t (dashed), target 0.6")
        ax.set_xlabel("step (64 images)")
        ax.set_ylim(-0.02, 1.0)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "fewshot_p_curves.png", dpi=110)


def grids(runs: Path, out: Path, n: int) -> None:
    tiles = []
    for aug in ("none", "diffaugment", "ada"):
        img = np.asarray(Image.open(runs / f"n{n}-{aug}" / "seed=0" / "samples" / "grid_final.png").convert("L"))
        tiles += [img, np.full((img.shape[0], 12), 255, np.uint8)]
    Image.fromarray(np.concatenate(tiles[:-1], 1)).save(out / f"fewshot_grids_{n}.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/fewshot")
    ap.add_argument("--out", default="docs/quality")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    args = ap.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    curves(runs, out, args.sizes)
    for n in args.sizes:
        grids(runs, out, n)


if __name__ == "__main__":
    main()
