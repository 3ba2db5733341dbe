"""Pull generators out of runs: sample grids or arrays from a checkpoint, export G for plain PyTorch."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distgan.config import ConfigError, ModelConfig
from distgan.configure import config_from_dict
from distgan.models import FAMILIES, build_generator, noise_dim, num_classes
from distgan.run.errors import CheckpointError
from distgan.run.weights import read_state, trainer_weights
from distgan.utils.files import atomic_path, save_weights, write_json


def load_generator(ckpt: Path, ema: bool | None = None, state: dict | None = None) -> tuple[nn.Module, bool]:
    """G from a checkpoint folder (or its already read state); the EMA weights when present unless ema=False.
    Returns (G, used_ema)."""
    state = state if state is not None else read_state(ckpt)
    nets = trainer_weights(state, ckpt)
    if ema and nets["G_ema"] is None:
        raise ConfigError(f"{ckpt} holds no EMA generator (trained with train.ema_kimg=0); use --no-ema")
    use_ema = nets["G_ema"] is not None if ema is None else ema
    model = saved_model_config(state, ckpt)
    weights = nets["G_ema"] if use_ema else nets["G"]
    assert weights is not None  # G always, G_ema checked above
    # shapes first, on the meta device: an edited config (noise_dim=10**7) must not allocate its network
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in build_generator(model).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
    if want != got:
        odd = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        shown = ", ".join(f"{k}: config {want.get(k)}, weights {got.get(k)}" for k in odd[:3])
        raise CheckpointError(
            f"{ckpt}: the generator weights do not fit its own config ({shown}); the checkpoint is damaged or "
            "was edited"
        )
    G = build_generator(model)
    try:
        G.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{ckpt}: the generator weights do not fit its own config ({str(exc).splitlines()[0]}); the "
            "checkpoint is damaged or was edited"
        ) from exc
    return G.eval(), use_ema


def saved_model_config(state: dict, ckpt: Path) -> ModelConfig:
    """The model section of a checkpoint's config, read like a resume reads it: keys another version added
    are dropped with a warning, keys it lacks take their defaults; a bad value is named."""
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{ckpt}: its state.pt has no config mapping")
    try:
        return config_from_dict(state["config"]).model
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt}: its saved config is not usable here ({exc})") from exc


def class_index(name: str, classes: list[str], k: int) -> int:
    """--class as a class name (the data's folder name, stored in the checkpoint) or, failing that, an index."""
    if name in classes:
        return classes.index(name)
    if name.lstrip("-").isdigit():
        return int(name)
    shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
    raise ConfigError(
        f"--class {name!r}: not a class of this model ({shown or f'indices 0..{k - 1}'}); give a name or an index"
    )


def labels_for(G: nn.Module, n: int, cls: int | None) -> torch.Tensor | None:
    """Classes for n samples of a conditional G: all `cls`, or 0, 1, ..., K-1, 0, ... when not given."""
    k = num_classes(G)
    if cls is not None and not k:
        raise ConfigError(f"--class {cls}: this generator is unconditional (trained with model.num_classes=0)")
    if cls is not None and not 0 <= cls < k:
        raise ConfigError(f"--class {cls}: this generator knows classes 0..{k - 1}")
    if not k:
        return None
    return torch.full((n,), cls) if cls is not None else torch.arange(n) % k


def sample(G: nn.Module, n: int, seed: int, cls: int | None = None) -> np.ndarray:
    """n images as uint8 (N, H, W) or (N, H, W, C), reproducible from the seed; `cls` for a conditional G."""
    return to_uint8(generate(G, latents(G, n, seed), labels_for(G, n, cls)))


def latents(G: nn.Module, n: int, seed: int, z_file: Path | None = None) -> torch.Tensor:
    """The latents to sample: those of `z_file` (--z), else n standard normal ones from the seed."""
    if z_file is not None:
        return read_z(z_file, G)
    return torch.randn(n, noise_dim(G), generator=torch.Generator().manual_seed(seed))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """G's (N, C, H, W) output in [0, 1] as uint8 (N, H, W) or (N, H, W, C)."""
    out = x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out[..., 0] if out.shape[-1] == 1 else out


def read_z(path: Path, G: nn.Module) -> torch.Tensor:
    """--z FILE: the latents to sample, (N, noise_dim) numbers (what the reference's generate.py users keep to
    reproduce an image): a .npy, or the .npz that `sample --format npz` writes (its `z`). Checked finite after
    the cast to float32, the dtype G gets: 1e300 in a float64 file is inf there."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                if "z" not in loaded.files:
                    raise ConfigError(
                        f"--z {path}: an .npz without a 'z' array (it has {', '.join(loaded.files) or 'none'}); give "
                        "a .npy of latents or an .npz that `distgan sample --format npz` wrote"
                    )
                z = loaded["z"]
        else:
            z = loaded
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"--z {path}: not a readable .npy or .npz array ({exc})") from exc
    if z.ndim != 2 or z.shape[1] != noise_dim(G) or z.dtype.kind not in "fiu" or not len(z):
        raise ConfigError(
            f"--z {path}: an array of shape {z.shape} ({z.dtype}); this G takes (N, {noise_dim(G)}) numbers"
        )
    with np.errstate(over="ignore"):
        z32 = z.astype(np.float32)
    if not np.isfinite(z32).all():
        raise ConfigError(
            f"--z {path}: holds NaN or infinite values, or values beyond float32's range (±3.4e38) that G's "
            "float32 input would turn into inf"
        )
    return torch.from_numpy(z32)


@torch.no_grad()
def generate(
    G: nn.Module, z: torch.Tensor, y: torch.Tensor | None, noise: str = "const", seed: int = 0
) -> torch.Tensor:
    """G's float output for these latents. noise (stylegan2, the reference's noise_mode): const, the fixed
    per-layer noise; random, drawn from `seed`; none, zero."""
    return next(generate_batches(G, z, y, noise, seed, batch=max(1, len(z))))


GENERATE_BATCH = 256
"""Latents per forward of `generate_batches`: memory for G's activations stays that of 256 images, whatever N."""


