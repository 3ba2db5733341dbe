"""Configs with the model families: loading a preset or a saved config against every family's section, and the
checks that need the launch. Everything that would otherwise fail while a run is built or in its first step is
refused here, before a run directory exists, naming the key.

It sits above models/ (it reads the families' table and counts their networks on the meta device) and below every
entry point; config/ below it imports nothing of distgan's. A script loads configs from here:
`from distgan.configure import load_config`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from distgan import config
from distgan.config import Config, ConfigError, Families, ModelConfig
from distgan.models import FAMILIES, build_discriminator, family_of, parameter_counts


def families() -> Families:
    """What config reads of the families registered now (models.FAMILIES; a test may register one more)."""
    return Families(
        names=tuple(FAMILIES),
        sections={name: f.section for name, f in FAMILIES.items() if f.section is not None},
        old_keys={old: (name, new) for name, f in FAMILIES.items() for old, new in f.old_keys.items()},
    )


def load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), base: dict[str, Any] | None = None
) -> Config:
    """A YAML preset (or defaults, or a saved config as `base`) + `section.key=value` overrides, checked: every key,
    every value, and what the model's family refuses."""
    cfg = config.read_config(path, overrides, base, families())
    FAMILIES[cfg.model.arch].check(cfg.model)  # arch checked by read_config; num_classes may still be -1
    return cfg


def config_from_dict(saved: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A checkpoint's saved config (keys added since it was written take their defaults) + overrides, checked."""
    cfg = config.read_saved_config(saved, overrides, families())
    FAMILIES[cfg.model.arch].check(cfg.model)  # arch checked by read_config; num_classes may still be -1
    return cfg


TRAINING_BYTES_PER_PARAMETER = 16
"""float32 weights, gradients and Adam's two moments: what training holds per parameter before activations."""


def micro_batch(batch_per_device: int, rank_batch: int) -> int:
    """train.batch_per_device as the step runner's micro-batch: 0 when the rank's batch fits in one pass (check_run
    refuses what does not divide)."""
    return batch_per_device if 0 < batch_per_device < rank_batch else 0


def check_run(cfg: Config, world: int, memory_bytes: int) -> None:
    """Call on all ranks before anything is built: what the config asks of the launch (the processes, the memory)
    and of the batch each pass of D sees on a rank (micro-batches, packs, minibatch-std groups, path length's
    shrink). Each refusal names the keys and the fix. model.num_classes=-1 (the data's count, known once the
    data is opened) is checked as unconditional: a class embedding changes none of these."""
    if cfg.model.num_classes < 0:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=0))
    t, m = cfg.train, cfg.model
    if t.batch_size % world:
        raise ConfigError(
            f"train.batch_size={t.batch_size} is not divisible by the {world} processes; the batch is global, so pick "
            f"a multiple of {world}"
        )
    rank_batch = t.batch_size // world
    micro = micro_batch(t.batch_per_device, rank_batch)
    if micro and rank_batch % micro:
        raise ConfigError(
            f"train.batch_per_device={micro}: each rank's batch ({rank_batch} = train.batch_size / processes) must be "
            "a multiple of it; choose a divisor"
        )
    family = family_of(m)
    if micro and family.batch_norm(m):
        raise ConfigError(
            f"train.batch_per_device={micro} with batch norm in G (model.g_norm=batch): the statistics of a "
            f"micro-batch of {micro} are not the batch's, so accumulation would change what G computes. Use "
            "model.g_norm=none, or a batch that fits (train.batch_per_device=0)"
        )
    images = micro or rank_batch  # one pass of D on a rank: this many reals, as many fakes
    _check_d_batch(cfg, images)
    if "style" in family.parts and t.pl_weight:
        if images % t.pl_batch_shrink:
            raise ConfigError(
                f"train.pl_batch_shrink={t.pl_batch_shrink}: each rank's batch ({images}) must be a multiple of it "
                "(or set train.pl_weight=0)"
            )
        if t.compile:
            raise ConfigError(
                "train.compile with train.pl_weight > 0: path length differentiates G's images by the ws inside G's "
                "forward, which a compiled G does not expose; set train.compile=false or train.pl_weight=0"
            )
    check_size(m, memory_bytes)


def _check_d_batch(cfg: Config, images: int) -> None:
    """What one pass of D on a rank sees (`images` reals, as many fakes) must split into packs, and the packs into
    minibatch-std groups where D has them."""
    m = cfg.model.d_pack
    if images % m:
        raise ConfigError(
            f"model.d_pack={m}: each rank's batch of {images} images (train.batch_size / processes, or "
            "train.batch_per_device) must be a multiple of it; change the batch or the pack size"
        )
    with torch.device("meta"):
        mbstd = getattr(build_discriminator(cfg.model), "mbstd", None)
    packs, group = images // m, cfg.model.mbstd_group
    if mbstd is not None and mbstd.channels and packs % min(group, packs):
        raise ConfigError(
            f"model.mbstd_group={group}: each rank's batch ({packs} inputs of D: train.batch_size / processes, or "
            "train.batch_per_device, over model.d_pack) must be a multiple of it (minibatch std splits each batch D "
            "sees into groups of this size); change train.batch_size or the group"
        )


def check_size(model: ModelConfig, memory_bytes: int) -> None:
    """Networks that cannot fit are refused by their size, with the widths that made them, before a byte of
    them is allocated (a typo'd model.g_channels=100000000 is 10^17 parameters)."""
    g, d = parameter_counts(model)
    need = (g + d) * TRAINING_BYTES_PER_PARAMETER
    if need <= memory_bytes:
        return
    keys = ", ".join(f"{k}={v}" for k, v in _grown(model)) or "the model.* widths"
    raise ConfigError(
        f"{keys}: G would hold {g:.3g} and D {d:.3g} parameters, {need / 2**30:,.0f} GiB with their gradients and "
        f"Adam's state in float32, more than the {memory_bytes / 2**30:,.0f} GiB this device has; choose smaller "
        "widths"
    )


def _grown(model: ModelConfig, top: int = 3) -> list[tuple[str, Any]]:
    """The model's whole-number keys furthest above their defaults (the likely culprits of a size), largest
    ratio first."""
    now, base = _model_dict(model), _model_dict(ModelConfig())
    base.update(
        _flat({name: dataclasses.asdict(type(section)()) for name, section in model.sections.items()}, "model.")
    )
    ratios = []
    for key, value in now.items():
        numbers, olds = _numbers(value), _numbers(base.get(key))
        if numbers and olds and max(numbers) > max(olds) > 0:
            ratios.append((max(numbers) / max(olds), key, value))
    return [(k, v) for _, k, v in sorted(ratios, reverse=True)[:top]]


def _model_dict(model: ModelConfig) -> dict[str, Any]:
    d = dataclasses.asdict(model)
    d.update(d.pop("sections"))
    return _flat(d, "model.")


def _numbers(value: Any) -> list[int]:
    """The whole numbers of a value (a width, a list of widths); sizes are counts, not rates."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _flat(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
