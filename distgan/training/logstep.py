"""The log step: one reduction of the named statistics, the figures derived from them, and the collective checks
that stop every rank at once (non-finite losses, drifted replicas)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from distgan.dist import params_digest
from distgan.utils.stats import Collected, Stats

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


class TrainingAborted(RuntimeError):
    """Raised on every rank at once when a collective check fails (non-finite loss, drifted replicas)."""


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def nonfinite_ranks(c: Collected) -> list[int]:
    """Ranks whose summed losses are not finite (a NaN or inf anywhere in the interval stays in the sum)."""
    if "loss_d" not in c:
        return []
    bad = ~np.isfinite(c.per_rank("loss_d"))
    if "loss_g" in c:  # absent when no G step fell in the interval (train.d_steps > train.log_every)
        bad |= ~np.isfinite(c.per_rank("loss_g"))
    return [int(r) for r in np.flatnonzero(bad)]


def derived(
    c: Collected,
    extra: dict[str, float],
    *,
    device: torch.device,
    world: int,
    steps: int,
    elapsed: float,
    batch_size: int,
    time_phases: bool,
    log_s: float,
) -> dict[str, float]:
    """What a log step shows, from the collected statistics of the interval: every reported statistic as its
    mean over reports and ranks (unless derived below), then counters, rates, times and totals. `extra`: the
    trainer's epoch, images_seen, lr_g, lr_d (and loss_scale under fp16)."""
    per_step = 1000 / max(1, steps)
    names = sorted((n for n in c.sums if n not in DERIVED), key=lambda n: (n not in FIRST, FIRST.get(n, 0), n))
    m: dict[str, float] = {n: c.mean(n) for n in names}
    m |= {
        "epoch": extra["epoch"],
        "images_seen": extra["images_seen"],
        "img_per_s": steps * batch_size / elapsed,
        "step_time_ms": 1000 * elapsed / max(1, steps),
        "data_wait_frac": c.total("data_wait_s") / world / elapsed,
        "skipped_samples": int(c.total("data/skipped_samples")),
        "lr_g": extra["lr_g"],
        "lr_d": extra["lr_d"],
        "skipped_steps_d": int(c.total("skipped_steps_d") / world),  # the same on every rank
        "skipped_steps_g": int(c.total("skipped_steps_g") / world),
    }
    if "loss_scale" in extra:
        m["loss_scale"] = extra["loss_scale"]
    for k in ("ada_p", "beta2", "gamma_factor"):  # ADA's p, Adam's beta2 and R1/R2's factor at the log step
        if k in extra:
            m[k] = extra[k]
    m["peak_mem_mb"] = peak_memory_mb(device)
    # the previous log call ran inside this interval: its cost per step is logging's share of step time
    m["time_log_ms"] = log_s * per_step
    if time_phases:
        m["time_data_ms"] = c.total("data_wait_s") / world * per_step
        m["time_d_ms"] = c.total("time_d_s") / world * per_step
        m["time_g_ms"] = c.total("time_g_s") / world * per_step
        known = ("time_data_ms", "time_d_ms", "time_g_ms", "time_log_ms")
        m["time_other_ms"] = m["step_time_ms"] - sum(m[k] for k in known)
    return m


@dataclass
class LogStep:
    """The log event: call on all ranks. It owns the interval's clock, so rates cover exactly the steps between
    two log rows; `counters()` adds the trainer's (epoch, images, learning rates, loss scale), `emit` shows the row."""

    acc: Accelerator
    stats: Stats
    group: Any
    """The ranks' CPU group for collecting statistics (None: one process)."""
    batch_size: int
    counters: Callable[[], dict[str, float]]
    emit: Callable[[int, dict[str, float]], None]
    nets: Callable[[], list[nn.Module]]
    """The networks whose replicas debug_checks compares across ranks."""
    time_phases: bool = False
    debug_checks: bool = False
    log_s: float = field(default=0.0, init=False)
    """Duration of the previous log call (logging's own share of the next interval)."""
    t: float = field(default=0.0, init=False)
    step0: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.start(0)

    def start(self, step: int) -> None:
        self.t, self.step0 = time.perf_counter(), step

    def __call__(self, step: int, steps: int | None = None, elapsed: float | None = None) -> None:
        """steps, elapsed: the interval's (default: since the previous row, or the start)."""
        now = time.perf_counter()  # the log call itself counts in the next interval's rate
        steps = step - self.step0 if steps is None else steps
        elapsed = now - self.t if elapsed is None else elapsed
        c = self.stats.collect(self.group)
        bad = nonfinite_ranks(c)
        if bad:
            raise TrainingAborted(f"non-finite loss on rank(s) {bad} before step {step}; lower the lr or use bf16")
        if self.debug_checks:
            self.check_replicas(step)
        m = derived(
            c,
            self.counters(),
            device=self.acc.device,
            world=self.acc.num_processes,
            steps=steps,
            elapsed=elapsed,
            batch_size=self.batch_size,
            time_phases=self.time_phases,
            log_s=self.log_s,
        )
        self.emit(step, m)
        self.log_s = time.perf_counter() - now
        self.t, self.step0 = now, step

    def check_finite(self, step: int) -> None:
        """debug_checks: every step, all ranks agree whether any rank saw a non-finite loss."""
        mine = nonfinite_ranks(self.stats.local())
        flag = self.acc.reduce(torch.tensor([float(bool(mine))], device=self.acc.device), "sum")
        if flag.item() > 0:
            bad = nonfinite_ranks(self.stats.collect(self.group))
            raise TrainingAborted(f"non-finite loss on rank(s) {bad} at step {step}")

    def check_replicas(self, step: int) -> None:
        digests = self.acc.gather(torch.cat([params_digest(n) for n in self.nets()]).to(self.acc.device)[None])
        if not torch.allclose(digests, digests[:1].expand_as(digests), rtol=1e-6, atol=1e-6):
            raise TrainingAborted(f"replicas drifted apart at step {step}: {digests.tolist()}")