@torch.no_grad()
def generate_batches(
    G: nn.Module,
    z: torch.Tensor,
    y: torch.Tensor | None,
    noise: str = "const",
    seed: int = 0,
    batch: int = 0,
) -> Iterator[torch.Tensor]:
    """G's float output for z in batches of `batch` latents (default GENERATE_BATCH), in order (random layer
    noise drawn batch by batch from one stream seeded by `seed`)."""
    from distgan.models.stylegan2 import Generator as StyleGenerator

    if noise != "const" and not isinstance(G, StyleGenerator):
        raise ConfigError(f"--noise {noise}: per-layer noise is stylegan2's (model.arch=stylegan2)")
    gen = torch.Generator().manual_seed(seed + 1)  # not z's stream
    batch = batch or GENERATE_BATCH
    for i in range(0, len(z), batch):
        zb, yb = z[i : i + batch], (y[i : i + batch] if y is not None else None)
        if noise == "const" or not isinstance(G, StyleGenerator):
            yield G(zb, yb)
            continue
        maps = [
            torch.randn(len(zb), *s, generator=gen) if noise == "random" else torch.zeros(len(zb), *s)
            for s in G.noise_shapes()
        ]
        yield G(zb, yb, noise=maps)


def set_truncation(G: nn.Module, psi: float, cutoff: int | None = None, recompute: bool = False) -> str:
    """StyleGAN2 truncation: w pulled towards G's mean w by psi (1 = none), in the first `cutoff` layers only
    when given (the reference's truncation_cutoff). The centre is G's own w_avg: tracked during training
    (train.w_avg_beta) or imported from a StyleGAN2-ADA pickle; computed from 10,000 seeded latents only when
    `recompute` or when G never tracked one (all zeros: checkpoints from before tracking). Returns where the
    centre came from. Other families have no w: refused by name."""
    from distgan.models.stylegan2 import Generator as StyleGenerator
    from distgan.models.stylegan2 import update_w_avg

    if psi == 1.0 and cutoff is None and not recompute:
        if isinstance(G, StyleGenerator):
            G.truncation, G.truncation_cutoff = 1.0, None
        return "none"
    if not isinstance(G, StyleGenerator):
        given = [f"--trunc {psi}"] if psi != 1.0 else []
        given += [f"--trunc-cutoff {cutoff}"] if cutoff is not None else []
        given += ["--recompute-w-avg"] if recompute else []
        raise ConfigError(
            f"{' '.join(given)}: truncation needs a stylegan2 generator (model.arch=stylegan2), which has a w to "
            "pull towards its mean; this one has none"
        )
    if not 0 <= psi <= 1:
        raise ConfigError(f"--trunc {psi}: give psi in [0, 1] (1 = no truncation, 0.7 is StyleGAN's usual)")
    if cutoff is not None and not 1 <= cutoff <= G.num_ws:
        raise ConfigError(f"--trunc-cutoff {cutoff}: give a layer count in 1..{G.num_ws} (this G has {G.num_ws} ws)")
    source = "the model's tracked w_avg (training's w_avg_beta, or the imported pickle's)"
    if recompute or not bool(G.mapping.w_avg.any()):
        update_w_avg(G)
        source = "mean w of 10,000 latents (seed 0)"
    G.truncation, G.truncation_cutoff = psi, cutoff
    G.w_avg_source = source  # type: ignore[assignment]
    return source


