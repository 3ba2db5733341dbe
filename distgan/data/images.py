"""Users' own images -> training shards: folders, zip/tar archives, other tools' WebDataset shards, .npz.

Streaming with bounded memory: inputs are listed by name (never loaded together), decoded and resized in worker
processes a chunk at a time, and each output shard is written as soon as its input range is done.

Output shard k holds what survives of input range k (`shard_size` consecutive inputs of the sorted input list;
one input shard for WebDataset sources), so neither the number of workers nor the machine that converted a
range changes a byte. `--part I/N` converts the I-th contiguous block of ranges; `merge` writes the manifest
over all parts, without copying shards, after verifying every range. Exact duplicates are dropped in input
order across the whole dataset: within a part as it converts, across parts at merge time (by rewriting the
few shards that hold a later copy), so parts + merge equal a one-machine conversion.

A range's record (`.distgan-progress/range-K.json`, written atomically after its shards) makes conversions
resumable: a rerun keeps every range whose record and shards are intact and redoes the rest; the manifest is
written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from distgan.data.records import LABEL_KEYS
from distgan.data.shards import safe_name
from distgan.data.source import (
    FORMAT,
    FORMAT_VERSION,
    ShardError,
    ShardStream,
    replaceable_shards,
    write_shard,
)
from distgan.files import atomic_path, remove_temporaries, sha256_file, write_json, write_text

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
PROGRESS_DIR = ".distgan-progress"
REASONS = ("empty", "unreadable", "truncated", "too_small", "too_large", "duplicate")
"""Why an input was skipped, as counted in the manifest and listed in report.tsv."""
RESAMPLE = Image.Resampling.LANCZOS
"""Antialiased downsampling: PIL's Lanczos (a=3) filter, the sharpest of PIL's antialiasing filters."""
Image.MAX_IMAGE_PIXELS = None  # Options.max_pixels decides (as too_large), before any pixel is decoded
STAGING = ".distgan-staging"
"""Where a conversion that replaces an existing dataset writes, inside --out: the old dataset stays whole
(and usable) until the new manifest takes its place."""
MAX_LABEL = 100_000
"""Labels above this are refused: a typo'd 10^9 would otherwise build a billion-entry class list."""


