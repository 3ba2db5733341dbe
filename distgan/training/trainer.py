"""The GAN loop: batches, counters, the phases of each step (phases.py) and the events between steps (events.py).
The tutorial ran its two train ops once per epoch (outside the batch loop); here both run on every batch."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

from distgan.config import Config
from distgan.data.loader import Loader
from distgan.dist import StopAgreement, rank_generator, sync_batchnorm
from distgan.eval.evaluate import Evaluator
from distgan.eval.event import EvalEvent
from distgan.models import family, num_classes
from distgan.run.checkpoint import Checkpointer, check_position
from distgan.run.checkpoint_read import strip_prefixes
from distgan.run.errors import CheckpointError
from distgan.run.tracking import Tracker
from distgan.training import losses
from distgan.training.ada import AdaptiveAugment
from distgan.training.augment import build_augment
from distgan.training.ema import EMA, EMAUpdate
from distgan.training.events import Schedule, every
from distgan.training.optim import gamma_factor, set_schedule
from distgan.training.pack import Pack, check_d_batch
from distgan.training.part import StepPart
from distgan.training.phases import Batch, GANStep, Nets, StepEnv, build_phases, micro_batch
from distgan.training.reporting import LogStep
from distgan.training.stylegan import StyleTraining
from distgan.training.warmstart import load_net
from distgan.utils.grids import image_grid
from distgan.utils.stats import Stats
from distgan.utils.stats import default as default_stats


class Preempted(Exception):
    """A stop signal was honoured: every rank saved at the same step and the job should exit (and requeue)."""

    def __init__(self, step: int, path: Path) -> None:
        super().__init__(f"stopped by signal at step {step}; checkpoint {path}")
        self.step, self.path = step, path


@dataclass
class TrainState:
    """The loop's counters (checkpointed with the trainer)."""

    step: int = 0
    epoch: int = 0
    images_seen: int = 0
    last_print: dict[str, float] = field(default_factory=dict)  # the newest log row (not checkpointed)
    curve: float = 0.0  # optim.decay_curve at this step (set each step; R1/R2's gamma and the EMA follow it)


