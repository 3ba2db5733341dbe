"""The GAN loop: every batch one D step on real + detached fake, then (every train.d_steps-th batch) one G step.

The tutorial ran its two train ops once per epoch (outside the batch loop); here both run on every batch.

Buffers under several ranks (BN running statistics in G, spectral norm's power-iteration vectors in D) follow
one rule each, so replicas never drift and nothing is modified in place between a forward and its backward:
- G's batch norm takes global-batch statistics (model.sync_bn, dist.sync_batchnorm), so its running
  statistics are the same on every rank by construction; DDP's buffer broadcast from rank 0 changes nothing.
- D has no batch norm in any family. Its spectral-norm vectors advance only in D's phase, where D runs
  under DDP in training mode (broadcast from rank 0 first, then one power iteration from identical weights);
  in G's phase D runs unwrapped and in eval mode, which reads the vectors without touching them.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from torch import nn

from distgan import losses
from distgan.augment import DiffAugment
from distgan.checkpoint import Checkpointer, CheckpointError, strip_prefixes
from distgan.config import LOWER_IS_BETTER, Config, ConfigError, OptimConfig, changed_keys, config_from_dict
from distgan.data.loader import Loader
from distgan.dist import StopAgreement, params_digest, rank_generator, sync_batchnorm
from distgan.ema import EMA, ema_beta
from distgan.eval.evaluate import Evaluator
from distgan.files import save_weights
from distgan.images import image_grid
from distgan.models import build_discriminator, build_generator, num_classes
from distgan.stats import Collected, Stats
from distgan.stats import default as default_stats
from distgan.tracking import Tracker

log = logging.getLogger("distgan")


def build_networks(cfg: Config) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.optim.Optimizer]:
    """G, D and their Adam optimizers, as the config says (before Accelerate wraps them)."""
    G, D = build_generator(cfg.model), build_discriminator(cfg.model)
    betas = (cfg.optim.betas[0], cfg.optim.betas[1])
    fused = cfg.optim.fused or None  # None: PyTorch picks (multi-tensor on a GPU, a loop on a CPU)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=betas, eps=cfg.optim.eps, fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=betas, eps=cfg.optim.eps, fused=fused)
    return G, D, opt_g, opt_d


def lr_factor(optim: OptimConfig, step: int, total: int) -> float:
    """Learning-rate multiplier at a step: a pure function of the step, so a resume needs no scheduler state."""
    start = optim.decay_start * total
    if optim.lr_decay == "none" or step <= start:
        return 1.0
    t = min(1.0, (step - start) / max(1.0, total - start))
    shape = 1 - t if optim.lr_decay == "linear" else 0.5 * (1 + math.cos(math.pi * t))
    return optim.lr_min_ratio + (1 - optim.lr_min_ratio) * shape


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _zero_grad(opt: AcceleratedOptimizer) -> None:
    """AcceleratedOptimizer.zero_grad calls inspect.signature on every call and .step() probes for optional
    packages (is_lomo_available) on every call: ~8% of the tutorial model's CPU step under py-spy. With no
    gradient accumulation and no loss scaler both are the wrapped optimizer's own calls."""
    opt.optimizer.zero_grad(set_to_none=True)


def _step(opt: AcceleratedOptimizer) -> None:
    if opt.scaler is None:
        opt.optimizer.step()
    else:
        opt.step()  # fp16: unscale, skip on overflow, update the scale


def _grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of all gradients, on the device (no sync); 0 when a skipped fp16 step left them non-finite."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))


FIRST = {"loss_d": 0, "loss_g": 1, "d_real": 2, "d_fake": 3}
"""Statistics shown first, in this order (the tutorial's print-out)."""
DERIVED = {
    "steps",
    "data_wait_s",
    "time_d_s",
    "time_g_s",
    "skipped_steps_d",
    "skipped_steps_g",
    "data/skipped_samples",
}
"""Statistics the log step turns into other figures (rates, times, totals) instead of showing their mean."""


class Preempted(Exception):
    """A stop signal was honoured: every rank saved at the same step and the job should exit (and requeue)."""

    def __init__(self, step: int, path: Path) -> None:
        super().__init__(f"stopped by signal at step {step}; checkpoint {path}")
        self.step, self.path = step, path


