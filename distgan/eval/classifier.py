"""The small CNN whose features replace Inception's for digits, its training and its cache.

Inception features are the wrong yardstick for 28x28 digits; MNIST GAN work measures with an MNIST classifier.
Trained here on the training shards' labels and cached under the dataset's content checksum, so every run
on the same data measures with the same network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distgan.data.records import content_sha256
from distgan.utils.files import save_weights, write_json

log = logging.getLogger("distgan.eval")
ARCH = "mnistcnn-v1"  # part of the cache key: a changed architecture or recipe must not reuse old weights
FEATURES = 128


class MnistCNN(nn.Module):
    """3x(conv3x3+ReLU), two 2x2 pools, a 128-wide feature layer, then the class logits."""

    def __init__(self, image_shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape, self.classes = tuple(image_shape), classes
        self.conv = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(32 * (h // 4) * (w // 4), FEATURES)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1], (B, C, H, W) -> (B, 128): the penultimate activations the metrics compare."""
        return F.relu(self.fc(self.conv((x - 0.5) / 0.5).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def cache_key(images: np.ndarray, labels: np.ndarray, epochs: int) -> str:
    """Dataset content + architecture + recipe: the same key means the same classifier."""
    h = hashlib.sha256(f"{ARCH}:{epochs}:{content_sha256(images, labels)}".encode())
    return h.hexdigest()[:20]


def _batches(n: int, size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + size] for i in range(0, n, size)]


@torch.no_grad()
def accuracy(model: MnistCNN, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for idx in _batches(len(images), batch):
        x = torch.from_numpy(images[idx]).float().div_(255)
        correct += int((model(x).argmax(1) == torch.from_numpy(labels[idx])).sum())
    return correct / len(images)


def train_classifier(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    epochs: int,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[MnistCNN, float]:
    """Adam with a one-cycle schedule, batch 128, random shifts of up to 2 pixels; returns (model, test acc).

    On MNIST three epochs reach about 99.1% test accuracy (about a minute on 2 CPU cores).
    """
    images, labels = train
    if min(labels.min(initial=0), test[1].min(initial=0)) < 0:
        from distgan.config import ConfigError

        raise ConfigError(
            "the classifier trains on class labels and this data has unlabelled samples (label -1: shards with no "
            ".cls/.class/.label, a flat folder or --no-labels); give labelled data with --data"
        )
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    classes = int(max(labels.max(), test[1].max())) + 1
    c, h, w = images.shape[1:]
    model = MnistCNN((c, h, w), classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * math.ceil(len(images) / 128)
    # OneCycleLR divides by its warm-up length (pct_start * steps - 1): a small dataset (under ~10 batches)
    # would give zero; a longer nominal schedule just leaves it unfinished there
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=max(steps, 10), pct_start=0.2)
    labels_t = torch.from_numpy(labels)
    for epoch in range(epochs):
        model.train()
        total, n = 0.0, 0
        for idx in _batches(len(images), 128, rng):
            x = torch.from_numpy(images[idx]).float().div_(255)
            dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))  # digits sit in a 20x20 box: rolling stays blank
            loss = F.cross_entropy(model(x), labels_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()) * len(idx), n + len(idx)
        if progress:
            progress(epoch + 1, epochs, total / n)
    return model.eval(), accuracy(model, *test)


def save_classifier(model: MnistCNN, path: Path, meta: dict) -> None:
    """Weights + JSON side by side, each written atomically."""
    save_weights(path, model.state_dict())
    write_json(path.with_suffix(".json"), meta)


def load_classifier(path: Path) -> tuple[MnistCNN, dict]:
    from safetensors.torch import load_file

    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"classifier {path} (and its .json) not found; train one with `distgan eval classifier`"
        )
    meta = json.loads(meta_path.read_text())
    c, h, w = meta["image_shape"]
    model = MnistCNN((c, h, w), meta["classes"])
    model.load_state_dict(load_file(str(path)))
    return model.eval(), meta


def get_classifier(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    folder: Path,
    epochs: int,
    say: Callable[[str], None] = log.info,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[MnistCNN, dict]:
    """The cached classifier for this training set, trained and cached on first use."""
    key = cache_key(*train, epochs)
    path = folder / f"classifier-{key}.safetensors"
    if path.is_file() and path.with_suffix(".json").is_file():
        model, meta = load_classifier(path)
        say(f"classifier {path} (test accuracy {meta['test_accuracy']:.2%})")
        return model, meta
    say(f"training the evaluation classifier on {len(train[0]):,} images for {epochs} epochs (cached as {path})")
    t0 = time.perf_counter()
    model, acc = train_classifier(train, test, epochs, progress=progress)
    meta = {
        "arch": ARCH,
        "dataset_sha256": content_sha256(*train),
        "test_accuracy": acc,
        "test_samples": len(test[0]),
        "classes": model.classes,
        "image_shape": list(model.image_shape),
        "epochs": epochs,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    save_classifier(model, path, meta)
    say(f"classifier test accuracy {acc:.2%} ({meta['train_seconds']} s); saved {path}")
    if acc < 0.98 and model.classes == 10:
        log.warning("classifier test accuracy %.2f%% is low; its features make a weak yardstick", 100 * acc)
    return model, meta