class Trainer:
    """Owns G, D, G_ema, both optimizers and the counters; `train()` is the loop: batches, counters, the phases
    of a step (phases.py) and the events between steps (events.py). Call everything on all ranks."""

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
        # The networks without DDP or torch.compile: the EMA's copy, samples, metrics and checkpoints use them
        # (a CUDA-graph replay's outputs live only until the next step; a sample grid must not depend on that).
        # D in G's phase too (compiled on its own): nothing of D is all-reduced there (its parameters are
        # frozen, so it has no gradient to reduce) and DDP's reducer never sees a forward without backward.
        self.G_plain = acc.unwrap_model(self.G, keep_torch_compile=False)
        self.D_plain = D_plain = acc.unwrap_model(self.D, keep_torch_compile=False)
        D_for_g = torch.compile(D_plain, mode=cfg.train.compile_mode) if cfg.train.compile else D_plain
        self.ema = EMA(self.G_plain) if cfg.train.ema_kimg > 0 else None
        self.device = acc.device
        self.noise = rank_generator(cfg.train.seed, acc.process_index, self.device)
        fixed = torch.Generator().manual_seed(cfg.train.seed)  # same fixed noise on every rank and every run
        self.fixed_z = torch.randn(64, cfg.model.noise_dim, generator=fixed).to(self.device)
        self.num_classes = num_classes(self.G_plain)
        self.augment = build_augment(cfg.train, acc.process_index, acc.num_processes)
        self.ada = self.augment if isinstance(self.augment, AdaptiveAugment) else None
        self.stats = stats or default_stats()
        self.stats.reset()
        self.stats.device = self.device  # the gather runs here (NCCL needs GPU tensors), even host-only names
        self.state = TrainState()
        self.eval = (
            EvalEvent(evaluator, evaluator.best_metric, tracker, checkpointer, self.sample_model) if evaluator else None
        )
        self.rank_batch = cfg.train.batch_size // acc.num_processes
        micro = micro_batch(cfg, self.rank_batch)
        self.style = (
            StyleTraining(cfg, self.G_plain, acc.process_index, acc.num_processes, micro or self.rank_batch)
            if "style" in family(cfg.model).parts
            else None
        )
        check_d_batch(cfg, micro or self.rank_batch, D_plain)
        nets = Nets(
            acc,
            self.G,
            self.D,
            D_plain,
            D_for_g,
            self.opt_g,
            self.opt_d,
            self.augment,
            {"parts": 2} if family(cfg.model).d_parts else {},
        )
        # the parts of the step, in the order their hooks run: augmentation (ADA observes and adapts), packing
        # (D's input), StyleGAN's inputs and w_avg, then the EMA (which copies G's buffers, w_avg among them)
        parts: list[StepPart] = [
            self.augment,
            *([Pack(cfg.model.d_pack)] if cfg.model.d_pack > 1 else []),
            *([self.style] if self.style else []),
        ]
        if self.ema is not None:
            parts.append(EMAUpdate(self.ema, self.G_plain, cfg.train, self.state))
        self.loss = loss = losses.LOSSES[cfg.train.loss]
        pl = self.style.penalty(self._sum, self.stats.report) if self.style else None
        phases = build_phases(cfg.train, loss, pl, lambda: gamma_factor(cfg.train, self.state.curve), cfg.model.d_pack)
        env = StepEnv(cfg.train.batch_size, self.device, self._sum, cfg.train.cudagraphs)
        self.gan_step = GANStep(
            nets,
            phases,
            self.stats,
            self._clock if cfg.train.time_phases else None,
            micro,
            loss.g_needs_real,
            parts,
            env,
        )
        self.logstep = LogStep(
            acc,
            self.stats,
            stop.group if stop is not None else None,
            cfg.train.batch_size,
            cfg.train.time_phases,
            cfg.train.debug_checks,
            self._counters,
            self._emit,
            lambda: [self.G, self.D],
        )

    # -- one step ------------------------------------------------------------------------------------------
    def train_step(
        self,
        real: torch.Tensor,
        z: torch.Tensor,
        y_real: torch.Tensor | None = None,
        y_fake: torch.Tensor | None = None,
        measure: bool = True,
        g_step: bool = True,
        r1: bool = False,
        pl: bool = False,
    ) -> None:
        """One D update (with the R1 phase when `r1`), then one G update when `g_step` (with path length when
        `pl`): the phases of phases.py chosen by hand (tests and benchmarks); the loop chooses them by their
        intervals."""
        due = {
            "D",
            *(["G"] if g_step else []),
            *(["Dreg"] if r1 else []),
            *(["Greg"] if pl and g_step else []),
        }
        self.gan_step.step(Batch(real, z, y_real, y_fake, measure), due)

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.acc.reduce(t, "sum")

    def _clock(self) -> float:
        """train.time_phases only: a GPU runs ahead of the host, so wait for it before reading the clock."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def sample_noise(self) -> torch.Tensor:
        return torch.randn(self.rank_batch, self.cfg.model.noise_dim, device=self.device, generator=self.noise)

    def sample_labels(self) -> torch.Tensor | None:
        """Classes asked of G for this rank's fakes (uniform), from the rank's noise stream; None unconditional."""
        if not self.num_classes:
            return None
        return torch.randint(0, self.num_classes, (self.rank_batch,), device=self.device, generator=self.noise)

    def to_device(self, batch: dict) -> torch.Tensor:
        """uint8 -> float [0,1] on the device: normalisation runs there, not in the loader."""
        x = batch["image"].to(self.device, non_blocking=True).float().div_(255.0)
        return x.contiguous(memory_format=self.memory_format)

    def labels(self, batch: dict) -> torch.Tensor | None:
        return batch["label"].to(self.device, non_blocking=True) if self.num_classes else None

    def train_batch(self, batch: dict, total: int) -> None:
        """The step the loop runs: the learning-rate schedule, then the phases due at this step."""
        st, cfg = self.state, self.cfg.train
        real = self.to_device(batch)
        if st.step == 0:
            self.tracker.log_images(0, "samples/real", image_grid(real[:64], nrow=8))
        if self.cfg.optim.lr_decay != "none":  # lr, beta2, R1/R2's gamma and the EMA's growth on one curve
            self.state.curve = set_schedule(self.opt_g, self.opt_d, self.cfg.optim, st.step, total, cfg.batch_size)
        measure = (st.step + 1) % cfg.log_every == 0 or st.step + 1 == total  # gradient norms on log steps
        z, y_fake = self.sample_noise(), self.sample_labels()
        self.gan_step.step(Batch(real, z, self.labels(batch), y_fake, measure), self.gan_step.due(st.step))

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self) -> TrainState:
        """Runs until the step budget is spent. Raises Preempted (after saving) when a stop was requested."""
        st, per_epoch, total = self.state, self.loader.batches_per_epoch, self.total_steps()
        events = self.schedule(total)
        self.tracker.start(total, st.step)
        self.tracker.info(
            f"training {total} steps ({per_epoch}/epoch) on {self.acc.num_processes} process(es), global batch "
            f"{self.cfg.train.batch_size}, precision {self.cfg.train.precision}, device {self.device}"
            + (f"; resuming at step {st.step} (epoch {st.epoch})" if st.step else "")
        )
        self.logstep.start(st.step)
        while st.step < total:
            epoch = st.epoch
            batches = self.loader.epoch(epoch)
            self._replay(batches, st.step - epoch * per_epoch)
            for batch in self._timed(batches):
                self.train_batch(batch, total)
                st.step += 1
                st.images_seen += self.cfg.train.batch_size
                events.fire(st.step)
                if st.step >= total:
                    break
            # by construction no pass of this loop makes no progress: an epoch ends, or the run, or this
            if st.epoch == epoch and st.step < total:
                raise RuntimeError(
                    f"the loader's epoch {epoch} ended at step {st.step}, before its {per_epoch} batches"
                )
        if self.eval is not None and self.eval.last_eval_step != st.step:
            self.eval(st.step)  # the final weights are always measured
        return st

    def schedule(self, total: int) -> Schedule:
        """Everything between steps, registered once, in the order it runs after a step."""
        cfg, per_epoch, events = self.cfg.train, self.loader.batches_per_epoch, Schedule()
        if cfg.debug_checks:
            events.on("finite", every(1), self.logstep.check_finite)
        events.on("log", lambda s: s % cfg.log_every == 0 or s == total, self.logstep)
        events.on("progress", every(1), lambda s: self.tracker.advance(s, self.state.epoch))
        events.on("samples", every(cfg.sample_every), lambda s: self.write_samples(f"step{s:07d}"))
        events.on("epoch", every(per_epoch), lambda s: self.end_of_epoch())  # every rank: per_epoch batches
        if self.eval is not None:
            events.on("eval", self.eval.evaluator.should_run, self.eval)
        if self.checkpointer is not None:
            ckpt = self.checkpointer
            events.on("checkpoint", lambda s: ckpt.should_save(s, total), ckpt.save)
            if self.stop is not None:
                stop = self.stop
                events.on("stop", lambda s: s < total and stop.should_check(s), self._stop_check)
        return events

    def _timed(self, batches: Iterator[dict]) -> Iterator[dict]:
        """The batches, each with the time the loop waited for it reported as data_wait_s."""
        t_wait = time.perf_counter()
        for batch in batches:
            self.stats.report("data_wait_s", time.perf_counter() - t_wait)
            yield batch
            t_wait = time.perf_counter()

    def _stop_check(self, step: int) -> None:
        """Collective: when any rank was asked to stop, every rank saves this step and raises Preempted."""
        assert self.stop is not None and self.checkpointer is not None
        if self.stop.agreed():
            raise Preempted(step, self.checkpointer.save(step))  # not written twice if just saved

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

    def total_steps(self) -> int:
        cfg, per_epoch = self.cfg.train, self.loader.batches_per_epoch
        return per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, per_epoch * cfg.epochs)

    # -- events --------------------------------------------------------------------------------------------
    def log(self, step: int, steps: int | None = None, elapsed: float | None = None) -> None:
        """Call on all ranks: the log event (one collection of the statistics, then the collective checks)."""
        self.logstep(step, steps, elapsed)

    def _counters(self) -> dict[str, float]:
        c = {
            "epoch": self.state.epoch,
            "images_seen": self.state.images_seen,
            "lr_g": self.opt_g.param_groups[0]["lr"],
            "lr_d": self.opt_d.param_groups[0]["lr"],
        }
        if self.cfg.optim.beta2_final != -1:
            c["beta2"] = self.opt_d.param_groups[0]["betas"][1]
        if self.cfg.train.gamma_min_ratio != 1:
            c["gamma_factor"] = gamma_factor(self.cfg.train, self.state.curve)
        if self.acc.scaler is not None:
            c["loss_scale"] = float(self.acc.scaler.get_scale())
        if self.ada:
            c["ada_p"] = self.ada.p  # p now (the statistic ada_p is its mean over the interval's adjustments)
        return c

    def _emit(self, step: int, metrics: dict[str, float]) -> None:
        self.state.last_print = metrics
        self.tracker.log_metrics(step, metrics)

    def end_of_epoch(self) -> None:
        """The epoch counter, the tutorial's print-out every print_every_epochs, and epoch sample grids."""
        self.state.epoch += 1
        e, lp = self.state.epoch, self.state.last_print
        if e % self.cfg.train.print_every_epochs == 0 and lp:
            g = lp.get("loss_g", float("nan"))  # nan: no G step in the last log interval (train.d_steps)
            self.tracker.info(f"Epoch: {e:04d}  D loss: {lp['loss_d']:.4f}  G loss: {g:.4f}")
        if not self.cfg.train.sample_every and e % self.cfg.train.sample_every_epochs == 0:
            self.write_samples(f"epoch{e:04d}")

    def release(self) -> None:
        """After the run: the plain networks in place of the DDP wrappers (dist.end destroys the group next)."""
        self.G, self.D, self.gan_step.nets = self.G_plain, self.D_plain, None  # type: ignore[assignment]

    def sample_model(self) -> nn.Module:
        """The generator that samples and metrics use: the EMA when there is one."""
        return self.ema.model if self.ema is not None else self.G_plain

    @torch.no_grad()
    def write_samples(self, tag: str) -> None:
        """Rank 0 only writes; every rank computes so no rank idles in a later collective alone."""
        from distgan.run.sample import fixed_grids

        with self.acc.autocast():
            strip, grid = fixed_grids(self.sample_model(), self.fixed_z, self.num_classes)
        self.tracker.log_images(self.state.step, f"samples/strip_{tag}", strip)
        self.tracker.log_images(self.state.step, f"samples/grid_{tag}", grid)

    def _optim_from_config(self) -> None:
        """After a resume: the config's learning rates, betas and eps, not the checkpoint's param groups (a
        resume with new optim.* values goes on with them, as the warning says; the decay schedule, when there
        is one, moves lr and beta2 from these values every step)."""
        o = self.cfg.optim
        for opt, lr in ((self.opt_g, o.lr_g), (self.opt_d, o.lr_d)):
            for group in opt.param_groups:
                group["lr"], group["betas"], group["eps"] = lr, (o.betas[0], o.betas[1]), o.eps

    # -- checkpoint state (registered with the Checkpointer as "trainer") ----------------------------------
    def state_dict(self) -> dict:
        return {
            "G": strip_prefixes(self.G_plain.state_dict()),
            "D": strip_prefixes(self.D_plain.state_dict()),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
            "G_ema": self.ema.state_dict() if self.ema is not None else None,
            "step": self.state.step,
            "epoch": self.state.epoch,
            "images_seen": self.state.images_seen,
            "batch_size": self.cfg.train.batch_size,
            "batches_per_epoch": self.loader.batches_per_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("step", "epoch", "images_seen"):  # an edited file must not resume into a traceback
            if type(state.get(key)) is not int or state[key] < 0:
                raise CheckpointError(
                    f"its trainer counter {key}={state.get(key)!r} is not a whole number >= 0; "
                    "resume from another checkpoint, or start fresh with ckpt.resume=''"
                )
        check_position(state, self.cfg.train.batch_size, self.loader, self.cfg.data.path)
        load_net(self.G_plain, strip_prefixes(state["G"]), "G")
        load_net(self.D_plain, strip_prefixes(state["D"]), "D")
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self._optim_from_config()
        if self.acc.scaler is not None and state.get("scaler"):
            self.acc.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:  # a checkpoint from a run without EMA starts the average from G
            self.ema.load_state_dict(strip_prefixes(state.get("G_ema") or state["G"]))
        self.state.step, self.state.epoch = state["step"], state["epoch"]
        self.state.images_seen = state["images_seen"]
