"""Process topology: the Accelerator, thread counts, per-rank seeds and collective decisions.

The only module that reads launcher environment variables.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, TorchDynamoPlugin

from distgan.config import Config, ConfigError
from distgan.utils.draws import stream_seed
from distgan.utils.host import available_memory

T = TypeVar("T")


def user_threads(env: dict[str, str] | None = None, parent_env: bytes | None = None) -> int | None:
    """OMP_NUM_THREADS if the user chose it. `accelerate launch` and torchrun set it to 1 for their processes
    when the user did not (accelerate even for one process), so under a launcher the value counts only if the
    launcher's own environment (this process's parent) held it too. Linux's /proc tells; elsewhere trust it."""
    env = dict(os.environ) if env is None else env
    value = env.get("OMP_NUM_THREADS")
    if value is None or not value.strip().isdigit():
        return None
    launched = "LOCAL_RANK" in env or any(k.startswith("ACCELERATE_") for k in env)
    if launched:
        if parent_env is None:
            try:
                parent_env = Path(f"/proc/{os.getppid()}/environ").read_bytes()
            except OSError:
                parent_env = None
        if parent_env is not None and b"\0OMP_NUM_THREADS=" not in b"\0" + parent_env:
            return None  # the launcher's default, not the user's choice
    return max(1, int(value))


def allotted_cores(env: dict[str, str] | None = None) -> tuple[int, str]:
    """Cores this machine gives the job: the CPU affinity set, capped by what Slurm allotted on this node."""
    env = dict(os.environ) if env is None else env
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = env.get("SLURM_CPUS_ON_NODE", "")
    if slurm.isdigit() and 0 < int(slurm) < cores:
        return int(slurm), "cores Slurm allotted on this node"
    return cores, "cores of this machine"


def set_threads() -> str:
    """Threads per process: the user's OMP_NUM_THREADS, else an equal share of the allotted cores per local
    process (all of them for one process per machine). Returns the choice and why, to print once."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", "1")) or 1)
    user = user_threads()
    if user is not None:
        n, why = user, "OMP_NUM_THREADS"
    else:
        cores, where = allotted_cores()
        n = max(1, cores // max(1, local))
        why = f"{cores} {where} over {local} local process(es); set OMP_NUM_THREADS to choose"
    torch.set_num_threads(n)
    return f"{n} threads/process ({why})"


def memory_bytes(device: torch.device) -> int:
    """Memory a run on `device` can use: the GPU's total, or the host's available memory (Linux's MemAvailable;
    elsewhere total physical memory)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return available_memory() or int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def build_accelerator(cfg: Config) -> Accelerator:
    """Call on all ranks. Fails early on a precision the device cannot honour (the launch's checks of the config
    are configure.check_run's, once the accelerator says how many processes there are)."""
    if cfg.train.precision == "fp16" and not torch.cuda.is_available():
        # Accelerate silently drops fp16 on CPU (no scaler, no autocast); say so instead of training in fp32.
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; on CPU use train.precision=bf16 or no")
    acc = Accelerator(
        # Without cpu=True Accelerate ignores RANK/WORLD_SIZE on a CPU-only machine and every process trains
        # alone as rank 0; with it, several processes form one gloo group.
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.train.precision,
        # prepare() compiles G and D, in train.compile_mode
        dynamo_plugin=TorchDynamoPlugin(backend="inductor" if cfg.train.compile else "no", mode=cfg.train.compile_mode),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.dist_timeout_s))],
    )
    return acc


def end(acc: Accelerator, *holders: Any) -> None:
    """Call on all ranks, last: drop what still holds the process group, then destroy it while the interpreter
    is whole. destroy_process_group alone leaves a gloo group alive while a DDP module (Accelerate keeps the
    prepared ones; the trainer its wrappers: `holders` with a release()) references it, and a group destroyed
    during interpreter finalisation can abort the process ('terminate called without an active exception':
    its work objects hold tensors whose release needs the GIL, pytorch/pytorch#179291)."""
    for h in holders:
        h.release()
    acc.free_memory()
    gc.collect()
    acc.end_training()


def rank_generator(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """Noise stream of one rank: ranks draw different noise, reproducibly."""
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, "noise", rank))
    return g


def seed_all(seed: int, rank: int) -> None:
    torch.manual_seed(stream_seed(seed, "init", rank))


def cpu_group(acc: Accelerator) -> dist.ProcessGroup | None:
    """Call on all ranks: a CPU (gloo) group for small host-side agreements. Gloo already on CPU; on GPUs a
    gloo group beside NCCL, so agreeing on a flag never waits for the GPU to catch up."""
    if acc.num_processes == 1:
        return None
    return dist.new_group(backend="gloo") if acc.device.type == "cuda" else dist.group.WORLD


