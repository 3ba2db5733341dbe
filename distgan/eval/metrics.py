"""Sample-quality metrics on classifier features and predictions. Pure functions of arrays: no model, no I/O."""

from __future__ import annotations

import math

import numpy as np
import torch

COVER_SHARE = 0.1
"""A class counts as covered when it gets at least this fraction of its uniform share of the samples."""


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = features.astype(np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), the FID formula, on whatever features it is given.

    Tr((S1 S2)^1/2) is computed as the sum of sqrt(eig(A S2 A)) with A = S1^1/2 (symmetric PSD, so eigh is
    exact and stable) instead of scipy's sqrtm of a non-symmetric product, which can return complex noise.
    """
    s1 = torch.from_numpy(np.asarray(sigma1, np.float64))
    s2 = torch.from_numpy(np.asarray(sigma2, np.float64))
    w, v = torch.linalg.eigh(s1)
    a = (v * w.clamp(min=0).sqrt()) @ v.T
    tr_covmean = torch.linalg.eigvalsh(a @ s2 @ a).clamp(min=0).sqrt().sum()
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean)


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) with the classifier's softmax, mean and std over splits (Salimans 2016)."""
    scores = []
    for part in np.array_split(probs.astype(np.float64), splits):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(1).mean()
        scores.append(math.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def class_histogram(probs: np.ndarray) -> np.ndarray:
    """Fraction of samples predicted as each class."""
    k = probs.shape[1]
    return np.bincount(probs.argmax(1), minlength=k).astype(np.float64) / len(probs)


def kl_to_uniform(hist: np.ndarray) -> float:
    """KL(hist || uniform): 0 for balanced classes, log(K) when every sample is one class."""
    p = hist[hist > 0]
    return float((p * np.log(p * len(hist))).sum())


def classes_covered(hist: np.ndarray) -> int:
    return int((hist >= COVER_SHARE / len(hist)).sum())


def _kth_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(out)


def _inside(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each query point: does it fall inside some reference point's k-NN ball?"""
    out = []
    for i in range(0, len(query), chunk):
        d = torch.cdist(query[i : i + chunk], ref)
        out.append((d <= radii[None]).any(1))
    return torch.cat(out)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision/recall (Kynkaanniemi et al. 2019): the share of generated samples on the real
    manifold, and of real samples on the generated one, each manifold a union of k-NN balls."""
    r = torch.from_numpy(np.ascontiguousarray(real, np.float32))
    f = torch.from_numpy(np.ascontiguousarray(fake, np.float32))
    precision = _inside(f, r, _kth_radius(r, k, chunk), chunk).float().mean()
    recall = _inside(r, f, _kth_radius(f, k, chunk), chunk).float().mean()
    return float(precision), float(recall)


def all_metrics(
    fake_features: np.ndarray,
    fake_probs: np.ndarray,
    real_mu: np.ndarray,
    real_sigma: np.ndarray,
    real_features: np.ndarray,
    k: int,
) -> dict[str, float]:
    """Every number `distgan eval` reports, from generated features/probabilities and real statistics."""
    mu, sigma = mean_cov(fake_features)
    hist = class_histogram(fake_probs)
    is_mean, is_std = inception_score(fake_probs)
    precision, recall = precision_recall(real_features, fake_features, k)
    out = {
        "fid_mnistcnn": frechet_distance(mu, sigma, real_mu, real_sigma),
        "is_mnistcnn": is_mean,
        "is_mnistcnn_std": is_std,
        "classes_covered": float(classes_covered(hist)),
        "class_kl_uniform": kl_to_uniform(hist),
        "precision": precision,
        "recall": recall,
    }
    out.update({f"class_frac/{c}": float(h) for c, h in enumerate(hist)})
    return out
