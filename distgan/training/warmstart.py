"""Starting from what you have: `train.init_from` (another run's weights, any data) and `model.d_freeze` (FreezeD).

init_from takes G, D and G's EMA from a checkpoint folder (`state.pt`), a run's `final/` folder
(G/D/G_ema.safetensors), an export folder (generator.safetensors: G only, D starts fresh) or an official
StyleGAN2-ADA network pickle (read as data by distgan/run/weights.py); optimizers,
counters, schedules and augmentation start fresh (StyleGAN3's --resume on new data). Every tensor must match
by name and shape, except those named by `train.init_skip` (fnmatch patterns), which keep their fresh
initialisation: a changed class count, say. A resume of this run's own checkpoint always wins over init_from.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import torch
from torch import nn

from distgan.config import Config, ConfigError
from distgan.run.weights import read_weights


def copy_weights(net: nn.Module, source: dict[str, torch.Tensor], skip: list[str], name: str, path: Path) -> int:
    """Copies every matching tensor; refuses, naming them, tensors missing or of another shape unless skipped.
    Returns how many tensors were taken."""
    own = net.state_dict()
    skipped = {k for k in own if any(fnmatch.fnmatch(k, p) for p in skip)}
    missing = [k for k in own if k not in source and k not in skipped]
    shapes = [
        f"{k} {tuple(source[k].shape)} -> {tuple(v.shape)}"
        for k, v in own.items()
        if k in source and k not in skipped and source[k].shape != v.shape
    ]
    if missing or shapes:
        raise ConfigError(
            f"train.init_from={path}: {name} does not fit this model: "
            + "; ".join(
                ([f"missing {', '.join(missing[:8])}"] if missing else [])
                + ([f"other shapes {', '.join(shapes[:8])}"] if shapes else [])
            )
            + ". Keep the model settings of the source run, or name the tensors to leave freshly initialised "
            "in train.init_skip (patterns, e.g. ['*embed*'] for a new class count)"
        )
    taken = {k: v for k, v in source.items() if k in own and k not in skipped}
    net.load_state_dict({**own, **taken})
    return len(taken)


def init_from(cfg: Config, G: nn.Module, D: nn.Module) -> tuple[str, dict[str, torch.Tensor] | None]:
    """Loads G and D (before Accelerate wraps them); returns a line for the log and the source's EMA weights
    (for the trainer's EMA, which is built from G afterwards)."""
    path = Path(cfg.train.init_from)
    weights = read_weights(path)
    skip = list(cfg.train.init_skip)
    g = weights["G"]
    assert g is not None
    n = copy_weights(G, g, skip, "G", path)
    d = weights["D"]
    n_d = copy_weights(D, d, skip, "D", path) if d is not None else 0
    ema = weights["G_ema"]
    line = (
        f"initialised from {path}: G {n} tensors, D "
        + (f"{n_d} tensors" if d is not None else "fresh (not in the source)")
        + (", G_ema from the source" if ema is not None else ", G_ema from G")
    )
    return line, ema


def init_ema(cfg: Config, ema_model: nn.Module, ema: dict[str, torch.Tensor] | None) -> None:
    """The source's EMA weights into the trainer's EMA (built as a copy of the initialised G)."""
    if ema is not None:
        copy_weights(ema_model, ema, list(cfg.train.init_skip), "G_ema", Path(cfg.train.init_from))


def d_blocks(D: nn.Module) -> list[nn.Module]:
    """D's blocks from the input side (FreezeD counts them so): each family's D lists its own."""
    blocks = getattr(D, "input_blocks", None)
    if blocks is None:
        raise TypeError(f"{type(D).__name__} has no input_blocks(): FreezeD cannot count its blocks")
    return list(blocks())


def freeze_d(D: nn.Module, n: int) -> list[str]:
    """model.d_freeze: D's first n blocks stop training (FreezeD, Mo et al. 2020); returns their parameter names."""
    if n == 0:
        return []
    blocks = d_blocks(D)
    if n >= len(blocks):
        raise ConfigError(
            f"model.d_freeze={n}: this D has {len(blocks)} blocks; freeze fewer so that some of D still trains"
        )
    frozen = {id(p) for b in blocks[:n] for p in b.parameters()}
    names = [k for k, p in D.named_parameters() if id(p) in frozen]
    for p in D.parameters():
        if id(p) in frozen:
            p.requires_grad_(False)
    return names