def _style_gen(G: nn.Module, what: str) -> nn.Module:
    from distgan.models.stylegan2 import Generator as StyleGenerator

    if not isinstance(G, StyleGenerator):
        raise ConfigError(f"--{what}: needs a stylegan2 generator (model.arch=stylegan2), which has styles")
    return G


@torch.no_grad()
def mixing_grid(G: nn.Module, n: int, seed: int, cls: int | None = None) -> np.ndarray:
    """StyleGAN's style-mixing figure: n sources across the top, n destinations down the left, and in the
    cells each destination with its coarse styles (the first half of the layers) taken from the source."""
    from distgan.utils.grids import image_grid

    S = _style_gen(G, "mixing")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * n, noise_dim(S), generator=g)
    y = labels_for(S, 2 * n, cls)
    ws = S.styles(z, y)  # type: ignore[operator]
    src, dst = ws[:n], ws[n:]
    cut = S.num_ws // 2  # type: ignore[operator]
    cells = [torch.cat([src[j : j + 1, :cut], dst[i : i + 1, cut:]], 1) for i in range(n) for j in range(n)]
    imgs = S.synthesis(torch.cat([src, dst, *cells]))  # type: ignore[operator]
    blank = torch.zeros_like(imgs[:1])
    rows = [torch.cat([blank, imgs[:n]])]
    for i in range(n):
        rows.append(torch.cat([imgs[n + i : n + i + 1], imgs[2 * n + i * n : 2 * n + (i + 1) * n]]))
    return image_grid(torch.cat(rows), nrow=n + 1)


@torch.no_grad()
def interpolation(G: nn.Module, frames: int, seed: int, cls: int | None = None, keys: int = 2) -> torch.Tensor:
    """(frames, C, H, W): a walk in w, linear between `keys` seeded latents' w, ends included."""
    S = _style_gen(G, "interp")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(keys, noise_dim(S), generator=g)
    ws = S.styles(z, labels_for(S, keys, cls if cls is not None else (0 if num_classes(S) else None)))  # type: ignore[operator]
    t = torch.linspace(0, keys - 1, frames)
    i = t.floor().long().clamp(max=keys - 2)
    frac = (t - i)[:, None, None]
    return S.synthesis(ws[i] * (1 - frac) + ws[i + 1] * frac).clamp(0, 1)  # type: ignore[operator]


def save_gif(frames: torch.Tensor, out: Path, ms: int = 80) -> Path:
    """An animated GIF, there and back (the ends shown once), atomically."""
    from PIL import Image

    x = frames.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    seq = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in [*x, *x[-2:0:-1]]]
    with atomic_path(out) as tmp:
        seq[0].save(tmp, format="GIF", save_all=True, append_images=seq[1:], duration=ms, loop=0)
    return out


def real_grid(real: torch.Tensor) -> np.ndarray:
    """The first 64 real images of a batch, 8 wide: what a run logs once as samples/real."""
    from distgan.utils.grids import image_grid

    return image_grid(real[:64], nrow=8)


