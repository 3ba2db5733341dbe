"""Checkpoints that survive crashes, preemption, corruption and a change of world size.

Written by hand rather than with `accelerator.save_state`: that one deletes old folders before the new one is
complete, loads the highest-numbered folder even if it is half-written, and does not restore its iteration
counter (so the next save can fail with "already exists"). Here a checkpoint is a folder `step-000001200/`:
`state.pt` (rank 0: the registered shared objects), `rng-rank{r}.pt` (every rank: its per-rank objects) and a
`COMPLETE` marker holding the step, the world size and the sha256 of every file. It is written as
`step-000001200.tmp/` and renamed only when complete; only complete, intact folders are loaded or counted.

Objects with state are registered by name (`register(name, obj)`, torchtitan's Stateful pattern), all of them in
one loop of training/build.py from the names they carry: the checkpointer never reads a trainer's fields. Everything
is loaded with `weights_only=True`: a checkpoint is data, never code (the reading side, shared with warm start and
the samplers: distgan/run/checkpoint_read.py).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator

from distgan.config import CkptConfig, Config, changed_keys
from distgan.configure import config_from_dict
from distgan.dist import on_main_then_all
from distgan.models import shape_keys, warn_keys
from distgan.run.checkpoint_read import (
    complete_checkpoints,
    load_data,
    read_checkpoint,
    read_marker,
    step_of,
    verify,
)
from distgan.run.errors import CheckpointError
from distgan.utils.files import fsync_dir, save_torch, sha256_file, write_text

log = logging.getLogger("distgan")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Value:
    """A plain state registered as is, under a name (an imported network's weights, a test's state)."""

    def __init__(self, value: dict[str, Any], state_name: str = "trainer") -> None:
        self.value, self.state_name = value, state_name

    def state_dict(self) -> dict[str, Any]:
        return self.value

    def load_state_dict(self, value: dict[str, Any]) -> None:
        self.value = value


class RngState:
    """This rank's random streams (noise generator, torch, numpy, python) as tensors and plain numbers."""

    state_name, state_per_rank = "rng", True

    def __init__(self, noise: torch.Generator) -> None:
        self.noise = noise

    def state_dict(self) -> dict[str, Any]:
        np_state: tuple[Any, ...] = tuple(np.random.get_state())
        _, keys, pos, has_gauss, gauss = np_state
        version, py_state, py_gauss = random.getstate()
        state: dict[str, Any] = {
            "noise": self.noise.get_state(),
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": {
                "version": version,
                "state": torch.tensor(py_state, dtype=torch.int64),
                "gauss": py_gauss,
            },
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise.set_state(state["noise"])
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
        p = state["python"]
        random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


@dataclass
class _Entry:
    obj: Stateful
    per_rank: bool
    legacy: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    run_bound: bool = False