def shown(name: str) -> str:
    """A name as text that any terminal or TSV row can hold: undecodable bytes as \\xNN, control characters
    (tab, newline) escaped, so one input is always one line."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


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
        for what, v in (("--size", min(h, w)), ("--shard-size", self.shard_size), ("--block-size", self.block_size),
                        ("--max-pixels", self.max_pixels), ("--max-mb", self.max_bytes)):  # fmt: skip
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
    stamp: str = (
        ""  # what identifies this version of the input (size, mtime or CRC): a change redoes its range
    )


# -- sources ------------------------------------------------------------------------------------------------
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
    if path.is_dir():
        names = [n for n in _walk(path) if _is_image(n)]
        labels, classes = _labelled(names, opts.labels)
        items = [
            Item(n, lab, "file", str(path / n), stamp=_stat_stamp(path / n))
            for n, lab in zip(names, labels, strict=True)
        ]
        return _chunked(spec, "folder", classes, items, opts)
    if path.suffix.lower() == ".npz" and path.is_file():
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
        if y is not None and (y.shape != (n,) or not np.issubdtype(y.dtype, np.integer)):
            raise ShardError(f"{path}: 'y' is {y.dtype} {y.shape}; need ({n},) integers")
        if y is not None:
            _label_bound(y, f"{path} 'y'")
        classes = [str(c) for c in range(int(y.max()) + 1)] if y is not None and n else []
        stamp = _stat_stamp(path)
        items = [
            Item(f"x[{i}]", int(y[i]) if y is not None else -1, "array", str(path), i, stamp=stamp)
            for i in range(n)
        ]
        return _chunked(spec, "npz", classes, items, opts)
    if path.suffix.lower() == ".zip" and path.is_file():
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist() if not i.is_dir() and _is_image(i.filename)}
        names = sorted(infos)
        labels, classes = _labelled(names, opts.labels, archive=True)
        items = [
            Item(
                n, lab, "zip", str(path), 0, infos[n].file_size, stamp=f"{infos[n].file_size}:{infos[n].CRC}"
            )
            for n, lab in zip(names, labels, strict=True)
        ]
        return _chunked(spec, "zip", classes, items, opts)
    if path.suffix.lower() == ".tar" and path.is_file() and not _looks_like_webdataset(path):
        with tarfile.open(path, "r:") as tf:
            members = sorted(
                (m for m in tf.getmembers() if m.isfile() and _is_image(m.name)), key=lambda m: m.name
            )
        names = [m.name for m in members]
        labels, classes = _labelled(names, opts.labels, archive=True)
        items = [
            Item(
                m.name,
                lab,
                "tar",
                str(path),
                m.offset_data,
                m.size,
                stamp=f"{m.size}:{m.mtime}:{m.offset_data}",
            )
            for m, lab in zip(members, labels, strict=True)
        ]
        return _chunked(spec, "tar", classes, items, opts)
    urls = expand_spec(spec)
    if not urls or (not is_remote(urls[0]) and not Path(urls[0]).is_file()):
        raise ShardError(
            f"{spec}: not a folder, .zip, .tar, .npz or WebDataset shard spec that exists (local path, brace "
            "pattern like shards-{000..009}.tar, or http(s)://)"
        )
    return Source(spec, "webdataset", [], len(urls), [], urls, opts.labels)


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
        exts & {*LABEL_KEYS, "json"} and any(f".{e}".endswith(IMAGE_EXTS) for e in exts)
        for exts in keys.values()
    )


def _open_url(url: str, timeout: float, tries: int = 3) -> io.BufferedIOBase:
    """A shard's byte stream. http(s) with a read timeout and a few tries to connect (WebDataset's default
    curl pipe has neither, so a stalled server would hang the conversion silently); the rest by wds.gopen."""
    import webdataset as wds

    if not url.startswith(("http://", "https://")):
        return wds.gopen(url)
    for attempt in range(1, tries + 1):
        try:
            return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - the user's own source URL
        except (urllib.error.URLError, OSError) as exc:
            if attempt == tries:
                raise ShardError(
                    f"{url}: no answer after {tries} tries ({exc}); check the URL and the network, then rerun "
                    "(converted ranges are kept)"
                ) from exc
            time.sleep(min(8.0, 2.0 ** (attempt - 1)))
    raise AssertionError("unreachable")


class StalledError(ShardError):
    """An http(s) source stopped sending; the range is tried again from its start."""


def _stream_webdataset(url: str, use_labels: bool, opts: Options | None = None) -> Iterator[Item]:
    """Per-sample records of another tool's shard, streamed (local, http(s), pipe:): image bytes and label.
    A member over opts.max_bytes is not read (its item is skipped as too_large)."""
    opts = opts or Options(size=(1, 1))
    stream = _open_url(url, opts.timeout_s)
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
                if m.size > opts.max_bytes:
                    current[ext], sizes[ext] = b"", m.size
                    continue
                fh = tf.extractfile(m)
                current[ext] = fh.read() if fh else b""
    except TimeoutError as exc:
        raise StalledError(
            f"{url}: the server sent nothing for {opts.timeout_s:g} s; check the network (or --timeout)"
        ) from exc
    except (tarfile.TarError, OSError) as exc:
        raise ShardError(
            f"{url}: unreadable or truncated WebDataset shard ({exc}); fix or remove it"
        ) from exc
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


# -- one image ----------------------------------------------------------------------------------------------
_OPEN: dict[str, zipfile.ZipFile] = {}
_NPZ: dict[str, np.ndarray] = {}


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


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    """The documented conversion rule: 16/32-bit grey scaled to 8 bits (value / 257), float clipped to
    [0, 255]; transparency (RGBA, LA, palette with alpha) composited over white; CMYK and YCbCr by PIL's
    conversion; then grey -> RGB by copying, RGB -> grey by ITU-R 601-2 luma (PIL's "L")."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.float64) / 257.0
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(canvas, rgba).convert("RGB")
    if im.mode == "1":
        im = im.convert("L")
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    return im.convert(mode) if im.mode != mode else im


def convert(data: bytes, opts: Options) -> np.ndarray | str:
    """Bytes -> (H, W[, 3]) uint8 image, or the reason it was skipped."""
    if not data:
        return "empty"
    h, w = opts.size
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
        if im.width * im.height > opts.max_pixels:
            return "too_large"
        rotated = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        sw, sh = (im.height, im.width) if rotated else im.size
        if min(sw, sh) < (opts.min_size or max(1, min(h, w) // 2)):
            return "too_small"
        scale = max(w / sw, h / sh) if opts.crop == "center" else min(w / sw, h / sh)
        if im.format == "JPEG" and scale < 1:  # decode at 1/2, 1/4 or 1/8 size in the DCT, never below target
            need = (math.ceil(sw * scale), math.ceil(sh * scale))
            im.draft(im.mode, need[::-1] if rotated else need)
        im.load()
    except Image.DecompressionBombError:
        return "too_large"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return "truncated" if "truncat" in str(exc).lower() else "unreadable"
    im = ImageOps.exif_transpose(im)
    im = to_mode(im, opts.mode)
    scale = max(w / im.width, h / im.height) if opts.crop == "center" else min(w / im.width, h / im.height)
    rw, rh = max(w if opts.crop == "center" else 1, round(im.width * scale)), max(1, round(im.height * scale))
    if opts.crop == "center":
        rh = max(h, rh)
    if (rw, rh) != im.size:
        im = im.resize((rw, rh), RESAMPLE, reducing_gap=None)
    if opts.crop == "center":
        left, top = (rw - w) // 2, (rh - h) // 2
        im = im.crop((left, top, left + w, top + h))
    else:
        canvas = Image.new(opts.mode, (w, h))  # black
        canvas.paste(im, ((w - rw) // 2, (h - rh) // 2))
        im = canvas
    return np.asarray(im, dtype=np.uint8)


def convert_chunk(items: list[Item], opts: Options) -> list[tuple[np.ndarray | str, bytes]]:
    """Worker: each item's image (or skip reason) and the sha256 of its input bytes (for duplicates)."""
    out: list[tuple[np.ndarray | str, bytes]] = []
    for item in items:
        if item.kind == "array":
            if item.where not in _NPZ:  # an .npz member is one compressed array: read whole, once per worker
                with np.load(item.where, allow_pickle=False) as z:
                    _NPZ[item.where] = z["x"]
            arr = np.ascontiguousarray(_NPZ[item.where][item.offset])
            data = _png(arr)
        else:
            size = item.size
            if item.kind == "file":
                with contextlib.suppress(OSError):
                    size = os.stat(item.where).st_size
            if size > opts.max_bytes:
                out.append(("too_large", b""))
                continue
            try:
                data = read_bytes(item)
            except OSError:
                out.append(("unreadable", b""))
                continue
        out.append((convert(data, opts), hashlib.sha256(data).digest() if data else b""))
    return out


def _png(arr: np.ndarray) -> bytes:
    """An .npz row as PNG bytes, so arrays take the same resize and conversion path as files."""
    if arr.dtype != np.uint8:
        raise ShardError(f".npz 'x' is {arr.dtype}; need uint8")
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(
        buf, "PNG", compress_level=0
    )
    return buf.getvalue()


def in_test(name: str, fraction: float) -> bool:
    """Held out by a hash of the input's name: the same split on any machine, for any part."""
    if not fraction:
        return False
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()  # any file name's bytes
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


# -- ranges, parts, merge -----------------------------------------------------------------------------------
def parse_part(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ShardError(f"--part {text!r}: write it as I/N, e.g. 3/8 (parts are numbered 1..N)") from None
    if not 1 <= i <= n:
        raise ShardError(f"--part {text!r}: I must be between 1 and N={n}")
    return i, n


def part_ranges(ranges: int, part: tuple[int, int]) -> range:
    i, n = part
    return range((i - 1) * ranges // n, i * ranges // n)


def _record_path(out: Path, k: int) -> Path:
    return out / PROGRESS_DIR / f"range-{k:06d}.json"


def _hashes_path(out: Path, k: int) -> Path:
    return out / PROGRESS_DIR / f"range-{k:06d}.hashes.npy"


def _intact(out: Path, k: int, fingerprint: str, inputs: str | None) -> dict | None:
    """A range's record, if it was written by these options from these inputs and its shards still match it.
    A record is read back as untrusted: a shard name that is not a plain file name makes it damaged."""
    path = _record_path(out, k)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("options") != fingerprint or not _hashes_path(out, k).is_file():
        return None
    if rec.get("inputs_digest") != inputs:
        return None
    shards = rec.get("shards")
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and safe_name(s.get("name")) and isinstance(s.get("sha256"), str) for s in shards
    ):
        return None
    for shard in shards:
        f = out / shard["name"]
        if not f.is_file() or sha256_file(f) != shard["sha256"]:
            return None
    return rec


@dataclass
class Conversion:
    """The state of one conversion (a whole dataset or one part)."""

    source: Source
    opts: Options
    out: Path
    workers: int
    strict: bool = False

    def job(self, digests: list[str]) -> dict:
        o = self.opts
        return {"source": self.source.spec, "kind": self.source.kind, "ranges": self.source.ranges,
                "classes": self.source.classes, "options": asdict(o), "fingerprint": o.fingerprint(),
                "range_inputs": digests}  # fmt: skip

    def run(self, ranges: range, progress: Callable[[int, int], None] | None = None) -> Counter:
        """Converts the given ranges (skipping intact ones); returns skip counts of this run's ranges."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / PROGRESS_DIR).mkdir(exist_ok=True)
        digests = [self.source.range_digest(k, self.opts.shard_size) for k in range(self.source.ranges)]
        write_json(self.out / PROGRESS_DIR / "job.json", self.job(digests))
        fp = self.opts.fingerprint()
        seen: set[bytes] = set()  # digests kept by earlier ranges: duplicates are dropped in input order
        counts: Counter = Counter()
        intact = {k: _intact(self.out, k, fp, digests[k]) for k in ranges}
        chunk = max(1, min(256, self.opts.shard_size // max(1, 4 * self.workers)))
        todo = any(rec is None for rec in intact.values())
        with ProcessPoolExecutor(self.workers) if self.workers > 1 and todo else _Inline() as pool:
            for k in ranges:  # in order, so a redone range sees exactly the ranges before it
                rec = intact[k]
                if rec is not None:  # kept from an earlier (interrupted) run
                    seen.update(bytes(d) for d in np.load(_hashes_path(self.out, k)))
                    if progress:
                        progress(rec["inputs"], rec["inputs"])
                else:
                    rec = self._convert_range(pool, k, chunk, digests[k], seen, progress)
                counts.update(rec["skipped"])
        return counts

    def _convert_range(self, pool: ProcessPoolExecutor | _Inline, k: int, chunk: int, inputs: str,
                       seen: set[bytes], progress: Callable[[int, int], None] | None, tries: int = 3) -> dict:  # fmt: skip
        """Range k from its start; a stalled http(s) source is tried again (nothing of a failed try is kept)."""
        for attempt in range(1, tries + 1):
            try:
                items = self.source.range_items(k, self.opts)
                results = _ordered(pool, items, chunk, self.opts, 4 * max(1, self.workers), progress)
                return self._write_range(k, items, results, set(seen), inputs, seen)
            except StalledError as exc:
                if attempt == tries:
                    raise ShardError(
                        f"{exc}; gave up after {tries} tries (converted ranges are kept)"
                    ) from exc
                time.sleep(min(8.0, 2.0 ** (attempt - 1)))
        raise AssertionError("unreachable")

    def _write_range(self, k: int, items: list[Item], results: Iterator[tuple[np.ndarray | str, bytes]],
                     seen: set[bytes], inputs: str, kept: set[bytes]) -> dict:  # fmt: skip
        """Writes range k's shards as their blocks fill (memory: one block of images per split), then its record."""
        streams: dict[str, ShardStream] = {}
        skipped: Counter = Counter()
        report: list[list] = []  # [name, reason, position in the range]
        with ExitStack() as stack:  # a failure (or --strict) removes the unfinished shards' temporary files
            for pos, (item, (image, digest)) in enumerate(zip(items, results, strict=True)):
                if isinstance(image, str) or digest in seen:
                    reason = image if isinstance(image, str) else "duplicate"
                    if self.strict:
                        raise ShardError(
                            f"{shown(item.name)}: {reason.replace('_', ' ')} (--strict stops at the first skipped "
                            "input; nothing already in --out was changed)"
                        )
                    skipped[reason] += 1
                    report.append([item.name, reason, pos])
                    continue
                seen.add(digest)
                split = "test" if in_test(item.name, self.opts.test_fraction) else "train"
                if split not in streams:
                    streams[split] = ShardStream(stack, self.out, split, k, self.opts.block_size)
                streams[split].add(image, item.label, [item.name, pos], digest)
            for stream in streams.values():
                stream.flush()
        shards, order = [], []
        for split in ("train", "test"):  # the order a one-machine conversion lists them in
            if split in streams:
                st = streams[split]
                shards.append({**st.entry(), "split": split, "names": st.names, "max_label": st.max_label})
                order.extend(st.digests)
        with atomic_path(_hashes_path(self.out, k)) as tmp, open(tmp, "wb") as fh:
            np.save(
                fh,
                np.frombuffer(b"".join(order), np.uint8).reshape(-1, 32)
                if order
                else np.zeros((0, 32), np.uint8),
            )
        rec = {"range": k, "options": self.opts.fingerprint(), "inputs": len(items), "inputs_digest": inputs,
               "shards": shards, "skipped": dict(skipped), "report": report}  # fmt: skip
        write_json(_record_path(self.out, k), rec)
        kept.update(seen)
        return rec


class _Inline:
    """ProcessPoolExecutor's interface in this process (--workers 1: no pickling, no extra process)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable, *args: object) -> Future:
        f: Future = Future()
        f.set_result(fn(*args))
        return f


def _ordered(pool: ProcessPoolExecutor | _Inline, items: list[Item], chunk: int, opts: Options, window: int,
             progress: Callable[[int, int], None] | None) -> Iterator[tuple[np.ndarray | str, bytes]]:  # fmt: skip
    """Results in input order with at most `window` chunks in flight: memory bounded by the window."""
    pending: deque[tuple[Future, int]] = deque()
    starts = iter(range(0, len(items), chunk))
    for start in starts:
        pending.append((pool.submit(convert_chunk, items[start : start + chunk], opts), start))
        if len(pending) >= window:
            break
    while pending:
        fut, _ = pending.popleft()
        res = fut.result()
        if progress:
            progress(len(res), sum(1 for r, _ in res if not isinstance(r, str)))
        yield from res
        nxt = next(starts, None)
        if nxt is not None:
            pending.append((pool.submit(convert_chunk, items[nxt : nxt + chunk], opts), nxt))


def merge(out: Path) -> dict:
    """Verifies every range's record and shards, drops duplicates across parts (rewriting only the shards
    that hold a later copy), then writes report.tsv and manifest.json. Returns the manifest."""
    try:
        job = json.loads((out / PROGRESS_DIR / "job.json").read_text())
    except (OSError, ValueError) as exc:
        raise ShardError(
            f"{out}: no conversion to merge ({exc}); run `distgan data images ... --out {out}` first"
        ) from exc
    fp, ranges, opts = (
        job["fingerprint"],
        job["ranges"],
        Options(**{**job["options"], "size": tuple(job["options"]["size"])}),
    )
    inputs = job.get("range_inputs") or [None] * ranges
    records = []
    missing = []
    for k in range(ranges):
        rec = _intact(out, k, fp, inputs[k] if k < len(inputs) else None)
        if rec is None:
            missing.append(k)
        records.append(rec)
    if missing:
        listed = ", ".join(str(k) for k in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ShardError(
            f"{out}: {len(missing)} of {ranges} ranges are missing, damaged or converted from another listing "
            f"of the source ({listed}); rerun the parts that hold them (the same command; intact ranges are "
            "kept), then merge again"
        )
    seen: set[bytes] = set()
    for k, rec in enumerate(records):
        assert rec is not None
        digests = [bytes(d) for d in np.load(_hashes_path(out, k))]
        dup = [d in seen for d in digests]
        seen.update(digests)
        if any(dup):
            records[k] = _drop(out, rec, dup, digests, opts)
    skipped: Counter = Counter()
    report: list[str] = []
    splits: dict[str, dict] = {}
    max_label = -1
    for rec in records:
        assert rec is not None
        skipped.update(rec["skipped"])
        report.extend(f"{shown(name)}\t{reason}" for name, reason, _ in rec["report"])
        for shard in rec["shards"]:
            split = splits.setdefault(shard["split"], {"samples": 0, "shards": []})
            split["samples"] += shard["samples"]
            split["shards"].append({k: shard[k] for k in ("name", "samples", "records", "sha256")})
            max_label = max(max_label, shard["max_label"])
    if "train" not in splits:
        if splits:  # nothing skipped that explains it: every kept input was held out
            raise ShardError(
                f"{out}: every kept input went to the test split (--test-fraction "
                f"{opts.test_fraction}); use a smaller --test-fraction"
            )
        write_text(out / "report.tsv", "path\treason\n" + "".join(f"{line}\n" for line in report))
        raise ShardError(f"{out}: every input was skipped ({dict(skipped)}); see {out / 'report.tsv'}")
    for split in splits.values():
        split["content_sha256"] = _content_sha256(out, split["shards"])
    classes = job["classes"] or ([str(i) for i in range(max_label + 1)] if max_label >= 0 else [])
    write_text(out / "report.tsv", "path\treason\n" + "".join(f"{line}\n" for line in report))
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source": job["source"], "image_shape": opts.shape,
        "dtype": "uint8", "classes": classes, "labelled": max_label >= 0, "block_size": opts.block_size,
        "splits": dict(sorted(splits.items(), key=lambda kv: kv[0] != "train")),
        "skipped": {r: int(skipped.get(r, 0)) for r in REASONS}, "report": "report.tsv",
        "conversion": {**job["options"], "resample": "PIL Lanczos (antialiased)"},
    }  # fmt: skip
    write_json(out / "manifest.json", manifest)
    # every range is intact, so every part has finished: what a killed writer left behind can go
    remove_temporaries(out)
    remove_temporaries(out / PROGRESS_DIR)
    return manifest


def _drop(out: Path, rec: dict, dup: list[bool], digests: list[bytes], opts: Options) -> dict:
    """Rewrites a range's shards without the samples already kept by an earlier range (a later part)."""
    from distgan.data.records import decode_block
    from distgan.data.source import _iter_records

    pos, shards, skipped, report = 0, [], Counter(rec["skipped"]), list(rec["report"])
    kept_digests: list[bytes] = []
    for shard in rec["shards"]:
        images, labels = [], []
        for _, members in _iter_records(out / shard["name"]):
            imgs, labs = decode_block(
                {"images.npy": members["images.npy"], "labels.npy": members["labels.npy"]}
            )
            images.append(imgs)
            labels.append(labs)
        imgs_all, labs_all = np.concatenate(images), np.concatenate(labels)
        n = len(imgs_all)
        keep = [not d for d in dup[pos : pos + n]]
        for (name, at), drop in zip(shard["names"], dup[pos : pos + n], strict=True):
            if drop:
                skipped["duplicate"] += 1
                report.append([name, "duplicate", at])
        kept_digests.extend(d for d, k in zip(digests[pos : pos + n], keep, strict=True) if k)
        pos += n
        split, index = shard["split"], rec["range"]
        (out / shard["name"]).unlink()
        if any(keep):
            mask = np.asarray(keep)
            new = write_shard(out, split, index, imgs_all[mask], labs_all[mask], opts.block_size)
            names = [nm for nm, k in zip(shard["names"], keep, strict=True) if k]
            shards.append({**new, "split": split, "names": names, "max_label": int(labs_all[mask].max())})
    report.sort(key=lambda r: r[2])  # input order, as a one-machine conversion lists them
    new_rec = {**rec, "shards": shards, "skipped": dict(skipped), "report": report}
    with atomic_path(_hashes_path(out, rec["range"])) as tmp, open(tmp, "wb") as fh:
        np.save(
            fh,
            np.frombuffer(b"".join(kept_digests), np.uint8).reshape(-1, 32)
            if kept_digests
            else np.zeros((0, 32), np.uint8),
        )
    write_json(_record_path(out, rec["range"]), new_rec)
    return new_rec


def _content_sha256(out: Path, shards: list[dict]) -> str:
    """records.content_sha256 of a split, streamed over its shards: all images' bytes, then all labels."""
    from distgan.data.records import decode_block
    from distgan.data.source import _iter_records

    h, labels = hashlib.sha256(), []
    for shard in shards:
        for _, members in _iter_records(out / shard["name"]):
            imgs, labs = decode_block(
                {"images.npy": members["images.npy"], "labels.npy": members["labels.npy"]}
            )
            h.update(np.ascontiguousarray(imgs).tobytes())
            labels.append(np.ascontiguousarray(labs, dtype="<i8"))
    for labs in labels:
        h.update(labs.tobytes())
    return h.hexdigest()


def first_image(source: Source, opts_labels: bool = True) -> tuple[tuple[int, int], str]:
    """(H, W) and mode (L or RGB) of the first readable input: the default when --size/--mode are not given."""
    probe = Options(size=(1, 1))
    for k in range(source.ranges):
        for item in source.range_items(k, probe):
            try:
                data = (
                    _png(np.load(item.where, allow_pickle=False)["x"][item.offset])
                    if item.kind == "array"
                    else read_bytes(item)
                )
                im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
            except Exception:  # noqa: BLE001 - any unreadable input: try the next
                continue
            grey = im.mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F")
            return (im.height, im.width), "L" if grey else "RGB"
    raise ShardError(f"{source.spec}: no readable image to take the size from; give --size")


def _same_job(folder: Path, fingerprint: str, source_spec: str) -> bool | None:
    """None: no conversion in folder; else whether it is this one (same options and source)."""
    job = folder / PROGRESS_DIR / "job.json"
    if not job.is_file():
        return None
    try:
        prev = json.loads(job.read_text())
    except ValueError:
        prev = {}
    prev = prev if isinstance(prev, dict) else {}
    return prev.get("fingerprint") == fingerprint and prev.get("source") == source_spec


def prepare_out(out: Path, fingerprint: str, source_spec: str, parts: int = 1) -> Path:
    """The folder this conversion writes to; nothing is deleted here.

    --out must be new, empty, a previous distgan dataset, or this same conversion (resumed). A previous dataset
    is replaced only when the new one is complete: the conversion writes into out/.distgan-staging and
    `promote` moves it in after its manifest is written (a --strict stop, a crash or a kill leaves the old
    dataset as it was). Parts (parts > 1) start at the same time on other machines: they only check, so one
    part cannot remove what another has begun to write; they need a new or empty folder, or this conversion's.
    """
    staged = out / STAGING
    same = _same_job(out, fingerprint, source_spec)
    if same:
        return out  # resuming (or another part of) the same conversion
    if same is False and (parts > 1 or not (out / "manifest.json").is_file()):
        raise ShardError(
            f"--out {out} holds an unfinished conversion of another source or with other options; rerun that "
            "command to resume it, or choose another --out"
        )
    if parts > 1:
        others = sorted(p.name for p in out.iterdir() if p.name != PROGRESS_DIR) if out.is_dir() else []
        if others:
            raise ShardError(
                f"--out {out} holds {', '.join(others[:5])}: parts write into a new or empty folder (or one "
                "holding this same conversion); choose another --out"
            )
        return out
    names = replaceable_shards(out)  # refuses a folder holding anything but a distgan dataset
    if not names and not (out / "manifest.json").is_file():
        return out  # new or empty: nothing to keep whole
    if _same_job(staged, fingerprint, source_spec) is False:
        shutil.rmtree(staged)  # an interrupted replacement by other options: none of it was published
    return staged


def promote(staged: Path, out: Path) -> None:
    """Moves a complete conversion from out/.distgan-staging over the dataset in out: its shards, its progress
    records (so the same command rerun keeps every range), report and manifest last; then the old dataset's
    shards that the new one does not reuse by name are removed."""
    manifest = json.loads((staged / "manifest.json").read_text())
    new = {s["name"] for split in manifest["splits"].values() for s in split["shards"]}
    old = replaceable_shards(out)
    for name in sorted(new):
        os.replace(staged / name, out / name)
    shutil.rmtree(out / PROGRESS_DIR, ignore_errors=True)
    os.replace(staged / PROGRESS_DIR, out / PROGRESS_DIR)
    os.replace(staged / "report.tsv", out / "report.tsv")
    os.replace(staged / "manifest.json", out / "manifest.json")
    for stale in old - new:
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(staged, ignore_errors=True)
