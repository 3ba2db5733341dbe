"""Sample quality of a generator on every rank at once: each rank makes and featurises its share, rank 0 scores.

Used by the trainer every `eval.every` steps and by `distgan eval --ckpt`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from distgan.config import Config, ConfigError, EvalConfig, cache_root
from distgan.data.records import content_sha256
from distgan.dist import on_main_then_all
from distgan.eval import metrics
from distgan.eval.classifier import MnistCNN, get_classifier, load_classifier
from distgan.files import atomic_path
from distgan.models import noise_dim, num_classes

log = logging.getLogger("distgan.eval")


@dataclass
class RealStats:
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray  # the first eval.n_samples real features, the reference manifold of precision/recall


@torch.no_grad()
def featurize(
    model: MnistCNN, images: torch.Tensor, batch: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] (any device) -> (features, softmax probabilities) as float32 numpy arrays."""
    feats, probs = [], []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device, non_blocking=True).float()
        f = model.features(x)
        feats.append(f.float().cpu())
        probs.append(model.head(f).float().softmax(1).cpu())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def load_real(cfg: Config, split: str) -> tuple[np.ndarray, np.ndarray]:
    from distgan.data.records import read_split
    from distgan.data.shards import DataSpecError

    try:
        return read_split(cfg.data.path, split, cfg.data.manifest)
    except DataSpecError as exc:
        raise ConfigError(
            f"evaluation needs the {split!r} split of data.path={cfg.data.path!r}: {exc}; "
            f"set eval.real_split or data.path"
        ) from exc


def prepare_classifier(
    cfg: Config, real: tuple[np.ndarray, np.ndarray], say: Callable[[str], None]
) -> tuple[MnistCNN, dict]:
    """eval.classifier if given, else the cached classifier of data.path's train split (trained if missing,
    tested on `real`, the eval.real_split images and labels)."""
    if cfg.eval.classifier:
        try:
            model, meta = load_classifier(Path(cfg.eval.classifier))
        except FileNotFoundError as exc:
            raise ConfigError(f"eval.classifier={cfg.eval.classifier!r}: {exc}") from exc
        say(f"classifier {cfg.eval.classifier} (test accuracy {meta['test_accuracy']:.2%})")
        return model, meta
    train = load_real(cfg, "train")
    if len(train[1]) and train[1].min() < 0:
        raise ConfigError(
            f"the classifier metrics need labels, and data.path={cfg.data.path!r} is unlabelled (a flat folder, or "
            "converted with --no-labels). Give eval.classifier=FILE, a classifier trained with `distgan eval "
            "classifier --data LABELLED` on labelled images of the same shape, or turn evaluation off: eval.every=0"
        )
    return get_classifier(train, real, cache_root(cfg.eval.cache_dir), cfg.eval.classifier_epochs, say)


def real_stats(
    cfg: Config, model: MnistCNN, real: tuple[np.ndarray, np.ndarray], say: Callable[[str], None]
) -> RealStats:
    """Feature statistics of the real split, cached beside the classifier under both checksums."""
    images, labels = real
    weights = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()
    key = hashlib.sha256(f"{weights}:{content_sha256(images, labels)}".encode()).hexdigest()[:20]
    path = cache_root(cfg.eval.cache_dir) / f"realstats-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            feats, mu, sigma = z["features"], z["mu"], z["sigma"]
    else:
        say(f"real statistics of {len(images):,} {cfg.eval.real_split!r} images (cached as {path})")
        feats, _ = featurize(model, torch.from_numpy(images).float().div_(255), 1000, torch.device("cpu"))
        mu, sigma = metrics.mean_cov(feats)
        with atomic_path(path) as tmp:
            np.savez(tmp, features=feats, mu=mu, sigma=sigma)
    return RealStats(mu, sigma, feats[: cfg.eval.n_samples])


def eval_noise(ev: EvalConfig, noise_dim: int) -> torch.Tensor:
    """The same noise at every evaluation and for any number of ranks: sample i always gets row i."""
    return torch.randn(ev.n_samples, noise_dim, generator=torch.Generator().manual_seed(ev.seed))


def eval_labels(n: int, classes: int) -> torch.Tensor | None:
    """Classes asked of a conditional generator: sample i gets class i mod K (balanced); None unconditional."""
    return torch.arange(n) % classes if classes else None


def conditional_accuracy(probs: np.ndarray, classes: int) -> float:
    """How often the classifier sees the class a sample was asked for (eval_labels order)."""
    asked = np.arange(len(probs)) % classes
    return float((probs.argmax(1) == asked).mean())


