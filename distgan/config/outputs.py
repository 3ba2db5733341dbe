"""track.*, ckpt.* and eval.*: what a run logs, keeps and measures."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from distgan.config.errors import ConfigError, check_finite

BACKENDS = {
    "wandb": (("wandb",), "pip install wandb"),
    "tensorboard": (("tensorboard",), 'pip install tensorboard (or "distgan[tensorboard]")'),
    # mlflow-skinny logs to a server or a SQLite file; its SQL store needs SQLAlchemy and Alembic (full mlflow
    # brings both, and the `mlflow ui` to browse with)
    "mlflow": (("mlflow", "sqlalchemy", "alembic"), 'pip install mlflow (or "distgan[mlflow]")'),
}
"""track.backends: what each imports, and the line that installs it."""


@dataclass(frozen=True)
class TrackConfig:
    backends: list[str] = field(default_factory=lambda: ["wandb"])
    """Where the main process sends metrics, sample grids and the resolved config, besides metrics.jsonl and
    the console: any of wandb (mode: track.wandb), tensorboard (RUN_DIR/tensorboard), mlflow (track.mlflow_uri)."""
    mlflow_uri: str = ""
    """MLflow tracking URI (a server, or sqlite:///PATH); empty: $MLFLOW_TRACKING_URI, else
    sqlite:///RUN_DIR/mlflow.db with artifacts in RUN_DIR/mlartifacts."""
    wandb: str = "auto"
    """wandb mode: auto (online with credentials, else offline; WANDB_MODE wins) | online | offline | disabled."""
    project: str = "distgan"
    """wandb project."""
    entity: str = ""
    """wandb entity (team or user); empty: your default."""
    name: str = ""
    """wandb run name (default: the run directory's name)."""
    group: str = ""
    """wandb group (default: the run directory's name, so requeued offline segments group together)."""
    tags: list[str] = field(default_factory=list)
    """wandb tags."""
    notes: str = ""
    """wandb notes."""
    init_timeout_s: int = 60
    """Seconds `online` may wait for the server before falling back to offline."""
    plot: bool = True
    """Write plots/losses.png at the end of a run."""

    def __post_init__(self) -> None:
        check_finite(self, "track")
        if self.wandb not in ("auto", "online", "offline", "disabled"):
            raise ConfigError(f"track.wandb={self.wandb!r}: use auto, online, offline or disabled")
        if self.init_timeout_s < 1:
            raise ConfigError(f"track.init_timeout_s={self.init_timeout_s}: must be >= 1")
        for b in self.backends:
            if b not in BACKENDS:
                raise ConfigError(f"track.backends: {b!r} unknown; use any of {', '.join(BACKENDS)}")
        if len(set(self.backends)) != len(self.backends):
            raise ConfigError(f"track.backends={list(self.backends)}: name each backend once")

    def require_packages(self) -> None:
        """A training run refuses at once a backend it could not import (a checkpoint's config is still read
        where the package is missing: sampling needs no tracker)."""
        for b in self.backends:
            modules, install = BACKENDS[b]
            missing = [m for m in modules if importlib.util.find_spec(m) is None]
            if missing and not (b == "wandb" and self.wandb == "disabled"):
                raise ConfigError(
                    f"track.backends lists {b}, but {', '.join(missing)} is not installed: {install}, "
                    f"or remove {b} from track.backends"
                )


@dataclass(frozen=True)
class CkptConfig:
    every: int = 0
    """Steps between checkpoints (0: only at the end and on a stop signal)."""
    keep: int = 3
    """Complete checkpoints kept (oldest removed first, only after a newer one is complete)."""
    resume: str = "auto"
    """auto: continue from the newest complete checkpoint of this run directory if any; '': start fresh;
    or a checkpoint folder path."""
    dir: str = ""
    """Checkpoint folder (default RUN_DIR/checkpoints). On several nodes it must be on a shared filesystem."""
    stop_check_every: int = 10
    """Steps between the collective check for a stop signal (SIGUSR1/SIGTERM); one small all-reduce."""

    def __post_init__(self) -> None:
        check_finite(self, "ckpt")
        if self.every < 0 or self.keep < 1 or self.stop_check_every < 1:
            raise ConfigError(
                f"ckpt.every={self.every}, ckpt.keep={self.keep}, ckpt.stop_check_every={self.stop_check_every}: "
                "every must be >= 0, keep and stop_check_every >= 1"
            )


INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
"""sha256 of torch-fidelity's weights-inception-2015-12-05-6726825d.pth, the standard FID network's weights."""
METRIC_GROUPS = {
    "mnistcnn": ("fid_mnistcnn", "is_mnistcnn", "classes_covered", "class_kl_uniform", "precision", "recall"),
    "fid_inception": ("fid_inception",),
    "kid_inception": ("kid_inception",),
    "pr_inception": ("precision_inception", "recall_inception"),
    "is_inception": ("is_inception",),
    "stackedmnist": ("mode_kl_uniform", "modes_covered"),
}
"""What eval.metrics may list, and the numbers each gives (plus _std companions; cond_accuracy with mnistcnn)."""
INCEPTION_METRICS = ("fid_inception", "kid_inception", "pr_inception", "is_inception")


@dataclass(frozen=True)
class EvalConfig:
    every: int = 0
    """Steps between sample-quality evaluations during training (0: none; also run once at the end when > 0)."""
    metrics: list[str] = field(default_factory=list)
    """Any of mnistcnn (the MNIST-classifier set), fid_inception, kid_inception, pr_inception, is_inception,
    inception (all four), or stackedmnist (modes covered of 1,000, KL to uniform). Empty: stackedmnist for
    StackedMNIST data, mnistcnn for labelled grey data or with eval.classifier, else all four Inception metrics."""
    n_samples: int = 10000
    """Generated images per evaluation, split across ranks."""
    batch_size: int = 500
    """Images per generator / feature-network forward pass on each rank."""
    real_split: str = ""
    """Split of data.path the samples are compared with. Empty: test for mnistcnn (the classifier trains on
    train), train for the Inception metrics (StyleGAN2-ADA's *_full: the data the GAN learned from)."""
    n_real: int = 50000
    """Real images behind the Inception statistics: the split's first n_real in shard order (all when fewer)."""
    classifier: str = ""
    """Classifier weights (.safetensors from `distgan eval classifier`); empty: trained on data.path's train split
    on first use and cached by the dataset's checksum."""
    cache_dir: str = ""
    """Where classifiers and real-data statistics are cached (default: $DISTGAN_CACHE or ~/.cache/distgan)."""
    classifier_epochs: int = 3
    """Epochs of classifier training when it is not cached yet."""
    inception_weights: str = ""
    """torch-fidelity's Inception weights file; empty: its cache (torch.hub checkpoints), else downloaded there."""
    inception_sha256: str = INCEPTION_SHA256
    """The sha256 the weights file must have; the standard file's unless you measure with other weights."""
    inception_download: bool = True
    """Download the weights at first use when they are not found (false on machines without internet)."""
    kid_subsets: int = 100
    """KID: subsets averaged (StyleGAN2-ADA's kid50k and torch-fidelity: 100)."""
    kid_subset_size: int = 1000
    """KID: images per subset (1000), fewer when there are fewer samples or real images."""
    k: int = 3
    """Neighbours defining the real and generated manifolds of precision/recall (Kynkaanniemi et al. 2019)."""
    best_metric: str = ""
    """Metric that picks the best checkpoint, kept as checkpoints/best (FID, KID and KL: lower is better; others
    higher). Empty: the first FID measured."""
    seed: int = 12345
    """Noise seed of the evaluation samples: every evaluation sees the same noise."""

    def __post_init__(self) -> None:
        check_finite(self, "eval")
        if self.every < 0:
            raise ConfigError(f"eval.every={self.every}: must be >= 0 (0 = no evaluation during training)")
        for name in (
            "n_samples",
            "batch_size",
            "classifier_epochs",
            "k",
            "n_real",
            "kid_subsets",
            "kid_subset_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"eval.{name}={getattr(self, name)}: must be >= 1")
        if self.n_samples <= self.k:
            raise ConfigError(f"eval.n_samples={self.n_samples} must exceed eval.k={self.k}")
        for m in self.metrics:
            if m not in METRIC_GROUPS and m != "inception":
                raise ConfigError(f"eval.metrics: {m!r} unknown; use any of inception, {', '.join(METRIC_GROUPS)}")
        if self.best_metric and self.best_metric not in LOWER_IS_BETTER:
            raise ConfigError(f"eval.best_metric={self.best_metric!r}: use one of {', '.join(sorted(LOWER_IS_BETTER))}")
        if len(self.inception_sha256) != 64:
            raise ConfigError(f"eval.inception_sha256={self.inception_sha256!r}: give 64 hex digits")

    def groups(self) -> tuple[str, ...]:
        """The listed metric groups with `inception` spelled out (empty when automatic)."""
        out: list[str] = []
        for m in self.metrics:
            out += [g for g in (INCEPTION_METRICS if m == "inception" else (m,)) if g not in out]
        return tuple(out)


LOWER_IS_BETTER = {
    "fid_mnistcnn": True,
    "class_kl_uniform": True,
    "precision": False,
    "recall": False,
    "is_mnistcnn": False,
    "classes_covered": False,
    "cond_accuracy": False,
    "fid_inception": True,
    "kid_inception": True,
    "precision_inception": False,
    "recall_inception": False,
    "is_inception": False,
    "mode_kl_uniform": True,
    "modes_covered": False,
}
"""Metrics that can pick the best checkpoint, and their direction."""
