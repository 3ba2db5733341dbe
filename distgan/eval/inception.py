"""The field's yardstick: torch-fidelity's port of the 2015 TF Inception-v3, its weights found offline first,
checked against their sha256 and read as data, and torch-fidelity's own statistics (FID, KID, precision/recall, IS).

torch-fidelity's package __init__ and its `utils` import torchvision (for its dataset readers and image
transforms), which does not import beside every torch build (a CPU torch beside PyPI's torchvision fails with
`operator torchvision::nms does not exist`). The network and the statistics need only torch and numpy, so where
the full import fails we import just those modules, with `torch_fidelity.utils` stood in by a module whose every
name raises: the numbers are still computed by the library's own code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import sys
import types
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distgan.config import INCEPTION_SHA256, ConfigError, EvalConfig, UserError
from distgan.utils.files import atomic_path, sha256_file

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_NAME}"
WEIGHTS_SHA256 = INCEPTION_SHA256
WEIGHTS_BYTES = 95_628_359
FEATURES = "2048"  # pool3: FID, KID, precision/recall
LOGITS = "logits_unbiased"  # the 1008 logits without bias: torch-fidelity's Inception Score
FEATURE_DIM, LOGIT_DIM = 2048, 1008
BATCH = 100  # images per Inception forward: 299x299 activations of a larger batch need many GB
RESIZER = "torch-fidelity interpolate_bilinear_2d_like_tensorflow1x to 299x299, from the images' own size"
GREY_TO_RGB = "one channel repeated three times (PIL's L->RGB, as torch-fidelity reads a grey PNG)"
QUANTISE = "generated images in [0, 1] rounded to uint8 (round(255 x)), as a saved PNG holds them"


class WeightsError(UserError):
    """The Inception weights are missing or not the expected file."""


@functools.cache
def library() -> types.SimpleNamespace:
    """torch-fidelity's extractor class and metric modules, with torchvision or without it."""
    try:
        import torch_fidelity  # noqa: F401  (the whole package: works where torchvision imports)
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            raise ConfigError(
                "the Inception metrics need torch-fidelity: `pip install --no-deps torch-fidelity==0.4.0` (its "
                "torchvision requirement is not needed by distgan; launch/setup_env.sh installs it so)"
            ) from exc
        _import_without_torchvision()
    except RuntimeError:  # a torchvision that is installed but does not match torch
        _import_without_torchvision()
    mods = {
        m: importlib.import_module(f"torch_fidelity.{m}")
        for m in ("feature_extractor_inceptionv3", "metric_fid", "metric_kid", "metric_isc", "metric_prc")
    }
    return types.SimpleNamespace(
        version=importlib.metadata.version("torch-fidelity"),
        Inception=mods["feature_extractor_inceptionv3"].FeatureExtractorInceptionV3,
        **{k.removeprefix("metric_"): v for k, v in mods.items() if k.startswith("metric_")},
    )


def _import_without_torchvision() -> None:
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("torch-fidelity is not installed: `pip install --no-deps torch-fidelity==0.4.0`")
    for name in [m for m in sys.modules if m == "torch_fidelity" or m.startswith("torch_fidelity.")]:
        del sys.modules[name]  # what a failed full import left half-initialised
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    utils = types.ModuleType("torch_fidelity.utils")

    def unavailable(name: str) -> Callable[..., Any]:
        if name.startswith("__"):  # module protocol (__file__, __path__...): absent, as inspect and pickle expect
            raise AttributeError(name)

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"torch_fidelity.utils.{name} needs torchvision, which does not import here")

        return fail

    setattr(utils, "__getattr__", unavailable)  # noqa: B010  (PEP 562: every name is a raising function)
    sys.modules["torch_fidelity"], sys.modules["torch_fidelity.utils"] = package, utils


# --- weights ----------------------------------------------------------------------------------------------


def hub_path() -> Path:
    """Where torch-fidelity itself caches the weights (torch.hub's checkpoints folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def missing_message(where: str) -> str:
    return (
        f"Inception weights {WEIGHTS_NAME} (sha256 {WEIGHTS_SHA256}) not found {where}: download them from "
        f"{WEIGHTS_URL} and give eval.inception_weights=FILE, or run `distgan eval weights --fetch` on a machine "
        f"that is online and copy {hub_path()} here"
    )


def find_weights(ev: EvalConfig, say: Callable[[str], None]) -> Path:
    """eval.inception_weights, else torch-fidelity's cache, else a download into that cache when allowed."""
    if ev.inception_weights:
        path = Path(ev.inception_weights).expanduser()
        if not path.is_file():
            raise WeightsError(missing_message(f"at eval.inception_weights={ev.inception_weights!r}"))
        return path
    if hub_path().is_file():
        return hub_path()
    if not ev.inception_download:
        raise WeightsError(missing_message(f"in {hub_path()} (eval.inception_download=false)"))
    try:
        return fetch_weights(hub_path(), say)
    except OSError as exc:
        raise WeightsError(missing_message(f"in {hub_path()}, and the download failed ({exc})")) from exc


