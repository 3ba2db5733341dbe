"""Sample quality of a generator on every rank at once: each rank makes and featurises its share, rank 0 scores.

Two yardsticks: the MNIST classifier distgan trains (`mnistcnn`, for digits) and torch-fidelity's Inception
(`inception.py`, the field's FID/KID/PR/IS). Used by the trainer every `eval.every` steps, by `distgan eval --ckpt`
and, through `score_images`, by `distgan eval --real/--fake`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from distgan.config import INCEPTION_METRICS, METRIC_GROUPS, Config, ConfigError, EvalConfig, cache_root
from distgan.data import stackedmnist
from distgan.data.records import content_sha256
from distgan.dist import on_main_then_all
from distgan.eval import cache, inception, metrics
from distgan.eval.classifier import ARCH, MnistCNN, get_classifier, load_classifier
from distgan.eval.image_sets import load_real
from distgan.eval.modes import ModeYardstick
from distgan.models import noise_dim, num_classes

log = logging.getLogger("distgan.eval")


@dataclass
class RealStats:
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray  # the first eval.n_samples real features, the reference manifold of precision/recall


@torch.no_grad()
def featurize(model: MnistCNN, images: torch.Tensor, batch: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] (any device) -> (features, softmax probabilities) as float32 numpy arrays."""
    feats = [torch.zeros(0, model.fc.out_features)]
    probs = [torch.zeros(0, model.classes)]
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device, non_blocking=True).float()
        f = model.features(x)
        feats.append(f.float().cpu())
        probs.append(model.head(f).float().softmax(1).cpu())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


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
    path = cache.stats_path(cfg.eval.cache_dir, "mnistcnn", {"weights_sha256": weights}, content_sha256(images, labels))
    stored = cache.load_stats(path)
    if stored is not None:
        feats, mu, sigma = stored["features"], stored["mu"], stored["sigma"]
    else:
        say(f"real statistics of {len(images):,} {real_split(cfg.eval, 'mnistcnn')!r} images (cached as {path})")
        feats, _ = featurize(model, torch.from_numpy(images).float().div_(255), 1000, torch.device("cpu"))
        mu, sigma = metrics.mean_cov(feats)
        cache.save_stats(path, {"features": feats, "mu": mu, "sigma": sigma})
    return RealStats(mu, sigma, feats[: cfg.eval.n_samples])


@dataclass
class RealSet:
    """Reference images given directly (named in the protocol by where they came from)."""

    name: str
    images: np.ndarray
    labels: np.ndarray

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images, self.labels


def real_split(ev: EvalConfig, yardstick: str) -> str:
    """The classifier is trained on train, so it measures against test; Inception against train, as StyleGAN."""
    return ev.real_split or ("test" if yardstick == "mnistcnn" else "train")


def choose_groups(cfg: Config) -> tuple[str, ...]:
    """eval.metrics, or by the data: the classifier set for labelled grey images (digits: Inception's features
    mean little at 28 px) or when eval.classifier is given, else every Inception metric (they need no labels)."""
    from distgan.data.shards import DataSpecError, resolve

    if cfg.eval.groups():
        return cfg.eval.groups()
    if cfg.eval.classifier or cfg.eval.best_metric in (*METRIC_GROUPS["mnistcnn"], "cond_accuracy"):
        return ("mnistcnn",)  # best_metric: every config.yaml written before Inception named fid_mnistcnn
    try:
        classes = resolve(cfg.data.path, "train", cfg.data.manifest).classes
    except DataSpecError as exc:
        raise ConfigError(f"evaluation needs data.path={cfg.data.path!r}: {exc}") from exc
    if stackedmnist.is_stacked(classes, cfg.model.image_shape[0]):
        return ("stackedmnist",)
    return ("mnistcnn",) if classes and cfg.model.image_shape[0] == 1 else INCEPTION_METRICS


