"""Pull generators out of runs: sample grids or arrays from a checkpoint, export G for plain PyTorch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distgan.checkpoint import read_checkpoint, strip_prefixes
from distgan.config import ConfigError, ModelConfig
from distgan.files import atomic_path, save_weights, write_json
from distgan.models import build_generator, noise_dim


def load_generator(ckpt: Path, ema: bool | None = None, state: dict | None = None) -> tuple[nn.Module, bool]:
    """G from a checkpoint folder (or its already read state); the EMA weights when present unless ema=False.
    Returns (G, used_ema)."""
    state = state if state is not None else read_checkpoint(ckpt)
    nets = state["objects"]["trainer"]
    if ema and not nets.get("G_ema"):
        raise ConfigError(f"{ckpt} holds no EMA generator (trained with train.ema_kimg=0); use --no-ema")
    use_ema = bool(nets.get("G_ema")) if ema is None else ema
    G = build_generator(ModelConfig(**state["config"]["model"]))
    G.load_state_dict(strip_prefixes(nets["G_ema"] if use_ema else nets["G"]))
    return G.eval(), use_ema


@torch.no_grad()
def sample(G: nn.Module, n: int, seed: int) -> np.ndarray:
    """n images as uint8 (N, H, W) or (N, H, W, C), reproducible from the seed."""
    z = torch.randn(n, noise_dim(G), generator=torch.Generator().manual_seed(seed))
    x = G(z).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def write_npz(images: np.ndarray, out: Path) -> None:
    with atomic_path(out) as tmp:
        np.savez_compressed(tmp, x=images)


def export(G: nn.Module, cfg_model: dict, out: Path) -> tuple[Path, Path]:
    """generator.safetensors + generator.json: enough to rebuild G with torch.nn alone (see README)."""
    weights, spec = out / "generator.safetensors", out / "generator.json"
    if cfg_model.get("arch", "mlp") != "mlp":
        raise ConfigError(f"export describes the mlp family only; this generator is {cfg_model['arch']!r}")
    save_weights(weights, G.state_dict())
    info = {
        "architecture": "mlp",
        "noise_dim": cfg_model["noise_dim"],
        "hidden": list(cfg_model["g_hidden"]),
        "activation": cfg_model["activation"],
        "output": "sigmoid, values in [0, 1]",
        "image_shape": list(cfg_model["image_shape"]),
        "layers": [f"net.{2 * i}" for i in range(len(cfg_model["g_hidden"]) + 1)],
        "out_features": math.prod(cfg_model["image_shape"]),
    }
    write_json(spec, info)
    return weights, spec