def fetch_weights(dest: Path, say: Callable[[str], None], timeout: float = 60) -> Path:
    """Download to dest atomically, refusing a file whose sha256 is not the known one."""
    say(f"downloading {WEIGHTS_URL} ({WEIGHTS_BYTES / 2**20:.0f} MiB) to {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with urllib.request.urlopen(WEIGHTS_URL, timeout=timeout) as response, atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != WEIGHTS_SHA256:
            raise OSError(f"downloaded file has sha256 {digest.hexdigest()}, expected {WEIGHTS_SHA256}")
    return dest


def read_weights(path: Path, expected_sha256: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict, after its sha256 matched, read with weights_only (a checkpoint is data, never code)."""
    sha = sha256_file(path)
    if sha != expected_sha256:
        raise WeightsError(
            f"{path}: sha256 {sha} is not the expected {expected_sha256} ({WEIGHTS_NAME}, {WEIGHTS_BYTES:,} "
            f"bytes); a damaged or other file. Download it again from {WEIGHTS_URL}, or set "
            "eval.inception_sha256 to this file's sha256 if you mean to measure with other weights"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unpickling error: the file is not a plain state dict)
        raise WeightsError(f"{path}: not a state dict of tensors ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return state, sha


def build_network(state: dict[str, torch.Tensor]) -> nn.Module:
    """torch-fidelity's extractor with these weights. Its constructor unpickles a path without the weights-only
    guard, so it gets a buffer we serialised ourselves from plain tensors, never the user's file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    net: nn.Module = library().Inception(
        "inception-v3-compat", [FEATURES, LOGITS], feature_extractor_weights_path=buffer
    )
    return net


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generated images in [0, 1] -> uint8, as a saved PNG holds them."""
    return images.float().clamp(0, 1).mul(255).round().to(torch.uint8)


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 (or float in [0, 1]), grey or RGB -> uint8 RGB."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        raise ConfigError(f"Inception metrics take grey or RGB images, not {images.shape[1]} channels")
    return images


@torch.no_grad()
def featurize(net: nn.Module, images: torch.Tensor, batch: int, device: torch.device) -> np.ndarray:
    """Images -> (N, 2048 + 1008) float32: pool3 features, then the unbiased logits."""
    out = [np.zeros((0, FEATURE_DIM + LOGIT_DIM), np.float32)]
    for i in range(0, len(images), batch):
        x = to_uint8_rgb(images[i : i + batch]).to(device, non_blocking=True).contiguous()
        feats, logits = net(x)
        out.append(torch.cat([feats, logits], 1).float().cpu().numpy())
    return np.concatenate(out)


def statistics(features: np.ndarray) -> dict[str, np.ndarray]:
    """torch-fidelity's FID statistics (mean, covariance) of pool3 features."""
    pool3 = torch.from_numpy(np.ascontiguousarray(features[:, :FEATURE_DIM]))
    stats: dict[str, np.ndarray] = library().fid.fid_features_to_statistics(pool3)
    return stats


def scores(
    rows: np.ndarray,
    real: np.ndarray,
    real_stats: dict[str, np.ndarray],
    groups: tuple[str, ...],
    ev: EvalConfig,
) -> dict[str, float]:
    """torch-fidelity's metrics of generated rows (pool3 + logits) against real pool3 features, each computed by
    the library's function as its calculate_metrics(input1=generated, input2=real) would."""
    lib, out = library(), {}
    fake = torch.from_numpy(np.ascontiguousarray(rows[:, :FEATURE_DIM]))
    ref = torch.from_numpy(np.ascontiguousarray(real))
    if "fid_inception" in groups:
        fid = lib.fid.fid_statistics_to_metric(statistics(rows), real_stats, verbose=False)
        out["fid_inception"] = fid[lib.fid.KEY_METRIC_FID]
    if "kid_inception" in groups:
        size = min(ev.kid_subset_size, len(fake), len(ref))
        kid = lib.kid.kid_features_to_metric(fake, ref, kid_subsets=ev.kid_subsets, kid_subset_size=size, verbose=False)
        out["kid_inception"] = kid[lib.kid.KEY_METRIC_KID_MEAN]
        out["kid_inception_std"] = kid[lib.kid.KEY_METRIC_KID_STD]
    if "pr_inception" in groups:
        pr = lib.prc.prc_features_to_metric(fake, ref, prc_neighborhood=ev.k, save_cpu_ram=True, verbose=False)
        out["precision_inception"] = pr[lib.prc.KEY_METRIC_PRECISION]
        out["recall_inception"] = pr[lib.prc.KEY_METRIC_RECALL]
    if "is_inception" in groups:
        isc = lib.isc.isc_features_to_metric(torch.from_numpy(np.ascontiguousarray(rows[:, FEATURE_DIM:])))
        out["is_inception"] = isc[lib.isc.KEY_METRIC_ISC_MEAN]
        out["is_inception_std"] = isc[lib.isc.KEY_METRIC_ISC_STD]
    return {k: float(v) for k, v in out.items()}


def protocol(sha: str, expected: str, real: dict[str, Any], samples: int, ev: EvalConfig) -> dict[str, Any]:
    """Everything a number depends on, stored and printed beside it."""
    return {
        "yardstick": "inception",
        "library": f"torch-fidelity {library().version}",
        "network": "Inception-v3, 2015-12-05 TF graph (torch-fidelity port), pool3 2048-d; IS on logits_unbiased",
        "weights_sha256": sha,
        "standard_weights": sha == WEIGHTS_SHA256 and expected == WEIGHTS_SHA256,
        "samples": samples,
        **real,
        "grey_to_rgb": GREY_TO_RGB,
        "resizer": RESIZER,
        "quantise": QUANTISE,
        "kid": f"unbiased MMD^2, cubic polynomial kernel, {ev.kid_subsets} subsets of "
        f"min({ev.kid_subset_size}, samples, real images), mean and std",
        "precision_recall": f"k={ev.k} nearest neighbours (Kynkaanniemi et al. 2019)",
        "is": "10 splits, shuffled with seed 2020",
    }