def default_best(groups: tuple[str, ...]) -> str:
    return METRIC_GROUPS[groups[0]][0] if groups[0] != "mnistcnn" else "fid_mnistcnn"


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


def rank_slice(n: int, acc: Accelerator) -> tuple[int, int, int]:
    """This rank's contiguous share [start, stop) of n items, and the share of the first ranks."""
    per_rank = math.ceil(n / acc.num_processes)
    start = min(n, acc.process_index * per_rank)
    return start, min(n, start + per_rank), per_rank


def gather_rows(acc: Accelerator, mine: np.ndarray, n: int, per_rank: int) -> np.ndarray:
    """Every rank's rows in rank order (rows 0..n-1), on every rank."""
    if acc.num_processes == 1:
        return mine
    dev = acc.device
    rows = torch.from_numpy(mine).to(dev)
    pad = torch.zeros(per_rank - len(rows), rows.shape[1], device=dev, dtype=rows.dtype)
    return acc.gather(torch.cat([rows, pad]))[:n].cpu().numpy()  # short ranks are the last ones


class Yardstick(Protocol):
    """A feature network and its real-data reference: featurise on any rank, score on rank 0."""

    name: str
    protocol: dict[str, Any]

    def featurize(self, images: torch.Tensor) -> np.ndarray: ...  # uint8 (N, C, H, W) -> float32 rows

    def score(self, rows: np.ndarray, classes: int) -> dict[str, float]: ...


class ClassifierYardstick:
    """Rank 0 prepares the classifier and real statistics, then sends the classifier to the others, so nodes
    need no shared cache."""

    name = "mnistcnn"

    def __init__(self, cfg: Config, acc: Accelerator, say: Callable[[str], None], given: RealSet | None) -> None:
        self.ev, self.device = cfg.eval, acc.device
        self.real: RealStats | None = None

        def prepare() -> tuple[dict, dict]:
            """Rank 0: the classifier (cached or trained) and the real statistics, checked against the model."""
            real = given.arrays() if given else load_real(cfg, real_split(cfg.eval, self.name))
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
        self.classifier = MnistCNN(tuple(self.meta["image_shape"]), self.meta["classes"])
        self.classifier.load_state_dict(state)
        self.classifier.to(acc.device).eval().requires_grad_(False)
        self.protocol = {
            "yardstick": "mnistcnn",
            "network": f"{ARCH}, 128-d features ({cfg.eval.classifier or 'trained on the train split'})",
            "classifier_test_accuracy": self.meta["test_accuracy"],
            "samples": cfg.eval.n_samples,
            "real_split": given.name if given else real_split(cfg.eval, self.name),
            "quantise": inception.QUANTISE,
            "precision_recall": f"k={cfg.eval.k} nearest neighbours, on the first {cfg.eval.n_samples} real images",
        }

    def featurize(self, images: torch.Tensor) -> np.ndarray:
        feats, probs = featurize(self.classifier, images.float().div_(255), self.ev.batch_size, self.device)
        return np.concatenate([feats, probs], 1)

    def score(self, rows: np.ndarray, classes: int) -> dict[str, float]:
        assert self.real is not None
        feats, probs = rows[:, : self.classifier.fc.out_features], rows[:, self.classifier.fc.out_features :]
        out = metrics.all_metrics(feats, probs, self.real.mu, self.real.sigma, self.real.features, self.ev.k)
        if classes and classes == probs.shape[1]:  # prepare() refuses a mismatch up front
            out["cond_accuracy"] = conditional_accuracy(probs, classes)
        return out