class TrainingAborted(RuntimeError):
    """Raised on every rank at once when a collective check fails (non-finite loss, drifted replicas)."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    images_seen: int = 0
    last_print: dict[str, float] = field(default_factory=dict)
    best: float | None = None  # best value of eval.best_metric so far, and the step that reached it
    best_step: int = 0
    last_eval_step: int = -1


class Trainer:
    """Owns G, D, G_ema, both optimizers and the counters; `train()` is the loop. Call everything on all ranks."""

    def __init__(
        self,
        cfg: Config,
        acc: Accelerator,
        G: nn.Module,
        D: nn.Module,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        loader: Loader,
        tracker: Tracker,
        checkpointer: Checkpointer | None = None,
        stop: StopAgreement | None = None,
        evaluator: Evaluator | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.cfg, self.acc, self.loader, self.tracker = cfg, acc, loader, tracker
        self.checkpointer, self.stop, self.evaluator = checkpointer, stop, evaluator
        if cfg.model.sync_bn and acc.num_processes > 1:
            G = sync_batchnorm(G, acc.device)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        if cfg.train.channels_last:  # 4-D weights only; the stubs lack this overload of Module.to
            G = G.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            D = D.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.G, self.D, self.opt_g, self.opt_d = acc.prepare(G, D, opt_g, opt_d)
        # D used in G's phase without its DDP wrapper: nothing of D is all-reduced there (its parameters are
        # frozen, so it has no gradient to reduce) and DDP's reducer never sees a forward without backward.
        self.D_plain = acc.unwrap_model(self.D)
        self.D_for_g = torch.compile(self.D_plain) if cfg.train.compile else self.D_plain
        self.ema = EMA(acc.unwrap_model(self.G)) if cfg.train.ema_kimg > 0 else None
        self.device = acc.device
        self.noise = rank_generator(cfg.train.seed, acc.process_index, self.device)
        fixed = torch.Generator().manual_seed(cfg.train.seed)  # same fixed noise on every rank and every run
        self.fixed_z = torch.randn(64, cfg.model.noise_dim, generator=fixed).to(self.device)
        self.d_loss, self.g_loss = losses.LOSSES[cfg.train.loss]
        self.num_classes = num_classes(acc.unwrap_model(self.G))
        self.augment = DiffAugment(cfg.train.augment, cfg.train.seed, acc.process_index, acc.num_processes)
        self.stats = stats or default_stats()
        self.stats.reset()
        self.stats.device = (
            self.device
        )  # the gather runs here (NCCL needs GPU tensors) even for host-only names
        self.state = TrainState()
        self.rank_batch = cfg.train.batch_size // acc.num_processes
        self._log_s = 0.0  # duration of the last log() call

    # -- one iteration -------------------------------------------------------------------------------------
    def train_step(
        self,
        real: torch.Tensor,
        z: torch.Tensor,
        y_real: torch.Tensor | None = None,
        y_fake: torch.Tensor | None = None,
        measure: bool = True,
        g_step: bool = True,
        r1: bool = False,
    ) -> None:
        """real: (b,C,H,W) in [0,1] on the device; z: (b, noise_dim); y_*: class labels of a conditional model.
        One D update (with the R1 penalty when `r1`), then one G update when `g_step`.

        measure: also take gradient norms; the loop asks only on log steps (they cost as much as a layer).
        """
        t, timing, report = self.cfg.train, self.cfg.train.time_phases, self.stats.report
        t0 = self._clock() if timing else 0.0
        with torch.set_grad_enabled(g_step):  # a D-only step needs no graph through G
            fake = self.G(z, y_fake)
        if r1:
            real = real.detach().requires_grad_(True)
        x = torch.cat(
            [self.augment(real), self.augment(fake.detach())] if self.augment else [real, fake.detach()]
        )
        y = torch.cat([y_real, y_fake]) if y_real is not None and y_fake is not None else None
        logits = self.D(x, y)  # one DDP forward for both halves
        real_logits, fake_logits = logits.split(len(real))
        loss_d = self.d_loss(real_logits, fake_logits)
        total_d = loss_d
        if r1:  # lazy: every r1_every-th step, weighted by r1_every (StyleGAN2)
            penalty = losses.r1_penalty(real_logits, real)
            total_d = loss_d + penalty * (t.r1_gamma / 2 * t.r1_every)
            report("r1_penalty", penalty.detach())
        _zero_grad(self.opt_d)
        self.acc.backward(total_d)
        _step(self.opt_d)
        if measure:
            report("grad_norm_d", _grad_norm(self.D))  # after step: unscaled under fp16
        t1 = self._clock() if timing else 0.0

        if g_step:
            self.D_plain.requires_grad_(False).eval()
            gen_logits = self.D_for_g(self.augment(fake) if self.augment else fake, y_fake)
            loss_g = self.g_loss(gen_logits)
            _zero_grad(self.opt_g)
            self.acc.backward(loss_g)
            _step(self.opt_g)
            self.D_plain.requires_grad_(True).train()
            if self.ema is not None:
                images = t.batch_size * t.d_steps  # images since the previous G step
                beta = ema_beta(images, self.state.images_seen + t.batch_size, t.ema_kimg, t.ema_rampup)
                self.ema.update(self.acc.unwrap_model(self.G), beta)
        if timing:
            report("time_d_s", t1 - t0)  # D phase, including G's forward for the fakes
            report("time_g_s", self._clock() - t1)

        with torch.no_grad():  # values stay on the device until the log step; non-finite stays non-finite
            report("loss_d", loss_d)
            if g_step:
                report("loss_g", loss_g)
            d_out = torch.sigmoid(logits.detach().float()).view(2, -1).mean(1)
            report("d_real", d_out[0])
            report("d_fake", d_out[1])
            if measure and g_step:
                report("grad_norm_g", _grad_norm(self.G))
        report("steps", 1)
        if self.acc.scaler is not None:  # Python bools: fp16's scaler syncs for them anyway
            report("skipped_steps_d", float(self.opt_d.step_was_skipped))
            if g_step:
                report("skipped_steps_g", float(self.opt_g.step_was_skipped))

    def set_lr(self, factor: float) -> None:
        for opt, base in ((self.opt_g, self.cfg.optim.lr_g), (self.opt_d, self.cfg.optim.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    def _clock(self) -> float:
        """train.time_phases only: a GPU runs ahead of the host, so wait for it before reading the clock."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def sample_noise(self) -> torch.Tensor:
        return torch.randn(
            self.rank_batch, self.cfg.model.noise_dim, device=self.device, generator=self.noise
        )

    def sample_labels(self) -> torch.Tensor | None:
        """Classes asked of G for this rank's fakes (uniform), from the rank's noise stream; None unconditional."""
        if not self.num_classes:
            return None
        return torch.randint(
            0, self.num_classes, (self.rank_batch,), device=self.device, generator=self.noise
        )

    def to_device(self, batch: dict) -> torch.Tensor:
        """uint8 -> float [0,1] on the device: normalisation runs there, not in the loader."""
        x = batch["image"].to(self.device, non_blocking=True).float().div_(255.0)
        return x.contiguous(memory_format=self.memory_format)

    def labels(self, batch: dict) -> torch.Tensor | None:
        return batch["label"].to(self.device, non_blocking=True) if self.num_classes else None

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self) -> TrainState:
        """Runs until the step budget is spent. Raises Preempted (after saving) when a stop was requested."""
        cfg, st = self.cfg.train, self.state
        per_epoch = self.loader.batches_per_epoch
        total = self.total_steps()
        self.tracker.start(total, st.step)
        self.tracker.info(
            f"training {total} steps ({per_epoch}/epoch) on {self.acc.num_processes} process(es), "
            f"global batch {cfg.batch_size}, precision {cfg.precision}, device {self.device}"
            + (f"; resuming at step {st.step} (epoch {st.epoch})" if st.step else "")
        )
        t_log, step_log = time.perf_counter(), st.step
        while st.step < total:
            epoch = st.epoch
            batches = self.loader.epoch(epoch)
            self._replay(batches, st.step - epoch * per_epoch)
            t_wait = time.perf_counter()
            for batch in batches:
                self.stats.report("data_wait_s", time.perf_counter() - t_wait)
                real = self.to_device(batch)
                if st.step == 0:
                    self.tracker.log_images(0, "samples/real", image_grid(real[:64], nrow=8))
                if self.cfg.optim.lr_decay != "none":
                    self.set_lr(lr_factor(self.cfg.optim, st.step, total))
                log_now = (st.step + 1) % cfg.log_every == 0 or st.step + 1 == total
                z, y_fake = self.sample_noise(), self.sample_labels()
                self.train_step(
                    real,
                    z,
                    self.labels(batch),
                    y_fake,
                    measure=log_now,
                    g_step=(st.step + 1) % cfg.d_steps == 0,
                    r1=cfg.r1_gamma > 0 and st.step % cfg.r1_every == 0,
                )
                st.step += 1
                st.images_seen += cfg.batch_size
                if cfg.debug_checks:
                    self.check_finite()
                if log_now:
                    now = time.perf_counter()  # the log call itself counts in the next interval's rate
                    self.log(st.step, st.step - step_log, now - t_log)
                    t_log, step_log = now, st.step
                self.tracker.advance(st.step, st.epoch)
                if cfg.sample_every and st.step % cfg.sample_every == 0:
                    self.write_samples(f"step{st.step:07d}")
                if st.step % per_epoch == 0:  # every rank's loader yields exactly per_epoch batches
                    st.epoch += 1
                    self.end_of_epoch()
                if self.evaluator is not None and self.evaluator.should_run(st.step):
                    self.evaluate()
                self.after_step(total)
                if st.step >= total:
                    break
                t_wait = time.perf_counter()
            # by construction no pass of this loop makes no progress: an epoch ends, or the run, or this
            if st.epoch == epoch and st.step < total:
                raise RuntimeError(
                    f"the loader's epoch {epoch} ended at step {st.step}, before its {per_epoch} batches"
                )
        if self.evaluator is not None and st.last_eval_step != st.step:
            self.evaluate()  # the final weights are always measured
        return st

    def _replay(self, batches: Iterator[dict], done: int) -> None:
        """After a mid-epoch resume: read past the `done` batches this epoch already trained on (the stream is
        deterministic), honouring a stop request on the way."""
        if done <= 0:
            return
        for i, _ in enumerate(itertools.islice(batches, done), 1):
            if self.stop is not None and i < done and self.stop.should_check(i) and self.stop.agreed():
                assert self.checkpointer is not None
                kept = self.checkpointer.save(self.state.step)  # the one resumed from: nothing new written
                raise Preempted(self.state.step, kept)

    def sample_model(self) -> nn.Module:
        """The generator that samples and metrics use: the EMA when there is one."""
        return self.ema.model if self.ema is not None else self.acc.unwrap_model(self.G)

    def evaluate(self) -> dict[str, float]:
        """Call on all ranks: metrics of the sampling generator, logged; a new best is kept as checkpoints/best."""
        assert self.evaluator is not None
        st, name = self.state, self.cfg.eval.best_metric
        t0 = time.perf_counter()
        result = self.evaluator(self.sample_model())
        value = result[name]
        better = st.best is None or (value < st.best if LOWER_IS_BETTER[name] else value > st.best)
        if better:
            st.best, st.best_step = value, st.step
        st.last_eval_step = st.step
        logged = {f"eval/{k}": v for k, v in result.items()}
        logged[f"eval/best_{name}"] = st.best  # type: ignore[assignment]
        logged["eval/best_step"] = st.best_step
        logged["eval/time_s"] = time.perf_counter() - t0
        self.tracker.log_metrics(st.step, logged)
        if better and self.checkpointer is not None:
            path = self.checkpointer.save(st.step, name="best")
            self.tracker.info(f"new best {name}={value:.4g} at step {st.step}: {path}")
        return result

    def total_steps(self) -> int:
        cfg, per_epoch = self.cfg.train, self.loader.batches_per_epoch
        return per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, per_epoch * cfg.epochs)

    def after_step(self, total: int) -> None:
        """Periodic checkpoints and the collective stop check (preemption signals)."""
        step = self.state.step
        if self.checkpointer is None:
            return
        if self.checkpointer.should_save(step, total):
            self.checkpointer.save(step)
        if self.stop is not None and step < total and self.stop.should_check(step) and self.stop.agreed():
            raise Preempted(step, self.checkpointer.save(step))  # not written twice if just saved

    # -- checkpoint state (registered with the Checkpointer as "trainer") ----------------------------------
    def state_dict(self) -> dict:
        unwrap = self.acc.unwrap_model
        return {
            "G": strip_prefixes(unwrap(self.G).state_dict()),
            "D": strip_prefixes(unwrap(self.D).state_dict()),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
            "G_ema": self.ema.state_dict() if self.ema is not None else None,
            "augment_rng": self.augment.gen.get_state(),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "images_seen": self.state.images_seen,
            "batch_size": self.cfg.train.batch_size,
            "batches_per_epoch": self.loader.batches_per_epoch if self.loader is not None else 0,
            "best_metric": self.cfg.eval.best_metric,
            "best": self.state.best,
            "best_step": self.state.best_step,
            "last_eval_step": self.state.last_eval_step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.check_position(state)
        self.acc.unwrap_model(self.G).load_state_dict(strip_prefixes(state["G"]))
        self.acc.unwrap_model(self.D).load_state_dict(strip_prefixes(state["D"]))
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.acc.scaler is not None and state.get("scaler"):
            self.acc.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:  # a checkpoint from a run without EMA starts the average from G
            self.ema.load_state_dict(strip_prefixes(state.get("G_ema") or state["G"]))
        if "augment_rng" in state:
            self.augment.gen.set_state(state["augment_rng"])
        self.state.step, self.state.epoch = state["step"], state["epoch"]
        self.state.images_seen = state["images_seen"]
        if state.get("best_metric") == self.cfg.eval.best_metric:
            self.state.best, self.state.best_step = state.get("best"), state.get("best_step", 0)
        self.state.last_eval_step = state.get("last_eval_step", -1)

    def check_position(self, state: dict) -> None:
        """The data position is counted in batches of an epoch: it means the same only under the same global
        batch and the same dataset size. Anything else is refused before a single batch is replayed."""
        if self.loader is None:
            return
        batch, per_epoch = state.get("batch_size"), state.get("batches_per_epoch")
        if batch != self.cfg.train.batch_size:
            raise CheckpointError(
                f"the checkpoint was trained with train.batch_size={batch}, this run has "
                f"train.batch_size={self.cfg.train.batch_size}: its position in the data (step {state['step']}, "
                f"epoch {state['epoch']}) is counted in batches of {batch}. Resume with train.batch_size={batch}, "
                "or start a new run (another train.run_name, or ckpt.resume='') with the new batch"
            )
        if per_epoch is not None and per_epoch != self.loader.batches_per_epoch:
            raise CheckpointError(
                f"the checkpoint's data had {per_epoch} batches per epoch, data.path={self.cfg.data.path!r} now "
                f"gives {self.loader.batches_per_epoch} ({self.loader.dataset.samples} samples): the dataset "
                "changed. Resume on the same data, or start a new run (another train.run_name)"
            )

    def end_of_epoch(self) -> None:
        e = self.state.epoch
        if e % self.cfg.train.print_every_epochs == 0 and self.state.last_print:
            lp = self.state.last_print
            g = lp.get("loss_g", float("nan"))  # nan: no G step in the last log interval (train.d_steps)
            self.tracker.info(f"Epoch: {e:04d}  D loss: {lp['loss_d']:.4f}  G loss: {g:.4f}")
        if not self.cfg.train.sample_every and e % self.cfg.train.sample_every_epochs == 0:
            self.write_samples(f"epoch{e:04d}")

    def log(self, step: int, steps: int, elapsed: float) -> None:
        """Call on all ranks: one collection of the named statistics, then a collective abort check."""
        t_start = time.perf_counter()
        group = self.stop.group if self.stop is not None else None
        c = self.stats.collect(group)
        bad = nonfinite_ranks(c)
        if bad:
            raise TrainingAborted(
                f"non-finite loss on rank(s) {bad} before step {step}; lower the lr or use bf16"
            )
        if self.cfg.train.debug_checks:
            self.check_replicas()
        self.state.last_print = metrics = self.metrics(c, steps, elapsed)
        self.tracker.log_metrics(step, metrics)
        self._log_s = time.perf_counter() - t_start

    def metrics(self, c: Collected, steps: int, elapsed: float) -> dict[str, float]:
        """What a log step shows, from the collected statistics of the interval."""
        world, per_step = self.acc.num_processes, 1000 / max(1, steps)
        # every reported statistic appears as its mean over reports and ranks, unless derived below
        names = sorted(
            (n for n in c.sums if n not in DERIVED), key=lambda n: (n not in FIRST, FIRST.get(n, 0), n)
        )
        m: dict[str, float] = {n: c.mean(n) for n in names}
        m |= {
            "epoch": self.state.epoch,
            "images_seen": self.state.images_seen,
            "img_per_s": steps * self.cfg.train.batch_size / elapsed,
            "step_time_ms": 1000 * elapsed / max(1, steps),
            "data_wait_frac": c.total("data_wait_s") / world / elapsed,
            "skipped_samples": int(c.total("data/skipped_samples")),
            "lr_g": self.opt_g.param_groups[0]["lr"],
            "lr_d": self.opt_d.param_groups[0]["lr"],
            "skipped_steps_d": int(c.total("skipped_steps_d") / world),  # the same on every rank
            "skipped_steps_g": int(c.total("skipped_steps_g") / world),
        }
        if self.acc.scaler is not None:
            m["loss_scale"] = float(self.acc.scaler.get_scale())
        m["peak_mem_mb"] = peak_memory_mb(self.device)
        # the previous log call ran inside this interval: its cost per step is logging's share of step time
        m["time_log_ms"] = self._log_s * per_step
        if self.cfg.train.time_phases:
            m["time_data_ms"] = c.total("data_wait_s") / world * per_step
            m["time_d_ms"] = c.total("time_d_s") / world * per_step
            m["time_g_ms"] = c.total("time_g_s") / world * per_step
            known = ("time_data_ms", "time_d_ms", "time_g_ms", "time_log_ms")
            m["time_other_ms"] = m["step_time_ms"] - sum(m[k] for k in known)
        return m

    def check_finite(self) -> None:
        """debug_checks: every step, all ranks agree whether any rank saw a non-finite loss."""
        mine = nonfinite_ranks(self.stats.local())
        flag = self.acc.reduce(torch.tensor([float(bool(mine))], device=self.device), "sum")
        if flag.item() > 0:
            bad = nonfinite_ranks(self.stats.collect(self.stop.group if self.stop is not None else None))
            raise TrainingAborted(f"non-finite loss on rank(s) {bad} at step {self.state.step}")

    def check_replicas(self) -> None:
        digests = self.acc.gather(
            torch.cat([params_digest(self.G), params_digest(self.D)]).to(self.device)[None]
        )
        if not torch.allclose(digests, digests[:1].expand_as(digests), rtol=1e-6, atol=1e-6):
            raise TrainingAborted(f"replicas drifted apart at step {self.state.step}: {digests.tolist()}")

    @torch.no_grad()
    def write_samples(self, tag: str) -> None:
        """Rank 0 only writes; every rank computes so no rank idles in a later collective alone."""
        G = self.sample_model()
        was_training = G.training
        G.eval()
        z, y = self.fixed_z, None
        if self.num_classes:  # grid: one row per class (at most 16), the same 8 noise vectors in every row
            rows = min(self.num_classes, 16)
            z = torch.cat([self.fixed_z[:10], self.fixed_z[:8].repeat(rows, 1)])
            y = torch.cat([torch.arange(10) % self.num_classes, torch.arange(rows).repeat_interleave(8)])
            y = y.to(self.device)
        with self.acc.autocast():
            images = G(z, y).float()
        G.train(was_training)
        strip, grid = (images[:10], images[10:]) if self.num_classes else (images[:10], images)
        self.tracker.log_images(self.state.step, f"samples/strip_{tag}", image_grid(strip, nrow=10))
        self.tracker.log_images(self.state.step, f"samples/grid_{tag}", image_grid(grid, nrow=8))

    def report_done(self, elapsed: float, seen: int, final_ckpt: Path, run_dir: Path) -> None:
        """The end-of-run line and summary table; `seen`: images of this segment (after a resume)."""
        st, world = self.state, self.acc.num_processes
        self.tracker.info(
            f"done: {st.step} steps, {st.images_seen:,} images ({seen:,} in this run, {elapsed:.1f}s, "
            f"{seen / elapsed:,.0f} img/s overall); outputs in {run_dir}"
        )
        rows = {
            "time": f"{elapsed:.1f} s",
            "steps": f"{st.step} ({st.epoch} epochs)",
            "images": f"{st.images_seen:,}",
            "throughput": f"{seen / elapsed:,.0f} img/s on {world} process(es)",
            "samples": str(run_dir / "samples"),
            "weights": str(run_dir / "final"),
            "checkpoint": str(final_ckpt),
        }
        if st.best is not None:
            best = final_ckpt.parent / "best"
            rows["best"] = f"{self.cfg.eval.best_metric}={st.best:.4g} at step {st.best_step} ({best})"
        rows["metrics"] = str(run_dir / "metrics.jsonl")
        self.tracker.summary(rows)

    def save_final(self, run_dir: Path) -> None:
        """Final weights as safetensors (rank 0), loadable with plain PyTorch."""
        self.acc.wait_for_everyone()
        if not self.acc.is_main_process:
            return
        nets = [("G", self.acc.unwrap_model(self.G)), ("D", self.acc.unwrap_model(self.D))]
        if self.ema is not None:
            nets.append(("G_ema", self.ema.model))
        else:  # an earlier segment's EMA would be preferred by samplers over this run's final G
            (run_dir / "final" / "G_ema.safetensors").unlink(missing_ok=True)
        for name, model in nets:
            save_weights(run_dir / "final" / f"{name}.safetensors", model.state_dict())


def nonfinite_ranks(c: Collected) -> list[int]:
    """Ranks whose summed losses are not finite (a NaN or inf anywhere in the interval stays in the sum)."""
    if "loss_d" not in c:
        return []
    bad = ~np.isfinite(c.per_rank("loss_d"))
    if "loss_g" in c:  # absent when no G step fell in the interval (train.d_steps > train.log_every)
        bad |= ~np.isfinite(c.per_rank("loss_g"))
    return [int(r) for r in np.flatnonzero(bad)]


SHAPE_KEYS = (
    "model.arch",
    "model.noise_dim",
    "model.g_hidden",
    "model.d_hidden",
    "model.image_shape",
    "model.g_channels",
    "model.d_channels",
    "model.g_norm",
    "model.spectral_norm",
    "model.num_classes",
)
"""Config keys whose change makes saved weights unusable."""
WARN_KEYS = (
    "model.activation",
    "train.loss",
    "train.d_steps",
    "train.r1_gamma",
    "train.augment",
    "model.sync_bn",
    "train.ema_kimg",
    "train.precision",
    "optim.lr_g",
    "optim.lr_d",
    "optim.betas",
)
"""Config keys a resume accepts but a user should hear about: they change what the same weights compute or
how they move on (an EMA switched off drops the saved average)."""


def check_resumable(saved: dict, cfg: Config) -> None:
    """Refuses a checkpoint whose weights do not fit the model; warns, naming the keys, on other changes.
    Keys the checkpoint's config predates count as their defaults (what that run used)."""
    saved = config_from_dict(saved).to_dict()
    current = cfg.to_dict()
    bad = changed_keys(saved, current, SHAPE_KEYS)
    if bad:
        raise CheckpointError(
            "the checkpoint does not fit this config: "
            + "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, a, b in bad)
        )
    changed = changed_keys(saved, current, WARN_KEYS)
    if changed:
        log.warning(
            "resuming with changed settings (the run goes on with the new values): %s",
            "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, a, b in changed),
        )


def resolve_num_classes(cfg: Config, classes: tuple[str, ...]) -> Config:
    """model.num_classes=-1 becomes the manifest's class count; a count the manifest contradicts is refused."""
    n = cfg.model.num_classes
    if n == -1:
        if not classes:
            raise ConfigError(
                f"model.num_classes=-1 takes the class count from the data's manifest, but data.path="
                f"{cfg.data.path!r} lists no classes; set model.num_classes=N (or 0 for unconditional)"
            )
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=len(classes)))
    if n > 0 and classes and len(classes) != n:
        raise ConfigError(
            f"model.num_classes={n} but data.path={cfg.data.path!r} has {len(classes)} classes "
            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); set model.num_classes={len(classes)} "
            "or -1"
        )
    return cfg
