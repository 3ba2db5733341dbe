"""The one composition root of a training run: `build_trainer` builds everything a run holds (the networks, seeded
alike on every rank, and their warm start; the EMA; every part of the step, in the order their hooks run; the
phases; the step runner; the log step; the loop's outputs) and registers every object with state under the name it
carries (`state_name`), in one loop. The Trainer receives what was built and only loops.

train.py, the test helpers and the benchmarks build trainers here, so what a run holds and what a checkpoint
restores are decided in one place. A new part of the step is one module with a `build_part` and one line in PARTS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from distgan.config import Config
from distgan.configure import micro_batch
from distgan.data.loader import Loader
from distgan.dist import StopAgreement, rank_generator, seed_all
from distgan.eval.evaluate import Evaluator
from distgan.eval.event import EvalEvent
from distgan.models import family_of, num_classes
from distgan.run.checkpoint import Checkpointer, RngState
from distgan.run.tracking import NullTracker, Tracker
from distgan.training import augment, ema, losses, pack, stylegan
from distgan.training.ada import AdaptiveAugment
from distgan.training.events import Outputs
from distgan.training.logstep import LogStep
from distgan.training.networks import Networks, build_networks, prepare_networks
from distgan.training.part import PartContext, StepPart
from distgan.training.schedule import gamma_factor
from distgan.training.step import GANStep, StepOptions, build_phases
from distgan.training.trainer import Sampling, Trainer, TrainState
from distgan.training.warmstart import init_ema, init_from
from distgan.utils.draws import stream_seed
from distgan.utils.stats import default as default_stats

PARTS: list[Callable[[PartContext], StepPart | None]] = [
    augment.build_part,  # DiffAugment or ADA: ADA observes D's reals and adapts after the step
    pack.build_part,  # PacGAN: D's input
    stylegan.build_part,  # stylegan2's mixing, layer noise, path length and tracked w_avg
    ema.build_part,  # last: it copies G's buffers (w_avg among them)
]
"""The parts of the step, in the order their hooks run (training/part.py); each makes its part or None."""

LEGACY: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "augment": lambda old: {"gen": old["trainer"]["augment_rng"]} if "augment_rng" in old.get("trainer", {}) else None,
    "eval": lambda old: old.get("trainer"),  # the same keys, kept in the trainer's state before
}
"""A state from a checkpoint written before its object had its own (tests/fixtures/ckpt-851d0c4-*), by name."""


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
    wrap_d: Callable[[nn.Module], nn.Module] | None = None,
) -> Trainer:
    """Call on all ranks. warm_start: apply train.init_from (a fresh run; a resume restores its own weights).
    init_seed: the seed of the networks' initial weights (default train.seed with this rank's stream, as a run seeds
    everything; tests that compare ranks seed every rank alike). wrap_d: a test's stand-in around D."""
    rank, world = acc.process_index, acc.num_processes
    seed_all(cfg.train.seed if init_seed is None else init_seed, rank if init_seed is None else 0)
    G, D, opt_g, opt_d = build_networks(cfg)
    warm = init_from(cfg, G, D) if cfg.train.init_from and warm_start else None
    nets = prepare_networks(cfg, acc, G, D if wrap_d is None else wrap_d(D), opt_g, opt_d)
    tracker = tracker if tracker is not None else NullTracker()
    if warm is not None:
        if nets.ema is not None:
            init_ema(cfg, nets.ema.model, warm[1])
        tracker.info(warm[0])
    state = TrainState()
    parts = [p for p in (make(PartContext(cfg, rank, world, nets.G_plain, nets.ema, state)) for make in PARTS) if p]
    stats = default_stats()
    stats.reset()
    stats.device = acc.device  # the gather runs there (NCCL needs GPU tensors), even for host-only names
    step = GANStep(nets, _phases(cfg, parts, acc, stats, state), stats, _options(cfg, acc, parts))

    def emit(step: int, metrics: dict[str, float]) -> None:
        state.last_print = metrics  # the tutorial's per-epoch print-out reads the newest row
        out.tracker.log_metrics(step, metrics)  # `out` below, read when a row is logged

    logstep = LogStep(
        acc=acc,
        stats=stats,
        group=stop.group if stop is not None else None,
        batch_size=cfg.train.batch_size,
        counters=_counters(cfg, acc, nets, state, parts),
        emit=emit,
        nets=lambda: [nets.G, nets.D],
        time_phases=cfg.train.time_phases,
        debug_checks=cfg.train.debug_checks,
    )
    evaluation = (
        EvalEvent(evaluator, evaluator.best_metric, tracker, checkpointer, nets.sample_model) if evaluator else None
    )
    out = Outputs(tracker, logstep, checkpointer, stop, evaluation)
    trainer = Trainer(cfg, acc, loader, nets, step, _sampling(cfg, acc, nets), out, state)
    if checkpointer is not None:
        register(checkpointer, [trainer, *parts, evaluation, tracker, RngState(trainer.sampling.noise)])
    return trainer


