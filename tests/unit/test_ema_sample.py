"""EMA generator, sampling from checkpoints and export for plain PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from distgan.run.checkpoint_read import read_checkpoint
from distgan.training.ema import EMA, ema_beta
from tests.conftest import run, train_cmd


def test_ema_half_life_and_rampup() -> None:
    # after ema_kimg*1000 images at full strength the old weights count half
    beta = ema_beta(100, 10**9, ema_kimg=10, rampup=0.05)
    assert beta ** (10_000 / 100) == pytest.approx(0.5)
    # during ramp-up the half-life is at most 5% of the images seen: much faster tracking early on
    assert ema_beta(100, 20_000, 10, 0.05) == pytest.approx(0.5 ** (100 / 1_000))
    assert ema_beta(100, 20_000, 10, 0.0) == pytest.approx(beta)


def test_ema_update_moves_towards_the_model() -> None:
    model = nn.Linear(3, 2)
    ema = EMA(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.model.weight.clone()
    ema.update(model, beta=0.75)
    torch.testing.assert_close(ema.model.weight, 0.75 * before + 0.25 * model.weight)
    assert not any(p.requires_grad for p in ema.model.parameters())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from distgan.data.shard_writer import write_shards
    from tests.conftest import synthetic

    root = tmp_path_factory.mktemp("ema")
    write_shards(root / "data", {"train": synthetic(600)}, [str(i) for i in range(10)], "t", 300, 100)
    args = ["configs/debug.yaml", f"data.path={root / 'data'}", f"train.out_dir={root}", "train.run_name=r"]
    res = run(
        train_cmd(*args, "model.g_hidden=[32]", "model.d_hidden=[32]", "track.wandb=disabled", "train.ema_kimg=0.5")
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return root / "r"


def test_ema_is_saved_and_differs_from_g(trained: Path) -> None:
    from safetensors.torch import load_file

    g, g_ema = (
        load_file(trained / "final" / "G.safetensors"),
        load_file(trained / "final" / "G_ema.safetensors"),
    )
    assert g.keys() == g_ema.keys() and any(not torch.equal(g[k], g_ema[k]) for k in g)
    state = read_checkpoint(next((trained / "checkpoints").glob("step-*")))
    assert state["objects"]["trainer"]["G_ema"] is not None


def test_sample_command_png_and_npz(trained: Path, tmp_path: Path) -> None:
    from PIL import Image

    from distgan.cli import main

    ckpt = str(sorted((trained / "checkpoints").glob("step-*"))[-1])
    assert main(["sample", "--ckpt", ckpt, "--n", "16", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size == (4 * 30 + 2, 4 * 30 + 2)
    for name, flag in (("a", "--ema"), ("b", "--ema"), ("c", "--no-ema")):
        assert (
            main(
                [
                    "sample",
                    "--ckpt",
                    ckpt,
                    "--n",
                    "10",
                    "--format",
                    "npz",
                    "--seed",
                    "3",
                    flag,
                    "--out",
                    str(tmp_path / f"{name}.npz"),
                ]
            )
            == 0
        )
    a, b, c = (np.load(tmp_path / f"{n}.npz")["x"] for n in "abc")
    assert a.shape == (10, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # same seed -> same samples; EMA != raw G
    assert main(["sample", "--ckpt", str(trained), "--out", str(tmp_path / "x.png")]) == 2  # not a checkpoint


def synthetic_run(tmp_path_factory, name: str, n: int, config: str, *overrides: str) -> Path:
    """A short run of `config` on n synthetic digits labelled 0-9; its run directory."""
    from distgan.data.shard_writer import write_shards
    from tests.conftest import synthetic

    root = tmp_path_factory.mktemp(name)
    write_shards(root / "data", {"train": synthetic(n)}, [str(i) for i in range(10)], "t", n // 2, n // 4)
    res = run(
        train_cmd(
            config,
            f"data.path={root / 'data'}",
            f"train.out_dir={root}",
            "train.run_name=r",
            "track.wandb=disabled",
            *overrides,
        )
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return root / "r"


@pytest.fixture(scope="module")
def trained_cond(tmp_path_factory) -> Path:
    """A class-conditional DCGAN run (classes from the manifest) on synthetic digits."""
    return synthetic_run(
        tmp_path_factory,
        "cond",
        600,
        "configs/debug.yaml",
        "model.arch=dcgan",
        "model.g_channels=8",
        "model.d_channels=8",
        "model.num_classes=-1",
        "model.spectral_norm=true",
        "train.ema_kimg=0.5",
    )


def test_conditional_run_grids_one_row_per_class(trained_cond: Path) -> None:
    from PIL import Image

    state = read_checkpoint(sorted((trained_cond / "checkpoints").glob("step-*"))[-1])
    assert state["config"]["model"]["num_classes"] == 10  # -1 resolved from the manifest, and saved so
    assert Image.open(trained_cond / "samples" / "grid_final.png").size == (8 * 30 + 2, 10 * 30 + 2)
    assert Image.open(trained_cond / "samples" / "strip_final.png").size == (10 * 30 + 2, 32)


def test_sample_class_option(trained_cond: Path, trained: Path, tmp_path: Path) -> None:
    from PIL import Image

    from distgan.cli import main
    from distgan.run.sample import labels_for, load_generator

    ckpt = sorted((trained_cond / "checkpoints").glob("step-*"))[-1]
    G, _ = load_generator(ckpt)
    assert labels_for(G, 5, 7).tolist() == [7] * 5 and labels_for(G, 12, None).tolist()[9:] == [9, 0, 1]
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(ckpt),
                "--class",
                "7",
                "--n",
                "6",
                "--format",
                "npz",
                "--out",
                str(tmp_path / "seven.npz"),
            ]
        )
        == 0
    )
    sevens = np.load(tmp_path / "seven.npz")["x"]
    assert sevens.shape == (6, 28, 28)
    from distgan.run.sample import sample

    np.testing.assert_array_equal(sevens, sample(G, 6, 0, 7))
    assert not np.array_equal(sevens, sample(G, 6, 0, 3))  # another class, the same noise: other images
    assert main(["sample", "--ckpt", str(ckpt), "--n", "25", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size == (3 * 30 + 2, 10 * 30 + 2)  # 10 class rows of ceil(25/10)
    assert main(["sample", "--ckpt", str(ckpt), "--class", "10", "--out", str(tmp_path / "x.png")]) == 2
    plain = sorted((trained / "checkpoints").glob("step-*"))[-1]
    assert main(["sample", "--ckpt", str(plain), "--class", "1", "--out", str(tmp_path / "y.png")]) == 2


@pytest.fixture(scope="module")
def trained_sg(tmp_path_factory) -> Path:
    """A tiny conditional StyleGAN2 run (mixing, path length, R1) on synthetic digits."""
    return synthetic_run(
        tmp_path_factory,
        "sg",
        320,
        "configs/mnist_stylegan2.yaml",
        "model.stylegan2.w_dim=16",
        "model.noise_dim=16",
        "model.stylegan2.channel_base=128",
        "model.stylegan2.channel_max=8",
        "model.num_classes=-1",
        "train.max_steps=12",
        "train.log_every=4",
        "train.pl_every=2",
        "train.r1_every=2",
        "eval.every=0",
        "track.plot=false",
    )


def test_stylegan2_mixing_grid_interpolation_and_refusals(trained_sg: Path, trained: Path, tmp_path: Path) -> None:
    from PIL import Image

    from distgan.cli import main

    ckpt = sorted((trained_sg / "checkpoints").glob("step-*"))[-1]
    assert main(["sample", "--ckpt", str(ckpt), "--mixing", "3", "--class", "2", "--out", str(tmp_path / "m.png")]) == 0
    assert Image.open(tmp_path / "m.png").size == (4 * 30 + 2, 4 * 30 + 2)  # sources + 3x3 cells, 28 px + gap
    assert main(["sample", "--ckpt", str(ckpt), "--interp", "6", "--out", str(tmp_path / "w.gif")]) == 0
    gif = Image.open(tmp_path / "w.gif")
    assert gif.n_frames == 10 and gif.size == (28, 28)  # there and back, the ends once
    assert main(["sample", "--ckpt", str(ckpt), "--trunc", "0.7", "--out", str(tmp_path / "t.png")]) == 0
    mlp = sorted((trained / "checkpoints").glob("step-*"))[-1]
    assert main(["sample", "--ckpt", str(mlp), "--trunc", "0.7", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["sample", "--ckpt", str(mlp), "--mixing", "3", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["sample", "--ckpt", str(ckpt), "--trunc", "1.5", "--out", str(tmp_path / "x.png")]) == 2
