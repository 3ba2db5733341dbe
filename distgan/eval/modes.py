"""Mode coverage on StackedMNIST (`eval.metrics: [stackedmnist]`): distgan's MNIST classifier reads each
channel's digit, so each generated image gets one of the 1,000 modes; reported as the modes covered and
KL(mode histogram || uniform), PacGAN's protocol (26,000 samples in the papers: eval.n_samples). The classifier
trains on the digits of the data's own training split, channel by channel, and is cached like the `mnistcnn`
one; the real data's own figure is measured once and printed as the floor a perfect generator would reach."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from distgan.config import Config, ConfigError, cache_root
from distgan.data import stackedmnist
from distgan.dist import on_main_then_all
from distgan.eval.classifier import ARCH, MnistCNN, get_classifier
from distgan.eval.image_sets import load_real

CLASSIFIER_DIGITS = 60000
"""Digits the per-channel classifier trains on (the first 20,000 training images' channels: as many as MNIST)."""


@torch.no_grad()
def modes_of(model: MnistCNN, images: torch.Tensor, batch: int, device: torch.device) -> np.ndarray:
    """uint8 (N, 3, H, W) -> (N,) modes: each channel classified as a digit, 100 r + 10 g + b."""
    grey = images.reshape(-1, 1, *images.shape[2:])
    out = [torch.zeros(0, dtype=torch.int64)]
    for i in range(0, len(grey), batch * 3):
        x = grey[i : i + batch * 3].to(device, non_blocking=True).float().div_(255)
        out.append(model(x).argmax(1).cpu())
    d = torch.cat(out).view(-1, 3)
    return (d * torch.tensor([100, 10, 1])).sum(1).numpy()


class ModeYardstick:
    """Rank 0 prepares (or reads from the cache) the digit classifier and the real floor, then sends the
    classifier to every rank."""

    name = "stackedmnist"

    def __init__(self, cfg: Config, acc: Accelerator, say: Callable[[str], None]) -> None:
        self.ev, self.device = cfg.eval, acc.device
        split = cfg.eval.real_split or "train"
        if tuple(cfg.model.image_shape[:1]) != (3,):
            raise ConfigError(
                f"eval.metrics stackedmnist counts the digits of 3 channels, and model.image_shape is "
                f"{list(cfg.model.image_shape)}; use StackedMNIST data (`distgan data stackedmnist`)"
            )

        def prepare() -> tuple[dict, dict, dict[str, float]]:
            train = load_real(cfg, "train")
            test = load_real(cfg, "test") if split == "train" else load_real(cfg, split)
            for where, (_, labels) in (("train", train), (split, test)):
                if labels.min(initial=0) < 0 or labels.max(initial=0) >= stackedmnist.MODES:
                    raise ConfigError(
                        f"data.path={cfg.data.path!r} split {where!r}: labels are not StackedMNIST modes (0-999); "
                        "make the data with `distgan data stackedmnist`"
                    )
            model, meta = get_classifier(
                stackedmnist.channel_digits(*train, CLASSIFIER_DIGITS),
                stackedmnist.channel_digits(*test),
                cache_root(cfg.eval.cache_dir),
                cfg.eval.classifier_epochs,
                say,
            )
            real = (
                load_real(cfg, split)[0][: cfg.eval.n_samples] if split != "train" else train[0][: cfg.eval.n_samples]
            )
            floor = stackedmnist.coverage(modes_of(model, torch.from_numpy(real), 1000, torch.device("cpu")))
            floor["images"] = float(len(real))
            say(
                f"stackedmnist: the real {split!r} split's own figure on {len(real):,} images: "
                f"{floor['modes_covered']:.0f} modes covered, KL {floor['mode_kl_uniform']:.4f} (the floor)"
            )
            return model.state_dict(), meta, floor

        state, self.meta, self.floor = on_main_then_all(acc, prepare)
        self.classifier = MnistCNN(tuple(self.meta["image_shape"]), self.meta["classes"])
        self.classifier.load_state_dict(state)
        self.classifier.to(acc.device).eval().requires_grad_(False)
        self.protocol: dict[str, Any] = {
            "yardstick": "stackedmnist",
            "network": f"{ARCH} per channel, trained on the train split's digits",
            "classifier_test_accuracy": self.meta["test_accuracy"],
            "samples": cfg.eval.n_samples,
            "real_floor": f"{self.floor['modes_covered']:.0f} modes, KL {self.floor['mode_kl_uniform']:.4f} on "
            f"{self.floor['images']:.0f} {split!r} images",
        }

    def featurize(self, images: torch.Tensor) -> np.ndarray:
        return modes_of(self.classifier, images, self.ev.batch_size, self.device).astype(np.float32)[:, None]

    def score(self, rows: np.ndarray, classes: int) -> dict[str, float]:
        out = stackedmnist.coverage(rows[:, 0].astype(np.int64))
        out["real_modes_covered"] = self.floor["modes_covered"]
        out["real_mode_kl_uniform"] = self.floor["mode_kl_uniform"]
        return out
