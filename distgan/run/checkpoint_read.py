"""Reading checkpoint folders: which are complete and intact, and their state as data (`weights_only=True`).

The one reader of checkpoint folders, for resume (`Checkpointer.find_resume`) and, through run/weights.py (which
also reads final/, export folders and StyleGAN2-ADA pickles), for warm start and `distgan sample`, `export`, `eval`.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from distgan.run.errors import CheckpointError, MarkerError
from distgan.utils.files import sha256_file

PREFIXES = ("module.", "_orig_mod.")
STEP_DIR = re.compile(r"^step-(\d+)$")


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


def step_of(path: Path) -> int | None:
    """N for a folder named exactly `step-N`; None for anything else (`.tmp`, `.old`, `best`)."""
    m = STEP_DIR.match(path.name)
    return int(m.group(1)) if m else None


def complete_checkpoints(folder: Path) -> list[Path]:
    """`step-N` folders with a COMPLETE marker, oldest first; temporaries and other names are ignored."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if step_of(p) is not None and (p / "COMPLETE").is_file()]
    return sorted(found, key=lambda p: step_of(p) or 0)


def read_marker(path: Path) -> dict[str, Any]:
    """The COMPLETE marker: {"step", "world", "files": {name: sha256}}; markers of older versions hold only
    `step N` and carry no checksums. Anything else (garbage, another JSON shape, bad bytes) is a MarkerError."""
    marker_path = path / "COMPLETE"
    try:
        text = marker_path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MarkerError(f"{marker_path} is unreadable ({exc})") from exc
    try:
        marker = json.loads(text)
    except ValueError:
        words = text.split()
        if len(words) == 2 and words[0] == "step" and words[1].isdigit():
            return {"step": int(words[1]), "files": {}}
        raise MarkerError(f"{marker_path} is damaged (neither JSON nor `step N`)") from None
    files = marker.get("files") if isinstance(marker, dict) else None
    if (
        not isinstance(files, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        or not all("/" not in k and k not in (".", "..") for k in files)
    ):
        raise MarkerError(f"{marker_path} is damaged (not a checkpoint marker: no 'files' of name: sha256)")
    return marker


def verify(path: Path) -> str | None:
    """None if every file the marker lists is there with its checksum; else what is wrong, naming the file."""
    if not (path / "COMPLETE").is_file():
        return f"{path} is not a complete checkpoint folder (no COMPLETE marker)"
    try:
        files = read_marker(path)["files"]
    except MarkerError as exc:
        return str(exc)
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            return f"{f} is missing"
        if sha256_file(f) != digest:
            return f"{f} is corrupt (its sha256 differs from the one recorded in COMPLETE)"
    return None


def load_data(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True: tensors and plain data; anything that would run code is refused."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain data, so it was refused unread: a checkpoint is "
            f"data, never code. Do not use a checkpoint you did not write ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable ({str(exc).splitlines()[0]})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a distgan checkpoint's dict")
    return obj


def read_checkpoint(path: Path, verified: bool = False) -> dict[str, Any]:
    """A checkpoint folder's shared state (weights, counters, config): checked, then read as data.

    The one reader of state.pt, for resuming, `distgan sample`, `export` and `eval`. verified: the folder's
    checksums were just checked (by `Checkpointer.find_resume`), so they are not read and hashed again.
    """
    path = Path(path)
    if not path.exists():  # a mistyped path, often of a .pkl: say so, not "not a checkpoint folder"
        raise CheckpointError(
            f"{path} does not exist; give a checkpoint folder (RUN_DIR/checkpoints/step-...) or a StyleGAN2-ADA "
            ".pkl that exists"
        )
    if not (path / "state.pt").is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder (no state.pt); use RUN_DIR/checkpoints/step-...")
    problem = None if verified else verify(path)
    if problem:
        raise CheckpointError(problem)
    state = load_data(path / "state.pt")
    if "objects" not in state and "G" in state and "config" in state:
        state = _from_legacy(state)
    for key in ("config", "objects"):
        if key not in state:
            raise CheckpointError(f"{path / 'state.pt'} has no {key!r}: not written by this version of distgan")
    return state


def _from_legacy(state: dict[str, Any]) -> dict[str, Any]:
    """A state.pt of distgan before registered objects (one flat dict): the same content, re-filed. Its RNG
    files pickled numpy objects and are not read (the streams are re-seeded, with a warning)."""
    trainer = {k: v for k, v in state.items() if k not in ("config", "wandb_id", "world")}
    trainer.setdefault("batch_size", state["config"].get("train", {}).get("batch_size"))
    trainer.setdefault("best_metric", state["config"].get("eval", {}).get("best_metric"))
    return {
        "step": state.get("step", -1),
        "world": state.get("world"),
        "config": state["config"],
        "objects": {"trainer": trainer, "tracker": {"wandb_id": state.get("wandb_id", "")}},
        "legacy": True,
    }
