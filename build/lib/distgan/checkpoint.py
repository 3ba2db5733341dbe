"""Checkpoints that survive crashes, preemption and a change of world size.

Written by hand rather than with `accelerator.save_state`: that one deletes old folders before the new one is
complete, loads the highest-numbered folder even if it is half-written, and does not restore its iteration
counter (so the next save can fail with "already exists"). Here a checkpoint is a folder
`step-000001200/` holding `state.pt` (rank 0: G, D, optimizers, scaler, counters, config, wandb id),
`rng-rank{r}.pt` (every rank) and a `COMPLETE` marker; it is written as `step-000001200.tmp/` and renamed
only when complete, and only complete folders are ever loaded or counted for pruning.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from distgan.config import Config, ConfigError

log = logging.getLogger("distgan")
PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DDP / torch.compile wrapper prefixes off, so a 2-rank checkpoint loads in 1 process and the reverse."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k] = v
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def incompatible_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Config keys whose change makes the saved weights unusable (the model's shape)."""
    a, b = _flatten(saved.get("model", {}), "model."), _flatten(current.get("model", {}), "model.")
    shape_keys = ("model.noise_dim", "model.g_hidden", "model.d_hidden", "model.image_shape")
    return [f"{k}: checkpoint {a.get(k)!r} vs now {b.get(k)!r}" for k in shape_keys if a.get(k) != b.get(k)]


def complete_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.glob("step-*")
        if p.is_dir() and not p.name.endswith(".tmp") and (p / "COMPLETE").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state(noise: torch.Generator) -> dict[str, Any]:
    state = {
        "noise": noise.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any], noise: torch.Generator) -> None:
    noise.set_state(state["noise"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpointer:
    """Call save/load on all ranks; rank 0 writes the shared state, every rank its RNG."""

    def __init__(self, cfg: Config, run_dir: Path, acc: Accelerator) -> None:
        self.cfg, self.acc, self.run_dir = cfg, acc, run_dir
        self.folder = Path(cfg.ckpt.dir) if cfg.ckpt.dir else run_dir / "checkpoints"

    def find_resume(self) -> Path | None:
        """What `ckpt.resume` points at: None, the newest complete checkpoint, or a given folder."""
        resume = self.cfg.ckpt.resume
        if not resume:
            return None
        if resume == "auto":
            found = complete_checkpoints(self.folder)
            return found[-1] if found else None
        path = Path(resume)
        if not (path / "COMPLETE").is_file():
            raise ConfigError(
                f"ckpt.resume={resume!r} is not a complete checkpoint folder (no COMPLETE marker)"
            )
        return path

    def save(self, trainer: Any, name: str = "") -> Path:
        """Call on all ranks. Atomic: the folder appears under its final name only when complete.

        name: a fixed folder name (`best`) instead of step-N; such folders are neither resumed from nor pruned.
        """
        acc, step = self.acc, trainer.state.step
        final = self.folder / (name or f"step-{step:09d}")
        tmp = self.folder / f"{final.name}.tmp"
        if acc.is_main_process:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash
            tmp.mkdir()
        acc.wait_for_everyone()
        _atomic_save(rng_state(trainer.noise), tmp / f"rng-rank{acc.process_index}.pt")
        if acc.is_main_process:
            state = trainer.state_dict()
            id_file = self.run_dir / "wandb_id"
            state["wandb_id"] = id_file.read_text().strip() if id_file.is_file() else ""
            _atomic_save(state, tmp / "state.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "COMPLETE").write_text(f"step {step}\n")
            _fsync_dir(tmp)
            if final.exists():  # a newer best, or the same step saved again after a resume
                old = final.with_name(f"{final.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)  # the previous folder stays whole until the new one has its name
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.folder)
            self.prune()
        acc.wait_for_everyone()
        return final

    def prune(self) -> None:
        done = complete_checkpoints(self.folder)
        for old in done[: max(0, len(done) - self.cfg.ckpt.keep)]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in [*self.folder.glob("step-*.tmp"), *self.folder.glob("*.old")]:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)

    def read(self, path: Path) -> dict[str, Any]:
        """The saved state, refused with the differing keys when the model's shape changed."""
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        bad = incompatible_keys(state["config"], self.cfg.to_dict())
        if bad:
            raise ConfigError(f"checkpoint {path} does not fit this config: " + "; ".join(bad))
        return state

    def load(self, trainer: Any, path: Path, state: dict[str, Any] | None = None) -> None:
        """Call on all ranks. Restores weights, optimizers, scaler, counters and (same world size) RNG."""
        state = state if state is not None else self.read(path)
        trainer.load_state_dict(state)
        rng_file = path / f"rng-rank{self.acc.process_index}.pt"
        if state.get("world") == self.acc.num_processes and rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=False), trainer.noise)
        else:
            log.warning(
                "checkpoint %s was written by %s process(es), this run has %s: weights and optimizer state "
                "restored, noise streams re-seeded (the continuation is valid but not bit-identical)",
                path,
                state.get("world"),
                self.acc.num_processes,
            )
