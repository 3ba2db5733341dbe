"""Images -> WebDataset tar shards + manifest.json, written atomically (`write_shards`, `ShardWriter`), and
`verify`, which reads every shard back against its manifest.

Our default record holds a block of images as one uint8 .npy (`KEY.images.npy`, `KEY.labels.npy`): still a plain
WebDataset tar that `tar` and `webdataset` read with no distgan code, but the loader decodes ~1000 images per
record instead of paying tar + decode overhead per image.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from distgan.data.records import content_sha256, load_npy
from distgan.data.shards import DataSpecError, check_manifest
from distgan.utils.files import atomic_path, remove_temporaries, sha256_file, write_json

FORMAT = "distgan-blocks"
FORMAT_VERSION = 1


class ShardError(RuntimeError):
    """Bad shards or bad source data; the message names the file."""


@dataclass
class Split:
    images: np.ndarray  # (N, H, W) or (N, H, W, C), uint8
    labels: np.ndarray  # (N,) int64


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_shards(
    out: Path,
    splits: dict[str, Split],
    classes: list[str],
    source: str,
    shard_size: int = 10000,
    block_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Writes `{split}-{i:06d}.tar` under temporary names, renames each when complete, then the manifest.

    Bytes are deterministic (fixed mtime, owner and order): the same data always gives identical shards.
    """
    if shard_size < 1 or block_size < 1:
        raise ShardError(f"shard_size={shard_size}, block_size={block_size}: both must be >= 1")
    replaced = replaceable_shards(out)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(splits.values())).images
    manifest: dict = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": source,
        "image_shape": list(first.shape[1:]),
        "dtype": "uint8",
        "classes": classes,
        "block_size": block_size,
        "splits": {},
    }
    written = set()
    for split, data in splits.items():
        if data.images.dtype != np.uint8 or data.images.shape[1:] != first.shape[1:]:
            raise ShardError(f"split {split!r}: images must be uint8 of shape {first.shape[1:]}")
        if len(data.images) != len(data.labels) or len(data.images) == 0:
            raise ShardError(f"split {split!r}: {len(data.images)} images, {len(data.labels)} labels")
        shards = []
        for shard_idx, start in enumerate(range(0, len(data.images), shard_size)):
            stop = min(start + shard_size, len(data.images))
            shard = write_shard(
                out, split, shard_idx, data.images[start:stop], data.labels[start:stop], block_size, progress
            )
            written.add(shard["name"])
            shards.append(shard)
        manifest["splits"][split] = {
            "samples": len(data.images),
            "content_sha256": content_sha256(data.images, data.labels),
            "shards": shards,
        }
    write_json(out / "manifest.json", manifest)
    for stale in replaced - written:  # shards of the dataset this one replaced, and nothing else
        (out / stale).unlink(missing_ok=True)
    remove_temporaries(out)  # an earlier, killed writer's half-written shard
    return manifest


