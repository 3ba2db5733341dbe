"""Everything a run shows or writes for people: console, metrics.jsonl, sample PNGs, wandb.

Rank-0 side effects live here and only here: the main process gets a RunTracker, the others a NullTracker
(which still prints warnings), so the trainer calls `tracker.*` unconditionally.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
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
from rich.table import Table

from distgan.config import Config

log = logging.getLogger("distgan")


class Tracker(Protocol):
    def start(self, total_steps: int, first_step: int) -> None: ...
    def advance(self, step: int, epoch: int) -> None: ...
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_images(self, step: int, name: str, image: np.ndarray) -> None: ...
    def info(self, message: str) -> None: ...
    def summary(self, rows: dict[str, str]) -> None: ...
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


def wandb_mode(configured: str, env: dict[str, str] | None = None) -> str:
    """auto -> WANDB_MODE if set, else online with credentials, else offline."""
    env = dict(os.environ) if env is None else env
    if configured != "auto":
        return configured
    if env.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return env["WANDB_MODE"]
    if env.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc

        host = env.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
        if netrc.netrc().authenticators(host):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class WandbSink:
    """One wandb run per training run, on the main process only; never allowed to stop training.

    The run id lives in RUN_DIR/wandb_id so a resumed run continues the same run (online: resume="allow";
    offline ignores resume, so each segment is its own offline run with the same id and group, and
    `wandb sync` of all of them gives one history).
    """

    def __init__(self, cfg: Config, run_dir: Path, say: Any) -> None:
        self.say, self.run = say, None
        self.mode = wandb_mode(cfg.track.wandb)
        if self.mode == "disabled":
            return
        try:
            import wandb
        except ImportError as exc:
            log.warning("wandb is not installed (%s); logging to metrics.jsonl only", exc)
            self.mode = "disabled"
            return
        self.wandb = wandb
        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        if not id_file.is_file():
            id_file.write_text(run_id + "\n")
        t = cfg.track
        kwargs = dict(
            project=t.project,
            entity=t.entity or None,
            name=t.name or run_dir.name,
            group=t.group or run_dir.name,
            tags=list(t.tags) or None,
            notes=t.notes or None,
            config=cfg.to_dict(),
            id=run_id,
            resume="allow",
            dir=str(run_dir),
        )
        settings = wandb.Settings(init_timeout=t.init_timeout_s, silent=True, console="off")
        try:
            self.run = wandb.init(mode=self.mode, settings=settings, **kwargs)
        except Exception as exc:  # no network, bad credentials, server down: keep training, offline
            if self.mode != "online":
                log.warning("wandb disabled for this run: %s", exc)
                return
            log.warning(
                "wandb online failed (%s); falling back to offline after %ss",
                str(exc).splitlines()[0],
                t.init_timeout_s,
            )
            self.mode = "offline"
            try:
                self.run = wandb.init(mode="offline", settings=settings, **kwargs)
            except Exception as exc2:
                log.warning("wandb offline failed too, wandb disabled: %s", exc2)
                return
        if self.mode == "offline":
            say(
                f"wandb offline run in {self.run.dir.rsplit('/files', 1)[0]}; upload later: wandb sync {run_dir}/wandb/offline-run-*"
            )

    def _guard(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # a wandb failure mid-run is reported once and never stops training
            log.warning("wandb error, logging to wandb stops here (training goes on): %s", exc)
            self.run = None

    def log(self, step: int, data: dict[str, Any]) -> None:
        self._guard(lambda: self.run.log(data, step=step))

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        # uint8 HWC: wandb.Image would otherwise guess the value range per image
        self._guard(lambda: self.run.log({name: self.wandb.Image(image)}, step=step))

    def finish(self) -> None:
        self._guard(lambda: self.run.finish())
        self.run = None


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

    def summary(self, rows: dict[str, str]) -> None:
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
        self.wandb = WandbSink(cfg, run_dir, self.info)

    def start(self, total_steps: int, first_step: int) -> None:
        self.t0 = time.time()
        if (
            first_step
        ):  # resumed: rows logged after the checkpoint (before the crash) are replayed, not kept twice
            path = self.run_dir / "metrics.jsonl"
            self.metrics_file.close()
            keep = [r for r in path.read_text().splitlines() if _row_step(r) <= first_step]
            tmp = path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(r + "\n" for r in keep))
            os.replace(tmp, path)
            self.metrics_file = open(path, "a", buffering=1)  # noqa: SIM115 (closed in close())
            if self.wandb.mode == "offline":
                # A killed process loses what wandb had not flushed yet; metrics.jsonl is the durable record,
                # so this segment carries the history up to the checkpoint again. `wandb sync` of all segments
                # then holds every step; steps present twice are dropped by the server as non-increasing.
                for line in keep:
                    row = json.loads(line)
                    self.wandb.log(row.pop("step"), {k: v for k, v in row.items() if k != "time"})
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
        self.wandb.log(step, metrics)
        if self.progress is not None:
            self.progress.update(self.task, rate=f"{metrics.get('img_per_s', 0):,.0f} img/s")
            self.progress.console.print(_table(step, metrics))
        else:
            self.info(f"step {step}  " + "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))

    def log_images(self, step: int, name: str, image: np.ndarray) -> None:
        """`name` like "samples/grid_epoch0010": the PNG path under the run directory, and the wandb key."""
        save_png(image, self.run_dir / f"{name}.png")
        self.wandb.image(step, name.split("/")[0] + "/" + name.split("/")[-1].split("_")[0], image)

    def summary(self, rows: dict[str, str]) -> None:
        if self.progress is not None:
            table = Table(title="run summary", show_header=False, box=None)
            for k, v in rows.items():
                table.add_row(f"[bold]{k}", v)
            self.progress.console.print(table)
        else:
            self.info("summary: " + "; ".join(f"{k}: {v}" for k, v in rows.items()))

    def info(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message, highlight=False)
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{stamp} {message}", flush=True)

    def close(self) -> None:
        if self.metrics_file.closed:
            return
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.wandb.finish()
        self.metrics_file.close()
        if self.cfg.track.plot and (self.run_dir / "metrics.jsonl").stat().st_size:
            try:
                from distgan.plots import plot_run

                self.info(f"plot: {plot_run(self.run_dir)}")
            except Exception as exc:  # a plot is a convenience; never fail the run over it
                log.warning("could not plot %s: %s", self.run_dir, exc)


def _table(step: int, metrics: dict[str, float]) -> Table:
    table = Table(title=f"step {step}", title_justify="left", show_header=False, box=None, padding=(0, 1))
    items = list(metrics.items())
    for i in range(0, len(items), 4):
        row = []
        for k, v in items[i : i + 4]:
            row += [f"[dim]{k}", _fmt(v)]
        table.add_row(*row)
    return table


def _row_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError):  # a line torn by a crash
        return float("inf")


def _fmt(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1):
        return f"{int(v)}"
    return f"{v:.4g}"
