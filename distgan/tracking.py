"""Everything a run shows or writes for people: console, metrics.jsonl, sample PNGs, wandb.

Rank-0 side effects live here and only here: the main process gets a RunTracker, the others a NullTracker
(which still prints warnings), so the trainer calls `tracker.*` unconditionally.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from distgan.config import Config

log = logging.getLogger("distgan")


class Tracker(Protocol):
    def start(self, total_steps: int, first_step: int) -> None: ...
    def advance(self, step: int, epoch: int) -> None: ...
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_images(self, step: int, name: str, image: np.ndarray) -> None: ...
    def info(self, message: str) -> None: ...
    def close(self) -> None: ...


def setup_logging(rank: int, is_terminal: bool) -> None:
    """Rank 0 logs INFO; other ranks only warnings and errors, prefixed with their rank."""
    root = logging.getLogger("distgan")
    root.handlers.clear()
    root.propagate = False
    if rank == 0 and is_terminal:
        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, markup=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        prefix = f"[rank {rank}] " if rank else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def image_grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """(B,C,H,W) floats in [0,1] -> one uint8 (H',W',C) grid with 2-pixel gaps, C in {1,3}."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    b, c, h, w = x.shape
    ncol = math.ceil(b / nrow)
    pad = 2
    grid = torch.zeros((c, ncol * (h + pad) + pad, nrow * (w + pad) + pad), dtype=torch.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        grid[
            :,
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + col * (w + pad) : pad + col * (w + pad) + w,
        ] = x[i]
    return grid.permute(1, 2, 0).numpy()


def save_png(image: np.ndarray, path: Path) -> None:
    """Atomic: a crash never leaves a half-written PNG under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format="PNG")
    os.replace(tmp, path)


class NullTracker:
    """Non-main ranks: nothing to show, nothing to write."""

    def start(self, total_steps: int, first_step: int) -> None:
        pass

    def advance(self, step: int, epoch: int) -> None:
        pass

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log_images(self, step: int, name: str, image: np.ndarray) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class RunTracker:
    """Main process: metrics.jsonl, samples/*.png, a rich progress bar (or plain lines when not a terminal)."""

    def __init__(self, cfg: Config, run_dir: Path, console: Console | None = None) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.console = console or Console(stderr=False)
        self.live = self.console.is_terminal
        self.metrics_file = open(run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 (closed in close())
        self.progress: Progress | None = None
        self.task: Any = None
        self.t0 = time.time()

    def start(self, total_steps: int, first_step: int) -> None:
        self.t0 = time.time()
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                TextColumn("step {task.completed}/{task.total}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[rate]}"),
                console=self.console,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=total_steps, completed=first_step, epoch=0, rate=""
            )

    def advance(self, step: int, epoch: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, epoch=epoch)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, "time": round(time.time() - self.t0, 3), **metrics}
        self.metrics_file.write(json.dumps(row) + "\n")
        text = "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
        if self.progress is not None:
            self.progress.update(self.task, rate=f"{metrics.get('img_per_s', 0):,.0f} img/s")
            self.progress.console.print(f"step {step}  {text}", highlight=False)
        else:
            self.info(f"step {step}  {text}")

    def log_images(self, step: int, name: str, image: np.ndarray) -> None:
        save_png(image, self.run_dir / "samples" / f"{name}.png")

    def info(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message, highlight=False)
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{stamp} {message}", flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.metrics_file.close()


def _fmt(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1):
        return f"{int(v)}"
    return f"{v:.4g}"
