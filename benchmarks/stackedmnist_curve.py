"""Modes covered and KL(modes || uniform) against images seen, for groups of StackedMNIST runs (mean ± std over
each group's seeds), as one PNG: how fast a recipe gets to every mode, which a final figure does not say.

usage: python benchmarks/stackedmnist_curve.py OUT.png --group "LABEL=RUN_DIR,RUN_DIR,..." [--group ...]

Reads each run's metrics.jsonl (the evaluations' eval/modes_covered and eval/mode_kl_uniform) and its saved
config (batch size, for images = step x batch); a group's curve stops at its shortest run. The dashed lines
are issue 44's targets (990 modes, KL 0.1). Draws figures (docs/evaluation.md); it is not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from distgan.run.plots import read_metrics  # noqa: E402


def curve(run: Path) -> list[tuple[float, float, float]]:
    batch = yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"]
    return [
        (r["step"] * batch / 1000, r["eval/modes_covered"], r["eval/mode_kl_uniform"])
        for r in read_metrics(run)
        if "eval/modes_covered" in r
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--group", action="append", required=True, metavar="LABEL=RUN,RUN,...")
    args = ap.parse_args()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for spec in args.group:
        label, _, runs = spec.rpartition("=")
        curves = [c for c in (curve(Path(r)) for r in runs.split(",")) if c]
        if not label or not curves:
            raise SystemExit(f"--group {spec!r}: write LABEL=RUN_DIR,... with evaluated StackedMNIST runs")
        n = min(len(c) for c in curves)
        a = np.array([c[:n] for c in curves])
        label = f"{label} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        for k, ax in ((1, axes[0]), (2, axes[1])):
            m, s = a[:, :, k].mean(0), a[:, :, k].std(0)
            (line,) = ax.plot(a[0, :, 0], m, marker="o", label=label)
            if len(curves) > 1:
                ax.fill_between(a[0, :, 0], m - s, m + s, alpha=0.2, color=line.get_color())
    for ax, title in ((axes[0], "modes covered (of 1,000)"), (axes[1], "KL(modes || uniform), log scale")):
        ax.set_xlabel("thousand images")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].axhline(990, color="k", ls="--", lw=0.8)
    axes[1].axhline(0.1, color="k", ls="--", lw=0.8)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
