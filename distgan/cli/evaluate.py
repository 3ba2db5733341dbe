"""`distgan eval`: sample quality of a checkpoint, the real-data anchor, the classifier."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from distgan.cli.common import console, error


def cmd_eval(args: argparse.Namespace) -> int:
    from distgan.configure import load_config
    from distgan.dist import set_threads
    from distgan.eval import report

    set_threads()
    if args.what == "weights":
        return weights(args)
    out = Console()  # the report goes to stdout, progress and notes to stderr
    overrides = [*([f"eval.n_samples={args.n}"] if args.n else []), f"eval.seed={args.seed}", *args.overrides]
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
    if args.metrics:
        overrides.insert(0, f"eval.metrics=[{args.metrics}]")
    if args.weights:
        overrides.insert(0, f"eval.inception_weights={args.weights}")
    if args.fake:
        if not args.real:
            error("--fake needs --real SHARDS_OR_FOLDER_OR_NPZ to compare with")
            return 2
        overrides = [o for o in overrides if not o.startswith("eval.n_samples=")]
        result = report.evaluate_sets(args.real, args.fake, args.split, overrides, console.print)
    elif args.real:
        result = report.evaluate_real(load_config(None, overrides), args.real, console.print)
    elif args.ckpt:
        result = report.evaluate_checkpoint(Path(args.ckpt), overrides, args.ema, console.print)
    else:
        error("give --ckpt PATH, --real SPLIT (the real-data anchor) or --real X --fake Y")
        return 2
    report.print_report(result, out)
    if args.json:
        report.write_json(result, Path(args.json))
        console.print(f"wrote {args.json}")
    return 0


def weights(args: argparse.Namespace) -> int:
    """Where the Inception weights are, and whether they are the standard file; --fetch downloads them."""
    from distgan.eval import inception
    from distgan.utils.files import sha256_file

    path = Path(args.path) if args.path else inception.hub_path()
    if args.fetch and not path.is_file():
        try:
            inception.fetch_weights(path, console.print)
        except OSError as exc:
            error(f"{inception.missing_message(f'and the download failed ({exc})')}")
            return 1
    if not path.is_file():
        error(f"{inception.missing_message(f'at {path}')}")
        return 1
    sha = sha256_file(path)
    ok = sha == inception.WEIGHTS_SHA256
    print(f"{path}: sha256 {sha} " + ("(the standard weights)" if ok else f"(NOT {inception.WEIGHTS_SHA256})"))
    return 0 if ok else 1


def add_commands(sub: Any) -> None:
    ev = sub.add_parser(
        "eval",
        help="sample quality: Inception FID/KID/PR/IS or the MNIST-classifier metrics, of a checkpoint or images",
        description="distgan eval --ckpt PATH | distgan eval --real X --fake Y | distgan eval --real test --data "
        "DIR | distgan eval classifier | distgan eval weights [--fetch]",
    )
    _eval_options(ev)
    ev.set_defaults(fn=cmd_eval, what=None)
    ev_sub = ev.add_subparsers(dest="what")
    ec = ev_sub.add_parser("classifier", help="train (or load from cache) the MNIST CNN and report its accuracy")
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
        fake=None,
        metrics=None,
        weights=None,
    )
    ew = ev_sub.add_parser("weights", help="where the Inception weights are; --fetch downloads them")
    ew.add_argument("--fetch", action="store_true", help="download them (from torch-fidelity's release)")
    ew.add_argument("--path", help="a weights file to check or to download to (default: torch-fidelity's cache)")
    ew.set_defaults(fn=cmd_eval, what="weights")


def _eval_options(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--ckpt", help="checkpoint folder (e.g. runs/NAME/checkpoints/best)")
    ev.add_argument(
        "--real",
        metavar="SPLIT|PATH",
        help="alone: score real images of this split of --data (a sanity anchor); with --fake: the reference "
        "images (shards, an image folder or an .npz)",
    )
    ev.add_argument("--fake", metavar="PATH", help="images to score: an image folder, an .npz or shards")
    ev.add_argument("--split", default="train", help="split of shards given to --real/--fake (default train)")
    ev.add_argument(
        "--metrics",
        help="comma list: inception, fid_inception, kid_inception, pr_inception, is_inception, mnistcnn, stackedmnist",
    )
    ev.add_argument("--weights", help="Inception weights file (default: torch-fidelity's cache)")
    ev.add_argument("--data", help="shards (default: the checkpoint's data.path)")
    ev.add_argument(
        "--n",
        type=int,
        default=0,
        help="generated samples (default: the checkpoint's eval.n_samples, "
        "else 10000; StackedMNIST's protocol is 26000)",
    )
    ev.add_argument("--seed", type=int, default=12345, help="noise seed of the samples")
    ev.add_argument("--classifier", help="classifier .safetensors (default: cached one for the data)")
    ev.add_argument("--cache-dir", help="classifier/statistics cache (default $DISTGAN_CACHE or ~/.cache/distgan)")
    ev.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None, help="EMA G (default: if saved)")
    ev.add_argument("--json", help="also write the report here")
    ev.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="other config settings, e.g. --set eval.k=5 (repeatable)",
    )