class InceptionYardstick:
    """torch-fidelity's Inception on every rank (rank 0 finds and checks the weights and sends them); the real
    statistics cached by the split's content checksum and the protocol, featurised by all ranks on a miss."""

    name = "inception"

    def __init__(
        self,
        cfg: Config,
        acc: Accelerator,
        groups: tuple[str, ...],
        say: Callable[[str], None],
        given: RealSet | None,
    ) -> None:
        self.cfg, self.ev, self.acc, self.groups, self.say, self.given = (
            cfg,
            cfg.eval,
            acc,
            groups,
            say,
            given,
        )
        state, self.sha = on_main_then_all(
            acc,
            lambda: inception.read_weights(inception.find_weights(cfg.eval, say), cfg.eval.inception_sha256),
        )
        self.net = inception.build_network(state).to(acc.device)
        self.real_features: np.ndarray | None = None
        self.real_stats: dict[str, np.ndarray] | None = None
        real = self._prepare_real()
        self.protocol = inception.protocol(self.sha, cfg.eval.inception_sha256, real, cfg.eval.n_samples, cfg.eval)
        if not self.protocol["standard_weights"]:
            say(f"Inception weights sha256 {self.sha[:12]}... are not the standard ones: not comparable with papers")

    def featurize(self, images: torch.Tensor) -> np.ndarray:
        return inception.featurize(self.net, images, min(self.ev.batch_size, inception.BATCH), self.acc.device)

    def _prepare_real(self) -> dict[str, Any]:
        split = self.given.name if self.given else real_split(self.ev, self.name)
        images: np.ndarray | None = None

        def lookup() -> tuple[str, dict[str, Any], bool]:
            nonlocal images
            images, labels = self.given.arrays() if self.given else load_real(self.cfg, split)
            images, labels = images[: self.ev.n_real], labels[: self.ev.n_real]
            real = {
                "real_split": split,
                "real_images": len(images),
                "real_content_sha256": content_sha256(images, labels),
            }
            protocol = {
                "split": split,
                "images": len(images),
                "weights_sha256": self.sha,
                "torch_fidelity": inception.library().version,
                "resizer": inception.RESIZER,
                "grey_to_rgb": inception.GREY_TO_RGB,
            }
            path = cache.stats_path(self.ev.cache_dir, "inception", protocol, str(real["real_content_sha256"]))
            stored = cache.load_stats(path)
            if stored is not None:
                self.real_features, self.real_stats = (
                    stored["features"],
                    {"mu": stored["mu"], "sigma": stored["sigma"]},
                )
            return str(path), real, stored is not None

        path, real, cached = on_main_then_all(self.acc, lookup)
        if cached:
            return real
        if images is None:  # other ranks read the split too, to featurise their share
            images = (self.given.arrays() if self.given else load_real(self.cfg, split))[0][: self.ev.n_real]
        start, stop, per_rank = rank_slice(len(images), self.acc)
        if self.acc.is_main_process:
            self.say(f"Inception features of {len(images):,} {split!r} images (cached as {path})")
        mine = self.featurize(torch.from_numpy(images[start:stop]))[:, : inception.FEATURE_DIM]
        feats = gather_rows(self.acc, mine, len(images), per_rank)
        if self.acc.is_main_process:
            self.real_features, self.real_stats = feats, inception.statistics(feats)
            cache.save_stats(Path(path), {"features": feats, **self.real_stats})
        return real

    def score(self, rows: np.ndarray, classes: int) -> dict[str, float]:
        assert self.real_features is not None and self.real_stats is not None
        return inception.scores(rows, self.real_features, self.real_stats, self.groups, self.ev)


