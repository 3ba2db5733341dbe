"""Synthetic shards for tests that step a trainer by hand: every trainer reads a real loader over real tar
shards (training/build.py takes no `loader=None`), even when the test feeds its own tensors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from distgan.data.shard_writer import Split, write_shards

_MADE: dict[tuple[tuple[int, ...], int], Path] = {}


def synthetic(n: int, seed: int = 0, shape: tuple[int, ...] = (28, 28)) -> Split:
    """Random images whose first pixel row encodes the sample index (for exactly-once checks), labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    return Split(images, rng.integers(0, 10, size=n).astype(np.int64))


def shards_for(image_shape: list[int] | tuple[int, ...], n: int, root: Path | None = None) -> Path:
    """n synthetic images of model.image_shape [C, H, W] as shards: under `root`, or once per process in a
    temporary folder (removed by the test session's end, tests/conftest.py)."""
    c, h, w = image_shape
    key = (tuple(image_shape), n)
    if root is None and key in _MADE:
        return _MADE[key]
    out = root or Path(tempfile.mkdtemp(prefix="distgan-test-shards-"))
    split = synthetic(n, shape=(h, w) if c == 1 else (h, w, c))
    write_shards(out, {"train": split}, [str(i) for i in range(10)], "synthetic", 400, 100)
    if root is None:
        _MADE[key] = out
    return out


def made() -> list[Path]:
    return list(_MADE.values())
