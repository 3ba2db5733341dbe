"""Image sets `distgan eval --real/--fake` scores, so any tool's samples can be measured: distgan shards (or any
shard spec), a folder of image files, or an npz of arrays. Every one becomes (N, C, H, W) uint8 and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from distgan.config import Config, ConfigError
from distgan.data.image_sources import IMAGE_EXTS, image_files


def read_images(spec: str, split: str = "train", limit: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels (-1: none), what it was) of a shards path, an image folder or an .npz; limit 0 = all."""
    path = Path(spec).expanduser()
    if path.suffix == ".npz" and path.is_file():
        images, kind = read_npz(path), "npz"
    elif path.is_dir() and not (path / "manifest.json").exists() and not list(path.glob("*.tar")):
        images, kind = read_folder(path, limit), "image folder"
    else:
        from distgan.data.records import read_split
        from distgan.data.shards import DataSpecError

        try:
            images, labels = read_split(spec, split)
        except DataSpecError as exc:
            raise ConfigError(f"{spec}: not shards, an image folder or an .npz ({exc})") from exc
        images, labels = images[: limit or None], labels[: limit or None]
        return images, labels, f"shards, split {split!r}"
    images = images[: limit or None]
    return images, np.full(len(images), -1, np.int64), kind


def read_npz(path: Path) -> np.ndarray:
    """`x` (what `distgan sample --format npz` writes) or the file's only array: uint8, NHWC, NCHW or NHW."""
    with np.load(path) as z:
        names = list(z.files)
        name = "x" if "x" in names else names[0] if len(names) == 1 else None
        if name is None:
            raise ConfigError(f"{path}: holds arrays {names}; name the images `x` (or keep one array)")
        a = z[name]
    if a.dtype != np.uint8:
        raise ConfigError(f"{path}: array {name!r} is {a.dtype}; give uint8 images (0-255) as a saved PNG holds")
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4 and a.shape[1] in (1, 3):
        return np.ascontiguousarray(a)
    if a.ndim == 4 and a.shape[3] in (1, 3):
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
    raise ConfigError(f"{path}: array {name!r} has shape {a.shape}; give (N, H, W, C) or (N, C, H, W), C 1 or 3")


def read_folder(path: Path, limit: int = 0) -> np.ndarray:
    """Every image file under path in sorted order, all of one size; grey files stay grey, others become RGB."""
    files = [path / name for name in image_files(path)]  # the listing `data images` uses (links, hidden files)
    if not files:
        raise ConfigError(f"{path}: no image files ({', '.join(IMAGE_EXTS)})")
    out: list[np.ndarray] = []
    for f in files[: limit or None]:
        try:
            with Image.open(f) as im:
                a = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16", "I") else "RGB"))
        except OSError as exc:
            raise ConfigError(f"{f}: not a readable image ({exc})") from exc
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if out and a.shape != out[0].shape:
            raise ConfigError(
                f"{f}: {a.shape[1]}x{a.shape[2]} with {a.shape[0]} channel(s), but {files[0]} is "
                f"{out[0].shape[1]}x{out[0].shape[2]} with {out[0].shape[0]}; resize them to one size first, "
                "e.g. `distgan data images FOLDER --size S --out DIR`"
            )
        out.append(a)
    return np.stack(out)


def load_real(cfg: Config, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split of data.path in memory (records.read_split), its absence a ConfigError naming the key."""
    from distgan.data.records import read_split
    from distgan.data.shards import DataSpecError

    try:
        return read_split(cfg.data.path, split, cfg.data.manifest)
    except DataSpecError as exc:
        raise ConfigError(
            f"evaluation needs the {split!r} split of data.path={cfg.data.path!r}: {exc}; "
            "set eval.real_split or data.path"
        ) from exc
