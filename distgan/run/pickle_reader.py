"""A stranger's network pickle read as data: no code in it runs, nothing outside it changes, and nothing it
declares is allocated before it is checked against the file's own size.

A StyleGAN2-ADA .pkl holds its networks as `torch_utils.persistence` objects: each carries the source code of
the module that defined it, which the official loader executes. `read_pickle` instead unpickles with a fixed
table of what may be rebuilt, and hands out distgan's own wrappers, never the real functions and classes: a
pickle can set attributes on whatever a global names (BUILD), so a real `torch._utils._rebuild_tensor_v2` handed
out could have its defaults rewritten for every later `torch.load` in the process. BUILD is allowed only on the
numpy arrays and dtypes this reader has just made (what numpy's own pickles need), each once.

Bounds, so a small file cannot hang the process or take its memory:
- every opcode is scanned first (`pickletools.genops`): a memo index beyond the opcodes read so far, a frame or
  a declared length beyond the file, or a persistent id is refused before anything is built; the Python
  unpickler then keeps its memo in a dict (the C one grows an array to the largest index it is given);
- containers are built from lists and tuples only (a `set` over a huge stride-0 array spun forever), numpy
  arrays only through numpy's own pickle path with their bytes (never a shape without data);
- a tensor may not address more elements than its storage holds, nor hold more (a stride-0 view of a huge
  shape was cloned to gigabytes); a storage's nested `torch.save` may not declare a size beyond its bytes, nor
  compress (a zip entry inflated 800:1);
- networks are first built on the meta device and compared shape by shape with the tensors the file holds
  (stylegan2_ada.py), so a `z_dim` of 10**7 is a refusal, not 20 GB.

Written by hand because no library reads these pickles without running them.
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distgan.run.errors import PickleRefused

MAX_DEPTH = 64
"""Submodule nesting a network may have (StyleGAN2's is under 10); deeper, or a cycle, is refused."""
SUPPORTED = (
    "StyleGAN2 and StyleGAN2-ADA generators and discriminators (stylegan2-ada-pytorch's training/networks.py: "
    "mapping + skip synthesis, resnet D with minibatch std; any resolution, conditional or not)"
)


@dataclass
class Persistent:
    """A torch_utils.persistence object as data: its class name, its __dict__ and the sha256 of its source."""

    class_name: str
    state: dict[str, Any]
    source_sha256: str
    children: dict[str, Persistent] = field(default_factory=dict)


class EasyDict(dict):
    """dnnlib.util.EasyDict rebuilt as a plain dict (the original adds attribute access, nothing else)."""


class _OrderedDict(OrderedDict):
    """collections.OrderedDict as the pickle asks for it: a subclass, so BUILD on the name reaches only this."""


class _NdarrayName:
    """What the name numpy.ndarray stands for: the class argument of numpy's `_reconstruct`, never callable
    (calling ndarray directly makes an array of any shape and strides over any buffer)."""


NDARRAY = _NdarrayName()


# -- the wrappers find_class hands out ------------------------------------------------------------------------
def _persistent(meta: Any) -> Persistent:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise PickleRefused("a persistent object whose record is not a class record (type 'class' with a state)")
    src = meta.get("module_src", "")
    digest = hashlib.sha256(src.encode() if isinstance(src, str) else b"").hexdigest()
    return Persistent(str(meta.get("class_name")), dict(meta["state"]), digest)


def _items(what: str, items: Any = ()) -> list[Any]:
    if not isinstance(items, list | tuple):
        raise PickleRefused(f"a {what} built from a {type(items).__name__} (only lists and tuples are read)")
    return list(items)


def _set(items: Any = ()) -> set[Any]:
    return set(_items("set", items))


def _frozenset(items: Any = ()) -> frozenset[Any]:
    return frozenset(_items("frozenset", items))


def _ordered_dict(items: Any = ()) -> OrderedDict:
    return _OrderedDict(_items("OrderedDict", items))


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor (pickle protocols 0 and 1), for the containers above only."""
    if cls not in (EasyDict, _OrderedDict) or base not in (dict, object) or not isinstance(state, dict | None):
        raise PickleRefused(f"copyreg._reconstructor of {cls!r}")
    return cls(state or {})


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """numpy.dtype, always a new object (numpy's shared builtin dtypes must never be BUILD's target), of plain
    numbers only."""
    if not isinstance(spec, str) or len(spec) > 8:
        raise PickleRefused(f"a numpy dtype {str(spec)[:40]!r}: only numeric type codes are read")
    d = np.dtype(spec, bool(align), True)
    if d.hasobject or d.kind not in "biufc":
        raise PickleRefused(f"a numpy array or scalar of dtype {d} (not plain numbers)")
    return d


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise PickleRefused(f"a numpy scalar of dtype {dtype!r} that is not plain numbers")
    if len(data) != dtype.itemsize:
        raise PickleRefused(f"a numpy scalar of {len(data)} bytes for dtype {dtype}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _whole(x: Any, what: str, top: int) -> int:
    if type(x) is not int or not 0 <= x <= top:
        raise PickleRefused(f"{what} {str(x)[:40]} is not a whole number in 0..{top}")
    return x


def _shape(x: Any, what: str, top: int) -> tuple[int, ...]:
    if not isinstance(x, tuple | list) or len(x) > 16:
        raise PickleRefused(f"{what} {str(x)[:60]} is not a tuple of at most 16 sizes")
    return tuple(_whole(s, what, top) for s in x)


def _tensor(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2, on a storage this reader made, addressing only elements it holds."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise PickleRefused(f"a tensor over a {type(storage).__name__}, not a storage")
    held = storage._untyped_storage.nbytes() // torch._utils._element_size(storage.dtype)
    offset = _whole(offset, "a tensor's storage offset", held)
    size, stride = _shape(size, "a tensor's size", 1 << 40), _shape(stride, "a tensor's stride", 1 << 40)
    if len(size) != len(stride):
        raise PickleRefused(f"a tensor of size {size} with stride {stride}")
    numel = math.prod(size)
    extent = offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True)) + 1 if numel else offset
    if numel > held or extent > held:
        raise PickleRefused(
            f"a tensor of size {size}, stride {stride} and offset {offset} over a storage of "
            f"{held} elements: it addresses more elements than the file holds"
        )
    if hooks or metadata:  # torch sets both on the tensor as attributes
        raise PickleRefused("a tensor with backward hooks or attributes")
    t = torch.empty((0,), dtype=storage.dtype).set_(storage._untyped_storage, offset, size, stride)
    return t.requires_grad_(bool(requires_grad)) if t.is_floating_point() else t


def _parameter(data: Any, requires_grad: Any = True, hooks: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or hooks:
        raise PickleRefused("a parameter that is not a plain tensor")
    return torch.nn.Parameter(data, bool(requires_grad) and data.is_floating_point())


def _storage(data: Any) -> Any:
    """torch.storage._load_from_bytes, as data: one storage saved by torch.save, read with weights_only after
    its declared sizes were checked against its bytes (torch allocates what a storage declares first)."""
    if not isinstance(data, bytes):
        raise PickleRefused("a storage that is not bytes")
    if data[:4] == b"PK\x03\x04":
        entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
        if any(e.compress_type != zipfile.ZIP_STORED or e.file_size > len(data) for e in entries) or (
            sum(e.file_size for e in entries) > len(data)
        ):
            raise PickleRefused("a storage whose zip entries are compressed or larger than the file holds")
    else:
        _check_legacy(data)
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's own reader on bytes from the file: whatever it says, it is a refusal
        raise PickleRefused(f"a storage torch.load cannot read ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not isinstance(storage, torch.storage.TypedStorage):
        raise PickleRefused(f"a nested torch.save holding a {type(storage).__name__}, not a storage")
    return storage


def _check_legacy(data: bytes) -> None:
    """torch.save's legacy format: pickles of a magic number, the protocol, system info, the object (its
    storage declared by element count) and the storage keys, then the raw bytes. Every integer of the last two
    must fit in the bytes there are."""
    f = io.BytesIO(data)
    for i in range(5):
        for op, arg, _ in pickletools.genops(f):
            if i >= 3 and isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > len(data):
                raise PickleRefused(f"a storage declaring {arg} elements in {len(data)} bytes")
            if op.name == "STOP":
                break


ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch.storage", "_load_from_bytes"): _storage,
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "_reconstruct"): None,  # the reader's own method (it remembers what it made)
    ("numpy._core.multiarray", "_reconstruct"): None,
}
"""Every global a network pickle may name, and what distgan hands out instead; nothing else is looked up."""


# -- the scan and the unpickler -------------------------------------------------------------------------------
MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


def prescan(data: bytes) -> None:
    """Every opcode of the outer pickle before anything is built (pickletools reads, never builds)."""
    if data[:1] != b"\x80":  # protocol 2 and later (StyleGAN2-ADA's are 3 and 4); text is not a pickle
        raise PickleRefused(f"not a pickle (it starts with {data[:12]!r})")
    try:
        for n, (op, arg, _) in enumerate(pickletools.genops(data)):
            if op.name in MEMO_OPS and not (isinstance(arg, int) and 0 <= arg <= n):
                raise PickleRefused(f"a memo index {arg} at opcode {n}: beyond what a pickle can have stored")
            if op.name == "FRAME" and not (isinstance(arg, int) and arg <= len(data)):
                raise PickleRefused(f"a frame of {arg} bytes in a file of {len(data)}")
            if op.name in ("PERSID", "BINPERSID"):
                raise PickleRefused(
                    "a persistent id: not a network pickle (torch.save files are read with "
                    "`distgan sample --ckpt` on a checkpoint folder)"
                )
            if op.name == "STOP":
                return
    except ValueError as exc:  # what genops says of bytes that are not opcodes, or end early
        short = any(w in str(exc) for w in ("exhausted", "remain", "at end of", "truncated"))
        raise PickleRefused(f"truncated ({exc})" if short else f"not a readable pickle ({exc})") from exc
    raise PickleRefused("truncated (no STOP opcode)")


_PyUnpickler: Any = pickle._Unpickler  # the pure-Python one (its stubs are the C one's)


class _Unpickler(_PyUnpickler):
    """Python's own unpickler (its memo is a dict, and BUILD can be checked), with the table above."""

    dispatch = dict(_PyUnpickler.dispatch)

    def __init__(self, f: io.BytesIO) -> None:
        super().__init__(f)
        self.buildable: set[int] = set()  # ids of arrays and dtypes made here that BUILD may fill, once

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise PickleRefused(
                f"refused to load {module}.{name}: a network pickle is read as data, and this global is not one "
                f"of its data types (a pickle can name any function to call while it loads). distgan reads {SUPPORTED}"
            )
        target = ALLOWED[(module, name)]
        if target is None:  # numpy's _reconstruct: the empty arrays BUILD may then fill
            return self._track(self._reconstruct)
        return self._track(_dtype) if target is _dtype else target

    def _track(self, make: Callable[..., Any]) -> Callable[..., Any]:
        def made(*args: Any) -> Any:
            obj = make(*args)
            self.buildable.add(id(obj))
            return obj

        return made

    def _reconstruct(self, cls: Any, shape: Any, code: Any) -> np.ndarray:
        """numpy's `_reconstruct`: an empty array that BUILD then fills with its dtype and bytes."""
        if cls is not NDARRAY or shape not in ((0,), [0]) or code != b"b":
            raise PickleRefused(f"a numpy array made from {type(cls).__name__} with shape {str(shape)[:40]}")
        return np.ndarray.__new__(np.ndarray, (0,), np.uint8)

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefused("a persistent id: not a network pickle")

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if id(inst) not in self.buildable:
            raise PickleRefused(
                f"sets the state of a {type(inst).__name__} (BUILD): a network pickle sets the "
                "state of nothing but the numpy arrays and dtypes it holds"
            )
        self.buildable.discard(id(inst))
        if isinstance(inst, np.ndarray):
            _check_array_state(state)
        elif not (isinstance(state, tuple) and len(state) == 8 and state[2:5] == (None, None, None)):
            raise PickleRefused(f"a numpy dtype state {str(state)[:60]} (fields or subarrays)")
        super().load_build()
        if isinstance(inst, np.dtype) and (inst.hasobject or inst.kind not in "biufc"):
            raise PickleRefused(f"a numpy dtype {inst} (not plain numbers)")

    dispatch[pickle.BUILD[0]] = load_build


