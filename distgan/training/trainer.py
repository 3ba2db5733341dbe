"""The GAN loop: batches, counters, the step (step.py's GANStep) and the events between steps (events.py).
The tutorial ran its two train ops once per epoch (outside the batch loop); here both run on every batch.

Everything the loop uses is built by training/build.py and handed in; the Trainer only loops and keeps the counters.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from distgan.config import Config
from distgan.data.loader import Loader
from distgan.run.checkpoint import check_position
from distgan.run.sample import fixed_grids, real_grid
from distgan.training.events import Outputs, Schedule, every
from distgan.training.networks import Networks
from distgan.training.schedule import set_schedule
from distgan.training.step import Batch, GANStep


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


@dataclass
class Sampling:
    """This rank's draws for G: its noise stream, its share of the global batch, the classes G takes (0: none), the
    fixed noise every sample grid uses (the same on every rank and run), and where batches go."""

    noise: torch.Generator
    rank_batch: int
    num_classes: int
    fixed_z: torch.Tensor
    device: torch.device
    memory_format: torch.memory_format


class Trainer:
    """Owns the counters and the loop; `train()` runs it. Call everything on all ranks."""

    state_name = "trainer"

    def __init__(
        self,
        cfg: Config,
        acc: Accelerator,
        loader: Loader,
        nets: Networks,
        step: GANStep,
        sampling: Sampling,
        out: Outputs,
        state: TrainState,
    ) -> None:
        self.cfg, self.acc, self.loader, self.nets, self.gan_step = cfg, acc, loader, nets, step
        self.sampling, self.out, self.state = sampling, out, state

    # -- what callers read (tests, benchmarks, train.py) ---------------------------------------------------------
    G = property(lambda self: self.nets.G)
    D = property(lambda self: self.nets.D)
    G_plain = property(lambda self: self.nets.G_plain)
    D_plain = property(lambda self: self.nets.D_plain)
    opt_g = property(lambda self: self.nets.opt_g)
    opt_d = property(lambda self: self.nets.opt_d)
    ema = property(lambda self: self.nets.ema)
    tracker = property(lambda self: self.out.tracker)
    eval = property(lambda self: self.out.eval)
    stats = property(lambda self: self.gan_step.stats)
    device = property(lambda self: self.sampling.device)

    def part(self, kind: type) -> Any:
        """The step's part of a kind (augment.DiffAugment, stylegan.StyleTraining, ...), or None."""
        return next((p for p in self.gan_step.parts if isinstance(p, kind)), None)

    # -- one step ------------------------------------------------------------------------------------------------
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
        `pl`): the phases chosen by hand on given tensors (tests and benchmarks); the loop chooses them by their
        intervals."""
        due = {"D", *(["G"] if g_step else []), *(["Dreg"] if r1 else []), *(["Greg"] if pl and g_step else [])}
        self.gan_step.step(Batch(real, z, y_real, y_fake, measure), due)

    def sample_noise(self) -> torch.Tensor:
        s = self.sampling
        return torch.randn(s.rank_batch, self.cfg.model.noise_dim, device=s.device, generator=s.noise)

    def sample_labels(self) -> torch.Tensor | None:
        """Classes asked of G for this rank's fakes (uniform), from the rank's noise stream; None unconditional."""
        s = self.sampling
        if not s.num_classes:
            return None
        return torch.randint(0, s.num_classes, (s.rank_batch,), device=s.device, generator=s.noise)

    def to_device(self, batch: dict) -> torch.Tensor:
        """uint8 -> float [0,1] on the device: normalisation runs there, not in the loader."""
        x = batch["image"].to(self.sampling.device, non_blocking=True).float().div_(255.0)
        return x.contiguous(memory_format=self.sampling.memory_format)

    def labels(self, batch: dict) -> torch.Tensor | None:
        return batch["label"].to(self.sampling.device, non_blocking=True) if self.sampling.num_classes else None

    def train_batch(self, batch: dict, total: int) -> None:
        """The step the loop runs: the learning-rate schedule, then the phases due at this step."""
        st, cfg = self.state, self.cfg.train
        real = self.to_device(batch)
        if st.step == 0:
            self.out.tracker.log_images(0, "samples/real", real_grid(real))
        if self.cfg.optim.lr_decay != "none":  # lr, beta2, R1/R2's gamma and the EMA's growth on one curve
            st.curve = set_schedule(self.nets.opt_g, self.nets.opt_d, self.cfg.optim, st.step, total, cfg.batch_size)
        measure = (st.step + 1) % cfg.log_every == 0 or st.step + 1 == total  # gradient norms on log steps
        z, y_fake = self.sample_noise(), self.sample_labels()
        self.gan_step.step(Batch(real, z, self.labels(batch), y_fake, measure), self.gan_step.due(st.step))

    # -- the loop ------------------------------------------------------------------------------------------------
    def train(self) -> TrainState:
        """Runs until the step budget is spent. Raises Preempted (after saving) when a stop was requested."""
        st, per_epoch, total = self.state, self.loader.batches_per_epoch, self.total_steps()
        events = self.schedule(total)
        self.out.tracker.start(total, st.step)
        self.out.tracker.info(
            f"training {total} steps ({per_epoch}/epoch) on {self.acc.num_processes} process(es), global batch "
            f"{self.cfg.train.batch_size}, precision {self.cfg.train.precision}, device {self.sampling.device}"
            + (f"; resuming at step {st.step} (epoch {st.epoch})" if st.step else "")
        )
        self.out.logstep.start(st.step)
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
        if self.out.eval is not None and self.out.eval.last_eval_step != st.step:
            self.out.eval(st.step)  # the final weights are always measured
        return st

    def schedule(self, total: int) -> Schedule:
        """Everything between steps, registered once, in the order it runs after a step."""
        cfg, per_epoch, events, out = self.cfg.train, self.loader.batches_per_epoch, Schedule(), self.out
        if cfg.debug_checks:
            events.on("finite", every(1), out.logstep.check_finite)
        events.on("log", lambda s: s % cfg.log_every == 0 or s == total, out.logstep)
        events.on("progress", every(1), lambda s: out.tracker.advance(s, self.state.epoch))
        events.on("samples", every(cfg.sample_every), lambda s: self.write_samples(f"step{s:07d}"))
        events.on("epoch", every(per_epoch), lambda s: self.end_of_epoch())  # every rank: per_epoch batches
        if out.eval is not None:
            events.on("eval", out.eval.evaluator.should_run, out.eval)
        if out.checkpointer is not None:
            ckpt = out.checkpointer
            events.on("checkpoint", lambda s: ckpt.should_save(s, total), ckpt.save)
            if out.stop is not None:
                stop = out.stop
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
        assert self.out.stop is not None and self.out.checkpointer is not None
        if self.out.stop.agreed():
            raise Preempted(step, self.out.checkpointer.save(step))  # not written twice if just saved

    def _replay(self, batches: Iterator[dict], done: int) -> None:
        """After a mid-epoch resume: read past the `done` batches this epoch already trained on (the stream is
        deterministic), honouring a stop request on the way."""
        stop, ckpt = self.out.stop, self.out.checkpointer
        for i, _ in enumerate(itertools.islice(batches, max(done, 0)), 1):
            if stop is not None and ckpt is not None and i < done and stop.should_check(i) and stop.agreed():
                raise Preempted(self.state.step, ckpt.save(self.state.step))  # the one resumed from: not rewritten

    def total_steps(self) -> int:
        cfg, per_epoch = self.cfg.train, self.loader.batches_per_epoch
        return per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, per_epoch * cfg.epochs)

    # -- between steps -------------------------------------------------------------------------------------------
    def end_of_epoch(self) -> None:
        """The epoch counter, the tutorial's print-out every print_every_epochs, and epoch sample grids."""
        self.state.epoch += 1
        e, lp = self.state.epoch, self.state.last_print
        if e % self.cfg.train.print_every_epochs == 0 and lp:
            g = lp.get("loss_g", float("nan"))  # nan: no G step in the last log interval (train.d_steps)
            self.out.tracker.info(f"Epoch: {e:04d}  D loss: {lp['loss_d']:.4f}  G loss: {g:.4f}")
        if not self.cfg.train.sample_every and e % self.cfg.train.sample_every_epochs == 0:
            self.write_samples(f"epoch{e:04d}")

    def release(self) -> None:
        """After the run: the plain networks in place of the DDP wrappers (dist.end destroys the group next)."""
        self.nets.release()

    def sample_model(self) -> torch.nn.Module:
        return self.nets.sample_model()

    @torch.no_grad()
    def write_samples(self, tag: str) -> None:
        """Rank 0 only writes; every rank computes so no rank idles in a later collective alone."""
        with self.acc.autocast():
            strip, grid = fixed_grids(self.nets.sample_model(), self.sampling.fixed_z, self.sampling.num_classes)
        self.out.tracker.log_images(self.state.step, f"samples/strip_{tag}", strip)
        self.out.tracker.log_images(self.state.step, f"samples/grid_{tag}", grid)

    # -- checkpoint state (registered as "trainer"): the networks' and the counters ------------------------------
    def state_dict(self) -> dict:
        return {
            **self.nets.state_dict(),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "images_seen": self.state.images_seen,
            "batch_size": self.cfg.train.batch_size,
            "batches_per_epoch": self.loader.batches_per_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        check_position(state, self.cfg.train.batch_size, self.loader, self.cfg.data.path)  # counters included
        self.nets.load_state_dict(state, self.cfg)
        self.state.step, self.state.epoch = state["step"], state["epoch"]
        self.state.images_seen = state["images_seen"]
