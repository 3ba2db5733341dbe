"""Official StyleGAN2-ADA network pickles (NVlabs/stylegan2-ada-pytorch, and TF pickles it converted) read as
data, never run: sampled, exported and fine-tuned as distgan's own stylegan2 networks.

Such a .pkl holds its networks as `torch_utils.persistence` objects: each carries the source code of the module
that defined it, which the official loader executes (and its custom CUDA ops then build). Opening a stranger's
pickle that way runs the stranger's code. `read_pickle` instead unpickles with a fixed table of what may be
rebuilt: tensors (their storages read by torch.load(weights_only=True)), plain containers, numeric numpy
scalars and arrays, dnnlib's EasyDict as a dict, and each persistent object as a record of its class name,
state and a hash of its (never executed) source. Any other global is refused by name before it is called, so no
`__reduce__` runs and no module is imported. `convert` then maps the G, D and G_ema records onto distgan's
stylegan2 networks (equal to stylegan2-ada-pytorch's to 5e-7 with the same weights: benchmarks/
stylegan2_reference.py) and `import_state` gives the checkpoint state `distgan sample`, `export`, `eval` and
`train.init_from` read. Hand-written because no library reads these pickles without running them.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distgan.config import Config, ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig
from distgan.models import build_discriminator, build_generator
from distgan.utils.files import sha256_file

SUPPORTED = (
    "StyleGAN2 and StyleGAN2-ADA generators and discriminators (stylegan2-ada-pytorch's training/networks.py: "
    "mapping + skip synthesis, resnet D with minibatch std; any resolution, conditional or not)"
)


class PickleRefused(ConfigError):
    """The pickle holds something distgan does not rebuild, or is not a network pickle; the message says what."""


@dataclass
class Persistent:
    """A torch_utils.persistence object as data: its class name, its __dict__ and the sha256 of its source."""

    class_name: str
    state: dict[str, Any]
    source_sha256: str
    children: dict[str, Persistent] = field(default_factory=dict)


class EasyDict(dict):
    """dnnlib.util.EasyDict rebuilt as a plain dict (the original adds attribute access, nothing else)."""


def _persistent(meta: Any) -> Persistent:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise PickleRefused(
            "a persistent object whose record is not a class record (type 'class' with a state)"
        )
    src = meta.get("module_src", "")
    digest = hashlib.sha256(src.encode() if isinstance(src, str) else b"").hexdigest()
    return Persistent(str(meta.get("class_name")), dict(meta["state"]), digest)


def _storage(data: bytes) -> Any:
    """torch.storage._load_from_bytes, as data: a storage saved by torch.save, read with weights_only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _dtype(*args: Any) -> np.dtype:
    d = np.dtype(*args)
    if d.hasobject:
        raise PickleRefused(f"a numpy array or scalar of dtype {d} (Python objects inside)")
    return d


def _scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise PickleRefused(f"a numpy scalar of dtype {dtype!r} that is not plain numbers")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _reconstruct(cls: Any, shape: Any, code: Any) -> np.ndarray:
    """An empty ndarray that pickle's BUILD then fills through ndarray.__setstate__, with a dtype that came
    through _dtype (so never one of Python objects)."""
    if cls is not np.ndarray:
        raise PickleRefused(f"a numpy array of class {cls!r}")
    return np.ndarray.__new__(np.ndarray, shape, np.uint8)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor (pickle protocols 0 and 1), for the containers above only."""
    if cls not in (EasyDict, OrderedDict, dict) or base not in (dict, object):
        raise PickleRefused(f"copyreg._reconstructor of {cls!r}")
    return cls(state or {})


ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage,
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
}
"""Every global a network pickle may name, and what distgan calls instead; nothing else is looked up."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: io.BufferedIOBase, where: Path) -> None:
        super().__init__(f)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        target = ALLOWED.get((module, name))
        if target is None:
            raise PickleRefused(
                f"{self.where}: refused to load {module}.{name}: a network pickle is read as data, and this "
                f"global is not one of its data types (a pickle can name any function to call while it loads). "
                f"distgan reads {SUPPORTED}"
            )
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefused(f"{self.where}: a persistent id {str(pid)[:60]!r}: not a network pickle (torch.save "
                            "files are read with `distgan sample --ckpt` on a checkpoint folder)")  # fmt: skip