def write_shard(
    out: Path,
    split: str,
    index: int,
    images: np.ndarray,
    labels: np.ndarray,
    block_size: int,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """`{split}-{index:06d}.tar` in blocks of block_size, atomically; its manifest entry. The bytes depend
    only on the arguments (fixed mtime, owner and key names), whoever writes it."""
    with ExitStack() as stack:
        stream = ShardWriter(stack, out, split, index, block_size)
        for b0 in range(0, len(images), block_size):
            block = images[b0 : b0 + block_size]
            stream.add_block(block, labels[b0 : b0 + block_size])
            if progress:
                progress(len(block))
    return stream.entry()


class ShardWriter:
    """One shard written record by record as its blocks fill (memory: one block), so a converter never holds a
    whole shard; `write_shard` writes through it, so both give the same bytes for the same images."""

    def __init__(self, stack: ExitStack, out: Path, split: str, index: int, block_size: int) -> None:
        self.name, self.key, self.block_size = f"{split}-{index:06d}.tar", f"{split}-{index:06d}", block_size
        self.path = out / self.name
        tmp = stack.enter_context(atomic_path(self.path))
        fh = stack.enter_context(open(tmp, "wb"))  # noqa: SIM115 (closed by the ExitStack, before the rename)
        self.tw = stack.enter_context(wds.TarWriter(fh, encoder=False, mtime=0, user="distgan", group="distgan"))
        self.images: list[np.ndarray] = []
        self.labels: list[int] = []
        self.records: list[int] = []
        self.names: list[list] = []
        self.digests: list[bytes] = []
        self.max_label = -1

    def add(self, image: np.ndarray, label: int, name: list, digest: bytes) -> None:
        self.images.append(image)
        self.labels.append(label)
        self.names.append(name)
        self.digests.append(digest)
        self.max_label = max(self.max_label, label)
        if len(self.images) == self.block_size:
            self.flush()

    def flush(self) -> None:
        if self.images:
            images, labels = np.stack(self.images), np.asarray(self.labels)
            self.images, self.labels = [], []
            self.add_block(images, labels)

    def add_block(self, images: np.ndarray, labels: np.ndarray) -> None:
        """One record of the given images (after any pending ones)."""
        if self.images:
            self.flush()
        self.tw.write(
            {
                "__key__": f"{self.key}-{len(self.records):05d}",
                "images.npy": _npy(images),
                "labels.npy": _npy(labels.astype("<i8")),
            }
        )
        self.records.append(len(images))

    def entry(self) -> dict:
        """The shard's manifest entry; call after the ExitStack has closed (and renamed) the file."""
        return {
            "name": self.name,
            "samples": sum(self.records),
            "records": self.records,
            "sha256": sha256_file(self.path),
        }


def replaceable_shards(out: Path) -> set[str]:
    """Shard names of the distgan dataset in `out` that a new one may replace. A folder holding anything
    else is refused: writing there must never delete (or mix with) files distgan did not write."""
    if not out.exists():
        return set()
    if not out.is_dir():
        raise ShardError(f"--out {out} exists and is not a folder; choose another --out")
    mpath = out / "manifest.json"
    names: set[str] = set()
    if mpath.is_file():
        try:
            info = check_manifest(json.loads(mpath.read_text()), str(mpath))
        except (ValueError, DataSpecError) as exc:  # invalid JSON, or check_manifest's named problem
            raise ShardError(f"--out {out}: its manifest.json is not a usable distgan manifest ({exc})") from exc
        if info["format"] != FORMAT:  # an index of other tools' shards: those files are not ours to replace
            raise ShardError(f"--out {out} holds an index of other tools' shards; choose another --out")
        names = {s["name"] for split in info["splits"].values() for s in split["shards"]}
    others = sorted(
        p.name
        for p in out.iterdir()
        if p.name not in ("manifest.json", "report.tsv") and p.name not in names and not p.name.startswith(".")
    )
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ShardError(
            f"--out {out} holds files that are not part of a distgan dataset ({shown}); nothing was written. "
            "Choose an empty or new folder for --out"
        )
    return names


def _iter_records(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Plain tarfile walk for verification: names the exact place where a shard breaks."""
    with tarfile.open(path, "r:") as tf:
        current, members = None, {}
        for info in tf:
            key, _, ext = info.name.partition(".")
            if key != current and current is not None:
                yield current, members
                members = {}
            current = key
            fh = tf.extractfile(info)
            members[ext] = fh.read() if fh else b""
        if current is not None:
            yield current, members


def verify(
    folder: Path, log: Callable[[str], None] = print, progress: Callable[[int], None] | None = None
) -> list[str]:
    """Re-reads every shard against manifest.json; returns one problem per bad shard (empty: all good)."""
    mpath = folder / "manifest.json"
    if not folder.is_dir():
        raise DataSpecError(f"{folder}: no such folder; give the folder `distgan data ... --out` wrote")
    if not mpath.is_file():
        raise DataSpecError(
            f"{folder} has no manifest.json, so there is nothing to verify against: give the folder `distgan data` "
            "wrote its shards to, or index other tools' shards with `distgan data index`"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError as exc:
        raise DataSpecError(f"{mpath}: not valid JSON ({exc}); re-create the shards with `distgan data`") from exc
    check_manifest(manifest, str(mpath))
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        return [
            f"{mpath}: format {manifest.get('format')} v{manifest.get('format_version')} "
            f"is not {FORMAT} v{FORMAT_VERSION}"
        ]
    shape = tuple(manifest["image_shape"])
    problems = []
    for split, info in manifest["splits"].items():
        h, split_ok = hashlib.sha256(), True
        labels_all: list[np.ndarray] = []
        for shard in info["shards"]:
            problem = _check_shard(folder / shard["name"], shard, shape, h, labels_all, progress)
            if problem:
                problems.append(f"{folder / shard['name']}: {problem}")
                split_ok = False
        if split_ok:
            for labs in labels_all:
                h.update(labs.tobytes())
            if h.hexdigest() != info["content_sha256"]:
                problems.append(f"split {split!r}: content checksum differs from the manifest")
    for p in problems:
        log(f"BAD {p}")
    return problems


def _check_shard(
    path: Path,
    shard: dict,
    shape: tuple[int, ...],
    h: Any,
    labels_all: list[np.ndarray],
    progress: Callable[[int], None] | None,
) -> str | None:
    """One shard against its manifest entry (checksum, records, image shape); its images go into the split's
    content hash `h`, its labels into `labels_all`. Returns what is wrong, or None."""
    problem = None
    try:
        if not path.is_file():
            raise ShardError("missing")
        if sha256_file(path) != shard["sha256"]:
            problem = "sha256 differs from the manifest (corrupt or modified)"
        counts = []
        for key, members in _iter_records(path):
            imgs, labs = load_npy(members["images.npy"]), load_npy(members["labels.npy"])
            if imgs.dtype != np.uint8 or imgs.shape[1:] != shape or len(labs) != len(imgs):
                raise ShardError(f"record {key}: images {imgs.dtype} {imgs.shape}, {len(labs)} labels")
            h.update(imgs.tobytes())
            labels_all.append(labs.astype("<i8"))
            counts.append(len(imgs))
            if progress:
                progress(len(imgs))
        if counts != shard["records"]:
            raise ShardError(f"{sum(counts)} samples in {len(counts)} records; manifest says {shard['samples']}")
    except (ShardError, tarfile.TarError, KeyError, ValueError, OSError, EOFError) as exc:
        problem = f"unreadable or truncated: {exc}"
    return problem


def balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n samples, n // K of each of the K classes (the first n % K classes one more), drawn with a
    seeded generator and kept in dataset order: the same subset on any machine."""
    classes = np.unique(labels)
    if not 0 < n <= len(labels):
        raise ShardError(f"--subset {n}: give 1..{len(labels)}")
    rng = np.random.default_rng(seed)
    picks = []
    for i, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        want = n // len(classes) + (i < n % len(classes))
        if want > len(members):
            raise ShardError(f"--subset {n}: class {c} has only {len(members)} images, {want} asked")
        picks.append(rng.choice(members, want, replace=False))
    return np.sort(np.concatenate(picks))
