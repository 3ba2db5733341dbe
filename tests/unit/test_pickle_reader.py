"""distgan/run/pickle_reader.py against a stranger's pickle (issue 45): nothing outside the file changes, nothing
hangs, nothing is allocated beyond what the file holds, and every refusal is one line naming the file."""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from distgan.run.errors import PickleRefused
from distgan.run.pickle_reader import Persistent, read_pickle, tensors
from distgan.run.stylegan2_ada import import_state, model_config

FIX = Path(__file__).resolve().parents[1] / "fixtures"
ROOT = FIX.parents[1]
PICKLES = [FIX / "sg2ada-32px-rgb-cond10.pkl", FIX / "sg2ada-64px-grey.pkl"]


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s)) + s.encode()


def _persistence_module() -> dict[str, types.ModuleType]:
    """What the official pickles name, in this process only while a test pickles (distgan never imports it)."""
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta: dict) -> None:
        raise AssertionError("never called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    pkg = types.ModuleType("torch_utils")
    pkg.persistence = mod  # type: ignore[attr-defined]
    return {"torch_utils": pkg, "torch_utils.persistence": mod}


FAKE = _persistence_module()


class Rec:
    """A persistent network record as the official pickles write it."""

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name, self.state = class_name, state

    def __reduce__(self) -> tuple:
        meta = {
            "type": "class",
            "version": 6,
            "module_src": "",
            "class_name": self.class_name,
            "state": self.state,
        }
        return (FAKE["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))  # type: ignore[attr-defined]


def write(path: Path, obj: object) -> Path:
    with mock.patch.dict(sys.modules, FAKE):
        path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def refused(path: Path, match: str) -> str:
    with pytest.raises(PickleRefused) as err:
        import_state(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg, msg
    assert __import__("re").search(match, msg), msg
    return msg


def test_build_on_an_allowed_global_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """A 72-byte file set torch._utils._rebuild_tensor_v2.__defaults__ through BUILD, was then refused in one
    line, and every later torch.load in the process read altered tensors. Now find_class hands out wrappers
    and BUILD reaches only the arrays and dtypes the reader made."""
    before = torch._utils._rebuild_tensor_v2.__defaults__
    f32 = np.dtype("f4").byteorder
    evil = tmp_path / "evil.pkl"
    # GLOBAL f; (None, {'__defaults__': (None,)}); BUILD: setattr(f, '__defaults__', (None,))
    evil.write_bytes(
        b"\x80\x02" + glob("torch._utils", "_rebuild_tensor_v2") + b"N}" + text("__defaults__") + b"N\x85s\x86b."
    )
    refused(evil, r"sets the state of a function \(BUILD\)")
    flip = tmp_path / "dtype.pkl"  # numpy's shared float32 dtype, turned big-endian by BUILD
    flip.write_bytes(
        b"\x80\x02"
        + glob("numpy", "dtype")
        + text("f4")
        + b"\x89\x89\x87R"
        + b"(K\x03"
        + text(">")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb."
    )
    refused(flip, "not a network pickle")  # read as data (a dtype), then not a network
    assert torch._utils._rebuild_tensor_v2.__defaults__ == before and np.dtype("f4").byteorder == f32
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buf)
    assert torch.equal(torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["w"], torch.arange(4.0))


def storage_bytes(n: int) -> bytes:
    """A float storage of n elements as torch.storage._load_from_bytes receives it (legacy torch.save)."""
    buf = io.BytesIO()
    torch.save(torch.zeros(n).storage(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def tensor_pickle(path: Path, size: tuple, stride: tuple, storage: bytes) -> Path:
    """{'G': a Generator record whose one parameter is rebuilt from `storage` with size and stride}."""
    st = b"".join(b"J" + struct.pack("<i", x) for x in size)
    sd = b"".join(b"J" + struct.pack("<i", x) for x in stride)
    t = (
        glob("torch._utils", "_rebuild_tensor_v2")
        + b"("
        + glob("torch.storage", "_load_from_bytes")
        + b"B"
        + struct.pack("<I", len(storage))
        + storage
        + b"\x85R"
        + b"K\x00("
        + st
        + b"t("
        + sd
        + b"t\x89"
        + glob("collections", "OrderedDict")
        + b")RtR"
    )
    rec = (
        glob("torch_utils.persistence", "_reconstruct_persistent_obj")
        + b"}("
        + text("type")
        + text("class")
        + text("class_name")
        + text("Generator")
        + text("state")
        + b"}"
        + text("_parameters")
        + b"}"
        + text("w")
        + t
        + b"ss"
        + b"u\x85R"
    )
    path.write_bytes(b"\x80\x02}" + text("G") + rec + b"s.")
    return path


def test_tensors_never_address_more_than_the_file_holds(tmp_path: Path) -> None:
    """A 629-byte file whose tensor had stride 0 and a huge shape was cloned to 1.3 GB."""
    ok = tensor_pickle(tmp_path / "ok.pkl", (2, 2), (2, 1), storage_bytes(4))
    rec = read_pickle(ok)["G"]
    assert torch.equal(tensors(rec)["w"], torch.zeros(2, 2))
    for name, size, stride, n in (
        ("stride0", (100000, 10000), (0, 0), 1),
        ("past", (4, 4), (4, 1), 4),
        ("offset", (3,), (2,), 4),
    ):
        bad = tensor_pickle(tmp_path / f"{name}.pkl", size, stride, storage_bytes(n))
        refused(bad, "addresses more elements than the file holds")


def test_declared_sizes_are_capped_by_the_file(tmp_path: Path) -> None:
    """A 9-byte file with a memo index of 2**31 grew the C unpickler's memo to 2.3 GB; a storage may not declare
    more elements than its bytes, nor compress (800:1 as a zip entry)."""
    memo = tmp_path / "memo.pkl"
    memo.write_bytes(b"\x80\x02Nr" + struct.pack("<I", 2**31 - 1) + b".")
    refused(memo, r"a memo index 2147483647 at opcode 2")
    legacy = bytearray(storage_bytes(4))
    at = legacy.index(b"K\x04Nt", 40)  # the declared element count in the storage's own pickle
    legacy[at : at + 2] = b"J" + struct.pack("<i", 10**9)
    refused(tensor_pickle(tmp_path / "legacy.pkl", (4,), (1,), bytes(legacy)), "a storage declaring 1000000000")
    big = io.BytesIO()
    torch.save(torch.zeros(1 << 20).storage(), big)
    zipped = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(big.getvalue())) as src,
        zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert len(zipped.getvalue()) * 100 < 4 << 20  # the bomb: 4 MB of storage in a few kB
    refused(tensor_pickle(tmp_path / "zip.pkl", (4,), (1,), zipped.getvalue()), "zip entries are compressed")


def g_kwargs(**over: object) -> dict:
    kw = {
        "z_dim": 8,
        "w_dim": 8,
        "c_dim": 0,
        "img_resolution": 8,
        "img_channels": 1,
        "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {"channel_base": 64, "channel_max": 8},
    }
    kw.update(over)
    return kw


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (g_kwargs(z_dim=10**7), r"G z_dim=10000000: distgan reads a whole number in 1..16384"),
        (g_kwargs(z_dim=64), r"G: distgan's .* has no counterpart"),
        ({k: v for k, v in g_kwargs().items() if k != "w_dim"}, "G init kwargs lack w_dim"),
        (g_kwargs(w_dim="8"), "G w_dim='8'|G w_dim=8: distgan reads a whole number"),
        (g_kwargs(synthesis_kwargs={"channel_base": 4}), r"G synthesis channel_base=4: .* in 8\.\."),
        (g_kwargs(img_resolution=12), "img_resolution=12: StyleGAN2's is a power of two"),
        (g_kwargs(synthesis_kwargs={"activation": "relu"}), "synthesis activation='relu'"),
        (g_kwargs(synthesis_kwargs={"use_noise": False}), "synthesis use_noise=False"),
        (g_kwargs(mapping_kwargs=[1]), "G mapping_kwargs is a list, not a mapping"),
    ],
)
def test_init_kwargs_are_checked_before_anything_is_built(tmp_path: Path, kwargs: dict, message: str) -> None:
    """z_dim=10**7 built a 20 GB network before any tensor was compared; missing or mistyped kwargs ended in
    KeyError/TypeError/ZeroDivisionError; kwargs distgan cannot express were dropped without a word."""
    path = write(tmp_path / "g.pkl", {"G": Rec("Generator", {"_init_kwargs": kwargs, "_modules": {}})})
    refused(path, message)


def test_what_is_found_after_unpickling_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """A state that is a list, a submodule cycle or 3,000-deep nesting, an object-dtype array, a text file, a
    directory named x.pkl and a tuple key at the top level: each a PickleRefused naming the file."""
    write(tmp_path / "list.pkl", {"G": Rec("Generator", {"_init_kwargs": g_kwargs(), "_modules": [1, 2]})})
    refused(tmp_path / "list.pkl", "_modules is a list, not a mapping")
    write(tmp_path / "obj.pkl", {"G": np.array([1, "a"], dtype=object)})
    refused(tmp_path / "obj.pkl", "refused to load|not plain numbers")
    (tmp_path / "notes.pkl").write_text("G = my network\n")
    refused(tmp_path / "notes.pkl", r"not a pickle \(it starts with b'G = my ne")
    (tmp_path / "dir.pkl").mkdir()
    refused(tmp_path / "dir.pkl", "a directory, not a network pickle")
    write(tmp_path / "key.pkl", {"G": Rec("Generator", {}), (1, 2): 3})
    refused(tmp_path / "key.pkl", r"a top-level key \(1, 2\) that is not a name")
    from distgan.cli import main  # the json of its import record failed, leaving a half-written --out

    assert main(["import", str(tmp_path / "key.pkl"), "--out", str(tmp_path / "out")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []
    a = Persistent("Generator", {"_init_kwargs": g_kwargs(), "_modules": {}}, "")
    a.state["_modules"]["mapping"] = a
    with pytest.raises(PickleRefused, match="mapping contains itself"):
        tensors(a)
    deep = Persistent("Generator", {"_init_kwargs": g_kwargs()}, "")
    node = deep
    for _ in range(3000):
        child = Persistent("Block", {}, "")
        node.state["_modules"] = {"b": child}
        node = child
    with pytest.raises(PickleRefused, match="nested deeper than 64"):
        model_config(deep, None)


@pytest.mark.parametrize(
    ("d_kwargs", "message"),
    [
        ({"block_kwargs": {"activation": "relu"}}, "D activation='relu'"),
        ({"epilogue_kwargs": {"activation": "linear"}}, "D epilogue activation='linear'"),
        ({"conv_clamp": 128}, r"D conv_clamp \(G's is the one distgan keeps\)=128.0"),
        ({"epilogue_kwargs": {"mbstd_num_channels": 100}}, "D epilogue mbstd_num_channels=100"),
    ],
)
def test_d_kwargs_distgan_cannot_express_are_refused_by_name(d_kwargs: dict, message: str) -> None:
    g = Persistent("Generator", {"_init_kwargs": g_kwargs()}, "")
    base = {"c_dim": 0, "img_resolution": 8, "img_channels": 1, "channel_base": 64, "channel_max": 8}
    d = Persistent("Discriminator", {"_init_kwargs": {**base, **d_kwargs}}, "")
    with pytest.raises(PickleRefused, match=message):
        model_config(g, d)
    assert model_config(g, Persistent("Discriminator", {"_init_kwargs": base}, "")).mbstd_group == 4
    two = {**base, "epilogue_kwargs": {"mbstd_num_channels": 2}}  # model.mbstd_channels expresses it
    assert model_config(g, Persistent("Discriminator", {"_init_kwargs": two}, "")).mbstd_channels == 2


def test_an_edited_noise_dim_is_refused_before_its_network_is_built() -> None:
    """A tampered checkpoint's config.model.noise_dim=10**7 built a 20 GB generator in `distgan sample` before
    the weights were compared; the shapes are compared on the meta device first."""
    import resource

    from distgan.run.errors import CheckpointError
    from distgan.run.sample import load_generator

    state = import_state(PICKLES[1])
    state["config"]["model"]["noise_dim"] = 10**7
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=r"mapping.fcs.0.weight: config \(16, 10000000\), weights \(16, 16\)"):
        load_generator(PICKLES[1], None, state)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024  # KB
