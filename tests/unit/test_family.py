"""A family is one module (distgan/models/family.py, the one table in models/__init__.py, read by configure.py):
the example family of docs/architecture.md registered and trained, sections and the flat keys they replaced."""

from __future__ import annotations

import logging
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from distgan.config import ConfigError, to_yaml
from distgan.configure import config_from_dict, load_config
from distgan.models import FAMILIES, build_discriminator, build_generator, register
from distgan.models.stylegan2 import StyleGAN2Config
from tests.conftest import ROOT


@pytest.fixture
def tinyconv() -> Iterator[types.ModuleType]:
    """docs/architecture.md's example family, run from the docs and registered for one test."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    code = re.search(r'```python\n("""tinyconv: .*?)```', text, re.S)
    assert code, "docs/architecture.md lost its example family"
    module = types.ModuleType("tinyconv")
    sys.modules["tinyconv"] = module  # dataclasses and OmegaConf resolve its annotations through it
    exec(compile(code.group(1), "docs/architecture.md", "exec"), module.__dict__)  # noqa: S102 (our own docs)
    register(module.FAMILY)
    yield module
    FAMILIES.pop("tinyconv")
    del sys.modules["tinyconv"]


def test_the_docs_example_family_is_one_module_and_trains(tinyconv: types.ModuleType, tmp_path: Path) -> None:
    from distgan.run.checkpoint import check_resumable
    from distgan.run.errors import CheckpointError
    from tests.unit.test_trainer import make_trainer

    cfg = load_config(None, ["model.arch=tinyconv", "model.tinyconv.width=8", "model.noise_dim=8"])
    assert cfg.model.section("tinyconv", tinyconv.TinyConvConfig) == tinyconv.TinyConvConfig(width=8)
    assert "tinyconv:\n    width: 8" in to_yaml(cfg)
    with pytest.raises(ConfigError, match="model.tinyconv.width=0: must be >= 1"):
        load_config(None, ["model.arch=tinyconv", "model.tinyconv.width=0"])
    with pytest.raises(ConfigError, match="tinyconv is unconditional"):
        load_config(None, ["model.arch=tinyconv", "model.num_classes=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'model.tinyconv.widht'.*'model.tinyconv.width'"):
        load_config(None, ["model.arch=tinyconv", "model.tinyconv.widht=8"])
    tr = make_trainer(["model.arch=tinyconv", "model.tinyconv.width=8", "model.d_pack=2", "train.batch_size=8"])
    before = [p.detach().clone() for p in tr.D_plain.parameters()]
    tr.train_step(torch.rand(8, 1, 28, 28), torch.randn(8, 16))
    assert tr.D_plain.conv.weight.shape[1] == 2  # packing reached it through d_in_channels
    assert all(not torch.equal(a, b) for a, b in zip(before, tr.D_plain.parameters(), strict=True))
    saved = cfg.to_dict()
    check_resumable(saved, cfg)
    wider = load_config(None, ["model.arch=tinyconv", "model.tinyconv.width=16", "model.noise_dim=8"])
    with pytest.raises(CheckpointError, match="model.tinyconv.width: checkpoint 8 vs now 16"):
        check_resumable(saved, wider)


def test_every_shipped_family_declares_itself() -> None:
    assert sorted(FAMILIES) == ["dcgan", "mlp", "r3gan", "resnet", "stylegan2"]
    from distgan.config.training import LOSS_NAMES
    from distgan.configure import families
    from distgan.training.losses import LOSSES

    assert set(families().names) == set(FAMILIES)
    assert families().sections == {"stylegan2": StyleGAN2Config, "r3gan": FAMILIES["r3gan"].section}
    assert sorted(LOSS_NAMES) == sorted(LOSSES) == ["hinge", "ns", "rpgan"]  # config's list is the losses' names
    for name, f in FAMILIES.items():
        cfg = load_config(None, [f"model.arch={name}", "model.spectral_norm=false"])
        G, D = build_generator(cfg.model), build_discriminator(cfg.model)
        assert G.noise_dim == cfg.model.noise_dim and D.input_blocks(), name  # type: ignore[operator]
        assert f.output and set(f.shape_keys) <= set((f.section or object).__dict__.get("__dataclass_fields__", {}))


@pytest.mark.parametrize("family", ["stylegan2", "r3gan"])
def test_an_old_flat_key_config_loads_as_the_sectioned_preset(family: str, caplog) -> None:
    """tests/fixtures/config-9012c64-*.yaml are the presets as main wrote them before the sections (flat
    model.sg_* / model.r3_* keys): each loads to the same Config as today's preset, one warning per key naming its
    new place; command-line flat keys map the same way, and a new key given beside its old one is refused."""
    old = ROOT / "tests" / "fixtures" / f"config-9012c64-{family}.yaml"
    new = ROOT / "configs" / f"mnist_{family}.yaml"
    with caplog.at_level(logging.WARNING, logger="distgan"):
        cfg = load_config(old)
    assert cfg == load_config(new)
    flat = [
        line.split(":")[0].strip()
        for line in old.read_text().splitlines()
        if re.match(r"  (sg_|r3_|w_dim|mapping_)", line)
    ]
    assert flat
    for key in flat:
        assert any(f"model.{key} is now model.{family}." in r.getMessage() for r in caplog.records), key
    key, new_key = ("sg_channel_max", "channel_max") if family == "stylegan2" else ("r3_channel_max", "channel_max")
    cfg = load_config(new, [f"model.{key}=48"])
    assert cfg.model.sections[family].channel_max == 48
    with pytest.raises(ConfigError, match=f"model.{key} and model.{family}.{new_key} name one setting"):
        load_config(new, [f"model.{key}=48", f"model.{family}.{new_key}=64"])  # issue 55: refused, not a guess


def test_a_saved_config_with_flat_keys_reads_into_sections() -> None:
    """A checkpoint's config of before the sections (flat keys) reads into the sections; one of today's
    round-trips exactly."""
    cfg = load_config(ROOT / "configs" / "mnist_stylegan2.yaml")
    assert config_from_dict(cfg.to_dict()) == cfg
    saved = cfg.to_dict()
    model = saved["model"]
    sg = model.pop("stylegan2")
    model.pop("r3gan")
    model.update(
        {
            "w_dim": sg["w_dim"],
            "mapping_layers": sg["mapping_layers"],
            "sg_channel_base": sg["channel_base"],
            "sg_channel_max": sg["channel_max"],
        }
    )
    assert config_from_dict(saved) == cfg
    with pytest.raises(ConfigError, match="model.stylegan2 must be a mapping"):
        load_config(None, ["model.stylegan2=3"])