def read_pickle(path: Path) -> dict[str, Any]:
    """The pickle's top-level dict ('G', 'D', 'G_ema', ...), persistent objects as Persistent records."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _Unpickler(f, path).load()
    except PickleRefused:
        raise
    except FileNotFoundError as exc:
        raise PickleRefused(f"{path}: no such file") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            UnicodeDecodeError, RuntimeError) as exc:  # fmt: skip
        what = (
            "is truncated"
            if isinstance(exc, EOFError)
            else f"is not a readable pickle ({type(exc).__name__}: {exc})"
        )
        raise PickleRefused(f"{path} {what}; give a StyleGAN2-ADA network pickle (.pkl)") from exc
    if not isinstance(data, dict) or not any(isinstance(data.get(k), Persistent) for k in ("G", "G_ema")):
        raise PickleRefused(f"{path}: not a network pickle (no 'G' or 'G_ema' network in it)")
    return data


def modules(p: Persistent) -> dict[str, Any]:
    return dict(p.state.get("_modules") or {})


def tensors(p: Persistent, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of a persistent module tree, by their dotted names (as state_dict would)."""
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for k, v in (p.state.get(group) or {}).items():
            if isinstance(v, torch.Tensor):
                out[prefix + k] = v.detach().clone()
    for k, child in modules(p).items():
        if not isinstance(child, Persistent):
            raise PickleRefused(
                f"submodule {prefix}{k} is a {type(child).__name__}, not a persistent network"
            )
        out.update(tensors(child, f"{prefix}{k}."))
    return out


def _find(p: Persistent, name: str) -> bool:
    return p.class_name == name or any(
        isinstance(c, Persistent) and _find(c, name) for c in modules(p).values()
    )


def _kwargs(p: Persistent) -> dict[str, Any]:
    kw = p.state.get("_init_kwargs")
    if not isinstance(kw, dict):
        raise PickleRefused(
            f"the {p.class_name} record has no init kwargs (_init_kwargs): not a persistent network"
        )
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in kw.items()}