class Evaluator:
    """Construct and call on all ranks."""

    def __init__(
        self,
        cfg: Config,
        acc: Accelerator,
        say: Callable[[str], None] = log.info,
        real: RealSet | None = None,
    ) -> None:
        """real: the reference images when they are not a split of data.path (`distgan eval --real`)."""
        self.cfg, self.acc, self.ev = cfg, acc, cfg.eval
        groups = on_main_then_all(acc, lambda: choose_groups(cfg))
        self.yardsticks: list[Yardstick] = []
        if "mnistcnn" in groups:
            self.yardsticks.append(ClassifierYardstick(cfg, acc, say, real))
        if "stackedmnist" in groups:
            if real is not None:
                raise ConfigError("eval.metrics stackedmnist measures against data.path's own splits, not --real")
            self.yardsticks.append(ModeYardstick(cfg, acc, say))
        if wanted := tuple(g for g in groups if g in INCEPTION_METRICS):
            self.yardsticks.append(InceptionYardstick(cfg, acc, wanted, say, real))
        self.metric_names = [m for g in groups for m in METRIC_GROUPS[g]]
        self.best_metric = cfg.eval.best_metric or default_best(groups)
        if self.best_metric not in self.metric_names and self.best_metric != "cond_accuracy":
            raise ConfigError(
                f"eval.best_metric={self.best_metric!r} is not measured by eval.metrics={list(groups)}; "
                f"use one of {', '.join(self.metric_names)}"
            )
        if acc.is_main_process:
            for y in self.yardsticks:
                say(f"{y.name} protocol: " + "; ".join(f"{k} {v}" for k, v in y.protocol.items() if k != "yardstick"))

    @property
    def meta(self) -> dict:
        """The classifier's facts (test accuracy, classes), when the classifier is one of the yardsticks."""
        return next((y.meta for y in self.yardsticks if isinstance(y, ClassifierYardstick)), {})

    @property
    def classifier(self) -> MnistCNN:
        return next(y.classifier for y in self.yardsticks if isinstance(y, ClassifierYardstick))

    @property
    def protocol(self) -> dict[str, dict[str, Any]]:
        return {y.name: y.protocol for y in self.yardsticks}

    def should_run(self, step: int) -> bool:
        return step % self.ev.every == 0

    @torch.no_grad()
    def generated_features(self, G: nn.Module) -> list[np.ndarray]:
        """Every rank generates and featurises its contiguous slice of the n samples; all slices gathered."""
        n = self.ev.n_samples
        start, stop, per_rank = rank_slice(n, self.acc)
        z = eval_noise(self.ev, noise_dim(G))[start:stop]
        labels = eval_labels(n, num_classes(G))
        y = labels[start:stop] if labels is not None else None
        was_training = G.training
        G.eval()
        parts: list[list[np.ndarray]] = [[] for _ in self.yardsticks]
        for i in range(0, len(z), self.ev.batch_size):
            yi = y[i : i + self.ev.batch_size].to(self.acc.device) if y is not None else None
            x = G(z[i : i + self.ev.batch_size].to(self.acc.device), yi).float()
            images = inception.to_uint8(x)  # what a saved image would hold
            for part, stick in zip(parts, self.yardsticks, strict=True):
                part.append(stick.featurize(images))
        G.train(was_training)
        mine = [np.concatenate(p) if p else self._empty(s) for p, s in zip(parts, self.yardsticks, strict=True)]
        return [gather_rows(self.acc, m, n, per_rank) for m in mine]

    def _empty(self, stick: Yardstick) -> np.ndarray:
        """A rank with no samples still needs the width of the rows it gathers."""
        shape = (0, *self.cfg.model.image_shape)
        return stick.featurize(torch.zeros(shape, dtype=torch.uint8))

    def score(self, rows: list[np.ndarray], classes: int = 0) -> dict[str, float]:
        """Rank 0 only (it holds the real statistics). classes: the generator's, for conditional accuracy."""
        out: dict[str, float] = {}
        for r, stick in zip(rows, self.yardsticks, strict=True):
            out.update(stick.score(r, classes))
        return out

    def __call__(self, G: nn.Module) -> dict[str, float]:
        """Call on all ranks; every rank gets the same metrics back."""
        rows = self.generated_features(G)
        return on_main_then_all(self.acc, lambda: self.score(rows, num_classes(G)))

    def score_images(self, images: np.ndarray) -> dict[str, float]:
        """Metrics of given uint8 (N, C, H, W) images, e.g. real ones as a sanity anchor (rank 0)."""
        x = torch.from_numpy(images)
        return self.score([stick.featurize(x) for stick in self.yardsticks])
