"""A run's final outputs: the weights as safetensors (loadable with plain PyTorch) and the end-of-run summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from distgan.utils.files import save_weights

if TYPE_CHECKING:
    from distgan.training.trainer import Trainer


def save_final(t: Trainer, run_dir: Path) -> None:
    """Call on all ranks; rank 0 writes final/{G,D,G_ema}.safetensors."""
    t.acc.wait_for_everyone()
    if not t.acc.is_main_process:
        return
    nets = [("G", t.G_plain), ("D", t.D_plain)]
    if t.ema is not None:
        nets.append(("G_ema", t.ema.model))
    else:  # an earlier segment's EMA would be preferred by samplers over this run's final G
        (run_dir / "final" / "G_ema.safetensors").unlink(missing_ok=True)
    for name, model in nets:
        save_weights(run_dir / "final" / f"{name}.safetensors", model.state_dict())


def report_done(t: Trainer, elapsed: float, seen: int, final_ckpt: Path, run_dir: Path) -> None:
    """The end-of-run line and summary table; `seen`: images of this segment (after a resume)."""
    st, world = t.state, t.acc.num_processes
    t.tracker.info(
        f"done: {st.step} steps, {st.images_seen:,} images ({seen:,} in this run, {elapsed:.1f}s, "
        f"{seen / elapsed:,.0f} img/s overall); outputs in {run_dir}"
    )
    rows = {
        "time": f"{elapsed:.1f} s",
        "steps": f"{st.step} ({st.epoch} epochs)",
        "images": f"{st.images_seen:,}",
        "throughput": f"{seen / elapsed:,.0f} img/s on {world} process(es)",
        "samples": str(run_dir / "samples"),
        "weights": str(run_dir / "final"),
        "checkpoint": str(final_ckpt),
    }
    if t.eval is not None and t.eval.best is not None:
        rows["best"] = f"{t.eval.metric}={t.eval.best:.4g} at step {t.eval.step} ({final_ckpt.parent / 'best'})"
    rows["metrics"] = str(run_dir / "metrics.jsonl")
    t.tracker.summary(rows)