class Checkpointer:
    """Call save/find_resume/load on all ranks; rank 0 writes the shared objects, every rank its own."""

    def __init__(
        self,
        cfg: CkptConfig,
        folder: Path,
        acc: Accelerator,
        config: dict[str, Any],
        classes: list[str] | None = None,
    ) -> None:
        """config: the run's resolved config, stored beside the objects (sample/eval rebuild from it); classes:
        the data's class names in label order (so `distgan sample --class NAME` works without the data)."""
        self.cfg, self.acc, self.folder, self.config = cfg, acc, Path(folder), config
        self.classes = list(classes or [])
        self.objects: dict[str, _Entry] = {}
        self.last_step = -1  # the step of the newest checkpoint written or loaded: never written twice
        self.last_path: Path | None = None

    def register(
        self,
        name: str,
        obj: Stateful,
        per_rank: bool = False,
        legacy: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
        run_bound: bool = False,
    ) -> None:
        """legacy: for a checkpoint written before `name` had its own state, derives it from the other shared
        objects (None: start from the object's initial state). run_bound: state that belongs to the run that
        wrote it (its tracker runs): restored only from this run's own checkpoints; from another run's (a branch,
        `ckpt.resume=runs/A/...`) the object's `branch_from(state, path)` gets it instead, when it has one."""
        self.objects[name] = _Entry(obj, per_rank, legacy, run_bound)

    def should_save(self, step: int, total: int) -> bool:
        """A periodic checkpoint is due (the final one is saved by the caller)."""
        return bool(self.cfg.every) and step % self.cfg.every == 0 and step < total

    # -- writing -------------------------------------------------------------------------------------------
    def save(self, step: int, name: str = "") -> Path:
        """Call on all ranks. Atomic: the folder appears under its final name only when complete.

        name: a fixed folder name (`best`) instead of step-N; such folders are neither resumed from nor pruned.
        A step already saved (or resumed from) is not written again: a second write of the same folder would
        need a rename dance that a stop can interrupt.
        """
        acc = self.acc
        final = self.folder / (name or f"step-{step:09d}")
        if not name and step == self.last_step and self.last_path is not None:
            return self.last_path  # the same decision on every rank: last_step is set identically everywhere
        tmp = self.folder / f"{final.name}.tmp"
        if acc.is_main_process:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash
            tmp.mkdir()
        acc.wait_for_everyone()
        mine = {k: e.obj.state_dict() for k, e in self.objects.items() if e.per_rank}
        save_torch(tmp / f"rng-rank{acc.process_index}.pt", mine)
        if acc.is_main_process:
            shared = {k: e.obj.state_dict() for k, e in self.objects.items() if not e.per_rank}
            state = {
                "step": step,
                "world": acc.num_processes,
                "config": self.config,
                "objects": shared,
                "classes": self.classes,
            }
            save_torch(tmp / "state.pt", state)
        acc.wait_for_everyone()
        if acc.is_main_process:
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if not p.name.startswith(".")}
            marker = {"step": step, "world": acc.num_processes, "files": files}
            write_text(tmp / "COMPLETE", json.dumps(marker, indent=1) + "\n")
            fsync_dir(tmp)
            self._publish(tmp, final)
            fsync_dir(self.folder)
            self.prune(step if not name else self.last_step)
        if not name:
            self.last_step, self.last_path = step, final
        acc.wait_for_everyone()
        return final

    @staticmethod
    def _publish(tmp: Path, final: Path) -> None:
        """tmp -> final; an existing final (only `best`) stays whole until the new one has its name."""
        if not final.exists():
            tmp.rename(final)
            return
        old = final.with_name(f"{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)

    def prune(self, upto: int) -> None:
        """Keeps the newest ckpt.keep of this run's line: steps up to the one just written. A higher step in
        the folder is not this run's (another writer's, or an old run's) and is neither counted nor removed."""
        done = [p for p in complete_checkpoints(self.folder) if (step_of(p) or 0) <= upto]
        for old in done[: max(0, len(done) - self.cfg.keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def clean(self) -> None:
        """Rank 0, before a resume scan: what a crash between the renames of `_publish` left. A `NAME.old`
        whose NAME is gone is the last good copy and gets its name back; other temporaries are removed."""
        if not self.folder.is_dir():
            return
        for old in self.folder.glob("*.old"):
            final = old.with_name(old.name[: -len(".old")])
            if not final.exists() and (old / "COMPLETE").is_file():
                old.rename(final)
            else:
                shutil.rmtree(old, ignore_errors=True)
        for tmp in self.folder.glob("*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)

    # -- reading -------------------------------------------------------------------------------------------
    def find_resume(self) -> Path | None:
        """Call on all ranks. What `ckpt.resume` points at: None, the newest intact checkpoint, or a given
        folder (refused, naming the file, when it is not intact). Rank 0 decides and has verified the answer's
        checksums; every rank gets the answer (read it with `read_checkpoint(path, verified=True)`)."""
        choice = on_main_then_all(self.acc, self._choose)
        return Path(choice) if choice else None

    def _choose(self) -> str | None:
        resume = self.cfg.resume
        if not resume:
            return None
        if resume != "auto":
            problem = verify(Path(resume))
            if problem:
                raise CheckpointError(f"ckpt.resume={resume!r}: {problem}")
            return resume
        self.clean()
        found = complete_checkpoints(self.folder)
        for path in reversed(found):
            problem = verify(path)
            if problem is None and not read_marker(path)["files"]:  # no checksums (older marker): try it
                try:
                    read_checkpoint(path)
                except CheckpointError as exc:
                    problem = str(exc)
            if problem is None:
                return str(path)
            log.warning("skipping checkpoint %s: %s; trying an older one", path, problem)
        if found:
            raise CheckpointError(
                f"no intact checkpoint in {self.folder} (tried {', '.join(p.name for p in found)}); "
                "start fresh with ckpt.resume='' or another train.run_name"
            )
        return None

    def load(self, path: Path, state: dict[str, Any] | None = None) -> None:
        """Call on all ranks. Restores every registered object (from `state` when already read); per-rank
        ones only under the same world size."""
        state = state if state is not None else read_checkpoint(path)
        shared = state["objects"]
        branch = Path(path).resolve().parent != self.folder.resolve()  # another run's checkpoint
        for name, entry in self.objects.items():
            if entry.per_rank:
                continue
            mine = shared.get(name)
            if entry.run_bound and branch:
                hook = getattr(entry.obj, "branch_from", None)
                if hook is not None and mine is not None:
                    hook(mine, Path(path))
                continue
            if mine is None and entry.legacy is not None:
                mine = entry.legacy(shared)
                if mine is None:
                    continue
            if mine is None:
                raise CheckpointError(f"{path / 'state.pt'} has no {name!r} state")
            _restore(entry.obj, mine, f"{path / 'state.pt'}: its {name!r} state")
        self._load_rank(path, state)
        self.last_step, self.last_path = int(state.get("step", -1)), Path(path)

    def _load_rank(self, path: Path, state: dict[str, Any]) -> None:
        """This rank's own objects (its random streams), when the checkpoint's world size is this run's."""
        world = state.get("world")
        rng_file = path / f"rng-rank{self.acc.process_index}.pt"
        per_rank = [e for e in self.objects.values() if e.per_rank]
        if per_rank and world == self.acc.num_processes and rng_file.is_file() and not state.get("legacy"):
            mine = load_data(rng_file)
            for name, entry in self.objects.items():
                if entry.per_rank and name in mine:
                    entry.obj.load_state_dict(mine[name])
        elif per_rank:
            if state.get("legacy"):
                why = "it was written by an older distgan, whose random-state files are not read"
            elif world != self.acc.num_processes:
                why = f"it was written by {world} process(es) and this run has {self.acc.num_processes}"
            else:
                why = f"{rng_file.name} is missing from it"
            log.warning(
                "checkpoint %s: %s; weights and optimizer state restored, random streams re-seeded "
                "(the continuation is valid but not bit-identical)",
                path,
                why,
            )


def _restore(obj: Stateful, state: dict[str, Any], where: str) -> None:
    """obj.load_state_dict(state), what does not fit named in one CheckpointError line."""
    try:
        obj.load_state_dict(state)
    except (KeyError, TypeError, AttributeError) as exc:  # another version's, or an edited file
        raise CheckpointError(
            f"{where} lacks or mangles {exc}; resume from another checkpoint, or start fresh with ckpt.resume=''"
        ) from exc
    except RuntimeError as exc:  # load_state_dict: layers this version names otherwise
        lines = str(exc).splitlines()
        if len(lines) == 1:  # the one-line account of networks.load_net, with its cause
            raise CheckpointError(f"{where}: {exc}") from exc
        raise CheckpointError(
            f"{where} does not fit this version's networks "
            f"({'; '.join(line.strip()[:200] for line in lines[1:4])}); "
            "resume with the distgan that wrote it, or start fresh with ckpt.resume=''"
        ) from exc


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
    "model.d_freeze",
    "model.d_pack",
)
"""Config keys whose change makes saved weights (or D's optimizer state: model.d_freeze) unusable; each family adds
its own (Family.shape_keys: model.<family>.*)."""
WARN_KEYS = (
    "model.activation",
    "train.loss",
    "train.d_steps",
    "train.r1_gamma",
    "train.r2_gamma",
    "train.augment",
    "model.sync_bn",
    "train.ema_kimg",
    "train.precision",
    "optim.lr_g",
    "optim.lr_d",
    "optim.betas",
    "optim.eps",
    "model.mbstd_group",
    "train.pl_weight",
    "train.style_mixing",
)
"""Config keys a resume accepts but a user should hear about: they change what the same weights compute or
how they move on (an EMA switched off drops the saved average)."""


def check_resumable(saved: dict, cfg: Config) -> None:
    """Refuses a checkpoint whose weights do not fit the model; warns, naming the keys, on other changes.
    Keys the checkpoint's config predates count as their defaults (what that run used)."""
    saved = config_from_dict(saved).to_dict()
    current = cfg.to_dict()
    bad = changed_keys(saved, current, SHAPE_KEYS + shape_keys(cfg.model))
    if bad:
        raise CheckpointError(
            "the checkpoint does not fit this config: "
            + "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, a, b in bad)
        )
    changed = changed_keys(saved, current, WARN_KEYS + warn_keys(cfg.model))
    if changed:
        log.warning(
            "resuming with changed settings (the run goes on with the new values): %s",
            "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, a, b in changed),
        )


def check_position(state: dict, batch_size: int, loader: Any, data_path: str) -> None:
    """The data position is counted in batches of an epoch: it means the same only under the same global
    batch and the same dataset size. Anything else is refused before a single batch is replayed, and so are
    counters that are no whole numbers (an edited file must not resume into a traceback)."""
    for key in ("step", "epoch", "images_seen"):
        if type(state.get(key)) is not int or state[key] < 0:
            raise CheckpointError(
                f"its trainer counter {key}={state.get(key)!r} is not a whole number >= 0; resume from another "
                "checkpoint, or start fresh with ckpt.resume=''"
            )
    batch, per_epoch = state.get("batch_size"), state.get("batches_per_epoch")
    if batch != batch_size:
        raise CheckpointError(
            f"the checkpoint was trained with train.batch_size={batch}, this run has "
            f"train.batch_size={batch_size}: its position in the data (step {state['step']}, "
            f"epoch {state['epoch']}) is counted in batches of {batch}. Resume with train.batch_size={batch}, "
            "or start a new run (another train.run_name, or ckpt.resume='') with the new batch"
        )
    if per_epoch is not None and per_epoch != loader.batches_per_epoch:
        raise CheckpointError(
            f"the checkpoint's data had {per_epoch} batches per epoch, data.path={data_path!r} now "
            f"gives {loader.batches_per_epoch} ({loader.dataset.samples} samples): the dataset "
            "changed. Resume on the same data, or start a new run (another train.run_name)"
        )
