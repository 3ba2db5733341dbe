"""Random numbers drawn for the global batch from one seeded generator, each rank and micro-batch keeping its
rows: what makes augmentation and StyleGAN2's mixing and noise the same on 1 process, on N ranks and with
gradient accumulation (train.batch_per_device).

Rows of the global batch are rank-major (rank r holds rows [r B, (r + 1) B), as the loader and the noise
slice them), and micro-batch i of a rank holds the i-th m rows of its share. Within a phase, the first
micro-batch draws for the whole global batch and records each draw; the others replay the recording and take
their rows, so the generator advances exactly as it does without accumulation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

STREAMS = ("init", "noise", "fixed", "augment", "ada", "stylegan", "w_avg", "instance_noise")
"""Every random stream a run draws from, by purpose: `stream_seed` gives each its own seed. A new stream is a new
name here (tests/unit/test_draws.py checks that no two purposes, ranks or indices share a seed)."""


def stream_seed(seed: int, purpose: str, rank: int = 0, index: int = 0) -> int:
    """The seed of one stream: the run's train.seed, the purpose (one of STREAMS), the rank for per-rank streams and
    an index for streams re-seeded as they go (StyleGAN's w_avg latents, one seed per G step). A hash, not offsets
    added by hand: offsets collided (DiffAugment's equalled the w_avg stream's, so both drew the same numbers)."""
    if purpose not in STREAMS:
        raise ValueError(f"random stream {purpose!r}: name it in distgan.utils.draws.STREAMS")
    digest = hashlib.blake2b(f"distgan/{seed}/{purpose}/{rank}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch seeds are 64-bit; positive for every consumer


class GlobalDraws:
    def __init__(self, gen: torch.Generator, rank: int, world: int) -> None:
        self.gen, self.rank, self.world = gen, rank, world
        self.index, self.count = 0, 1
        self.tape: list[torch.Tensor] = []
        self.pos = 0

    def micro(self, index: int, count: int) -> None:
        """Before each micro-batch of a phase (count 1: no accumulation)."""
        self.index, self.count, self.pos = index, count, 0
        if index == 0:
            self.tape = []

    def rows(self, global_n: int, make: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """make(n) draws n rows; global_n is this micro-batch's size times the ranks."""
        if self.count > 1 and self.index > 0:
            full = self.tape[self.pos]
        else:
            full = make(global_n * self.count)
            if self.count > 1:
                self.tape.append(full)
        self.pos += 1
        per = global_n // self.world
        start = self.rank * per * self.count + self.index * per
        return full[start : start + per]
