"""Every file distgan writes goes through here: temporary name, fsync, rename; a full disk named as such.

A crash or a kill leaves either the old file or the new one under the final name, never half of one. Readers of
checkpoints, shards and caches can therefore trust what they find under a final name (checksums catch the rest).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# stdlib only at import time (distgan/config writes through here); torch and safetensors are imported where used
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space left while writing a file; the message names the file and says what to do."""


def disk_full(exc: BaseException) -> bool:
    """ENOSPC anywhere in the chain: torch.save and safetensors wrap it in their own errors."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in FULL_ERRNOS:
            return True
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; on success it is fsynced and renamed to `path`.

    On failure the temporary file is removed; a full disk raises DiskFullError naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{''.join(path.suffixes[-1:])}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if disk_full(exc):
            raise DiskFullError(
                errno.ENOSPC,
                f"disk full while writing {path}; free space there (or write elsewhere) and rerun",
            ) from exc
        raise


def remove_temporaries(folder: Path) -> int:
    """Removes `atomic_path` temporaries left in `folder` by a killed writer (they end in the final suffix, so
    a `*.tar` glob would see them). Only call where no writer can be live. Returns how many were removed."""
    removed = 0
    for p in folder.glob(".*.tmp-*") if folder.is_dir() else []:
        if p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n")


def save_torch(path: Path, obj: Any) -> None:
    """Tensors and plain data only (it is read back with weights_only=True)."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A state dict as safetensors (float32, CPU, contiguous): loadable without distgan or pickle."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
