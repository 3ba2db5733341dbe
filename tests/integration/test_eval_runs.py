"""Evaluation launched as users run it: the real MNIST classifier, evaluation during training, `distgan eval`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from accelerate import Accelerator

from distgan.configure import load_config
from distgan.eval.evaluate import Evaluator
from distgan.run.checkpoint_read import read_checkpoint
from tests.conftest import ROOT, accelerate_launch, run, train_cmd
from tests.unit.test_eval import _anchors, _check_anchors


@pytest.mark.timeout(900)
def test_real_mnist_classifier_and_anchors(mnist_shards: Path, tmp_path_factory) -> None:
    """The classifier distgan trains reaches >= 99% on MNIST's test set; the anchors hold on real digits."""
    from distgan.data.records import read_split

    cache = tmp_path_factory.mktemp("clf")
    res = run(
        [
            sys.executable,
            "-m",
            "distgan.cli",
            "eval",
            "classifier",
            "--data",
            str(mnist_shards),
            "--cache-dir",
            str(cache),
        ],
        timeout=900,
        env={"OMP_NUM_THREADS": "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"},  # a worker: one core
    )
    assert res.returncode == 0, res.stderr[-2000:]
    acc = float(res.stdout.split("classifier test accuracy ")[1].split("%")[0]) / 100
    assert acc >= 0.99, res.stdout
    cfg = load_config(None, [f"data.path={mnist_shards}", f"eval.cache_dir={cache}"])
    ev = Evaluator(cfg, Accelerator(cpu=True))
    assert ev.meta["test_accuracy"] == pytest.approx(acc, abs=1e-4)  # loaded from the cache, not retrained
    train, labels = read_split(str(mnist_shards), "train")
    scores = _anchors(ev, train, lambda c: train[labels == c], 10000)
    _check_anchors(scores)
    print({k: {m: round(v, 4) for m, v in s.items() if "/" not in m} for k, s in scores.items()})


@pytest.mark.numeric
def test_eval_during_training_keeps_best_and_eval_cli_agrees(pattern_shards: Path, tmp_path: Path) -> None:
    args = [
        "configs/debug.yaml",
        f"data.path={pattern_shards}",
        f"train.out_dir={tmp_path}",
        "train.run_name=r",
        "track.wandb=disabled",
        "train.batch_size=100",
        "train.epochs=3",
        "eval.every=10",
        "eval.n_samples=300",
        "eval.batch_size=64",
        f"eval.cache_dir={tmp_path / 'cache'}",
        "eval.classifier_epochs=1",
        "train.ema_kimg=0.5",
        "train.log_every=10",
    ]
    res = accelerate_launch([str(ROOT / "distgan" / "train.py"), *args], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/fid_mnistcnn" in r]
    assert [r["step"] for r in evals] == [10, 20, 30, 40, 50, 60, 70, 80, 90]  # 30 steps/epoch, 3 epochs
    best = min(evals, key=lambda r: r["eval/fid_mnistcnn"])
    assert evals[-1]["eval/best_fid_mnistcnn"] == best["eval/fid_mnistcnn"]
    assert evals[-1]["eval/best_step"] == best["step"]
    ckpt = tmp_path / "r" / "checkpoints" / "best"
    state = read_checkpoint(ckpt)
    assert state["step"] == best["step"] and state["objects"]["eval"]["best"] == best["eval/fid_mnistcnn"]
    assert not list((tmp_path / "r" / "checkpoints").glob("*.tmp")) and not list(
        (tmp_path / "r" / "checkpoints").glob("*.old")
    )
    assert (tmp_path / "r" / "plots" / "losses.png").is_file()
    # offline, in one process: the same samples (same eval noise) give the same numbers the 2 ranks logged
    res = run(
        [
            sys.executable,
            "-m",
            "distgan.cli",
            "eval",
            "--ckpt",
            str(ckpt),
            "--n",
            "300",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--json",
            str(tmp_path / "e.json"),
        ]
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fid_mnistcnn" in res.stdout and "classes covered" not in res.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["step"] == best["step"] and report["generator"] == "ema"
    # 2 ranks generate in other batch shapes than 1 process (other kernels): images differ by ~1e-7 before they
    # are rounded to uint8, which flips a pixel only at a rounding boundary; 1e-3 of a metric is far above that
    for k in ("fid_mnistcnn", "is_mnistcnn", "classes_covered", "precision", "recall"):
        assert report["metrics"][k] == pytest.approx(best[f"eval/{k}"], rel=1e-3, abs=1e-3), k


def test_eval_errors_name_the_problem(tmp_path: Path, pattern_shards: Path) -> None:
    res = run([sys.executable, "-m", "distgan.cli", "eval", "--ckpt", str(tmp_path)])
    assert res.returncode == 2 and "no state.pt" in res.stderr
    res = run(
        train_cmd(
            "configs/debug.yaml",
            f"data.path={pattern_shards}",
            "eval.every=5",
            "eval.real_split=validation",
            f"train.out_dir={tmp_path}",
            "track.wandb=disabled",
        )
    )
    assert res.returncode == 2 and "'validation'" in res.stderr and "eval.real_split" in res.stderr
    res = run(train_cmd("configs/debug.yaml", "eval.best_metric=fid"))
    assert res.returncode == 2 and "eval.best_metric" in res.stderr
