"""The one composition root of a training run: `build_trainer` builds the networks (seeded alike on every rank),
the warm start, the Trainer and its parts, and registers every stateful part with the checkpointer, once.
`train.py`, the test helpers and the benchmarks build trainers through it, so what a run holds and what a
checkpoint restores are decided in one place."""

from __future__ import annotations

from typing import Any

from accelerate import Accelerator

from distgan.config import Config
from distgan.data.loader import Loader
from distgan.dist import StopAgreement, seed_all
from distgan.eval.evaluate import Evaluator
from distgan.run.checkpoint import Checkpointer, RngState
from distgan.run.tracking import NullTracker, Tracker
from distgan.training.optim import build_networks
from distgan.training.trainer import Trainer
from distgan.training.warmstart import init_ema, init_from


def build_trainer(
    cfg: Config,
    acc: Accelerator,
    loader: Loader,
    tracker: Tracker | None = None,
    checkpointer: Checkpointer | None = None,
    stop: StopAgreement | None = None,
    evaluator: Evaluator | None = None,
    warm_start: bool = True,
    init_seed: int | None = None,
    wrap_d: Any = None,
) -> Trainer:
    """Call on all ranks. warm_start: apply train.init_from (a fresh run; a resume restores its own weights).
    init_seed: the seed of the networks' initial weights (default train.seed with this rank's offset, as a run
    seeds everything; tests that compare ranks seed every rank alike). wrap_d: a test's stand-in around D."""
    seed_all(cfg.train.seed if init_seed is None else init_seed, acc.process_index if init_seed is None else 0)
    G, D, opt_g, opt_d = build_networks(cfg)
    warm = init_from(cfg, G, D) if cfg.train.init_from and warm_start else None
    if wrap_d is not None:
        D = wrap_d(D)
    tracker = tracker if tracker is not None else NullTracker()
    trainer = Trainer(cfg, acc, G, D, opt_g, opt_d, loader, tracker, checkpointer, stop, evaluator)
    if warm is not None:
        if trainer.ema is not None:
            init_ema(cfg, trainer.ema.model, warm[1])
        tracker.info(warm[0])
    if checkpointer is not None:
        register(checkpointer, trainer, tracker)
    return trainer


def register(ckpt: Checkpointer, trainer: Trainer, tracker: Tracker) -> None:
    """Every stateful part of a run under its name in state.pt (per rank: the random streams). `legacy` derives a
    part's state from a checkpoint written before the part had its own (tests/fixtures/ckpt-851d0c4-*)."""
    ckpt.register("trainer", trainer)
    ckpt.register("augment", trainer.augment, legacy=lambda old: _augment_from(old.get("trainer", {})))
    if trainer.eval is not None:
        ckpt.register("eval", trainer.eval, legacy=lambda old: old.get("trainer"))  # the same keys, before
    if trainer.style is not None:
        ckpt.register("stylegan", trainer.style)
    ckpt.register("tracker", tracker, run_bound=True)  # a branched run logs to tracker runs of its own
    ckpt.register("rng", RngState(trainer.noise), per_rank=True)


def _augment_from(trainer_state: dict) -> dict | None:
    """A checkpoint of distgan before augmentation had its own state kept its generator in the trainer's."""
    gen = trainer_state.get("augment_rng")
    return {"gen": gen} if gen is not None else None