def params_digest(module: torch.nn.Module) -> torch.Tensor:
    """A cheap fingerprint of parameters and float buffers (BN statistics, spectral-norm vectors), for checking
    that replicas have not drifted."""
    tensors = [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]
    return torch.stack([t.detach().double().sum() for t in tensors]).sum()[None]


def on_main_then_all(acc: Accelerator, fn: Callable[[], T]) -> T:
    """Call on all ranks: fn runs on rank 0 only; its result, or the ConfigError it raised (of the same class,
    with the same message), reaches every rank, so a refusal on rank 0 stops every rank instead of leaving them
    waiting in a later collective."""
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    if acc.is_main_process:
        try:
            box = [(None, fn())]
        except ConfigError as exc:
            box = [(type(exc), str(exc))]
    if acc.num_processes > 1:
        broadcast_object_list(box)
    error, value = box[0]
    if error is not None:
        raise error(value)
    return value


class StopFlag:
    """Set by SIGUSR1, SIGTERM and Ctrl-C (SIGINT); acted on collectively by the trainer, which checkpoints and
    stops. Repeated USR1/TERM only set it again; a second Ctrl-C (a second press, not the copy a launcher
    forwards within a second of the first) stops at once, without a checkpoint."""

    REPEAT_S = 1.0

    def __init__(self) -> None:
        self.requested = False
        self.signal = ""
        self.first_int = 0.0

    def install(self, signals: tuple[int, ...] = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)) -> StopFlag:
        for sig in signals:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            now = time.monotonic()
            if self.first_int and now - self.first_int > self.REPEAT_S:
                raise KeyboardInterrupt  # the second Ctrl-C: stop now
            self.first_int = self.first_int or now
        self.requested = True
        self.signal = self.signal if self.signal == "SIGINT" else name

    @property
    def interrupted(self) -> bool:
        return self.signal == "SIGINT"


class StopAgreement:
    """Whether any rank was asked to stop, decided by all ranks at the same steps (every `every` steps).

    The flag travels through a CPU group: a reduce on the GPU followed by .item() would stall the host until
    the GPU caught up, every `every` steps.
    """

    def __init__(self, flag: StopFlag | None, every: int, group: dist.ProcessGroup | None, world: int) -> None:
        self.flag, self.every, self.group, self.world = flag, every, group, world

    def should_check(self, step: int) -> bool:
        return self.flag is not None and step % self.every == 0

    def agreed(self) -> bool:
        """Call on all ranks."""
        requested = bool(self.flag and self.flag.requested)
        if self.world == 1:
            return requested
        t = torch.tensor([float(requested)])
        dist.all_reduce(t, group=self.group)
        return bool(t.item() > 0)


class CrossRankBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch: every rank's sums are all-reduced.

    Written here because torch.nn.SyncBatchNorm accepts only GPU tensors ("SyncBatchNorm expected input tensor
    to be on GPU"), and the CPU gloo ranks the tests run must compute what one process does. Two passes (mean,
    then mean squared deviation) as in BatchNorm itself; the all-reduces are autograd functions, so the backward
    all-reduces the gradient sums the way SyncBatchNorm's does. Same parameters and buffers as BatchNorm2d:
    checkpoints and exported generators do not know the difference.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        local = torch.cat([xf.sum((0, 2, 3)), xf.new_tensor([x.numel() // x.shape[1]])])
        total = all_reduce(local)
        n = total[-1]
        mean = total[:-1] / n
        centred = xf - mean[None, :, None, None]
        var = all_reduce(centred.square().sum((0, 2, 3))) / n
        rm, rv, nb = self.running_mean, self.running_var, self.num_batches_tracked
        if self.track_running_stats and rm is not None and rv is not None and nb is not None:
            with torch.no_grad():
                nb.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(nb)
                rm.lerp_(mean.detach(), m)
                rv.lerp_(var.detach() * n / (n - 1).clamp(min=1), m)  # unbiased, as BatchNorm keeps it
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Swaps every BatchNorm2d for one with global-batch statistics: PyTorch's SyncBatchNorm on GPUs (fused
    kernels), CrossRankBatchNorm2d elsewhere. Call before Accelerate wraps the module; state dicts unchanged."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            new = CrossRankBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            # the same Parameter and buffer objects, as convert_sync_batchnorm keeps them: the optimizer was built
            # on G before the swap, and copies would leave BN's affine weights out of every update
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(new, buf, getattr(child, buf))
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module
