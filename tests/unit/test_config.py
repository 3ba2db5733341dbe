"""Config: presets, typed overrides, helpful errors, the resolved config in the run directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distgan.config import Config, ConfigError, save_config
from distgan.configure import load_config

CONFIGS = Path(__file__).parents[2] / "configs"


def test_tutorial_preset_is_the_tutorial() -> None:
    cfg = load_config(CONFIGS / "mnist_mlp.yaml")
    m, o, t = cfg.model, cfg.optim, cfg.train
    assert (m.noise_dim, m.g_hidden, m.d_hidden, m.init, m.init_std) == (128, [256], [256], "normal", 0.01)
    assert (o.lr_g, o.lr_d, o.betas) == (2e-4, 2e-4, [0.9, 0.999])
    assert (t.batch_size, t.epochs, t.print_every_epochs, t.sample_every_epochs) == (100, 100, 10, 10)


def test_every_preset_loads() -> None:
    for path in CONFIGS.glob("*.yaml"):
        assert isinstance(load_config(path), Config)


def test_overrides_are_typed() -> None:
    cfg = load_config(
        CONFIGS / "mnist_mlp.yaml",
        ["train.batch_size=256", "model.g_hidden=[512,512]", "train.precision=bf16"],
    )
    assert cfg.train.batch_size == 256 and cfg.model.g_hidden == [512, 512] and cfg.train.precision == "bf16"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.bach_size=3", "unknown config key 'train.bach_size'.*did you mean 'train.batch_size'"),
        ("optim.lr=1e-3", "unknown config key 'optim.lr'.*did you mean 'optim.lr_"),
        ("optim.lr_d=-1", "optim.lr_d=-1.0: a learning rate must be > 0"),
        ("train.precision=fp8", "train.precision='fp8'"),
        ("train.batch_size=many", "train.batch_size"),
        ("train.batch_size", "section.key=value"),
        ("data.on_error=ignore", "data.on_error"),
        (
            "track.backends=[wandb,tensorbord]",
            "track.backends: 'tensorbord' unknown; use any of wandb, tensorboard",
        ),
        ("track.backends=[mlflow,mlflow]", "name each backend once"),
        # issue 45: a NaN passes every bound (train.r1_gamma=nan switched R1 off); inf froze the EMA
        ("train.r1_gamma=nan", r"train.r1_gamma=nan: must be a finite number"),
        ("train.r2_gamma=nan", r"train.r2_gamma=nan: must be a finite number"),
        ("train.ema_kimg=inf", r"train.ema_kimg=inf: must be a finite number"),
        ("model.stylegan2.mapping_lr_mul=nan", r"model.stylegan2.mapping_lr_mul=nan: must be a finite"),
        ("optim.eps=nan", r"optim.eps=nan: must be a finite"),
        ("optim.decay_kimg=-inf", r"optim.decay_kimg=-inf: must be a finite"),
        ("optim.betas=[0.5,nan]", r"optim.betas=\[0.5, nan\]: must be a finite"),
    ],
)
def test_bad_overrides_say_which_and_why(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "mnist_mlp.yaml", [override])


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  noise_dims: 64\n")
    with pytest.raises(ConfigError, match=r"model.noise_dims.*c.yaml.*model.noise_dim"):
        load_config(path)


def test_global_batch_must_divide_by_processes() -> None:
    from distgan.configure import check_run

    cfg = load_config(None, ["train.batch_size=100"])
    check_run(cfg, 4, 2**40)
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        check_run(cfg, 3, 2**40)


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "debug.yaml", ["model.d_hidden=[128]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_distgan_train_passes_dry_run_on(capsys) -> None:
    from distgan.cli import main

    assert main(["train", str(Path(__file__).parents[2] / "configs" / "debug.yaml"), "train.seed=7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "seed: 7" in out and "batch_size:" in out


def test_model_families_by_name() -> None:
    import torch

    from distgan.models import FAMILIES, build_discriminator, build_generator

    cfg = load_config(None, ["model.arch=mlp"])
    G, D = build_generator(cfg.model), build_discriminator(cfg.model)
    assert "mlp" in FAMILIES and G.noise_dim == 128
    assert D(G(torch.randn(2, 128))).shape == (2,)
    with pytest.raises(ConfigError, match=r"model.arch='stylegan9': use one of dcgan, mlp, r3gan, resnet"):
        build_generator(load_config(None, ["model.arch=stylegan9"]).model)


def test_thread_choice_tells_the_user_from_a_launcher() -> None:
    from distgan.dist import allotted_cores, user_threads

    assert user_threads({}) is None
    assert user_threads({"OMP_NUM_THREADS": "3"}) == 3  # plain python: the user's
    launched = {"OMP_NUM_THREADS": "1", "LOCAL_RANK": "0"}
    assert user_threads(launched, parent_env=b"PATH=/bin\0HOME=/root\0") is None  # the launcher's default
    assert user_threads(launched, parent_env=b"PATH=/bin\0OMP_NUM_THREADS=1\0") == 1  # the user's, passed on
    cores, where = allotted_cores({"SLURM_CPUS_ON_NODE": "1"})
    assert cores == 1 and "Slurm" in where
    assert allotted_cores({})[0] == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("backend", "module", "install"),
    [
        ("tensorboard", "tensorboard", "pip install tensorboard"),
        ("mlflow", "sqlalchemy", "pip install mlflow"),
    ],
)
def test_a_backend_without_its_package_fails_before_the_run_starts(
    backend: str, module: str, install: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The check runs when a training run loads its config, before anything is written; a checkpoint's config
    naming the backend still loads where the package is missing (sampling needs no tracker)."""
    import sys

    from distgan.train import main

    monkeypatch.setitem(sys.modules, module, None)  # import and find_spec now find nothing, as when not installed
    cfg = load_config(None, [f"track.backends=[{backend}]"])
    with pytest.raises(ConfigError, match=f"lists {backend}, but {module} is not installed: {install}"):
        cfg.track.require_packages()
    code = main([str(CONFIGS / "mnist_mlp.yaml"), f"track.backends=[{backend}]", f"train.out_dir={tmp_path}"])
    assert code == 2 and install in capsys.readouterr().err and not any(tmp_path.iterdir())
    load_config(None, ["track.backends=[wandb]"]).track.require_packages()  # the default needs neither


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.arch=stylegan2", "model.image_shape=[3,32,32]", "model.stylegan2.channel_base=16"],
            r"model.stylegan2.channel_base=16 is below the image's longer side \(32 px\).*use at least 32",
        ),
        (
            ["model.arch=r3gan", "model.r3gan.channel_max=64", "model.r3gan.group_channels=128"],
            r"model.r3gan.group_channels=128 is above model.r3gan.channel_max=64",
        ),
    ],
)
def test_family_widths_that_cannot_build_what_they_say_are_refused(overrides: list[str], message: str) -> None:
    """Issue 45: stylegan2.channel_base below the resolution was a ZeroDivisionError; a large r3gan.group_channels
    widened every stage past r3gan.channel_max (a 66M-parameter G instead of 37k) without a word."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_model_arch_is_checked_before_the_run_directory_is_touched(tmp_path: Path, capsys) -> None:
    """Issue 45: a mistyped model.arch failed only when the networks were built, after the run directory was
    locked and an old run there set aside."""
    from distgan.train import main

    old = tmp_path / "r"
    old.mkdir()
    (old / "metrics.jsonl").write_text('{"step": 1}\n')
    code = main(
        [
            str(CONFIGS / "mnist_mlp.yaml"),
            "model.arch=stylegan3",
            f"train.out_dir={tmp_path}",
            "train.run_name=r",
            "ckpt.resume=",
        ]
    )
    assert code == 2 and "model.arch='stylegan3': use one of dcgan, mlp, r3gan, resnet, stylegan2" in (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in old.iterdir()) == ["metrics.jsonl"]  # not set aside, no lock taken


def test_python_m_distgan_cli_is_the_distgan_command(monkeypatch, capsys, tmp_path: Path) -> None:
    """`python -m distgan.cli` runs the same command line as the `distgan` script (run here in-process)."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["distgan", "plot", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("distgan.cli", run_name="__main__")
    assert done.value.code == 2 and "missing" in capsys.readouterr().err