def _check_array_state(state: Any) -> None:
    """ndarray.__setstate__'s (version, shape, dtype, fortran, bytes): numbers, exactly as many bytes as the
    shape takes."""
    if not (
        isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], np.dtype) and isinstance(state[4], bytes)
    ):
        raise PickleRefused("a numpy array state that is not (version, shape, dtype, order, bytes)")
    shape, dtype, raw = _shape(state[1], "a numpy array's shape", len(state[4])), state[2], state[4]
    if dtype.hasobject or math.prod(shape) * dtype.itemsize != len(raw):
        raise PickleRefused(f"a numpy array of shape {shape} and dtype {dtype} with {len(raw)} bytes")


def read_pickle(path: Path) -> dict[str, Any]:
    """The pickle's top-level dict ('G', 'D', 'G_ema', ...), persistent objects as Persistent records.
    Every refusal is one line naming the file."""
    path = Path(path)
    try:
        return _read(path)
    except PickleRefused as exc:
        msg = str(exc)
        raise PickleRefused(msg if msg.startswith(str(path)) else f"{path}: {msg}") from exc


def _read(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise PickleRefused("a directory, not a network pickle (.pkl)")
    if not path.is_file():
        raise PickleRefused("no such file")
    data = path.read_bytes()
    prescan(data)
    try:
        out = _Unpickler(io.BytesIO(data)).load()
    except PickleRefused:
        raise
    except EOFError as exc:
        raise PickleRefused("truncated") from exc
    except (
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        UnicodeDecodeError,
        RuntimeError,
        OverflowError,
        RecursionError,
        zipfile.BadZipFile,
    ) as exc:
        raise PickleRefused(f"not a readable network pickle ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(out, dict) or not any(isinstance(out.get(k), Persistent) for k in ("G", "G_ema")):
        raise PickleRefused("not a network pickle (no 'G' or 'G_ema' network in it)")
    odd = [k for k in out if not isinstance(k, str)]
    if odd:
        raise PickleRefused(f"a top-level key {str(odd[0])[:40]} that is not a name")
    return out


# -- walking a record tree ------------------------------------------------------------------------------------
def modules(p: Persistent) -> dict[str, Any]:
    mods = p.state.get("_modules") or {}
    if not isinstance(mods, dict):
        raise PickleRefused(f"the {p.class_name} record's _modules is a {type(mods).__name__}, not a mapping")
    return dict(mods)


def walk(
    p: Persistent,
    prefix: str = "",
    depth: int = 0,
    path: set[int] | None = None,
    first: dict[int, str] | None = None,
) -> Iterator[tuple[str, Persistent]]:
    """(dotted name, record) of a module tree, root first. Refused: a cycle, nesting deeper than MAX_DEPTH, and
    one record under two names (every record is visited once: a record shared twice at each of 40 levels has
    2^40 paths; StyleGAN2-ADA's networks share none)."""
    path = set() if path is None else path
    first = {} if first is None else first
    name = prefix.rstrip(".") or p.class_name
    if id(p) in path:
        raise PickleRefused(f"submodule {name} contains itself (a cycle)")
    if id(p) in first:
        raise PickleRefused(
            f"submodule {name} is the same record as {first[id(p)]}: one network record under two names, which "
            "StyleGAN2-ADA's pickles never hold"
        )
    if depth > MAX_DEPTH:
        raise PickleRefused(f"submodules nested deeper than {MAX_DEPTH} levels")
    path.add(id(p))
    first[id(p)] = name
    yield prefix, p
    for k, child in modules(p).items():
        if not isinstance(child, Persistent):
            raise PickleRefused(f"submodule {prefix}{k} is a {type(child).__name__}, not a persistent network")
        yield from walk(child, f"{prefix}{k}.", depth + 1, path, first)
    path.discard(id(p))


def tensors(p: Persistent) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a persistent module tree, by their dotted names (as state_dict would)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, rec in walk(p):
        for group in ("_parameters", "_buffers"):
            values = rec.state.get(group) or {}
            if not isinstance(values, dict):
                raise PickleRefused(f"{prefix}{group} is a {type(values).__name__}, not a mapping")
            for k, v in values.items():
                if isinstance(v, torch.Tensor):
                    out[f"{prefix}{k}"] = v.detach()
    return out


def contains(p: Persistent, class_name: str) -> bool:
    return any(rec.class_name == class_name for _, rec in walk(p))
