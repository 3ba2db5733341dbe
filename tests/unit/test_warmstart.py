"""train.init_from, train.init_skip and model.d_freeze (distgan/training/warmstart.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distgan.config import ConfigError
from distgan.configure import load_config
from distgan.training.networks import build_networks
from distgan.training.warmstart import d_blocks, init_ema, init_from
from tests.conftest import run, train_cmd
from tests.unit.test_trainer import fresh_accelerate_state, make_trainer  # noqa: F401 (autouse fixture)

TINY = ["model.arch=dcgan", "model.g_channels=4", "model.d_channels=4", "model.noise_dim=16"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A tiny conditional DCGAN run (10 classes) with EMA: the weights to start from."""
    from distgan.data.shard_writer import write_shards
    from tests.conftest import synthetic

    root = tmp_path_factory.mktemp("src")
    write_shards(root / "data", {"train": synthetic(200)}, [str(i) for i in range(10)], "t", 100, 50)
    res = run(
        train_cmd(
            "configs/debug.yaml",
            f"data.path={root / 'data'}",
            f"train.out_dir={root}",
            "train.run_name=r",
            *TINY,
            "model.num_classes=10",
            "train.ema_kimg=0.1",
            "track.wandb=disabled",
            "train.batch_size=20",
            "train.max_steps=6",
        )
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return root


def test_init_from_a_checkpoint_takes_g_d_and_ema(source: Path) -> None:
    from distgan.run.checkpoint_read import read_checkpoint, strip_prefixes

    ckpt = sorted((source / "r" / "checkpoints").glob("step-*"))[-1]
    cfg = load_config(None, [*TINY, "model.num_classes=10", f"train.init_from={ckpt}"])
    G, D, _, _ = build_networks(cfg)
    line, ema = init_from(cfg, G, D)
    nets = read_checkpoint(ckpt)["objects"]["trainer"]
    for net, key in ((G, "G"), (D, "D")):
        for k, v in strip_prefixes(nets[key]).items():
            assert torch.equal(net.state_dict()[k], v), k
    assert ema is not None and "G_ema from the source" in line
    G_ema, _, _, _ = build_networks(cfg)
    init_ema(cfg, G_ema, ema)
    assert torch.equal(G_ema.state_dict()["fc.weight"], strip_prefixes(nets["G_ema"])["fc.weight"])
    assert not torch.equal(G_ema.state_dict()["fc.weight"], G.state_dict()["fc.weight"])


def test_a_new_class_count_is_refused_by_name_or_reinitialised(source: Path) -> None:
    final = source / "r" / "final"
    cfg = load_config(None, [*TINY, "model.num_classes=5", f"train.init_from={final}"])
    G, D, _, _ = build_networks(cfg)
    with pytest.raises(ConfigError, match=r"G does not fit.*norms\.0\.gain\.weight \(10, 8\) -> \(5, 8\).*init_skip"):
        init_from(cfg, G, D)
    cfg = load_config(
        None,
        [
            *TINY,
            "model.num_classes=5",
            f"train.init_from={final}",
            "train.init_skip=['*gain*','*shift*','*embed*']",
        ],
    )
    G, D, _, _ = build_networks(cfg)
    fresh = G.state_dict()["norms.0.gain.weight"].clone()
    init_from(cfg, G, D)
    assert torch.equal(G.state_dict()["norms.0.gain.weight"], fresh)  # skipped: its fresh initialisation
    cfg = load_config(None, ["model.arch=resnet", f"train.init_from={final}"])
    with pytest.raises(ConfigError, match="missing"):
        init_from(cfg, *build_networks(cfg)[:2])


def test_d_freeze_keeps_the_first_blocks_and_trains_the_rest() -> None:
    trainer = make_trainer([*TINY, "model.d_freeze=1", "train.batch_size=8"])
    D = trainer.acc.unwrap_model(trainer.D)
    frozen, rest = list(d_blocks(D)[0].parameters()), list(d_blocks(D)[1].parameters())
    before = [p.detach().clone() for p in frozen + rest]
    n_opt = sum(len(g["params"]) for g in trainer.opt_d.param_groups)
    assert n_opt == len(list(D.parameters())) - len(frozen)
    for _ in range(3):
        trainer.train_step(
            trainer.to_device({"image": torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)}),
            torch.randn(8, 16),
        )
    after = frozen + rest
    assert all(torch.equal(a, b) for a, b in zip(before[: len(frozen)], after[: len(frozen)], strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(before[len(frozen) :], after[len(frozen) :], strict=True))
    assert all(not p.requires_grad for p in frozen) and all(p.requires_grad for p in rest)  # after G's phase too
    with pytest.raises(ConfigError, match="d_freeze=2: this D has 2 blocks"):
        build_networks(load_config(None, [*TINY, "model.d_freeze=2"]))


def test_a_compiled_runs_final_weights_are_plain_and_older_prefixed_ones_still_load(tmp_path: Path) -> None:
    """final/ of a train.compile run: written with the plain networks' keys (before, `_orig_mod.fc.weight`),
    and an older final/ with those prefixed keys still warm-starts."""
    from safetensors.torch import load_file, save_file

    from distgan.training.finish import save_final

    trainer = make_trainer([*TINY, "train.compile=true"])
    save_final(trainer, tmp_path)
    keys = set(load_file(tmp_path / "final" / "G.safetensors"))
    assert "fc.weight" in keys and not any("_orig_mod" in k for k in keys)
    old = tmp_path / "old"
    old.mkdir()
    for name in ("G", "D"):
        weights = load_file(tmp_path / "final" / f"{name}.safetensors")
        save_file({f"_orig_mod.{k}": v for k, v in weights.items()}, str(old / f"{name}.safetensors"))
    cfg = load_config(None, [*TINY, f"train.init_from={old}"])
    G, D, _, _ = build_networks(cfg)
    init_from(cfg, G, D)
    assert torch.equal(G.state_dict()["fc.weight"], trainer.G_plain.state_dict()["fc.weight"].cpu())
