"""`distgan eval`: the numbers of a checkpoint, of real images (an anchor), or of any two image sets, as a table
with the protocol beneath it, and as JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.table import Table
from rich.text import Text

from distgan.config import Config
from distgan.configure import config_from_dict, load_config
from distgan.eval.evaluate import Evaluator, RealSet, prepare_classifier, real_split
from distgan.eval.image_sets import load_real
from distgan.utils import files

DESCRIPTIONS = {
    "fid_mnistcnn": "Frechet distance on the MNIST CNN's 128-d features (lower is better)",
    "is_mnistcnn": "classifier Inception Score (higher is better, 10 at most)",
    "classes_covered": "classes holding >= 1/10 of their uniform share",
    "class_kl_uniform": "KL(predicted class histogram || uniform) (0 = balanced)",
    "precision": "share of samples on the real manifold (MNIST CNN features, k-NN)",
    "recall": "share of real images on the samples' manifold (MNIST CNN features)",
    "cond_accuracy": "samples the classifier sees as the class they were asked for",
    "fid_inception": "FID: Frechet distance on Inception pool3 features (lower is better)",
    "kid_inception": "KID: unbiased MMD^2 on Inception features, mean of subsets (lower is better)",
    "precision_inception": "share of samples on the real manifold (Inception features, k-NN)",
    "recall_inception": "share of real images on the samples' manifold (Inception features)",
    "is_inception": "Inception Score (higher is better)",
    "modes_covered": "StackedMNIST modes (of 1,000) with at least one sample",
    "mode_kl_uniform": "KL(mode histogram || uniform over 1,000) (0 = balanced)",
    "real_modes_covered": "the real split's own modes covered on as many images (the floor)",
    "real_mode_kl_uniform": "the real split's own mode KL on as many images (the floor)",
}
STD = {
    "is_mnistcnn": "is_mnistcnn_std",
    "kid_inception": "kid_inception_std",
    "is_inception": "is_inception_std",
}


def _base(evaluator: Evaluator, samples: int, result: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": samples, "metrics": result, "protocol": evaluator.protocol}
    if evaluator.meta:
        out["classifier_test_accuracy"] = evaluator.meta["test_accuracy"]
    return out


def evaluate_checkpoint(ckpt: Path, overrides: list[str], ema: bool | None, say: Callable[[str], None]) -> dict:
    """Call on all ranks (a plain `distgan eval` is one rank)."""
    from distgan.data.shards import refuse_saved_commands
    from distgan.run.sample import load_generator
    from distgan.run.weights import read_state

    state = read_state(ckpt)
    refuse_saved_commands(state["config"], overrides, f"checkpoint {ckpt}")
    cfg = config_from_dict(state["config"], overrides)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    evaluator = Evaluator(cfg, acc, say)
    G, used_ema = load_generator(ckpt, ema, state)
    result = evaluator(G.to(acc.device))
    return {
        "checkpoint": str(ckpt),
        "step": state["step"],
        "images_seen": state["objects"]["trainer"]["images_seen"],
        "generator": "ema" if used_ema else "raw",
        **_base(evaluator, cfg.eval.n_samples, result),
    }


def evaluate_real(cfg: Config, split: str, say: Callable[[str], None]) -> dict:
    """Real images of one split scored as if generated: the floor the metrics can reach on this data."""
    evaluator = Evaluator(cfg, Accelerator(cpu=not torch.cuda.is_available()), say)
    images, _ = load_real(cfg, split)
    n = min(len(images), cfg.eval.n_samples)
    return {"real_split": split, **_base(evaluator, n, evaluator.score_images(images[:n]))}


def evaluate_sets(real: str, fake: str, split: str, overrides: list[str], say: Callable[[str], None]) -> dict:
    """Any two image sets (shards, image folders, npz): the samples of any tool against any reference."""
    from distgan.eval.image_sets import read_images

    fake_images, _, fake_kind = read_images(fake, split, 0)
    real_images, labels, real_kind = read_images(real, split, 0)
    shape = list(fake_images.shape[1:])  # each set is resized to 299 for Inception: their sizes may differ
    base = [f"model.image_shape={shape}", "eval.metrics=[inception]", f"eval.n_samples={len(fake_images)}"]
    cfg = load_config(None, [*base, *overrides])
    given = RealSet(f"{real} ({real_kind})", real_images, labels)
    evaluator = Evaluator(cfg, Accelerator(cpu=not torch.cuda.is_available()), say, given)
    return {
        "real": f"{real} ({real_kind}, {len(real_images):,} images)",
        "fake": f"{fake} ({fake_kind}, {len(fake_images):,} images)",
        **_base(evaluator, len(fake_images), evaluator.score_images(fake_images)),
    }


def train_only(cfg: Config, say: Callable[[str], None]) -> dict:
    _, meta = prepare_classifier(cfg, load_real(cfg, real_split(cfg.eval, "mnistcnn")), say)
    return meta


def print_report(report: dict, console: Console) -> None:
    m = report["metrics"]
    title = report.get("checkpoint") or report.get("fake") or f"real {report.get('real_split')!r} images"
    table = Table(title=Text(f"{title}: {report['samples']:,} samples"), title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    for k, desc in DESCRIPTIONS.items():
        if k in m:
            std = f" ± {m[STD[k]]:.2g}" if k in STD and STD[k] in m else ""
            table.add_row(k, f"{m[k]:.4g}{std}", desc)
    console.print(table)
    fracs = [(k.split("/")[1], v) for k, v in m.items() if k.startswith("class_frac/")]
    for cls, frac in fracs:
        console.print(f"  class {cls:>3} {frac:6.1%} " + "█" * round(frac * 100))
    for name, protocol in report.get("protocol", {}).items():
        console.print(f"{name} protocol", style="bold", markup=False)
        for k, v in protocol.items():
            if k != "yardstick":
                console.print(f"  {k}: {v}", markup=False)


def write_json(report: dict, out: Path) -> None:
    files.write_json(out, report)
