"""`distgan` command line: one module per command group, each parser beside its commands."""

from __future__ import annotations

import argparse

from distgan.cli.common import error


def build_parser() -> argparse.ArgumentParser:
    from distgan.cli import data, evaluate, generators, runs

    p = argparse.ArgumentParser(
        prog="distgan",
        description="distgan: data preparation and checks, training, sampling, evaluation, sweeps",
    )
    sub = p.add_subparsers(dest="command", required=True)
    data.add_commands(sub)
    runs.add_commands(sub)
    generators.add_commands(sub)
    evaluate.add_commands(sub)
    runs.add_train(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from distgan.config import UserError
    from distgan.data.mnist import MnistError
    from distgan.data.records import DataError
    from distgan.data.shard_writer import ShardError
    from distgan.data.shards import DataSpecError
    from distgan.utils.files import DiskFullError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides may come after options, as train.py takes them: `sweep CFG --seeds 3 train.epochs=5`
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.fn(args)
    except (UserError, MnistError, ShardError, DataSpecError, DataError, DiskFullError) as exc:
        error(f"{exc}")
        return 2
