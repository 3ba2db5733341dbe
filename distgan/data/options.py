"""How `distgan data images` reads and writes: the options every source reader and the converter share (their own
module, so image_sources.py and convert.py both import it and neither imports the other)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from distgan.data.shard_writer import ShardError


@dataclass(frozen=True)
class Options:
    size: tuple[int, int]
    """Output height, width."""
    crop: str = "center"
    """center: resize the shorter side to fit, crop the middle; none: resize the longer side, pad with black."""
    mode: str = "RGB"
    """RGB or L (grey)."""
    min_size: int = 0
    """Inputs whose shorter side is smaller are skipped as too_small (0: half the output's shorter side)."""
    test_fraction: float = 0.0
    """Fraction of inputs held out as a test split, chosen by a hash of the input's name."""
    shard_size: int = 10000
    """Inputs per range (output shard) for folder, archive and .npz sources."""
    block_size: int = 1000
    """Images per tar record."""
    labels: bool = True
    """Labels from class subfolders (or cls/json of WebDataset shards, y of an .npz); false: unlabelled."""
    max_pixels: int = 100_000_000
    """Inputs with more pixels are skipped as too_large before decoding (a decompression bomb is a few KB)."""
    max_bytes: int = 256 << 20
    """Inputs (files, archive members) larger than this are skipped as too_large before they are read."""
    timeout_s: float = 60.0
    """http(s) sources: seconds without data before a read counts as stalled (then retried, then named)."""

    def fingerprint(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if k != "timeout_s"}  # how, not what, is read
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def check(self) -> None:
        """Values the command line can give that would fail later (or divide by zero) are named now."""
        h, w = self.size
        for what, v in (
            ("--size", min(h, w)),
            ("--shard-size", self.shard_size),
            ("--block-size", self.block_size),
            ("--max-pixels", self.max_pixels),
            ("--max-mb", self.max_bytes),
        ):
            if v < 1:
                raise ShardError(f"{what} {v}: must be >= 1")
        if not 0 <= self.test_fraction < 1:
            raise ShardError(
                f"--test-fraction {self.test_fraction}: give a fraction in [0, 1) (1 would leave no training data)"
            )
        if self.timeout_s <= 0:
            raise ShardError(f"--timeout {self.timeout_s}: must be > 0 seconds")

    @property
    def shape(self) -> list[int]:
        h, w = self.size
        return [h, w] if self.mode == "L" else [h, w, 3]
