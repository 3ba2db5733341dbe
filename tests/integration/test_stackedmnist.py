"""StackedMNIST end to end: `distgan data stackedmnist` on real MNIST and its mode yardstick."""

from __future__ import annotations

import pytest
import torch

from distgan.configure import load_config


@pytest.mark.slow
def test_stackedmnist_command_and_its_mode_yardstick_on_real_mnist(mnist_dir, tmp_path) -> None:
    """`distgan data stackedmnist` on real MNIST, then the evaluator picks the stackedmnist metrics by itself:
    the per-channel classifier reads the digits the labels say, the real floor is measured, and real images
    score as real ones should (few samples: many modes, small KL)."""
    import subprocess
    import sys

    from accelerate import Accelerator

    from distgan.data.records import read_split
    from distgan.eval.evaluate import Evaluator
    from distgan.eval.modes import modes_of

    out = tmp_path / "sm"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "distgan.cli",
            "data",
            "stackedmnist",
            "--from",
            str(mnist_dir),
            "--n",
            "4000",
            "--n-test",
            "1000",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = load_config(
        None,
        [
            f"data.path={out}",
            "model.image_shape=[3,28,28]",
            "eval.n_samples=1000",
            "eval.classifier_epochs=2",
            f"eval.cache_dir={tmp_path / 'cache'}",
        ],
    )
    ev = Evaluator(cfg, Accelerator(cpu=True), say=lambda s: None)
    assert ev.metric_names == ["mode_kl_uniform", "modes_covered"] and ev.best_metric == "mode_kl_uniform"
    images, labels = read_split(str(out), "test")
    stick = ev.yardsticks[0]
    read = modes_of(stick.classifier, torch.from_numpy(images), 500, torch.device("cpu"))  # type: ignore[attr-defined]
    assert (read == labels).mean() > 0.9  # all three digits right: the labels are the channels' digits
    got = ev.score_images(images)
    assert got["modes_covered"] > 550 and got["mode_kl_uniform"] < 0.8  # 1,000 images over 1,000 modes
    assert got["real_modes_covered"] > 550 and "real_floor" in ev.protocol["stackedmnist"]
