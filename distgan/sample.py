"""Pull generators out of runs: sample grids or arrays from a checkpoint, export G for plain PyTorch."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from distgan.checkpoint import strip_prefixes
from distgan.config import ConfigError, ModelConfig
from distgan.models import Generator


def read_checkpoint(ckpt: Path) -> dict:
    """A checkpoint folder's state.pt (weights, counters, config), refused with a hint if it is not one."""
    path = ckpt / "state.pt"
    if not path.is_file():
        raise ConfigError(
            f"{ckpt} is not a checkpoint folder (no state.pt); use RUN_DIR/checkpoints/step-..."
        )
    return torch.load(path, map_location="cpu", weights_only=False)


def load_generator(ckpt: Path, ema: bool | None = None, state: dict | None = None) -> tuple[Generator, bool]:
    """G from a checkpoint folder (or its already read state); the EMA weights when present unless ema=False.
    Returns (G, used_ema)."""
    state = state if state is not None else read_checkpoint(ckpt)
    if ema and not state.get("G_ema"):
        raise ConfigError(f"{ckpt} holds no EMA generator (trained with train.ema_kimg=0); use --no-ema")
    use_ema = bool(state.get("G_ema")) if ema is None else ema
    G = Generator(ModelConfig(**state["config"]["model"]))
    G.load_state_dict(strip_prefixes(state["G_ema"] if use_ema else state["G"]))
    return G.eval(), use_ema


@torch.no_grad()
def sample(G: Generator, n: int, seed: int) -> np.ndarray:
    """n images as uint8 (N, H, W) or (N, H, W, C), reproducible from the seed."""
    z = torch.randn(n, G.noise_dim, generator=torch.Generator().manual_seed(seed))
    x = G(z).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def write_npz(images: np.ndarray, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez_compressed(tmp, x=images)
    os.replace(tmp, out)


def export(G: Generator, cfg_model: dict, out: Path) -> tuple[Path, Path]:
    """generator.safetensors + generator.json: enough to rebuild G with torch.nn alone (see README)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    weights, spec = out / "generator.safetensors", out / "generator.json"
    tmp = out / ".generator.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(tmp))
    os.replace(tmp, weights)
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
    spec.write_text(json.dumps(info, indent=1) + "\n")
    return weights, spec