def _require(what: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise PickleRefused(f"{what}={value!r}: distgan's stylegan2 supports {' or '.join(map(repr, allowed))}; "
                            f"it reads {SUPPORTED}")  # fmt: skip


def model_config(G: Persistent, D: Persistent | None) -> ModelConfig:
    """distgan's model section for a StyleGAN2(-ADA) G (and D), refusing what its networks do not express."""
    if G.class_name != "Generator" or _find(G, "SynthesisInput"):
        kind = "a StyleGAN3 (alias-free)" if _find(G, "SynthesisInput") else f"a {G.class_name!r}"
        raise PickleRefused(f"the pickle holds {kind} generator; distgan reads {SUPPORTED}")
    g = _kwargs(G)
    syn, mapping = dict(g.get("synthesis_kwargs") or {}), dict(g.get("mapping_kwargs") or {})
    _require("synthesis architecture", syn.get("architecture", "skip"), ("skip",))
    _require("resample_filter", list(syn.get("resample_filter", [1, 3, 3, 1])), ([1, 3, 3, 1],))
    for k in ("embed_features", "layer_features"):
        _require(f"mapping {k}", mapping.get(k), (None, g["w_dim"]))
    _require("mapping activation", mapping.get("activation", "lrelu"), ("lrelu",))
    res, channels = int(g["img_resolution"]), int(g["img_channels"])
    _require("img_channels", channels, (1, 3))
    kw: dict[str, Any] = dict(
        arch="stylegan2", noise_dim=int(g["z_dim"]), w_dim=int(g["w_dim"]), image_shape=[channels, res, res],
        num_classes=int(g.get("c_dim") or 0), mapping_layers=int(mapping.get("num_layers", 8)),
        mapping_lr_mul=float(mapping.get("lr_multiplier", 0.01)), sg_channel_base=int(syn.get("channel_base", 32768)),
        sg_channel_max=int(syn.get("channel_max", 512)), sg_mp_res=int(syn.get("num_fp16_res", 0)),
        sg_conv_clamp=float(syn.get("conv_clamp") or 0.0), sg_resample="fir", init="default",
    )  # fmt: skip
    if D is not None:
        d = _kwargs(D)
        _require("D architecture", d.get("architecture", "resnet"), ("resnet",))
        epi, dmap = dict(d.get("epilogue_kwargs") or {}), dict(d.get("mapping_kwargs") or {})
        _require("D mbstd_num_channels", epi.get("mbstd_num_channels", 1), (1,))
        _require("D mapping num_layers", dmap.get("num_layers", 8), (8,))
        _require("D cmap_dim", d.get("cmap_dim"), (None,))
        for k in ("channel_base", "channel_max"):
            _require(f"D {k}", d.get(k, {"channel_base": 32768, "channel_max": 512}[k]), (kw[f"sg_{k}"],))
        kw["mbstd_group"] = int(epi.get("mbstd_group_size", 4) or 4)
    return ModelConfig(**kw)


# -- names: distgan's stylegan2 parameter -> stylegan2-ada-pytorch's (also used by the reference check) -----
def their_name(n: str, net: str, res: int) -> str:
    """Our parameter name -> stylegan2-ada-pytorch's (networks.py) at image size res."""
    n = n.replace("mapping.fcs.", "mapping.fc")
    m = re.match(r"blocks\.(\d+)\.(.*)", n)
    if net == "G":
        if m:
            i, rest = int(m.group(1)), m.group(2)
            convs = ("conv1",) if i == 0 else ("conv0", "conv1")
            for j, name in enumerate(convs):
                rest = rest.replace(f"convs.{j}", name)
            return f"synthesis.b{4 * 2**i}.{rest}"
        return n
    if m:
        return f"b{res // 2 ** int(m.group(1))}.{m.group(2)}"
    if n.startswith("fromrgb"):
        return f"b{res}.{n}"
    return n if n.startswith("mapping") else f"b4.{n}"


def convert(
    record: Persistent, net: str, cfg: ModelConfig, ours: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A G or D record's tensors as distgan's state dict `ours` (a fresh network's, for `cfg`), every tensor
    accounted for both ways."""
    theirs = tensors(record)
    res = cfg.image_shape[1]
    out, used = {}, set()
    for n, t in ours.items():
        rn = their_name(n, "G" if net != "D" else "D", res)
        if rn not in theirs or theirs[rn].shape != t.shape:
            got = tuple(theirs[rn].shape) if rn in theirs else "nothing"
            raise PickleRefused(f"{net}: distgan's {n} {tuple(t.shape)} has no counterpart {rn} (found {got}); "
                                f"distgan reads {SUPPORTED}")  # fmt: skip
        out[n] = theirs[rn].to(t.dtype)
        used.add(rn)
    left = sorted(k for k in theirs if k not in used and not k.endswith("resample_filter"))
    if left:
        raise PickleRefused(f"{net}: tensors distgan's stylegan2 has no place for: {', '.join(left[:6])}")
    return out


def finetune_config(model: ModelConfig, stem: str) -> Config:
    """The pickle's model with StyleGAN2-ADA's own auto config for training on (few) new images: batch
    32 (64 and more px; up to 64 below), R1 gamma 0.0002 res^2 / batch, lazy R1 and path length, style mixing,
    EMA half-life batch x 10 / 32 kimg, ADA towards r_t 0.6, Adam 0.0025 (0, 0.99). data.path is yours."""
    res = model.image_shape[1]
    batch = max(min(4096 // res, 64), 16)
    train = TrainConfig(batch_size=batch, epochs=100, loss="ns", r1_gamma=round(0.0002 * res**2 / batch, 6),
                        r1_every=16, pl_weight=2.0, style_mixing=0.9, ema_kimg=batch * 10 / 32, augment="ada",
                        ada_target=0.6, ada_ops="bgc" if model.image_shape[0] == 3 else "bg", log_every=100,
                        sample_every=500)  # fmt: skip
    optim = OptimConfig(lr_g=0.0025, lr_d=0.0025, betas=[0.0, 0.99])
    return Config(name=f"finetune-{stem}", data=DataConfig(path="data/your-images"), model=model, optim=optim,
                  train=train)  # fmt: skip


def import_state(path: Path) -> dict[str, Any]:
    """The pickle as the state a distgan checkpoint folder holds: config (defaults + the pickle's model),
    objects.trainer.{G, D, G_ema}; the pickle's sha256 and source hashes under 'imported'."""
    data = read_pickle(path)
    G, D = data.get("G_ema"), data.get("D")
    G = G if isinstance(G, Persistent) else data["G"]
    D = D if isinstance(D, Persistent) else None
    cfg = model_config(G, D)
    names = [name for name in ("G", "G_ema", "D") if isinstance(data.get(name), Persistent)]
    shapes = {"G": build_generator(cfg).state_dict()}  # one template for G and G_ema: building G is not free
    if "D" in names:
        shapes["D"] = build_discriminator(cfg).state_dict()
    nets: dict[str, Any] = {n: convert(data[n], n, cfg, shapes["D" if n == "D" else "G"]) for n in names}
    if "G" not in nets:  # a pickle with G_ema only: it serves as both
        nets["G"] = nets["G_ema"]
    sha = sha256_file(Path(path))
    config = finetune_config(cfg, Path(path).stem).to_dict()
    return {
        "step": 0,
        "config": config,
        "objects": {"trainer": {**nets, "step": 0, "epoch": 0, "images_seen": 0}},
        "classes": [],
        "imported": {"pickle": str(path), "sha256": sha, "networks": sorted(nets),
                     "source_sha256": {k: v.source_sha256 for k, v in data.items() if isinstance(v, Persistent)}},
    }  # fmt: skip


def is_pickle(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() == ".pkl"
