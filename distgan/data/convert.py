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
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from distgan.data.image_sources import Item, Source, StalledError, read_bytes, shown
from distgan.data.options import Options
from distgan.data.shard_writer import ShardError, ShardWriter
from distgan.data.shards import safe_name
from distgan.utils.files import atomic_path, sha256_file, write_json

PROGRESS_DIR = ".distgan-progress"

REASONS = ("empty", "unreadable", "truncated", "too_small", "too_large", "duplicate")
"""Why an input was skipped, as counted in the manifest and listed in report.tsv."""

RESAMPLE = Image.Resampling.LANCZOS
"""Antialiased downsampling: PIL's Lanczos (a=3) filter, the sharpest of PIL's antialiasing filters."""
Image.MAX_IMAGE_PIXELS = None  # Options.max_pixels decides (as too_large), before any pixel is decoded


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


_NPZ: dict[str, np.ndarray] = {}


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
    Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def in_test(name: str, fraction: float) -> bool:
    """Held out by a hash of the input's name: the same split on any machine, for any part."""
    if not fraction:
        return False
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()  # any file name's bytes
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


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


def record_path(out: Path, k: int) -> Path:
    return out / PROGRESS_DIR / f"range-{k:06d}.json"


def hashes_path(out: Path, k: int) -> Path:
    return out / PROGRESS_DIR / f"range-{k:06d}.hashes.npy"


def intact_record(out: Path, k: int, fingerprint: str, inputs: str | None) -> dict | None:
    """A range's record, if it was written by these options from these inputs and its shards still match it.
    A record is read back as untrusted: a shard name that is not a plain file name makes it damaged."""
    path = record_path(out, k)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("options") != fingerprint or not hashes_path(out, k).is_file():
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
        return {
            "source": self.source.spec,
            "kind": self.source.kind,
            "ranges": self.source.ranges,
            "classes": self.source.classes,
            "options": asdict(o),
            "fingerprint": o.fingerprint(),
            "range_inputs": digests,
        }

    def run(self, ranges: range, progress: Callable[[int, int], None] | None = None) -> Counter:
        """Converts the given ranges (skipping intact ones); returns skip counts of this run's ranges."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / PROGRESS_DIR).mkdir(exist_ok=True)
        digests = [self.source.range_digest(k, self.opts.shard_size) for k in range(self.source.ranges)]
        write_json(self.out / PROGRESS_DIR / "job.json", self.job(digests))
        fp = self.opts.fingerprint()
        seen: set[bytes] = set()  # digests kept by earlier ranges: duplicates are dropped in input order
        counts: Counter = Counter()
        intact = {k: intact_record(self.out, k, fp, digests[k]) for k in ranges}
        chunk = max(1, min(256, self.opts.shard_size // max(1, 4 * self.workers)))
        todo = any(rec is None for rec in intact.values())
        with ProcessPoolExecutor(self.workers) if self.workers > 1 and todo else _Inline() as pool:
            for k in ranges:  # in order, so a redone range sees exactly the ranges before it
                rec = intact[k]
                if rec is not None:  # kept from an earlier (interrupted) run
                    seen.update(bytes(d) for d in np.load(hashes_path(self.out, k)))
                    if progress:
                        progress(rec["inputs"], rec["inputs"])
                else:
                    rec = self._convert_range(pool, k, chunk, digests[k], seen, progress)
                counts.update(rec["skipped"])
        return counts

    def _convert_range(
        self,
        pool: ProcessPoolExecutor | _Inline,
        k: int,
        chunk: int,
        inputs: str,
        seen: set[bytes],
        progress: Callable[[int, int], None] | None,
        tries: int = 3,
    ) -> dict:
        """Range k from its start; an http(s) source that did not answer or stalled is tried again, with a
        growing pause (nothing of a failed try is kept), then named."""
        for attempt in range(1, tries + 1):
            try:
                items = self.source.range_items(k, self.opts)
                results = _ordered(pool, items, chunk, self.opts, 4 * max(1, self.workers), progress)
                return self._write_range(k, items, results, set(seen), inputs, seen)
            except StalledError as exc:
                if attempt == tries:
                    raise ShardError(f"{exc}; gave up after {tries} tries (converted ranges are kept)") from exc
                time.sleep(min(8.0, 2.0 ** (attempt - 1)))
        raise AssertionError("unreachable")

    def _write_range(
        self,
        k: int,
        items: list[Item],
        results: Iterator[tuple[np.ndarray | str, bytes]],
        seen: set[bytes],
        inputs: str,
        kept: set[bytes],
    ) -> dict:
        """Writes range k's shards as their blocks fill (memory: one block of images per split), then its record."""
        streams: dict[str, ShardWriter] = {}
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
                    streams[split] = ShardWriter(stack, self.out, split, k, self.opts.block_size)
                streams[split].add(image, item.label, [item.name, pos], digest)
            for stream in streams.values():
                stream.flush()
        shards, order = [], []
        for split in ("train", "test"):  # the order a one-machine conversion lists them in
            if split in streams:
                st = streams[split]
                shards.append({**st.entry(), "split": split, "names": st.names, "max_label": st.max_label})
                order.extend(st.digests)
        with atomic_path(hashes_path(self.out, k)) as tmp, open(tmp, "wb") as fh:
            np.save(
                fh,
                np.frombuffer(b"".join(order), np.uint8).reshape(-1, 32) if order else np.zeros((0, 32), np.uint8),
            )
        rec = {
            "range": k,
            "options": self.opts.fingerprint(),
            "inputs": len(items),
            "inputs_digest": inputs,
            "shards": shards,
            "skipped": dict(skipped),
            "report": report,
        }
        write_json(record_path(self.out, k), rec)
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


def _ordered(
    pool: ProcessPoolExecutor | _Inline,
    items: list[Item],
    chunk: int,
    opts: Options,
    window: int,
    progress: Callable[[int, int], None] | None,
) -> Iterator[tuple[np.ndarray | str, bytes]]:
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
