"""`distgan sample` and `distgan export`: a checkpoint's generator as images, arrays or a portable program."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distgan.cli.common import _progress, console, error


def cmd_sample(args: argparse.Namespace) -> int:
    import math

    import torch

    from distgan.config import UserError
    from distgan.models import num_classes
    from distgan.run.sample import (
        class_index,
        labels_for,
        latents,
        load_generator,
        set_truncation,
        write_npz,
    )
    from distgan.run.weights import read_state
    from distgan.utils.grids import save_png

    if args.n < 1:
        error(f"--n {args.n}: give the number of samples to draw, at least 1")
        return 2

    out = Path(args.out)
    if out.is_dir():
        error(f"--out {out} is a folder; give a file name (e.g. {out / 'samples.png'})")
        return 2
    try:
        state = read_state(Path(args.ckpt))
        G, used_ema = load_generator(Path(args.ckpt), args.ema, state)
        cls = None if args.cls is None else class_index(args.cls, list(state.get("classes") or []), num_classes(G))
        centre = set_truncation(G, args.trunc, args.trunc_cutoff, args.recompute_w_avg)
        if args.mixing or args.interp:
            return _style_figure(G, args, cls, out)
        if args.float and args.format != "npz":
            raise UserError("--float keeps G's float output, which only an .npz holds: add --format npz")
        z = latents(G, args.n, args.seed, Path(args.z) if args.z else None)
        args.n = len(z)
        y = labels_for(G, args.n, cls)
        # uint8 images as PNGs hold them; with --float, G's float output (N, C, H, W) as is (2 x - 1 is the
        # reference's [-1, 1] image)
        images = _generate_all(G, z, y, args.noise, args.seed, args.float)
    except UserError as exc:
        error(f"{exc}")
        return 2
    if args.format == "npz":  # beside the z and y that made them
        extra = {"z": z.numpy(), **({"y": y.numpy()} if y is not None else {})}
        write_npz(images, out, **extra)
    else:
        from distgan.utils.grids import image_grid

        x = torch.from_numpy(images).float().div(255)
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        k, nrow = num_classes(G), math.ceil(math.sqrt(args.n))
        if k and args.cls is None:  # sample i has class i mod k: one row per class (short rows padded black)
            nrow = math.ceil(args.n / k)
            x = torch.cat([torch.cat([x[c::k], x.new_zeros(nrow - len(x[c::k]), *x.shape[1:])]) for c in range(k)])
        save_png(image_grid(x, nrow=nrow), out)
    which = (f", class {args.cls}" if args.cls is not None else "") + (
        f", truncation {args.trunc} towards {centre}" if args.trunc != 1 else ""
    )
    console.print(f"wrote {args.n} samples ({'EMA' if used_ema else 'raw'} G, seed {args.seed}{which}) to {out}")
    return 0


def _generate_all(G: Any, z: Any, y: Any, noise: str, seed: int, floats: bool) -> Any:
    """Every sample, G run on GENERATE_BATCH latents at a time (memory for its activations independent of N; the
    output array is the one thing that grows), with a progress bar when there is more than one batch."""
    import contextlib

    import numpy as np

    from distgan.run.sample import GENERATE_BATCH, generate_batches, to_uint8

    n, out, done = len(z), None, 0
    bar = _progress(f"sampling {n:,} images", n) if n > GENERATE_BATCH else contextlib.nullcontext(None)
    with bar as advance:
        for xb in generate_batches(G, z, y, noise, seed):
            arr = xb.float().numpy() if floats else to_uint8(xb)
            if out is None:
                out = np.empty((n, *arr.shape[1:]), arr.dtype)
            out[done : done + len(arr)] = arr
            done += len(arr)
            if advance is not None:
                advance(len(arr))
    return out


def _style_figure(G: Any, args: argparse.Namespace, cls: int | None, out: Path) -> int:
    """--mixing N: the style-mixing grid; --interp N: N frames of a walk in w (a PNG strip, or a GIF)."""
    from distgan.run.sample import interpolation, mixing_grid, save_gif
    from distgan.utils.grids import image_grid, save_png

    if args.mixing:
        save_png(mixing_grid(G, args.mixing, args.seed, cls), out)
        console.print(f"wrote a {args.mixing}x{args.mixing} style-mixing grid (seed {args.seed}) to {out}")
        return 0
    frames = interpolation(G, args.interp, args.seed, cls, keys=args.keys)
    if out.suffix.lower() == ".gif":
        save_gif(frames, out)
    else:
        save_png(image_grid(frames, nrow=args.interp), out)
    console.print(f"wrote a {args.interp}-frame interpolation through {args.keys} latents (seed {args.seed}) to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import dataclasses

    from distgan.config import UserError
    from distgan.run.sample import export, load_generator, saved_model_config, set_truncation
    from distgan.run.weights import read_state

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        error(f"--out {out} is a file; export writes a folder (generator.pt2, ...): give a new or existing folder")
        return 2
    state = read_state(Path(args.ckpt))
    G, used_ema = load_generator(Path(args.ckpt), args.ema, state)
    try:
        set_truncation(G, args.trunc, args.trunc_cutoff, args.recompute_w_avg)
    except UserError as exc:
        error(f"{exc}")
        return 2
    program, weights, spec = export(G, dataclasses.asdict(saved_model_config(state, Path(args.ckpt))), out)
    console.print(f"exported {'EMA' if used_ema else 'raw'} G to {program}, {weights} and {spec}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """An official StyleGAN2-ADA pickle -> a distgan checkpoint folder (+ safetensors, config.yaml to fine-tune)."""
    import json
    import os
    import shutil

    from distgan.config import UserError, save_config
    from distgan.configure import config_from_dict
    from distgan.run.stylegan2_ada import import_state
    from distgan.utils.files import save_weights, write_text

    src, out = Path(args.pkl), Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        error(f"--out {out} exists and is not an empty folder; give a new folder")
        return 2
    # the folder appears whole or not at all: written under a temporary name, renamed when complete
    tmp = out.parent / f".{out.name}.importing-{os.getpid()}"
    try:
        state = import_state(src)
        _write_checkpoint(state, tmp)
        nets = state["objects"]["trainer"]
        for name in state["imported"]["networks"]:
            save_weights(tmp / f"{name}.safetensors", nets[name])
        save_config(config_from_dict(state["config"]), tmp / "config.yaml")
        write_text(tmp / "import.json", json.dumps(state["imported"], indent=1) + "\n")
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except UserError as exc:
        error(f"{exc}")
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m = state["config"]["model"]
    console.print(
        f"imported {src} ({', '.join(state['imported']['networks'])}; {m['image_shape'][1]} px, "
        f"{m['image_shape'][0]} channel(s), {m['num_classes']} classes, z {m['noise_dim']}, "
        f"w {m['stylegan2']['w_dim']}) into "
        f"{out}: a checkpoint folder for `distgan sample/export/eval --ckpt {out}` and `train.init_from={out}`; "
        f"{out}/config.yaml holds its model for fine-tuning"
    )
    return 0


def _write_checkpoint(state: dict, out: Path) -> None:
    """The imported state as a checkpoint folder, written as every checkpoint is (atomic, checksummed)."""
    from accelerate import Accelerator

    from distgan.config import CkptConfig
    from distgan.run.checkpoint import Checkpointer, Value
    from distgan.training.build import register

    ck = Checkpointer(CkptConfig(), out.parent, Accelerator(cpu=True), state["config"], state["classes"])
    register(ck, [Value(state["objects"]["trainer"], "trainer")])
    ck.save(0, name=out.name)


def add_commands(sub: Any) -> None:
    im = sub.add_parser(
        "import",
        help="an official StyleGAN2-ADA network pickle (.pkl), read as data, as a "
        "distgan checkpoint folder (sample, export, eval, train.init_from)",
    )
    im.add_argument("pkl", help="network pickle (NVlabs/stylegan2-ada-pytorch's network-snapshot-*.pkl)")
    im.add_argument("--out", required=True, help="a new folder")
    im.set_defaults(fn=cmd_import)
    sm = sub.add_parser("sample", help="samples from a checkpoint's generator: a PNG grid or an npz of arrays")
    sm.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint folder, e.g. runs/NAME/checkpoints/step-000060000, or a StyleGAN2-ADA network pickle (.pkl)",
    )
    sm.add_argument("--n", type=int, default=64)
    sm.add_argument("--out", required=True)
    sm.add_argument("--format", choices=("png", "npz"), default="png")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument(
        "--class",
        dest="cls",
        default=None,
        help="class of every sample (conditional models): its name (the data's folder name) or index",
    )
    sm.add_argument(
        "--ema", action=argparse.BooleanOptionalAction, default=None, help="EMA weights (default: if saved)"
    )
    _truncation_args(sm, "stylegan2: truncation psi (0.7: StyleGAN's usual)")
    sm.add_argument(
        "--noise",
        choices=("const", "random", "none"),
        default="const",
        help="stylegan2: per-layer noise as the reference's noise_mode (random: drawn from --seed)",
    )
    sm.add_argument("--z", default="", help="a .npy of latents (N, noise_dim) to sample instead of --n from --seed")
    sm.add_argument(
        "--float",
        action="store_true",
        help="--format npz: G's float output (N, C, H, W) in [0, 1] scale, not uint8",
    )
    sm.add_argument("--mixing", type=int, default=0, help="stylegan2: an NxN style-mixing grid instead")
    sm.add_argument("--interp", type=int, default=0, help="stylegan2: N frames of a walk in w (a PNG strip, or a .gif)")
    sm.add_argument("--keys", type=int, default=3, help="--interp: latents the walk passes through")
    sm.set_defaults(fn=cmd_sample)
    ex = sub.add_parser("export", help="G as a torch.export program + safetensors + JSON, loadable with plain PyTorch")
    ex.add_argument("--ckpt", required=True, help="checkpoint folder or StyleGAN2-ADA network pickle (.pkl)")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None)
    _truncation_args(ex, "stylegan2: truncation psi built into the program")
    ex.set_defaults(fn=cmd_export)


def _truncation_args(p: argparse.ArgumentParser, trunc_help: str) -> None:
    """--trunc, --trunc-cutoff and --recompute-w-avg, as `sample` and `export` both take them."""
    p.add_argument("--trunc", type=float, default=1.0, help=trunc_help)
    p.add_argument(
        "--trunc-cutoff",
        type=int,
        default=None,
        help="stylegan2: truncate only the first N layers' w (the reference's truncation_cutoff)",
    )
    p.add_argument(
        "--recompute-w-avg",
        action="store_true",
        help="stylegan2: truncation's centre from 10,000 latents instead of the model's tracked w_avg",
    )
