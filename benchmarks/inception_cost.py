"""What an Inception evaluation costs on this machine: featurisation rate (img/s) and the statistics' time.

The network is the standard architecture with random weights (same FLOPs as the real weights; no download), the
statistics are torch-fidelity's own functions on feature arrays of the real shapes. Prints a table; the wall time
of an N-sample evaluation is N / rate plus the statistics' time at that N.
    python benchmarks/inception_cost.py [--images 500] [--samples 10000] [--real 10000 50000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from distgan.config import EvalConfig  # noqa: E402
from distgan.eval import inception  # noqa: E402
from distgan.utils.files import sha256_file  # noqa: E402
from tests.helpers.inception import random_inception_weights  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500, help="images featurised to measure the rate")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--samples", type=int, nargs="+", default=[10000])
    ap.add_argument("--real", type=int, nargs="+", default=[10000, 50000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = random_inception_weights(Path(tmp) / "w.pth")
        state, _ = inception.read_weights(path, sha256_file(path))
    net = inception.build_network(state)
    x = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    inception.featurize(net, x[: inception.BATCH], inception.BATCH, torch.device("cpu"))  # warm-up
    t0 = time.perf_counter()
    for i in range(0, args.images, inception.BATCH):
        inception.featurize(net, x[i : i + inception.BATCH], inception.BATCH, torch.device("cpu"))
        print(f"  featurised {min(i + inception.BATCH, args.images)}/{args.images}", file=sys.stderr)
    rate = args.images / (time.perf_counter() - t0)
    print(
        f"features: {rate:.1f} img/s ({args.size}x{args.size} RGB, batch {inception.BATCH}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
    rng = np.random.default_rng(0)
    ev = EvalConfig()
    groups = ("fid_inception", "kid_inception", "pr_inception", "is_inception")
    for n in args.samples:
        fake = rng.standard_normal((n, inception.FEATURE_DIM + inception.LOGIT_DIM), dtype=np.float32)
        for m in args.real:
            real = np.abs(rng.standard_normal((m, inception.FEATURE_DIM), dtype=np.float32))
            t0 = time.perf_counter()
            stats = inception.statistics(real)
            t_real = time.perf_counter() - t0
            times = {}
            for g in groups:
                t0 = time.perf_counter()
                inception.scores(fake, real, stats, (g,), ev)
                times[g] = time.perf_counter() - t0
            total = sum(times.values())
            print(
                f"statistics {n:,} samples vs {m:,} real: "
                + ", ".join(f"{g} {t:.1f} s" for g, t in times.items())
                + f" (total {total:.0f} s; real mean/cov once {t_real:.1f} s); "
                f"evaluation = {n / rate:.0f} s featurising + {total:.0f} s = {(n / rate + total) / 60:.1f} min"
            )


if __name__ == "__main__":
    main()
