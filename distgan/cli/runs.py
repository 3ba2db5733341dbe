"""`distgan train`, `sweep`, `compare` and `plot`: runs, grids of runs, and what they wrote."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from distgan.cli.common import console, error, warn


def cmd_train(args: argparse.Namespace) -> int:
    from distgan.train import main as train_main

    return int(train_main(args.args) or 0)


def cmd_sweep(args: argparse.Namespace) -> int:
    from distgan.config import UserError
    from distgan.sweeps.sweep import Sweep, parse_grid, plan

    overrides = [o for o in args.overrides if not o.strip().startswith("train.out_dir=")]
    out_dirs = {o.partition("=")[2].strip() for o in args.overrides if o.strip().startswith("train.out_dir=")}
    if len(out_dirs) > 1 or (out_dirs and args.out and Path(args.out).resolve() != Path(*out_dirs).resolve()):
        error(
            f"train.out_dir={', '.join(sorted(out_dirs))} and --out {args.out} disagree; "
            "give one (nothing was run or submitted)"
        )
        return 2
    out = Path(args.out or (out_dirs.pop() if out_dirs else "runs")).resolve()
    try:
        points = plan(args.config, parse_grid(args.grid or []), args.seeds, overrides)
    except UserError as exc:
        error(f"{exc} (nothing was run or submitted)")
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
        except UserError as exc:
            error(f"{exc}")
            return 2
        console.print(f"when it is done: distgan compare {sweep.dir}")
        return 0
    failed = sweep.run_local(args.local, console.print)
    console.print(f"compare: distgan compare {sweep.dir}")
    return 1 if failed else 0


def cmd_sweep_task(args: argparse.Namespace) -> int:
    from distgan.sweeps.sweep import task_overrides

    config, name, overrides = task_overrides(Path(args.spec), args.index)
    print("\n".join([config, name, *overrides]))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from distgan.sweeps import compare

    runs = []
    for p in compare.find_runs([Path(p) for p in args.runs]):
        try:
            runs.append(compare.read_run(p))
        except compare.NotARun as exc:
            warn(exc)
    if not runs:
        error(f"no run directories (with config.yaml) in {' '.join(args.runs)}")
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


def cmd_plot(args: argparse.Namespace) -> int:
    from distgan.run.plots import plot_run

    try:
        out = plot_run(Path(args.run_dir), Path(args.out) if args.out else None)
    except (FileNotFoundError, ValueError) as exc:
        error(f"{exc}")
        return 2
    console.print(f"wrote {out}")
    return 0


def add_train(sub: Any) -> None:
    # everything after `train` is train.py's (CONFIG, --resume, --dry-run, overrides): one parser for both, so
    # the `--resume RUN_DIR` a stopped run prints works with either
    t = sub.add_parser("train", help="train (same as python distgan/train.py; -h there)", add_help=False)
    t.add_argument("args", nargs=argparse.REMAINDER, help="CONFIG [--resume [RUN_DIR]] [--dry-run] [key=value ...]")
    t.set_defaults(fn=cmd_train)


def add_commands(sub: Any) -> None:
    sw = sub.add_parser("sweep", help="a grid of settings times seeds, as a Slurm job array or J runs at a time")
    sw.add_argument("config")
    sw.add_argument("overrides", nargs="*", help="section.key=value for every point")
    sw.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="a swept key (repeatable)")
    sw.add_argument("--seeds", type=int, default=1, help="train.seed 0..K-1 for every grid point")
    sw.add_argument("--name", help="sweep name: runs go to OUT/NAME/<point> (default: the config's name)")
    sw.add_argument("--out", help="parent folder (default: train.out_dir if given, else runs)")
    sw.add_argument("--dry-run", action="store_true", help="list the points and exit")
    sw.add_argument("--local", type=int, default=1, metavar="J", help="run J points at a time here (default 1)")
    sw.add_argument("--slurm", action="store_true", help="submit one Slurm job array instead")
    sw.add_argument("--array-limit", type=int, default=0, metavar="M", help="at most M array tasks at once")
    sw.add_argument("--sbatch", nargs=argparse.REMAINDER, default=[], help="the rest: sbatch options per task")
    sw.set_defaults(fn=cmd_sweep)
    st = sub.add_parser("sweep-task", help=argparse.SUPPRESS)
    st.add_argument("spec")
    st.add_argument("index", type=int)
    st.set_defaults(fn=cmd_sweep_task)
    cp = sub.add_parser("compare", help="one table (and a plot) of runs or sweep points, mean ± std over seeds")
    cp.add_argument("runs", nargs="+", help="run directories, or folders of them (a sweep)")
    cp.add_argument("--metric", action="append", help="eval metrics to show (default: all logged)")
    cp.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    cp.add_argument("--plot", help="plot file (default RUNS/compare_METRIC.png)")
    cp.set_defaults(fn=cmd_compare)
    pl = sub.add_parser("plot", help="loss curves and D(x)/D(G(z)) of a run directory as a PNG")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="PNG path (default RUN_DIR/plots/losses.png)")
    pl.set_defaults(fn=cmd_plot)
