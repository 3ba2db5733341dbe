"""The record format, read: WebDataset's tar walk, our block records and other tools' per-sample records.

Shared by the loader (training), evaluation, the CLI and the shard writer's checksum; no state, no I/O policy.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_iterator

from distgan.data.shards import DataSpecError, resolve

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp", "bmp", "npy")
LABEL_KEYS = ("cls", "class", "label")


class DataError(RuntimeError):
    """Unreadable data in `on_error: raise` mode (or where every sample is needed); the message names the shard."""


def records(url: str, stream: Any) -> Iterator[dict]:
    """WebDataset's own tar walk and key grouping over one opened shard."""
    return group_by_keys({**f, "__url__": url} for f in tar_file_iterator(stream))


def to_chw(images: np.ndarray) -> np.ndarray:
    """(N,H,W) or (N,H,W,C) -> (N,C,H,W)."""
    if images.ndim == 3:
        return images[:, None]
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def decode_sample(sample: dict) -> tuple[np.ndarray, int]:
    """A per-sample record (other tools' shards) -> (H,W[,C]) uint8 image and its integer label (-1: none)."""
    ext = next((k for k in IMAGE_KEYS if k in sample), None)
    if ext is None:
        raise ValueError(f"no image member ({'/'.join(IMAGE_KEYS)}) in {sorted(k for k in sample if k[0] != '_')}")
    if ext == "npy":
        img = load_npy(sample[ext])
    else:
        pil = Image.open(io.BytesIO(sample[ext]))
        img = np.asarray(pil.convert("L" if pil.mode in ("1", "L", "I;16", "I", "F", "LA") else "RGB"))
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ValueError(f"image is {img.dtype} {img.shape}; need uint8 grey or RGB")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    lab = next((sample[k] for k in LABEL_KEYS if k in sample), None)
    if lab is None:
        return img, -1  # no label member: unlabelled, never a made-up class 0
    return img, int(lab.decode().strip() if isinstance(lab, bytes) else lab)


def load_npy(data: bytes) -> np.ndarray:
    """One .npy member, its declared size checked against its bytes before numpy allocates: a header may declare
    a shape of 10^13 images over a few bytes of data, and np.load would allocate it first (a MemoryError, not a
    bad record). np.load parses the header with ast.literal_eval, and CPython 3.11's AST constructor can raise a
    spurious SystemError ("AST constructor recursion depth mismatch", python/cpython#106905; seen in a
    DataLoader worker here): the bytes are fine, so the parse is tried once more; a real error raises again."""
    try:
        return _load_npy(data)
    except SystemError:
        return _load_npy(data)


def _load_npy(data: bytes) -> np.ndarray:
    fh = io.BytesIO(data)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow
    held = len(data) - fh.tell()
    if not dtype.hasobject and declared != held:  # object arrays: np.load refuses them itself
        raise ValueError(f".npy member declares {dtype} {tuple(shape)} ({declared:,} bytes) but holds {held:,} bytes")
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_block(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    images = load_npy(sample["images.npy"])
    labels = load_npy(sample["labels.npy"])
    if images.dtype != np.uint8 or len(labels) != len(images):
        raise ValueError(f"block record holds {images.dtype} {images.shape} and {len(labels)} labels")
    return images, labels.astype(np.int64)


def stored_shape(image_shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Model (C,H,W) -> how it is stored: (H,W) grey or (H,W,C)."""
    c, h, w = image_shape
    return (h, w) if c == 1 else (h, w, c)


def content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """Checksum of a split's content in order; independent of how it was cut into shards."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return h.hexdigest()


def first_image_shape(url: str) -> tuple[int, ...]:
    """(H,W[,C]) of a per-sample shard's first image, for shards whose manifest does not say."""
    with wds.gopen(url, "rb") as stream:
        for sample in records(url, stream):
            try:
                return decode_sample(sample)[0].shape
            except ValueError as exc:
                raise DataSpecError(f"{url}: first sample unreadable: {exc}") from exc
    raise DataSpecError(f"{url}: holds no sample")


def read_split(path: str, split: str = "train", manifest: str = "") -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory, in shard order: (N, C, H, W) uint8 images and int64 labels.

    For evaluation and the classifier, which want every sample exactly once and stop at the first bad record.
    """
    dataset = resolve(path, split, manifest)
    images, labels = [], []
    for shard in dataset.shards:
        try:
            with wds.gopen(shard.url, "rb") as stream:
                for sample in records(shard.url, stream):
                    if dataset.blocks:
                        imgs, labs = decode_block(sample)
                    else:
                        img, lab = decode_sample(sample)
                        imgs, labs = img[None], np.asarray([lab], dtype=np.int64)
                    images.append(to_chw(imgs))
                    labels.append(labs)
        except (tarfile.TarError, OSError, EOFError, ValueError, KeyError) as exc:
            raise DataError(f"{shard.url}: unreadable ({exc}); check it with `distgan data verify`") from exc
    if not images:
        raise DataError(f"{path!r} split {split!r} holds no samples")
    return np.concatenate(images), np.concatenate(labels)