class Evaluator:
    """Construct and call on all ranks. Rank 0 prepares the classifier and real statistics, then sends the
    classifier to the others, so nodes need no shared cache."""

    def __init__(self, cfg: Config, acc: Accelerator, say: Callable[[str], None] = log.info) -> None:
        self.cfg, self.acc, self.ev = cfg, acc, cfg.eval
        self.real: RealStats | None = None

        def prepare() -> tuple[dict, dict]:
            """Rank 0: the classifier (cached or trained) and the real statistics, checked against the model."""
            real = load_real(cfg, cfg.eval.real_split)
            model, meta = prepare_classifier(cfg, real, say)
            if tuple(meta["image_shape"]) != tuple(cfg.model.image_shape):
                raise ConfigError(
                    f"classifier expects images {meta['image_shape']} but model.image_shape is "
                    f"{list(cfg.model.image_shape)}; use a classifier trained on this data"
                )
            k = cfg.model.num_classes
            if k > 0 and k != meta["classes"]:
                raise ConfigError(
                    f"model.num_classes={k} but the classifier knows {meta['classes']} classes: conditional "
                    "accuracy needs a classifier of the same classes (eval.classifier)"
                )
            self.real = real_stats(cfg, model, real, say)
            return model.state_dict(), meta

        state, self.meta = on_main_then_all(acc, prepare)
        c, h, w = self.meta["image_shape"]
        self.classifier = MnistCNN((c, h, w), self.meta["classes"])
        self.classifier.load_state_dict(state)
        self.classifier.to(acc.device).eval().requires_grad_(False)

    def should_run(self, step: int) -> bool:
        return step % self.ev.every == 0

    @torch.no_grad()
    def generated_features(self, G: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """Every rank generates and featurises its contiguous slice of the n samples; all slices gathered."""
        n, world, rank = self.ev.n_samples, self.acc.num_processes, self.acc.process_index
        per_rank = math.ceil(n / world)
        z = eval_noise(self.ev, noise_dim(G))[rank * per_rank : (rank + 1) * per_rank]
        labels = eval_labels(n, num_classes(G))
        y = labels[rank * per_rank : (rank + 1) * per_rank] if labels is not None else None
        was_training = G.training
        G.eval()
        images = []
        for i in range(0, len(z), self.ev.batch_size):
            yi = y[i : i + self.ev.batch_size].to(self.acc.device) if y is not None else None
            x = G(z[i : i + self.ev.batch_size].to(self.acc.device), yi).float()
            images.append(x.clamp(0, 1).mul(255).round().div(255))  # what a saved uint8 image would hold
        G.train(was_training)
        dev = self.acc.device
        if images:
            feats, probs = featurize(self.classifier, torch.cat(images), self.ev.batch_size, dev)
        else:
            feats = np.zeros((0, self.classifier.fc.out_features), np.float32)
            probs = np.zeros((0, self.classifier.classes), np.float32)
        mine = torch.from_numpy(np.concatenate([feats, probs], 1)).to(dev)
        if world > 1:  # pad to equal length for the gather, then keep samples 0..n-1 in order
            pad = torch.zeros(per_rank - len(mine), mine.shape[1], device=dev)
            mine = self.acc.gather(torch.cat([mine, pad]))[:n]
        both = mine.cpu().numpy()
        return both[:, : feats.shape[1]], both[:, feats.shape[1] :]

    def score(self, feats: np.ndarray, probs: np.ndarray, classes: int = 0) -> dict[str, float]:
        """Rank 0 only (it holds the real statistics). classes: the generator's, for conditional accuracy."""
        assert self.real is not None
        out = metrics.all_metrics(feats, probs, self.real.mu, self.real.sigma, self.real.features, self.ev.k)
        if classes and classes == probs.shape[1]:  # Evaluator refuses a mismatch up front
            out["cond_accuracy"] = conditional_accuracy(probs, classes)
        return out

    def __call__(self, G: nn.Module) -> dict[str, float]:
        """Call on all ranks; every rank gets the same metrics back."""
        feats, probs = self.generated_features(G)
        return on_main_then_all(self.acc, lambda: self.score(feats, probs, num_classes(G)))

    def score_images(self, images: np.ndarray) -> dict[str, float]:
        """Metrics of given uint8 (N, C, H, W) images, e.g. real ones as a sanity anchor (rank 0)."""
        x = torch.from_numpy(images).float().div_(255)
        return self.score(*featurize(self.classifier, x, self.ev.batch_size, self.acc.device))
