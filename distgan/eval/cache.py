"""The one cache of real-image statistics, for every yardstick (the MNIST classifier's features, Inception's):
an .npz per (yardstick, protocol, real images' content), so a changed network, resizer, library or split is a
new entry and the same ones are computed once. Written atomically; a damaged entry is recomputed."""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from distgan.config import cache_root
from distgan.utils.files import atomic_path

log = logging.getLogger("distgan.eval")


def stats_path(cache_dir: str, yardstick: str, protocol: dict[str, Any], content_sha256: str) -> Path:
    key = json.dumps({"yardstick": yardstick, "protocol": protocol, "content": content_sha256}, sort_keys=True)
    return cache_root(cache_dir) / f"realstats-{yardstick}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def load_stats(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        log.warning("real statistics %s unreadable (%s); computing them again", path, exc)
        return None


def save_stats(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
