"""docs/architecture.md's example part of the step, run from the docs: one module plus one line in PARTS is all a
new part needs (issue 53): it trains, draws for the global batch over micro-batches, and its state is saved and
restored under the name it carries."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from distgan.configure import load_config
from distgan.training import build
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.fixture
def instnoise(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The docs' module, listed in PARTS after the augmentation (the one line shipping it adds)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    code = re.search(r'```python\n("""instnoise: .*?)```', text, re.S)
    assert code, "docs/architecture.md lost its example part"
    module = types.ModuleType("instnoise")
    sys.modules["instnoise"] = module
    exec(compile(code.group(1), "docs/architecture.md", "exec"), module.__dict__)  # noqa: S102 (our own docs)
    monkeypatch.setattr(build, "PARTS", [build.PARTS[0], module.build_part, *build.PARTS[1:]])
    yield module
    del sys.modules["instnoise"]


def _trainer(overrides: list[str], folder: Path | None = None):  # type: ignore[no-untyped-def]
    from accelerate import Accelerator

    from distgan.data.loader import Loader
    from distgan.run.checkpoint import Checkpointer
    from tests.helpers.shards import shards_for

    base = [
        "model.arch=dcgan",
        "model.g_channels=4",
        "model.d_channels=4",
        "model.g_norm=none",
        "model.noise_dim=8",
        "train.batch_size=8",
        *overrides,
    ]
    cfg = load_config(None, [*base, f"data.path={shards_for([1, 28, 28], 64)}"])
    acc = Accelerator(cpu=True)
    loader = Loader(cfg.data, cfg.train.batch_size, 0, 1, 0, cfg.model.image_shape)
    ckpt = Checkpointer(cfg.ckpt, folder, acc, cfg.to_dict()) if folder is not None else None
    return build.build_trainer(cfg, acc, loader, checkpointer=ckpt, init_seed=0), ckpt


def test_the_docs_example_part_trains_draws_per_global_batch_and_resumes(
    instnoise: types.ModuleType, tmp_path: Path
) -> None:
    from accelerate.state import AcceleratorState

    real, z = torch.rand(8, 1, 28, 28), torch.randn(8, 8)
    one, ckpt = _trainer([], tmp_path / "ckpt")
    part = one.part(instnoise.InstanceNoise)
    assert part is not None and one.gan_step.parts.index(part) == 1  # after the augmentation, as listed
    assert "instance_noise" in ckpt.objects  # registered under the name it carries, by build.register
    before = [p.detach().clone() for p in one.D_plain.parameters()]
    one.train_step(real, z)
    assert all(not torch.equal(a, b) for a, b in zip(before, one.D_plain.parameters(), strict=True))
    saved = ckpt.save(1)
    AcceleratorState._reset_state(True)
    micro, _ = _trainer(["train.batch_per_device=4"])  # 2 micro-batches draw what one batch of 8 draws
    micro.train_step(real, z)
    assert torch.equal(micro.part(instnoise.InstanceNoise).gen.get_state(), part.gen.get_state())
    AcceleratorState._reset_state(True)
    resumed, ckpt2 = _trainer([], tmp_path / "ckpt")
    ckpt2.load(saved)
    assert torch.equal(resumed.part(instnoise.InstanceNoise).gen.get_state(), part.gen.get_state())
