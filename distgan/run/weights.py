"""The one reader of a run's weights from wherever a user points: a checkpoint folder (state.pt), an official
StyleGAN2-ADA network pickle (read as data, stylegan2_ada.py), a run's final/ folder (G/D/G_ema.safetensors) or an
export folder (generator.safetensors). `distgan sample`, `export`, `eval` and `train.init_from` read through it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distgan.config import ConfigError
from distgan.run.checkpoint_read import read_checkpoint, strip_prefixes
from distgan.run.errors import CheckpointError
from distgan.run.stylegan2_ada import import_state, is_pickle

Nets = dict[str, dict[str, torch.Tensor] | None]
"""{"G": ..., "D": ... or None, "G_ema": ... or None}, wrapper prefixes off."""


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint folder's state, or a StyleGAN2-ADA pickle read as data into the same state."""
    return import_state(Path(path)) if is_pickle(Path(path)) else read_checkpoint(path)


def trainer_weights(state: dict[str, Any], path: Path) -> Nets:
    """G, D and G_ema (None where absent) of a read checkpoint: the weights a run's checkpoint holds."""
    nets = state["objects"].get("trainer")
    if not isinstance(nets, dict) or not isinstance(nets.get("G"), dict):
        raise CheckpointError(
            f"{path}: its state.pt holds no generator weights ('trainer'.'G'); not a run's checkpoint"
        )
    return {k: strip_prefixes(nets[k]) if nets.get(k) else None for k in ("G", "D", "G_ema")}


def read_weights(path: Path, key: str = "train.init_from") -> Nets:
    """The networks of any source a user names (`key` is the setting or flag that named it, for messages)."""
    from safetensors.torch import load_file

    if not path.exists():
        raise ConfigError(
            f"{key}={path}: does not exist; give a checkpoint, final/ or export folder, or a StyleGAN2-ADA .pkl "
            "that exists"
        )
    if (path / "state.pt").is_file() or is_pickle(path):
        return trainer_weights(read_state(path), path)
    if (path / "G.safetensors").is_file():
        # strip_prefixes: final/ of a train.compile run before 564fb0e holds `_orig_mod.` keys
        return {
            k: strip_prefixes(load_file(path / f"{k}.safetensors")) if (path / f"{k}.safetensors").is_file() else None
            for k in ("G", "D", "G_ema")
        }
    if (path / "generator.safetensors").is_file():
        return {"G": load_file(path / "generator.safetensors"), "D": None, "G_ema": None}
    raise ConfigError(
        f"{key}={path}: not a checkpoint folder (state.pt), a run's final/ folder (G.safetensors), an export folder "
        "(generator.safetensors) or a StyleGAN2-ADA network pickle (.pkl)"
    )