@torch.no_grad()
def fixed_grids(G: nn.Module, fixed_z: torch.Tensor, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The run's sample images from its fixed noise, as (1x10 strip, 8-wide grid) images: for a conditional G
    the strip cycles through the classes and the grid has one row per class (at most 16), the same 8 noise
    vectors in every row. Call under the run's autocast."""
    from distgan.utils.grids import image_grid

    was_training = G.training
    G.eval()
    z, y = fixed_z, None
    if classes:
        rows = min(classes, 16)
        z = torch.cat([fixed_z[:10], fixed_z[:8].repeat(rows, 1)])
        y = torch.cat([torch.arange(10) % classes, torch.arange(rows).repeat_interleave(8)]).to(fixed_z.device)
    images = G(z, y).float()
    G.train(was_training)
    strip, grid = (images[:10], images[10:]) if classes else (images[:10], images)
    return image_grid(strip, nrow=10), image_grid(grid, nrow=8)


def write_npz(images: np.ndarray, out: Path, **extra: np.ndarray) -> Path:
    """Written to exactly `out` (numpy would append .npz to a name without it, behind the temporary's back)."""
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        arrays: dict[str, Any] = {"x": images, **extra}
        np.savez_compressed(fh, **arrays)
    return out


def export_program(G: nn.Module, path: Path) -> Path:
    """G as a torch.export program (generator.pt2): `torch.export.load(path).module()(z[, y])` runs it with
    PyTorch alone, for any batch size, with no distgan and no model code."""
    G = G.eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    z = torch.randn(2, noise_dim(G))
    if num_classes(G):
        program = torch.export.export(G, (z, torch.zeros(2, dtype=torch.long)), dynamic_shapes=({0: batch}, {0: batch}))
    else:
        program = torch.export.export(G, (z,), dynamic_shapes=({0: batch},))
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp)
    return path


def export(G: nn.Module, cfg_model: dict, out: Path) -> tuple[Path, Path, Path]:
    """generator.pt2 (a torch.export program), generator.safetensors and generator.json (what G is and how to
    call it). The mlp is also simple enough to rebuild from the JSON with torch.nn (docs/training.md)."""
    weights, spec, program = out / "generator.safetensors", out / "generator.json", out / "generator.pt2"
    export_program(G, program)
    save_weights(weights, G.state_dict())
    arch = cfg_model.get("arch", "mlp")
    usage = "torch.export.load('generator.pt2').module()(z" + (", y)" if num_classes(G) else ")")
    if arch != "mlp":
        write_json(
            spec,
            {
                "architecture": arch,
                "noise_dim": cfg_model["noise_dim"],
                "num_classes": num_classes(G),
                "image_shape": list(cfg_model["image_shape"]),
                "output": FAMILIES[arch].output + ", shape (N, C, H, W)",
                "inputs": "z: float32 (N, noise_dim) standard normal"
                + ("; y: int64 (N,) classes" if num_classes(G) else ""),
                "program": program.name,
                "usage": usage,
                "model": cfg_model,
                **(
                    {
                        "truncation": {
                            "psi": float(getattr(G, "truncation", 1.0)),
                            "cutoff": getattr(G, "truncation_cutoff", None),
                            "w_avg": getattr(G, "w_avg_source", "the model's tracked w_avg")
                            + ", stored in the program and the weights (mapping.w_avg)",
                        }
                    }
                    if hasattr(G, "truncation")  # a generator with styles (stylegan2)
                    else {}
                ),
            },
        )
        return program, weights, spec
    info = {
        "architecture": "mlp",
        "noise_dim": cfg_model["noise_dim"],
        "hidden": list(cfg_model["g_hidden"]),
        "activation": cfg_model["activation"],
        "output": FAMILIES["mlp"].output,
        "image_shape": list(cfg_model["image_shape"]),
        "layers": [f"net.{2 * i}" for i in range(len(cfg_model["g_hidden"]) + 1)],
        "out_features": math.prod(cfg_model["image_shape"]),
        "program": program.name,
        "usage": usage,
    }
    write_json(spec, info)
    return program, weights, spec
