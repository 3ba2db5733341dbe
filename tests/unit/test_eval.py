"""Sample-quality metrics: exact formulas, then sanity anchors with a trained classifier (synthetic always,
real MNIST when present), then evaluation inside a 2-rank training run and `distgan eval` on its best."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from distgan.configure import load_config
from distgan.eval import metrics
from distgan.eval.evaluate import Evaluator


def _psd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_closed_forms() -> None:
    rng = np.random.default_rng(0)
    s1, s2 = _psd(rng, 6), _psd(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)
    # diagonal covariances: sum (m1-m2)^2 + (sqrt(v1) - sqrt(v2))^2
    v1, v2 = np.diag(s1), np.diag(s2)
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert metrics.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, rel=1e-9)
    # general case against the textbook formula with sqrtm(S1 S2) from an eigendecomposition
    w, v = np.linalg.eig(s1 @ s2)
    tr_sqrt = np.real(np.sqrt(w.astype(complex))).sum()
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-7)


def test_inception_score_histogram_coverage() -> None:
    onehot = np.eye(10)[np.arange(1000) % 10]
    assert metrics.inception_score(onehot)[0] == pytest.approx(10, rel=1e-6)
    one = np.eye(10)[np.full(1000, 3)]
    assert metrics.inception_score(one)[0] == pytest.approx(1)
    hist = metrics.class_histogram(one)
    assert metrics.classes_covered(hist) == 1 and metrics.kl_to_uniform(hist) == pytest.approx(math.log(10))
    assert metrics.kl_to_uniform(metrics.class_histogram(onehot)) == pytest.approx(0, abs=1e-12)
    # 9 classes with plenty, one with 0.5% of the samples (a twentieth of its share): not covered
    counts = np.r_[np.full(9, 995 // 9 * 1), 5]
    labels = np.repeat(np.arange(10), counts)
    assert metrics.classes_covered(metrics.class_histogram(np.eye(10)[labels])) == 9


def test_precision_recall_on_known_sets() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 8))
    assert metrics.precision_recall(real, real + 1e-6, k=3) == pytest.approx((1.0, 1.0))
    far = rng.normal(size=(500, 8)) + 100
    assert metrics.precision_recall(real, far, k=3) == (0.0, 0.0)
    # samples collapsed onto a tenth of the real points: all precise, little recall
    collapsed = real[:50].repeat(10, 0) + rng.normal(scale=1e-3, size=(500, 8))
    p, r = metrics.precision_recall(real, collapsed, k=3)
    assert p == 1.0 and r < 0.3


def _anchors(ev: Evaluator, train: np.ndarray, test_labels_of, n: int) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(n, *train.shape[1:]), dtype=np.uint8)
    one = test_labels_of(7)
    return {
        "real": ev.score_images(train[:n]),
        "noise": ev.score_images(noise),
        "one": ev.score_images(one[rng.integers(0, len(one), n)]),
    }


def _check_anchors(s: dict[str, dict]) -> None:
    real, noise, one = s["real"], s["noise"], s["one"]
    assert real["fid_mnistcnn"] < 0.02 * noise["fid_mnistcnn"], (real, noise)
    assert real["classes_covered"] == 10 and real["class_kl_uniform"] < 0.05
    assert real["precision"] > 0.6 and real["recall"] > 0.6
    assert noise["precision"] < 0.05
    assert one["classes_covered"] == 1 and one["class_kl_uniform"] > 0.95 * math.log(10)
    assert one["fid_mnistcnn"] > 10 * real["fid_mnistcnn"] and one["recall"] < 0.25
    assert real["is_mnistcnn"] > 8 and one["is_mnistcnn"] < 1.5


def test_anchors_on_synthetic_patterns(pattern_shards: Path, tmp_path: Path) -> None:
    from distgan.data.records import read_split

    cfg = load_config(
        None,
        [
            f"data.path={pattern_shards}",
            f"eval.cache_dir={tmp_path}",
            "eval.classifier_epochs=1",
            "eval.n_samples=1000",
        ],
    )
    ev = Evaluator(cfg, Accelerator(cpu=True))
    assert ev.meta["test_accuracy"] > 0.99
    train, labels = read_split(str(pattern_shards), "train")
    _check_anchors(_anchors(ev, train, lambda c: train[labels == c], 1000))
    # cached: a second evaluator trains nothing and loads identical weights
    cached = sorted(p.name for p in tmp_path.iterdir())
    ev2 = Evaluator(cfg, Accelerator(cpu=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == cached
    for a, b in zip(ev.classifier.state_dict().values(), ev2.classifier.state_dict().values(), strict=True):
        assert torch.equal(a, b)
