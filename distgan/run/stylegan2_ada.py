"""Official StyleGAN2-ADA network pickles (NVlabs/stylegan2-ada-pytorch, and TF pickles it converted), read
as data by pickle_reader.py (never run), as distgan's own stylegan2 networks: sampled, exported, fine-tuned.

`model_config` maps the records' init kwargs onto distgan's model section, refusing by name what distgan's
networks do not express; `convert` maps the G, D and G_ema records onto distgan's stylegan2 networks (equal to
stylegan2-ada-pytorch's to 5e-7 with the same weights: benchmarks/stylegan2_reference.py), shape by shape
against networks built on the meta device, so nothing a file declares is allocated before it matches the
tensors the file really holds; `import_state` gives the checkpoint state `distgan sample`, `export`, `eval` and
`train.init_from` read. Anything amiss in a record is a PickleRefused naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from distgan.config import Config, ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig
from distgan.models import build_discriminator, build_generator
from distgan.run.errors import PickleRefused
from distgan.run.pickle_reader import SUPPORTED, Persistent, contains, read_pickle, tensors
from distgan.utils.files import sha256_file

__all__ = ["import_state", "is_pickle", "model_config"]


def _kwargs(p: Persistent) -> dict[str, Any]:
    kw = p.state.get("_init_kwargs")
    if not isinstance(kw, dict):
        raise PickleRefused(f"the {p.class_name} record has no init kwargs (_init_kwargs): not a persistent network")
    return dict(kw)


def _section(kw: dict[str, Any], key: str, who: str) -> dict[str, Any]:
    v = kw.get(key)
    if v is not None and not isinstance(v, dict):
        raise PickleRefused(f"{who} {key} is a {type(v).__name__}, not a mapping")
    return dict(v or {})


_NO = object()


def _int(kw: dict[str, Any], key: str, who: str, lo: int, hi: int, default: Any = _NO) -> int:
    """An integer init kwarg within bounds (checked before any network is built from it)."""
    v = kw.get(key, default)
    if v is _NO:
        raise PickleRefused(f"{who} init kwargs lack {key}")
    if type(v) is not int or not lo <= v <= hi:
        raise PickleRefused(f"{who} {key}={str(v)[:40]}: distgan reads a whole number in {lo}..{hi}")
    return v


def _number(kw: dict[str, Any], key: str, who: str, default: float) -> float:
    v = kw.get(key, default)
    if v is None:
        return 0.0
    if type(v) not in (int, float) or not 0 <= v < 1e6:
        raise PickleRefused(f"{who} {key}={str(v)[:40]}: distgan reads a number in [0, 1e6)")
    return float(v)


def _require(what: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise PickleRefused(
            f"{what}={repr(value)[:60]}: distgan's stylegan2 supports "
            f"{' or '.join(map(repr, allowed))}; it reads {SUPPORTED}"
        )


def model_config(G: Persistent, D: Persistent | None) -> ModelConfig:
    """distgan's model section for a StyleGAN2(-ADA) G (and D), refusing by name what its networks do not
    express (rather than dropping it: the images would silently differ from the reference's)."""
    if G.class_name != "Generator" or contains(G, "SynthesisInput"):
        kind = "a StyleGAN3 (alias-free)" if contains(G, "SynthesisInput") else f"a {G.class_name!r}"
        raise PickleRefused(f"the pickle holds {kind} generator; distgan reads {SUPPORTED}")
    g = _kwargs(G)
    syn, mapping = _section(g, "synthesis_kwargs", "G"), _section(g, "mapping_kwargs", "G")
    _require("synthesis architecture", syn.get("architecture", "skip"), ("skip",))
    _require("resample_filter", syn.get("resample_filter", [1, 3, 3, 1]), ([1, 3, 3, 1], (1, 3, 3, 1)))
    _require("synthesis activation", syn.get("activation", "lrelu"), ("lrelu",))
    _require("synthesis use_noise", syn.get("use_noise", True), (True,))
    w_dim = _int(g, "w_dim", "G", 1, 1 << 14)
    for k in ("embed_features", "layer_features"):
        _require(f"mapping {k}", mapping.get(k), (None, w_dim))
    _require("mapping activation", mapping.get("activation", "lrelu"), ("lrelu",))
    res, channels = _int(g, "img_resolution", "G", 4, 1 << 14), _int(g, "img_channels", "G", 1, 3)
    _require("img_channels", channels, (1, 3))
    if res & (res - 1):
        raise PickleRefused(f"G img_resolution={res}: StyleGAN2's is a power of two")
    base, cmax = (
        _int(syn, "channel_base", "G synthesis", res, 1 << 20, 32768),
        _int(syn, "channel_max", "G synthesis", 1, 1 << 14, 512),
    )
    clamp = _number(syn, "conv_clamp", "G synthesis", 0.0)
    sg: dict[str, Any] = dict(  # model.stylegan2
        w_dim=w_dim,
        mapping_layers=_int(mapping, "num_layers", "G mapping", 1, 64, 8),
        mapping_lr_mul=_number(mapping, "lr_multiplier", "G mapping", 0.01),
        channel_base=base,
        channel_max=cmax,
        mp_res=_int(syn, "num_fp16_res", "G synthesis", 0, 16, 0),
        conv_clamp=clamp,
        resample="fir",
    )
    kw: dict[str, Any] = dict(
        arch="stylegan2",
        noise_dim=_int(g, "z_dim", "G", 1, 1 << 14),
        image_shape=[channels, res, res],
        num_classes=_int(g, "c_dim", "G", 0, 1 << 16, 0),
        init="default",
        sections={"stylegan2": sg},
    )
    if D is not None:
        d = _kwargs(D)
        _require("D architecture", d.get("architecture", "resnet"), ("resnet",))
        epi, dmap = _section(d, "epilogue_kwargs", "D"), _section(d, "mapping_kwargs", "D")
        block = _section(d, "block_kwargs", "D")
        _require("D mapping num_layers", dmap.get("num_layers", 8), (8,))
        _require("D cmap_dim", d.get("cmap_dim"), (None,))
        for what, v in (
            ("D activation", block.get("activation", "lrelu")),
            ("D epilogue activation", epi.get("activation", "lrelu")),
        ):
            _require(what, v, ("lrelu",))
        # distgan's D clamps as its G does (one model.stylegan2.conv_clamp): another value would change D's outputs
        _require("D conv_clamp (G's is the one distgan keeps)", _number(d, "conv_clamp", "D", 0.0), (clamp,))
        for k in ("channel_base", "channel_max"):
            _require(f"D {k}", d.get(k, {"channel_base": 32768, "channel_max": 512}[k]), (sg[k],))
        kw["mbstd_group"] = _int(epi, "mbstd_group_size", "D epilogue", 1, 1 << 12, 4)
        kw["mbstd_channels"] = _int(epi, "mbstd_num_channels", "D epilogue", 0, 1 << 6, 1)
    try:
        return ModelConfig(**kw)
    except ConfigError as exc:
        raise PickleRefused(f"its networks make no distgan model: {exc}") from exc


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


def convert(record: Persistent, net: str, cfg: ModelConfig, ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A G or D record's tensors as distgan's state dict `ours` (a fresh network's, for `cfg`), every tensor
    accounted for both ways."""
    theirs = tensors(record)
    res = cfg.image_shape[1]
    if not all(isinstance(k, str) for k in theirs):
        raise PickleRefused(f"{net}: a parameter name that is not text")
    out, used = {}, set()
    for n, t in ours.items():
        rn = their_name(n, "G" if net != "D" else "D", res)
        if rn not in theirs or theirs[rn].shape != t.shape:
            got = tuple(theirs[rn].shape) if rn in theirs else "nothing"
            raise PickleRefused(
                f"{net}: distgan's {n} {tuple(t.shape)} has no counterpart {rn} (found {got}); "
                f"distgan reads {SUPPORTED}"
            )
        out[n] = theirs[rn].to(t.dtype).clone()
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
    train = TrainConfig(
        batch_size=batch,
        epochs=100,
        loss="ns",
        r1_gamma=round(0.0002 * res**2 / batch, 6),
        r1_every=16,
        pl_weight=2.0,
        style_mixing=0.9,
        ema_kimg=batch * 10 / 32,
        augment="ada",
        ada_target=0.6,
        ada_ops="bgc" if model.image_shape[0] == 3 else "bg",
        log_every=100,
        sample_every=500,
    )
    optim = OptimConfig(lr_g=0.0025, lr_d=0.0025, betas=[0.0, 0.99])
    return Config(
        name=f"finetune-{stem}",
        data=DataConfig(path="data/your-images"),
        model=model,
        optim=optim,
        train=train,
    )


def _networks(data: dict[str, Any]) -> tuple[ModelConfig, dict[str, Any]]:
    """The records as distgan's model section and state dicts, every shape compared on the meta device before
    a tensor is allocated (a record's kwargs can declare any size; its tensors are what the file holds)."""
    G, D = data.get("G_ema"), data.get("D")
    G = G if isinstance(G, Persistent) else data["G"]
    D = D if isinstance(D, Persistent) else None
    cfg = model_config(G, D)
    names = [name for name in ("G", "G_ema", "D") if isinstance(data.get(name), Persistent)]
    with torch.device("meta"):  # one template for G and G_ema
        shapes = {"G": build_generator(cfg).state_dict()}
        if "D" in names:
            shapes["D"] = build_discriminator(cfg).state_dict()
    return cfg, {n: convert(data[n], n, cfg, shapes["D" if n == "D" else "G"]) for n in names}


def import_state(path: Path) -> dict[str, Any]:
    """The pickle as the state a distgan checkpoint folder holds: config (defaults + the pickle's model),
    objects.trainer.{G, D, G_ema}; the pickle's sha256 and source hashes under 'imported'."""
    data = read_pickle(path)
    try:
        cfg, nets = _networks(data)
    except PickleRefused as exc:
        raise PickleRefused(f"{path}: {exc}") from exc
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        ZeroDivisionError,
        RecursionError,
        OverflowError,
        RuntimeError,
    ) as exc:
        raise PickleRefused(f"{path}: its networks cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if "G" not in nets:  # a pickle with G_ema only: it serves as both
        nets["G"] = nets["G_ema"]
    sha = sha256_file(Path(path))
    config = finetune_config(cfg, Path(path).stem).to_dict()
    return {
        "step": 0,
        "config": config,
        "objects": {"trainer": {**nets, "step": 0, "epoch": 0, "images_seen": 0}},
        "classes": [],
        "imported": {
            "pickle": str(path),
            "sha256": sha,
            "networks": sorted(nets),
            "source_sha256": {k: v.source_sha256 for k, v in data.items() if isinstance(v, Persistent)},
        },
    }


def is_pickle(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() == ".pkl"