def register(checkpointer: Checkpointer, objects: list[Any]) -> None:
    """Every object with state under the name it carries (`state_name`; `state_per_rank`: this rank's own file;
    `state_run_bound`: only from this run's own checkpoints), with its LEGACY mapping: the one place state is
    registered (the run's objects here; `distgan import`'s imported weights too)."""
    for obj in objects:
        name = getattr(obj, "state_name", None)
        if obj is not None and name:
            per_rank, run_bound = getattr(obj, "state_per_rank", False), getattr(obj, "state_run_bound", False)
            checkpointer.register(name, obj, per_rank=per_rank, legacy=LEGACY.get(name), run_bound=run_bound)


def _phases(cfg: Config, parts: list[StepPart], acc: Accelerator, stats: Any, state: TrainState) -> list:
    """The phase list, with StyleGAN's path length when its part is there and R1/R2's weight on the decay curve."""
    style = next((p for p in parts if isinstance(p, stylegan.StyleTraining)), None)
    pl = style.penalty(lambda t: acc.reduce(t, "sum"), stats.report) if style is not None else None
    gamma = lambda: gamma_factor(cfg.train, state.curve)  # noqa: E731 (read at each step)
    return build_phases(cfg.train, losses.LOSSES[cfg.train.loss], pl, gamma, cfg.model.d_pack)


def _options(cfg: Config, acc: Accelerator, parts: list[StepPart]) -> StepOptions:
    def clock() -> float:
        """train.time_phases only: a GPU runs ahead of the host, so wait for it before reading the clock."""
        if acc.device.type == "cuda":
            torch.cuda.synchronize(acc.device)
        return time.perf_counter()

    return StepOptions(
        parts=parts,
        micro=micro_batch(cfg.train.batch_per_device, cfg.train.batch_size // acc.num_processes),
        g_needs_real=losses.LOSSES[cfg.train.loss].g_needs_real,
        d_kwargs={"batches": 2} if family_of(cfg.model).d_batches else {},
        global_batch=cfg.train.batch_size,
        device=acc.device,
        all_reduce=lambda t: acc.reduce(t, "sum"),
        clock=clock if cfg.train.time_phases else None,
        cudagraphs=cfg.train.cudagraphs,
    )


def _sampling(cfg: Config, acc: Accelerator, nets: Networks) -> Sampling:
    fixed = torch.Generator().manual_seed(stream_seed(cfg.train.seed, "fixed"))  # every rank and run alike
    return Sampling(
        noise=rank_generator(cfg.train.seed, acc.process_index, acc.device),
        rank_batch=cfg.train.batch_size // acc.num_processes,
        num_classes=num_classes(nets.G_plain),
        fixed_z=torch.randn(64, cfg.model.noise_dim, generator=fixed).to(acc.device),
        device=acc.device,
        memory_format=torch.channels_last if cfg.train.channels_last else torch.contiguous_format,
    )


def _counters(
    cfg: Config, acc: Accelerator, nets: Networks, state: TrainState, parts: list[StepPart]
) -> Callable[[], dict[str, float]]:
    """What each log row adds to the statistics: the counters, the learning rates, beta2, R1/R2's factor, the
    loss scale and ADA's p, as they are at the log step."""
    ada = next((p for p in parts if isinstance(p, AdaptiveAugment)), None)

    def counters() -> dict[str, float]:
        c = {
            "epoch": state.epoch,
            "images_seen": state.images_seen,
            "lr_g": nets.opt_g.param_groups[0]["lr"],
            "lr_d": nets.opt_d.param_groups[0]["lr"],
        }
        if cfg.optim.beta2_final != -1:
            c["beta2"] = nets.opt_d.param_groups[0]["betas"][1]
        if cfg.train.gamma_min_ratio != 1:
            c["gamma_factor"] = gamma_factor(cfg.train, state.curve)
        if acc.scaler is not None:
            c["loss_scale"] = float(acc.scaler.get_scale())
        if ada is not None:
            c["ada_p"] = ada.p  # p now (the statistic ada_p is its mean over the interval's adjustments)
        return c

    return counters
