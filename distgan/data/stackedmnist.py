"""StackedMNIST: three independently drawn MNIST digits as the R, G and B channels of one image, so 1,000 modes
(000-999) that a generator should cover evenly; the construction of VEEGAN (Srivastava et al. 2017), PacGAN
(Lin et al. 2018) and R3GAN's mode-coverage benchmark. Each image's label is its mode, 100 r + 10 g + b."""

from __future__ import annotations

import numpy as np

from distgan.data.shard_writer import Split
from distgan.utils.host import available_memory

MODES = 1000
CLASSES = [f"{m:03d}" for m in range(MODES)]
"""The manifest's class names: the mode of each image, its R, G and B digits."""


def check_sizes(n: int, n_test: int, seed: int, available: int | None = None) -> None:
    """The command's numbers, each named by its flag; the set is built in memory (shards are written from it),
    so a size that cannot fit is refused with the figure rather than ending in numpy's MemoryError."""
    for flag, value in (("--n", n), ("--n-test", n_test)):
        if value < 1:
            raise ValueError(f"{flag} {value}: give at least one image")
    if not 0 <= seed < 2**32 - 1:  # seed + 1 seeds the test split
        raise ValueError(f"--seed {seed}: give a seed in 0..4294967294")
    need = (n + n_test) * (28 * 28 * 3 + 8 * 4)  # the images, then their (n, 3) indices and labels
    available = available if available is not None else available_memory()
    if available and need > available // 2:
        raise ValueError(
            f"--n {n} --n-test {n_test}: the set takes {need / 2**30:.1f} GiB in memory and this machine has "
            f"{available / 2**30:.1f} GiB available; use a smaller --n (60,000 is the benchmark's; 1,000,000 takes "
            "2.2 GiB)"
        )


def stack(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> Split:
    """n images from (N, 28, 28) uint8 digits: each channel an independent uniform draw (with replacement),
    stored (n, 28, 28, 3) as the other RGB data; labels the modes."""
    idx = np.random.default_rng(seed).integers(0, len(images), size=(n, 3))
    stacked = np.ascontiguousarray(images[idx].transpose(0, 2, 3, 1))
    modes = (labels[idx].astype(np.int64) * np.array([100, 10, 1])).sum(1)
    return Split(stacked, modes)


def is_stacked(classes: tuple[str, ...] | list[str], channels: int) -> bool:
    """Data `distgan data stackedmnist` wrote: RGB images whose classes are the 1,000 modes."""
    return channels == 3 and list(classes) == CLASSES


def digits(modes: np.ndarray) -> np.ndarray:
    """(N,) modes -> (N, 3) digits of the R, G and B channels."""
    return np.stack([modes // 100, modes // 10 % 10, modes % 10], 1)


def channel_digits(images: np.ndarray, modes: np.ndarray, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, H, W) stacked images and their modes -> (3N, 1, H, W) grey digits and their labels: what the
    per-channel digit classifier trains and is tested on (limit: at most this many digits, 0: all)."""
    grey = images.reshape(-1, 1, *images.shape[2:])
    labels = digits(modes).reshape(-1)
    return (grey[:limit], labels[:limit]) if limit else (grey, labels)


def mode_histogram(modes: np.ndarray) -> np.ndarray:
    return np.bincount(modes.astype(np.int64), minlength=MODES).astype(np.float64) / max(1, len(modes))


def coverage(modes: np.ndarray) -> dict[str, float]:
    """modes_covered: modes with at least one sample (PacGAN's count); mode_kl_uniform: KL(histogram || uniform
    over the 1,000 modes), 0 when balanced."""
    hist = mode_histogram(modes)
    p = hist[hist > 0]
    return {"modes_covered": float((hist > 0).sum()), "mode_kl_uniform": float((p * np.log(p * MODES)).sum())}
