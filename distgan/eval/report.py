"""`distgan eval`: the numbers of a checkpoint (or of real images, as an anchor) as a table and JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.table import Table

from distgan import files
from distgan.config import Config, config_from_dict
from distgan.eval.evaluate import Evaluator, load_real, prepare_classifier

DESCRIPTIONS = {
    "fid_mnistcnn": "Frechet distance on the MNIST CNN's 128-d features (lower is better)",
    "is_mnistcnn": "classifier Inception Score (higher is better, 10 at most)",
    "classes_covered": "classes holding >= 1/10 of their uniform share",
    "class_kl_uniform": "KL(predicted class histogram || uniform) (0 = balanced)",
    "precision": "share of samples on the real manifold (k-NN, higher is better)",
    "recall": "share of real images on the samples' manifold (higher is better)",
}


def evaluate_checkpoint(
    ckpt: Path, overrides: list[str], ema: bool | None, say: Callable[[str], None]
) -> dict:
    """Call on all ranks (a plain `distgan eval` is one rank)."""
    from distgan.checkpoint import read_checkpoint
    from distgan.data.shards import refuse_saved_commands
    from distgan.sample import load_generator

    state = read_checkpoint(ckpt)
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
        "samples": cfg.eval.n_samples,
        "classifier_test_accuracy": evaluator.meta["test_accuracy"],
        "metrics": result,
    }


def evaluate_real(cfg: Config, split: str, say: Callable[[str], None]) -> dict:
    """Real images of one split scored as if generated: the floor the metrics can reach on this data."""
    acc = Accelerator(cpu=True)
    evaluator = Evaluator(cfg, acc, say)
    images, _ = load_real(cfg, split)
    n = min(len(images), cfg.eval.n_samples)
    return {
        "real_split": split,
        "samples": n,
        "classifier_test_accuracy": evaluator.meta["test_accuracy"],
        "metrics": evaluator.score_images(images[:n]),
    }


def train_only(cfg: Config, say: Callable[[str], None]) -> dict:
    _, meta = prepare_classifier(cfg, load_real(cfg, cfg.eval.real_split), say)
    return meta


def print_report(report: dict, console: Console) -> None:
    m = report["metrics"]
    title = report.get("checkpoint") or f"real {report.get('real_split')!r} images"
    table = Table(title=f"{title}: {report['samples']:,} samples", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    for k, desc in DESCRIPTIONS.items():
        table.add_row(
            k, f"{m[k]:.4g}" + (f" ± {m['is_mnistcnn_std']:.2g}" if k == "is_mnistcnn" else ""), desc
        )
    console.print(table)
    fracs = [(k.split("/")[1], v) for k, v in m.items() if k.startswith("class_frac/")]
    for cls, frac in fracs:
        console.print(f"  class {cls:>3} {frac:6.1%} " + "█" * round(frac * 100))
    console.print(f"classifier test accuracy {report['classifier_test_accuracy']:.2%}")


def write_json(report: dict, out: Path) -> None:
    files.write_json(out, report)
