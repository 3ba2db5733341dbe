"""Runs a few training steps under a real launcher and dumps what tests compare.

usage: steps.py MODE OUT [key=value ...]
  trajectory  k steps on a deterministic global batch (each rank takes its slice); dumps params, optimizer
              states and DDP all-reduce counts per rank
  nan         rank 1's D returns NaN from its 3rd call on; the job must stop on every rank
  epoch       iterates one epoch of data.path with the real loader; dumps each rank's sample indices
  average     each rank accumulates different losses; rank 0's tracker writes the logged (averaged) metrics
  cases       OUT holds cases.json ({name: [key=value, ...]}): a trajectory per case, one after another in this
              one launch, dumped to OUT/NAME/rank{r}.pt (the launch tests compare many configs per launch:
              a launch costs three interpreters and their torch imports)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from distgan.configure import load_config  # noqa: E402
from distgan.data.loader import Loader  # noqa: E402
from distgan.dist import build_accelerator, end, set_threads  # noqa: E402
from distgan.run.tracking import NullTracker, setup_logging  # noqa: E402
from distgan.training.build import build_trainer  # noqa: E402
from distgan.training.stylegan import StyleTraining  # noqa: E402
from tests.helpers.shards import shards_for  # noqa: E402


class NaNAfter(nn.Module):
    def __init__(self, inner: nn.Module, calls: int) -> None:
        super().__init__()
        self.inner, self.calls, self.n = inner, calls, 0

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.n += 1
        out = self.inner(x, y)
        return out * float("nan") if self.n >= self.calls else out


def global_batch(step: int, n: int, noise_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randn(n, noise_dim, generator=g)


def global_labels(step: int, n: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5000 + step)
    return torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (n,), generator=g)


def own_loader(cfg: Any, acc: Any, out: Path) -> Loader:
    """A real loader over synthetic shards of the model's shape (this rank's own copy): trajectories feed their
    own global batches, but a trainer always reads a loader."""
    shards = shards_for(
        cfg.model.image_shape, max(2 * cfg.train.batch_size, 200), out / f"shards-rank{acc.process_index}"
    )
    data = dataclasses.replace(cfg.data, path=str(shards))
    return Loader(data, cfg.train.batch_size, acc.process_index, acc.num_processes, 0, cfg.model.image_shape)


BASE = ["model.g_hidden=[32]", "model.d_hidden=[32]", "model.noise_dim=16"]


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    cfg = load_config(None, [*BASE, *sys.argv[3:]])
    set_threads()
    acc = build_accelerator(cfg)
    setup_logging(acc.process_index, False)
    if mode == "cases":  # every case on this one accelerator (all in fp32 without compile, as the tests ask)
        import json

        for name, overrides in json.loads((out / "cases.json").read_text()).items():
            trajectory(load_config(None, [*BASE, *overrides]), acc, out / name)
        acc.wait_for_everyone()
        end(acc)
        return
    if mode == "epoch":
        loader = Loader(cfg.data, cfg.train.batch_size, acc.process_index, acc.num_processes, 0, cfg.model.image_shape)
        index = [b["index"] for b in loader.epoch(0)]
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"index": torch.stack(index), "batches": len(index)}, out / f"rank{acc.process_index}.pt")
        acc.wait_for_everyone()
        end(acc)
        return
    if mode == "average":
        from distgan.run.tracking import RunTracker

        out.mkdir(parents=True, exist_ok=True)
        tracker = RunTracker(cfg, out) if acc.is_main_process else NullTracker()
        trainer = build_trainer(cfg, acc, own_loader(cfg, acc, out), tracker, init_seed=cfg.train.seed)
        r = acc.process_index
        for _ in range(4):  # rank r reports loss_d = 1 + r, loss_g = 10 * (r + 1), D(x) = 0.2 + 0.4 r
            for name, v in (
                ("loss_d", 1.0 + r),
                ("loss_g", 10.0 * (r + 1)),
                ("d_real", 0.2 + 0.4 * r),
                ("d_fake", 0.1),
            ):
                trainer.stats.report(name, torch.tensor(v))
            trainer.stats.report("steps", 1)
        if r == 1:  # a name only this rank reports (what the loader does when it skipped bad data)
            trainer.stats.report("data/skipped_samples", 7.0)
        else:  # a new metric is one report() call: it is logged by name with no other change
            trainer.stats.report("d_accuracy", torch.tensor(0.9))
        trainer.out.logstep(4, 4, 1.0)
        tracker.close()
        acc.wait_for_everyone()
        end(acc, trainer)
        return
    if mode == "nan":  # rank 1's D returns NaN from its 3rd call on
        wrap = (lambda D: NaNAfter(D, 3)) if acc.process_index == 1 else None
        loader = Loader(cfg.data, cfg.train.batch_size, acc.process_index, acc.num_processes, 0, cfg.model.image_shape)
        build_trainer(cfg, acc, loader, init_seed=cfg.train.seed, wrap_d=wrap).train()
        return
    trajectory(cfg, acc, out)
    end(acc)


def watch_noise_gradients(trainer: Any) -> dict[str, torch.Tensor]:
    """By parameter name, the elements whose gradient was float noise at some optimizer step (not zero, but below
    NO_SIGNAL of its tensor's largest): Adam turns noise into lr-sized steps, so the comparisons leave them out
    (tests/helpers/compare.py says why; filled in as the steps run)."""
    from tests.helpers.compare import NO_SIGNAL

    seen: dict[str, torch.Tensor] = {}
    for n, m, opt in (("G", trainer.G_plain, trainer.opt_g), ("D", trainer.D_plain, trainer.opt_d)):
        names = {p: f"{n}.{k}" for k, p in m.named_parameters()}

        def hook(optimizer: Any, args: Any, kwargs: Any, names: dict = names) -> None:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None and p in names:
                        g = p.grad.detach().abs()
                        noise = (g > 0) & (g <= NO_SIGNAL * g.max())  # an exact 0 moves nothing in Adam
                        k = names[p]
                        seen[k] = seen[k] | noise if k in seen else noise

        opt.optimizer.register_step_pre_hook(hook)
    return seen


def trajectory(cfg: Any, acc: Any, out: Path) -> None:
    """k steps on deterministic global batches, each rank its slice; dumps what the launch tests compare."""
    # identical initial weights on every rank (DDP would broadcast rank 0's anyway)
    trainer = build_trainer(cfg, acc, own_loader(cfg, acc, out), init_seed=cfg.train.seed)
    calls = {"G": 0, "D": 0}
    if acc.num_processes > 1:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting(name: str):
            def hook(state, bucket):
                calls[name] += 1
                return allreduce_hook(state, bucket)

            return hook

        trainer.G.register_comm_hook(None, counting("G"))
        trainer.D.register_comm_hook(None, counting("D"))
    init = {
        f"{n}.{k}": v.detach().clone().cpu()
        for n, m in (("G", trainer.G_plain), ("D", trainer.D_plain))
        for k, v in m.state_dict().items()
    }
    no_signal = watch_noise_gradients(trainer)
    b, r = trainer.sampling.rank_batch, acc.process_index
    style = trainer.part(StyleTraining)
    augment = next(p for p in trainer.gan_step.parts if p.state_name == "augment")
    steps = int(cfg.train.max_steps or 5)
    t, k = cfg.train, cfg.model.num_classes
    for step in range(steps):
        real, z = global_batch(step, t.batch_size, cfg.model.noise_dim)
        mine = slice(r * b, (r + 1) * b)
        y_real, y_fake = (y[mine] for y in global_labels(step, t.batch_size, k)) if k else (None, None)
        trainer.train_step(
            real[mine].to(acc.device),
            z[mine].to(acc.device),
            y_real,
            y_fake,
            g_step=(step + 1) % t.d_steps == 0,  # as the loop schedules them
            r1=t.r1_gamma > 0 and step % t.r1_every == 0,
            pl=style is not None and ((step + 1) // t.d_steps - 1) % t.pl_every == 0,
        )
    dump = {
        "init": init,
        "G": {k: v.cpu() for k, v in acc.unwrap_model(trainer.G).state_dict().items()},
        "D": {k: v.cpu() for k, v in acc.unwrap_model(trainer.D).state_dict().items()},
        "opt_g": trainer.opt_g.state_dict(),
        "opt_d": trainer.opt_d.state_dict(),
        "calls": calls,
        "no_signal": {k: v.cpu() for k, v in no_signal.items()},
        "G_ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "steps": steps,
        "world": acc.num_processes,
        "augment": augment.state_dict(),
        "stylegan": style.state_dict() if style is not None else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(dump, out / f"rank{r}.pt")
    trainer.release()  # the next case (or dist.end) must not find this one's DDP wrappers holding the group


if __name__ == "__main__":
    main()
