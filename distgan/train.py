"""Train a GAN: `python distgan/train.py CONFIG [key=value ...]`, `accelerate launch distgan/train.py ...`, torchrun.

The same script at every scale; only the launcher (see launch/) changes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch.distributed.elastic.multiprocessing.errors import record

from distgan.config import ConfigError, load_config, save_config

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; run again (requeue) to continue


@record  # torchrun / accelerate launch print the failing rank and its traceback, then stop the others
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="YAML preset, e.g. configs/mnist_mlp.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.batch_size=256")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        return 0

    import logging

    from accelerate.utils import broadcast_object_list

    from distgan.checkpoint import Checkpointer
    from distgan.data.loader import Loader
    from distgan.data.shards import DataSpecError
    from distgan.dist import StopFlag, build_accelerator, seed_all, set_threads
    from distgan.eval.evaluate import Evaluator
    from distgan.tracking import NullTracker, RunTracker, setup_logging
    from distgan.trainer import Preempted, Trainer, build_networks

    stop = StopFlag().install()  # from here on SIGUSR1/SIGTERM mean "checkpoint and stop", never a bare kill
    threads = set_threads()
    try:
        acc = build_accelerator(cfg)
        setup_logging(acc.process_index, sys.stdout.isatty())
        loader = Loader(
            cfg.data,
            cfg.train.batch_size,
            acc.process_index,
            acc.num_processes,
            cfg.train.seed,
            cfg.model.image_shape,
            pin_memory=acc.device.type == "cuda",
        )
    except (ConfigError, DataSpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log = logging.getLogger("distgan")
    name = [cfg.train.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"]
    broadcast_object_list(name)  # one run directory, named by rank 0
    run_dir = Path(cfg.train.out_dir) / name[0]
    ckpt = Checkpointer(cfg, run_dir, acc)
    try:
        resume = ckpt.find_resume()
        saved = ckpt.read(resume) if resume else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seed_all(cfg.train.seed, acc.process_index)
    G, D, opt_g, opt_d = build_networks(cfg)
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if saved and saved.get("wandb_id") and not (run_dir / "wandb_id").is_file():
            (run_dir / "wandb_id").write_text(saved["wandb_id"] + "\n")  # same wandb run as the checkpoint's
        tracker = RunTracker(cfg, run_dir)
    else:
        tracker = NullTracker()
    try:
        evaluator = Evaluator(cfg, acc, tracker.info) if cfg.eval.every else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    acc.wait_for_everyone()
    trainer = Trainer(cfg, acc, G, D, opt_g, opt_d, loader, tracker, ckpt, stop, evaluator)
    if resume:
        ckpt.load(trainer, resume, saved)
        if trainer.state.step >= trainer.total_steps():
            tracker.info(f"run already finished at step {trainer.state.step} ({resume}); nothing to do")
            tracker.close()
            return 0
    tracker.info(
        f"run directory {run_dir}; data {cfg.data.path} ({loader.dataset.samples} samples); {threads} threads/process"
    )
    t0, seen0 = time.perf_counter(), trainer.state.images_seen
    try:
        state = trainer.train()
        final_ckpt = ckpt.save(trainer)
        trainer.write_samples("final")
        trainer.save_final(run_dir)
        elapsed, seen = time.perf_counter() - t0, state.images_seen - seen0  # this segment, after a resume
        tracker.info(
            f"done: {state.step} steps, {state.images_seen:,} images ({seen:,} in this run, {elapsed:.1f}s, "
            f"{seen / elapsed:,.0f} img/s overall); outputs in {run_dir}"
        )
        tracker.summary(
            {
                "time": f"{elapsed:.1f} s",
                "steps": f"{state.step} ({state.epoch} epochs)",
                "images": f"{state.images_seen:,}",
                "throughput": f"{seen / elapsed:,.0f} img/s on {acc.num_processes} process(es)",
                "samples": str(run_dir / "samples"),
                "weights": str(run_dir / "final"),
                "checkpoint": str(final_ckpt),
                **(
                    {
                        "best": f"{cfg.eval.best_metric}={state.best:.4g} at step {state.best_step} ({ckpt.folder / 'best'})"
                    }
                    if state.best is not None
                    else {}
                ),
                "metrics": str(run_dir / "metrics.jsonl"),
            }
        )
    except Preempted as exc:
        tracker.info(f"{exc}; exiting with status {EXIT_PREEMPTED} so the job can be requeued")
        tracker.close()
        # leave together: a launcher that sees one rank exit first terminates the others, which would turn
        # rank 0's status into "killed" while it is still closing wandb
        acc.wait_for_everyone()
        acc.end_training()
        return EXIT_PREEMPTED
    except Exception as exc:
        log.error("rank %d stopping: %s: %s", acc.process_index, type(exc).__name__, exc)
        raise
    finally:
        tracker.close()
    acc.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
