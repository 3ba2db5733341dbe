"""Train a GAN: `python distgan/train.py CONFIG [key=value ...]`, `accelerate launch distgan/train.py ...`, torchrun.

The same script at every scale; only the launcher (see launch/) changes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch.distributed.elastic.multiprocessing.errors import record

from distgan.config import Config, UserError, to_yaml
from distgan.configure import load_config

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; run again (requeue) to continue
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it: stopped after a checkpoint; the same command resumes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """CONFIG, then options and section.key=value overrides in any order (as `distgan sweep` takes them):
    `CONFIG --resume RUN_DIR train.max_steps=20` and `CONFIG train.max_steps=20 --resume` both work."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__)
    parser.add_argument("config", help="YAML preset, e.g. configs/mnist_mlp.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default="",
        metavar="RUN_DIR",
        help="continue RUN_DIR from its newest checkpoint; alone: the newest unfinished run of this config under "
        "train.out_dir",
    )
    parser.epilog = "overrides: section.key=value, anywhere after CONFIG, e.g. train.batch_size=256"
    args, rest = parser.parse_known_args(argv)
    moved = ""
    if "=" in args.resume and not Path(args.resume).is_dir():  # `--resume key=value`: an override, not RUN_DIR
        moved, args.resume = args.resume, "latest"
    for a in rest:
        if a.startswith("-") or "=" not in a:
            parser.error(f"unrecognized argument {a!r}: the options are --dry-run and --resume, overrides key=value")
    args.overrides = [a for a in argv if a in rest or a == moved]  # in the order given: a later one wins
    return args


