"""Users' own images, listed and read: folders (class subfolders, symlinks followed), zip and tar archives,
other tools' WebDataset shards (local, brace patterns, http(s) with timeouts, pipe:) and .npz arrays.

Listing never loads images: an input is a name, a label, where its bytes are and a stamp of its version (size,
time or CRC), so a changed input redoes its range (convert.py) and a listing holds ~1 KB per input.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distgan.data.records import LABEL_KEYS
from distgan.data.shard_writer import ShardError

if TYPE_CHECKING:
    from distgan.data.options import Options


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")

MAX_LABEL = 100_000
"""Labels above this are refused: a typo'd 10^9 would otherwise build a billion-entry class list."""


def shown(name: str) -> str:
    """A name as text that any terminal or TSV row can hold: undecodable bytes as \\xNN, control characters
    (tab, newline) escaped, so one input is always one line."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


@dataclass(frozen=True)
class Item:
    """One input: its name (for the report), label (-1: none), and how a worker reads its bytes."""

    name: str
    label: int
    kind: str  # file | zip | tar | bytes | array
    where: str = ""
    offset: int = 0
    size: int = 0
    data: bytes = b""
    stamp: str = ""  # what identifies this version of the input (size, mtime or CRC): a change redoes its range


@dataclass
class Source:
    """A listed input: its ranges of items (or, for streamed shards, of URLs to read later) and class names."""

    spec: str
    kind: str
    classes: list[str]
    ranges: int
    items: list[Item]  # folder, zip, tar, npz (npz items carry their row index in `offset`)
    urls: list[str]  # webdataset shards, one per range
    use_labels: bool = True

    def range_items(self, k: int, opts: Options) -> list[Item]:
        if self.kind == "webdataset":
            return list(_stream_webdataset(self.urls[k], self.use_labels, opts))
        return self.items[k * opts.shard_size : (k + 1) * opts.shard_size]

    def range_digest(self, k: int, shard_size: int) -> str:
        """What range k was converted from (names, labels, sizes, times): a range whose inputs changed since
        its record was written is redone, never reused."""
        h = hashlib.sha256()
        if self.kind == "webdataset":
            url = self.urls[k]
            h.update(url.encode("utf-8", "surrogateescape"))
            if os.path.isfile(url):
                st = os.stat(url)
                h.update(f"\0{st.st_size}\0{st.st_mtime_ns}".encode())
        else:
            for it in self.items[k * shard_size : (k + 1) * shard_size]:
                h.update(f"{it.name}\0{it.label}\0{it.stamp}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:32]


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.lower().endswith(IMAGE_EXTS) and not base.startswith(".") and "__MACOSX/" not in name


def _labelled(names: list[str], use_labels: bool, archive: bool = False) -> tuple[list[int], list[str]]:
    """Class subfolders are labels when every image sits below a first-level folder; otherwise (images at the
    top, or use_labels=False) the data is unlabelled (-1). Nested folders below a class stay in that class.
    In an archive, one folder holding everything (a zipped folder) is the top, not a class."""
    rel = names
    while archive and rel and all("/" in n for n in rel) and len({n.split("/", 1)[0] for n in rel}) == 1:
        rel = [n.split("/", 1)[1] for n in rel]
    if not use_labels or not rel or any("/" not in n for n in rel):
        return [-1] * len(names), []
    classes = sort_classes({n.split("/", 1)[0] for n in rel})
    index = {c: i for i, c in enumerate(classes)}
    return [index[n.split("/", 1)[0]] for n in rel], classes


def sort_classes(names: set[str]) -> list[str]:
    """Class names in label order: numerically when every name is an integer (2 before 10), else as text."""
    if names and all(re.fullmatch(r"\d+", n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _walk(root: Path) -> list[str]:
    """Every file below root as a '/'-separated relative name, following symlinked folders (class folders
    are often links into a shared store); a link back to a folder already walked is not entered twice."""
    names: list[str] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            names.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return sorted(names)


def image_files(root: Path) -> list[str]:
    """The image files below root (relative, sorted), as every reader of an image folder lists them."""
    return [n for n in _walk(root) if _is_image(n)]


def _stat_stamp(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _label_bound(labels: np.ndarray, where: str) -> None:
    """Labels are class indices: 0 <= y <= MAX_LABEL; the first bad one is named."""
    bad = np.flatnonzero((labels < 0) | (labels > MAX_LABEL))
    if len(bad):
        i = int(bad[0])
        raise ShardError(
            f"{where}: sample {i} has class label {int(labels[i])}; labels are class indices 0..{MAX_LABEL}. "
            "Fix the labels, or convert with --no-labels"
        )


def list_source(spec: str, opts: Options) -> Source:
    """Lists the inputs in a fixed order (sorted names; shard order, then member order for WebDataset)."""
    from distgan.data.shards import expand_spec, is_remote

    path = Path(spec)
    kind = path.suffix.lower() if path.is_file() else ""
    if path.is_dir():
        return _list_folder(spec, path, opts)
    if path.is_file() and _is_image(path.name):
        raise ShardError(
            f"{spec}: one image is not a source; give the folder that holds your images (this one is in "
            f"{path.parent.resolve()}), a .zip, .tar or .npz of them, or WebDataset shards"
        )
    if kind in (".npz", ".zip") or (kind == ".tar" and not _looks_like_webdataset(path)):
        return {".npz": _list_npz, ".zip": _list_zip, ".tar": _list_tar}[kind](spec, path, opts)
    urls = expand_spec(spec)
    if not urls or (not is_remote(urls[0]) and not Path(urls[0]).is_file()):
        raise ShardError(
            f"{spec}: not a folder, .zip, .tar, .npz or WebDataset shard spec that exists (local path, brace "
            "pattern like shards-{000..009}.tar, or http(s)://)"
        )
    return Source(spec, "webdataset", [], len(urls), [], urls, opts.labels)


def _list_folder(spec: str, path: Path, opts: Options) -> Source:
    names = image_files(path)
    labels, classes = _labelled(names, opts.labels)
    items = [
        Item(n, lab, "file", str(path / n), stamp=_stat_stamp(path / n)) for n, lab in zip(names, labels, strict=True)
    ]
    return _chunked(spec, "folder", classes, items, opts)


def _list_npz(spec: str, path: Path, opts: Options) -> Source:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files") or "x" not in z:
                has = sorted(z.files) if hasattr(z, "files") else f"one bare {type(z).__name__}"
                raise ShardError(f"{path}: needs an array 'x' (N,H,W[,C]) and optionally 'y'; has {has}")
            x = z["x"]
            y = z["y"] if "y" in z and opts.labels else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ShardError(
            f"{path}: not a readable .npz of numeric arrays ({exc}); save it with numpy.savez(x=..., y=...) "
            "and no object arrays"
        ) from exc
    n = len(x) if x.ndim else 0
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise ShardError(f"{path}: 'x' is {x.dtype} {x.shape}; need uint8 (N,H,W) or (N,H,W,C)")
    if x.ndim == 4 and x.shape[3] not in (1, 2, 3, 4):
        raise ShardError(
            f"{path}: 'x' {x.shape} has {x.shape[3]} channels per pixel; images have 1 (grey), 2 (grey and alpha), "
            "3 (RGB) or 4 (RGBA): save the images as (N,H,W) or (N,H,W,C) with one of those C"
        )
    if y is not None and (y.shape != (n,) or not np.issubdtype(y.dtype, np.integer)):
        raise ShardError(f"{path}: 'y' is {y.dtype} {y.shape}; need ({n},) integers")
    if y is not None:
        _label_bound(y, f"{path} 'y'")
    classes = [str(c) for c in range(int(y.max()) + 1)] if y is not None and n else []
    stamp = _stat_stamp(path)
    items = [Item(f"x[{i}]", int(y[i]) if y is not None else -1, "array", str(path), i, stamp=stamp) for i in range(n)]
    return _chunked(spec, "npz", classes, items, opts)


def _list_zip(spec: str, path: Path, opts: Options) -> Source:
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist() if not i.is_dir() and _is_image(i.filename)}
    names = sorted(infos)
    labels, classes = _labelled(names, opts.labels, archive=True)
    items = [
        Item(n, lab, "zip", str(path), 0, infos[n].file_size, stamp=f"{infos[n].file_size}:{infos[n].CRC}")
        for n, lab in zip(names, labels, strict=True)
    ]
    return _chunked(spec, "zip", classes, items, opts)


def _list_tar(spec: str, path: Path, opts: Options) -> Source:
    with tarfile.open(path, "r:") as tf:
        members = sorted((m for m in tf.getmembers() if m.isfile() and _is_image(m.name)), key=lambda m: m.name)
    labels, classes = _labelled([m.name for m in members], opts.labels, archive=True)
    items = [
        Item(m.name, lab, "tar", str(path), m.offset_data, m.size, stamp=f"{m.size}:{m.mtime}:{m.offset_data}")
        for m, lab in zip(members, labels, strict=True)
    ]
    return _chunked(spec, "tar", classes, items, opts)


def _chunked(spec: str, kind: str, classes: list[str], items: list[Item], opts: Options) -> Source:
    if not items:
        raise ShardError(f"{spec}: no images ({', '.join(IMAGE_EXTS)}) found")
    return Source(spec, kind, classes, math.ceil(len(items) / opts.shard_size), items, [])


def _wds_key(name: str) -> tuple[str, str]:
    """(key, extension) of a tar member as WebDataset's own reader splits it (a leading './' is not part of
    the key; the extension starts at the first dot of the file name)."""
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(name)
    return (key or "", (ext or "").lower())


def _looks_like_webdataset(path: Path, peek: int = 64) -> bool:
    """A tar whose image members share their key with a label or metadata member (cls/class/label/json), as
    WebDataset writers make them. Images with only caption sidecars (`cat/img01.txt`) are a plain archive of
    class folders, read like the same files zipped."""
    keys: dict[str, set[str]] = {}
    with tarfile.open(path, "r:") as tf:
        for i, m in enumerate(tf):
            if i >= peek:
                break
            if m.isfile():
                key, ext = _wds_key(m.name)
                keys.setdefault(key, set()).add(ext)
    return any(
        exts & {*LABEL_KEYS, "json"} and any(f".{e}".endswith(IMAGE_EXTS) for e in exts) for exts in keys.values()
    )


def _open_url(url: str, timeout: float) -> io.BufferedIOBase:
    """A shard's byte stream. http(s) with a timeout on connecting and on every read (WebDataset's default curl
    pipe has none, so a stalled server would hang the conversion silently); the rest by wds.gopen. A failed
    connection is a StalledError too: the conversion tries the whole range again (convert.py), then names it."""
    import webdataset as wds

    if not url.startswith(("http://", "https://")):
        return wds.gopen(url)
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - the user's own source URL
    except (urllib.error.URLError, OSError) as exc:
        raise StalledError(f"{url}: no answer ({exc}); check the URL and the network") from exc


class StalledError(ShardError):
    """An http(s) source that did not answer or stopped sending; the range is tried again from its start."""


def _stream_webdataset(url: str, use_labels: bool, opts: Options | None = None) -> Iterator[Item]:
    """Per-sample records of another tool's shard, streamed (local, http(s), pipe:): image bytes and label.
    A member over opts.max_bytes is not read (its item is skipped as too_large)."""
    max_bytes, timeout = (opts.max_bytes, opts.timeout_s) if opts is not None else (256 << 20, 60.0)
    stream = _open_url(url, timeout)
    current: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    key = None
    try:
        with stream, tarfile.open(fileobj=stream, mode="r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                mkey, ext = _wds_key(m.name)
                if key is not None and mkey != key:
                    item = _wds_item(url, key, current, use_labels, sizes)
                    if item is not None:
                        yield item
                    current, sizes = {}, {}
                key = mkey
                if m.size > max_bytes:
                    current[ext], sizes[ext] = b"", m.size
                    continue
                fh = tf.extractfile(m)
                current[ext] = fh.read() if fh else b""
    except TimeoutError as exc:
        raise StalledError(
            f"{url}: the server sent nothing for {timeout:g} s; check the network (or --timeout)"
        ) from exc
    except (tarfile.TarError, OSError) as exc:
        raise ShardError(f"{url}: unreadable or truncated WebDataset shard ({exc}); fix or remove it") from exc
    if key is not None:
        item = _wds_item(url, key, current, use_labels, sizes)
        if item is not None:
            yield item


def _wds_item(
    url: str,
    key: str,
    members: dict[str, bytes],
    use_labels: bool = True,
    sizes: dict[str, int] | None = None,
) -> Item | None:
    image = next((ext for ext in members if f".{ext}".endswith(IMAGE_EXTS)), None)
    if image is None:
        return None
    label = -1
    if use_labels:
        try:
            label = next((int(members[lk].decode().strip()) for lk in LABEL_KEYS if lk in members), -1)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ShardError(
                f"{url}: sample {key} has a class label that is not an integer ({exc}); fix it or convert with "
                "--no-labels"
            ) from exc
        if label != -1:
            _label_bound(np.asarray([label]), f"{url} sample {key}")
        if label == -1 and "json" in members:  # img2dataset-style metadata: a label if it has one
            try:
                meta = json.loads(members["json"] or b"{}")
            except ValueError:
                meta = None  # metadata, not the image: a broken one does not stop the conversion
            if isinstance(meta, dict):
                label = next((meta[k] for k in ("label", "cls", "class") if isinstance(meta.get(k), int)), -1)
    size = (sizes or {}).get(image, len(members[image]))
    return Item(f"{url}#{key}.{image}", label, "bytes", size=size, data=members[image])


_OPEN: dict[str, zipfile.ZipFile] = {}


def read_bytes(item: Item) -> bytes:
    if item.kind == "file":
        return Path(item.where).read_bytes()
    if item.kind == "zip":
        zf = _OPEN.get(item.where)
        if zf is None:  # one open archive per worker process
            zf = _OPEN[item.where] = zipfile.ZipFile(item.where)
        return zf.read(item.name)
    if item.kind == "tar":
        with open(item.where, "rb") as fh:
            fh.seek(item.offset)
            return fh.read(item.size)
    return item.data
