"""Per-channel digit marginals of StackedMNIST runs' EMA generators: does the mode KL come from missing
combinations, or from each channel drawing some digits too often?

usage: python benchmarks/stackedmnist_marginals.py RUN_DIR [RUN_DIR ...] [--n 26000]

KL(modes || uniform) = the three channels' KL(digits || uniform) + KL(joint || product of the marginals), exactly;
digits read by the run's own per-channel classifier (eval/modes.py), from the newest checkpoint's EMA generator.
Prints figures (docs/evaluation.md, issue 44); it is not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from distgan.configure import config_from_dict  # noqa: E402
from distgan.eval.modes import ModeYardstick, modes_of  # noqa: E402
from distgan.run.checkpoint_read import complete_checkpoints  # noqa: E402
from distgan.run.sample import generate, latents, load_generator, to_uint8  # noqa: E402
from distgan.run.weights import read_state  # noqa: E402


def kl_uniform(p: np.ndarray) -> float:
    q = p[p > 0]
    return float(np.sum(q * np.log(q * len(p))))


def split(run: Path, n: int) -> str:
    ckpt = complete_checkpoints(run / "checkpoints")[-1]
    cfg = config_from_dict(read_state(ckpt)["config"])
    yard = ModeYardstick(cfg, Accelerator(cpu=True), lambda s: None)
    G, _ = load_generator(ckpt, ema=True)
    images = torch.from_numpy(to_uint8(generate(G, latents(G, n, 123), None))).permute(0, 3, 1, 2).contiguous()
    modes = modes_of(yard.classifier, images, 1000, torch.device("cpu"))
    digits = np.stack([modes // 100, modes // 10 % 10, modes % 10], 1)
    joint = np.bincount(modes, minlength=1000) / n
    margs = [np.bincount(digits[:, c], minlength=10) / n for c in range(3)]
    product = np.einsum("i,j,k->ijk", *margs).ravel()
    seen = joint > 0
    dependence = float(np.sum(joint[seen] * np.log(joint[seen] / product[seen])))
    parts = [kl_uniform(m) for m in margs]
    return (
        f"{run.name} ({ckpt.name}): {int(seen.sum())} modes, KL {kl_uniform(joint):.3f} = marginals "
        f"{sum(parts):.3f} ({', '.join(f'{p:.3f}' for p in parts)}) + dependence {dependence:.3f}; "
        f"channel 0's digits 0-9 (%): {', '.join(f'{100 * p:.1f}' for p in margs[0])}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=26000, help="samples (PacGAN's protocol: 26,000)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        print(split(run, args.n), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