@record  # torchrun / accelerate launch print the failing rank and its traceback, then stop the others
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from distgan.data.records import DataError
    from distgan.data.shards import DataSpecError
    from distgan.utils.files import DiskFullError

    try:  # the one error boundary: what a user must fix is one line on stderr and exit status 2
        cfg = load_config(args.config, args.overrides)
        if args.resume:  # the run directory to continue, as the overrides that name it
            from distgan.run.rundir import resume_target

            run_dir = resume_target(Path(cfg.train.out_dir), cfg.name, args.resume, cfg.ckpt.dir)
            cfg = load_config(
                args.config,
                [
                    *args.overrides,
                    f"train.out_dir={run_dir.parent}",
                    f"train.run_name={run_dir.name}",
                    "ckpt.resume=auto",
                ],
            )
        if args.dry_run:
            print(to_yaml(cfg))
            return 0
        cfg.track.require_packages()
        return train(cfg)
    except (UserError, DataSpecError, DataError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, no checkpoint written for this stop
        print("interrupted (second Ctrl-C): stopped without a checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED


@dataclass
class Run:
    """What the recipe has opened before the networks exist: topology, data, run directory, resume point."""

    cfg: Config
    acc: Any
    loader: Any
    run_dir: Path
    ckpt: Any
    resume: Path | None
    saved: dict | None
    threads: str
    locks: list = field(default_factory=list)  # rank 0's run-directory locks, held until the process ends


def train(cfg: Config) -> int:
    """The recipe: topology, data, run directory, resume point, networks, collaborators, loop, final outputs."""
    from distgan.dist import StopFlag

    stop = StopFlag().install()  # from here on USR1/TERM/Ctrl-C mean "checkpoint and stop", never a bare kill
    run = open_run(cfg)
    trainer = assemble(run, stop)
    if trainer.state.step >= trainer.total_steps():
        trainer.tracker.info(f"run already finished at step {trainer.state.step} ({run.resume}); nothing to do")
        trainer.tracker.status("finished", step=trainer.state.step)
        trainer.tracker.close()
        return 0
    return loop(run, trainer, stop)


def open_run(cfg: Config) -> Run:
    """Call on all ranks: the accelerator, the data, the run directory (locked by rank 0), the resume point; a
    fresh start sets a run already in the directory aside."""
    from distgan.config import resolve_num_classes
    from distgan.configure import check_run
    from distgan.data.loader import Loader
    from distgan.dist import build_accelerator, memory_bytes, on_main_then_all, set_threads
    from distgan.run.checkpoint import Checkpointer, check_resumable
    from distgan.run.checkpoint_read import read_checkpoint
    from distgan.run.rundir import RunLock, set_aside
    from distgan.run.tracking import setup_logging

    threads = set_threads()
    acc = build_accelerator(cfg)
    setup_logging(acc.process_index, sys.stdout.isatty())
    check_run(cfg, acc.num_processes, memory_bytes(acc.device))  # before the data is opened or a directory made
    loader = Loader(
        cfg.data,
        cfg.train.batch_size,
        acc.process_index,
        acc.num_processes,
        cfg.train.seed,
        cfg.model.image_shape,
        pin_memory=acc.device.type == "cuda",
    )
    cfg = resolve_num_classes(cfg, loader.dataset.classes)
    loader.num_classes = cfg.model.num_classes  # labels are checked against it as they are read
    run_dir = run_directory(cfg)
    ckpt_dir = Path(cfg.ckpt.dir or run_dir / "checkpoints")
    locks: list[RunLock] = []
    folders = [run_dir, *([ckpt_dir] if cfg.ckpt.dir else [])]
    on_main_then_all(acc, lambda: locks.extend(RunLock(f).acquire() for f in folders))
    ckpt = Checkpointer(cfg.ckpt, ckpt_dir, acc, cfg.to_dict(), classes=list(loader.dataset.classes))
    resume = ckpt.find_resume()
    saved = read_checkpoint(resume, verified=True) if resume else None
    if saved is not None:
        check_resumable(saved["config"], cfg)
    else:  # a fresh start: a run that was here before moves aside, so nothing of it mixes with this one
        aside = on_main_then_all(acc, lambda: set_aside(run_dir, ckpt_dir))
        if aside is not None and acc.is_main_process:
            print(f"fresh start in {run_dir}: the run that was there is kept in {aside}", flush=True)
    return Run(cfg, acc, loader, run_dir, ckpt, resume, saved, threads, locks)


def assemble(run: Run, stop: Any) -> Any:
    """Call on all ranks: the tracker, the evaluator and the trainer (training/build.py, which registers every
    stateful part), restored from the resume point; then (rank 0) the run's config.yaml."""
    from distgan.config import save_config
    from distgan.dist import StopAgreement, cpu_group
    from distgan.eval.evaluate import Evaluator
    from distgan.run.tracking import make_tracker
    from distgan.training.build import build_trainer

    cfg, acc, ckpt = run.cfg, run.acc, run.ckpt
    tracker = make_tracker(cfg, run.run_dir, acc.is_main_process)
    evaluator = Evaluator(cfg, acc, tracker.info) if cfg.eval.every else None
    agreement = StopAgreement(stop, cfg.ckpt.stop_check_every, cpu_group(acc), acc.num_processes)
    trainer = build_trainer(cfg, acc, run.loader, tracker, ckpt, agreement, evaluator, warm_start=run.resume is None)
    if run.resume is not None:
        ckpt.load(run.resume, run.saved)
    if acc.is_main_process:  # only now: a refused resume leaves the run's config.yaml as it was
        save_config(cfg, run.run_dir / "config.yaml")
    return trainer


def loop(run: Run, trainer: Any, stop: Any) -> int:
    """Call on all ranks: the training loop and the final outputs, or a checkpoint and exit on a stop signal."""
    from distgan.dist import end
    from distgan.training.finish import report_done, save_final
    from distgan.training.trainer import Preempted

    tracker, acc = trainer.tracker, run.acc
    try:
        tracker.info(
            f"run directory {run.run_dir}; data {run.cfg.data.path} ({run.loader.dataset.samples} "
            f"samples); {run.threads}"
        )
        t0, seen0 = time.perf_counter(), trainer.state.images_seen
        tracker.status("running", step=trainer.state.step)
        state = trainer.train()
        final_ckpt = run.ckpt.save(state.step)
        trainer.write_samples("final")
        save_final(trainer, run.run_dir)
        report_done(trainer, time.perf_counter() - t0, state.images_seen - seen0, final_ckpt, run.run_dir)
        tracker.status("finished", step=state.step, seconds=time.perf_counter() - t0)
    except Preempted as exc:
        code = EXIT_INTERRUPTED if stop.interrupted else EXIT_PREEMPTED
        tracker.status("interrupted" if stop.interrupted else "preempted", step=exc.step)
        why = f"; resume with: {resume_command(run.run_dir)}" if stop.interrupted else " so the job can be requeued"
        tracker.info(f"{exc}; exiting with status {code}{why}")
        tracker.close()
        # leave together: a launcher that sees one rank exit first terminates the others, which would turn
        # rank 0's status into "killed" while it is still closing wandb
        acc.wait_for_everyone()
        end(acc, trainer)
        return code
    except Exception as exc:  # say which rank stopped and why, before @record prints the traceback
        logging.getLogger("distgan").error("rank %d stopping: %s: %s", acc.process_index, type(exc).__name__, exc)
        tracker.status("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        tracker.close()
    end(acc, trainer)
    return 0


def resume_command(run_dir: Path) -> str:
    """The exact line that continues this run: this process's command with `--resume RUN_DIR` in place of any
    run-naming arguments (the same command alone would start a new, timestamped run). Under a launcher
    (accelerate launch, torchrun, Slurm) only the script's part is known: the launcher's goes before it."""
    import shlex

    argv, args = sys.argv[1:], []
    for i, a in enumerate(argv):
        if a == "--resume" or a.startswith(("--resume=", "train.run_name=", "train.out_dir=", "ckpt.resume=")):
            continue
        if i and argv[i - 1] == "--resume" and Path(a).is_dir():
            continue  # the RUN_DIR of an earlier --resume
        args.append(a)
    # `python -m distgan.cli train ...` runs cli/__main__.py, which as a file would not find its package
    program = ["-m", "distgan.cli"] if Path(sys.argv[0]).name == "__main__.py" else [sys.argv[0]]
    script = [*program, *args, "--resume", str(run_dir)]
    if "LOCAL_RANK" in os.environ:
        return f"the same launcher, running {shlex.join(script)}"
    python = os.path.relpath(sys.executable)  # the interpreter that ran this (e.g. .venv/bin/python)
    return shlex.join([python if not python.startswith("../") else sys.executable, *script])


def run_directory(cfg: Config) -> Path:
    """Call on all ranks: one run directory, named by rank 0 (a timestamp differs between ranks)."""
    from accelerate.utils import broadcast_object_list

    name = [cfg.train.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"]
    broadcast_object_list(name)
    return Path(cfg.train.out_dir) / name[0]


if __name__ == "__main__":
    sys.exit(main())
