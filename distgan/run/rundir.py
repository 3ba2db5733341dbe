"""A run directory has one writer, and a fresh start never mixes with the run that was there before.

The lock is an OS lock (flock) on RUN_DIR/.lock, held by rank 0 for the life of its process: it dies with the
process however it ends (kill -9 included), so there is no stale lock to clear by hand. The file itself holds
who holds it (host, pid, time), for the message a second writer gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from distgan.config import ConfigError, UserError

LOCK = ".lock"
PREVIOUS = ".previous"
KEEP = {LOCK, PREVIOUS, "sweep.log"}  # the sweep driver's log of this point is written before the run starts
"""What stays in place when an old run is set aside."""


class RunBusyError(UserError):
    """Another process writes this run directory; the message names it."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["time"]))
        return f"pid {info['pid']} on {info['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class RunLock:
    """Rank 0's exclusive hold on a run directory (and on a checkpoint folder outside it)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK
        self.fd: int | None = None  # open until the process ends: closing it would drop the lock

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunBusyError(
                f"{self.path.parent} is being written by {_holder(self.path)}: one run directory has one writer. "
                "Wait for it to end (or stop it), or choose another train.run_name"
            ) from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode() + b"\n", 0)
        self.fd = fd
        return self


def held_by(folder: Path) -> str:
    """'' when nobody holds folder's lock, else who does (for the sweep driver, which must not start a point
    whose run is still being written)."""
    path = Path(folder) / LOCK
    if not path.is_file():
        return ""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder(path)
    finally:
        os.close(fd)
    return ""


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    """What a run wrote into its checkpoint folder (step-N, their temporaries, best)."""
    if not ckpt_dir.is_dir():
        return []
    return [p for p in ckpt_dir.iterdir() if p.name.startswith("step-") or p.name == "best"]


def has_run(run_dir: Path, ckpt_dir: Path) -> bool:
    """Whether a run wrote here before (metrics, status, samples, checkpoints)."""
    if run_dir.is_dir() and any(p.name not in KEEP for p in run_dir.iterdir()):
        return True
    return bool(_checkpoints(ckpt_dir))


def set_aside(run_dir: Path, ckpt_dir: Path) -> Path | None:
    """Rank 0, on a fresh start where a run was before: its files move to RUN_DIR/.previous/STAMP/ (never
    deleted), so the new run's metrics, checkpoints and pruning see only the new run. Returns that folder."""
    if not has_run(run_dir, ckpt_dir):
        return None
    dest = run_dir / PREVIOUS / time.strftime("%Y%m%d-%H%M%S")
    while dest.exists():
        dest = dest.with_name(dest.name + "x")
    dest.mkdir(parents=True)
    for p in list(run_dir.iterdir()) if run_dir.is_dir() else []:
        if p.name not in KEEP:
            os.replace(p, dest / p.name)
    for p in _checkpoints(ckpt_dir):  # a ckpt.dir outside the run directory (one inside has just moved)
        (dest / "checkpoints-elsewhere").mkdir(exist_ok=True)
        shutil.move(str(p), dest / "checkpoints-elsewhere" / p.name)
    return dest


def resume_target(out_dir: Path, preset: str, given: str, ckpt_dir: str = "") -> Path:
    """The run directory `--resume` continues: `given` (resolved: `--resume .` from inside a run directory names
    it), or with "latest" the newest run of this preset under out_dir that did not finish and has a complete
    checkpoint (what StyleGAN2-ADA users know as --resume). A run's checkpoints are where its ckpt.dir put them:
    `ckpt_dir` (this command's ckpt.dir), else the ckpt.dir of the run's own config.yaml, else RUN_DIR/checkpoints."""
    from distgan.run.checkpoint_read import complete_checkpoints

    if given != "latest":
        run_dir = Path(given).resolve()
        if not run_dir.is_dir():
            raise ConfigError(f"--resume {given}: no such run directory")
        folder = checkpoint_folder(run_dir, ckpt_dir)
        if not complete_checkpoints(folder):
            raise ConfigError(
                f"--resume {given}: {folder} holds no complete checkpoint (step-*/COMPLETE); "
                + (
                    "give the ckpt.dir the run wrote to"
                    if folder == run_dir / "checkpoints"
                    else "is this ckpt.dir the run's?"
                )
            )
        return run_dir
    found = []
    for run_dir in Path(out_dir).resolve().iterdir() if Path(out_dir).is_dir() else []:
        state, when = _status(run_dir / "status.json")
        if (
            state != "finished"
            and _saved(run_dir, "name") == preset
            and complete_checkpoints(checkpoint_folder(run_dir, ckpt_dir))
        ):
            found.append((when, run_dir))
    if not found:
        raise ConfigError(
            f"--resume: no unfinished run of {preset!r} with a checkpoint in {out_dir}; name one with --resume RUN_DIR"
        )
    return max(found)[1]


def checkpoint_folder(run_dir: Path, ckpt_dir: str = "") -> Path:
    """Where a run's checkpoints are: the given ckpt.dir, else its config.yaml's, else RUN_DIR/checkpoints."""
    return Path(ckpt_dir or _saved(run_dir, "ckpt", "dir") or run_dir / "checkpoints")


def _status(path: Path) -> tuple[str, float]:
    try:
        info = json.loads(path.read_text())
        return str(info.get("state", "")), float(info.get("time", 0.0))
    except (OSError, ValueError, AttributeError, TypeError):
        return "", 0.0


def _saved(run_dir: Path, *key: str) -> str:
    """A value of the run's config.yaml (`name`; `ckpt`, `dir`), '' when absent or unreadable."""
    from omegaconf import DictConfig, OmegaConf

    node: Any
    try:
        node = OmegaConf.load(run_dir / "config.yaml")
        for k in key:
            node = node.get(k) if isinstance(node, DictConfig) else None
    except Exception:
        return ""
    return "" if node is None or isinstance(node, DictConfig) else str(node)
