"""`distgan eval`: sample quality of a checkpoint, the real-data anchor, the classifier."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from distgan.cli.common import console


def cmd_eval(args: argparse.Namespace) -> int:
    from distgan.config import load_config
    from distgan.dist import set_threads
    from distgan.eval import report

    set_threads()
    out = Console()  # the report goes to stdout, progress and notes to stderr
    overrides = [f"eval.n_samples={args.n}", f"eval.seed={args.seed}", *args.overrides]
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.classifier:
        overrides.append(f"eval.classifier={args.classifier}")
    if args.cache_dir:
        overrides.append(f"eval.cache_dir={args.cache_dir}")
    if args.what == "classifier":
        meta = report.train_only(
            load_config(None, [*overrides, f"eval.classifier_epochs={args.epochs}"]), console.print
        )
        out.print(f"classifier test accuracy {meta['test_accuracy']:.2%} on {meta['test_samples']:,} images")
        return 0
    if args.real:
        result = report.evaluate_real(load_config(None, overrides), args.real, console.print)
    elif args.ckpt:
        result = report.evaluate_checkpoint(Path(args.ckpt), overrides, args.ema, console.print)
    else:
        console.print("[red]error:[/] give --ckpt PATH (or --real SPLIT for the real-data anchor)")
        return 2
    report.print_report(result, out)
    if args.json:
        report.write_json(result, Path(args.json))
        console.print(f"wrote {args.json}")
    return 0


def add_commands(sub: Any) -> None:
    ev = sub.add_parser(
        "eval",
        help="sample quality of a checkpoint: fid_mnistcnn, classifier IS, class coverage, precision/recall",
        description="distgan eval --ckpt PATH | distgan eval --real test --data DIR | distgan eval classifier",
    )
    ev.add_argument("--ckpt", help="checkpoint folder (e.g. runs/NAME/checkpoints/best)")
    ev.add_argument(
        "--real", metavar="SPLIT", help="score real images of this split instead (a sanity anchor)"
    )
    ev.add_argument("--data", help="shards (default: the checkpoint's data.path)")
    ev.add_argument("--n", type=int, default=10000, help="generated samples (default 10000)")
    ev.add_argument("--seed", type=int, default=12345, help="noise seed of the samples")
    ev.add_argument("--classifier", help="classifier .safetensors (default: cached one for the data)")
    ev.add_argument(
        "--cache-dir", help="classifier/statistics cache (default $DISTGAN_CACHE or ~/.cache/distgan)"
    )
    ev.add_argument(
        "--ema", action=argparse.BooleanOptionalAction, default=None, help="EMA G (default: if saved)"
    )
    ev.add_argument("--json", help="also write the report here")
    ev.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="other config settings, e.g. --set eval.k=5 (repeatable)",
    )
    ev.set_defaults(fn=cmd_eval, what=None)
    ev_sub = ev.add_subparsers(dest="what")
    ec = ev_sub.add_parser(
        "classifier", help="train (or load from cache) the MNIST CNN and report its accuracy"
    )
    ec.add_argument("--data", default="data/mnist", help="shards with train and test splits")
    ec.add_argument("--epochs", type=int, default=3)
    ec.add_argument("--cache-dir")
    ec.set_defaults(
        fn=cmd_eval,
        what="classifier",
        ckpt=None,
        real=None,
        n=10000,
        seed=12345,
        classifier=None,
        overrides=[],
        json=None,
    )
