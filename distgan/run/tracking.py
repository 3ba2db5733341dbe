"""Everything a run shows or writes for people: console, metrics.jsonl, sample PNGs, and the backends of
track.backends (backends.py: wandb, TensorBoard, MLflow).

Rank-0 side effects live here and only here: the main process gets a RunTracker, the others a NullTracker
(which still prints warnings), so the trainer calls `tracker.*` unconditionally.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from distgan.config import Config
from distgan.run.backends import MLflowSink, TensorBoardSink, WandbSink
from distgan.utils.files import DiskFullError, disk_full, remove_temporaries, write_json, write_text
from distgan.utils.grids import save_png

log = logging.getLogger("distgan")


class Tracker(Protocol):
    def start(self, total_steps: int, first_step: int) -> None: ...
    def advance(self, step: int, epoch: int) -> None: ...
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_images(self, step: int, name: str, image: np.ndarray) -> None: ...
    def info(self, message: str) -> None: ...
    def status(self, state: str, **info: Any) -> None: ...
    def summary(self, rows: dict[str, str]) -> None: ...
    def record(self, name: str, obj: dict[str, Any]) -> None: ...
    def close(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def setup_logging(rank: int, is_terminal: bool) -> None:
    """Rank 0 logs INFO; other ranks only warnings and errors, prefixed with their rank."""
    root = logging.getLogger("distgan")
    root.handlers.clear()
    root.propagate = False
    if rank == 0 and is_terminal:
        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        prefix = f"[rank {rank}] " if rank else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


class NullTracker:
    """Non-main ranks: nothing to show, nothing to write."""

    state_name, state_run_bound = "tracker", True

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

    def status(self, state: str, **info: Any) -> None:
        pass

    def summary(self, rows: dict[str, str]) -> None:
        pass

    def record(self, name: str, obj: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class RunTracker:
    """Main process: metrics.jsonl, samples/*.png, a rich progress bar (or plain lines when not a terminal)."""

    state_name, state_run_bound = "tracker", True  # a branched run logs to tracker runs of its own

    def __init__(self, cfg: Config, run_dir: Path, console: Console | None = None) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.console = console or Console(stderr=False)
        self.live = self.console.is_terminal
        self.metrics_file = open(run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 (closed in close())
        self.progress: Progress | None = None
        self.task: Any = None
        self.t0 = time.time()
        id_file = run_dir / "wandb_id"
        self.run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        mlflow_file = run_dir / "mlflow_id"
        self.mlflow_id = mlflow_file.read_text().strip() if mlflow_file.is_file() else ""  # "": a new run
        self.parent: dict[str, str] = {}  # the run this one branched from (branch_from)
        self.wandb: WandbSink | None = None
        self.sinks: list[Any] = []  # track.backends: wandb, TensorBoard, MLflow (backends.py)
        self.end_state = "finished"

    # the tracker's resumable state: a resumed run logs to the checkpoint's wandb (and MLflow) run
    def state_dict(self) -> dict[str, Any]:
        return {"wandb_id": self.run_id, "mlflow_id": self.mlflow_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("wandb_id") or self.run_id
        self.mlflow_id = state.get("mlflow_id") or self.mlflow_id

    def branch_from(self, state: dict[str, Any], checkpoint: Path) -> None:
        """Started from another run's checkpoint: this run keeps tracker runs of its own (logging into the
        parent's would mix two histories; an MLflow id from another store is not even found) and names its
        parent: RUN_DIR/branched_from.json, wandb's config and an MLflow tag."""
        self.parent = {
            "checkpoint": str(checkpoint.resolve()),
            "wandb_id": str(state.get("wandb_id") or ""),
            "mlflow_id": str(state.get("mlflow_id") or ""),
        }

    def start(self, total_steps: int, first_step: int) -> None:
        self.t0 = time.time()
        # what a killed run's writers left half-written (this process is the run directory's only writer)
        for folder in (
            self.run_dir,
            self.run_dir / "samples",
            self.run_dir / "plots",
            self.run_dir / "final",
        ):
            remove_temporaries(folder)
        write_text(self.run_dir / "wandb_id", self.run_id + "\n")
        if self.parent:
            write_json(self.run_dir / "branched_from.json", self.parent)
            self.info(f"branched from {self.parent['checkpoint']}: logging to tracker runs of its own")
        self.open_backends(first_step)
        if first_step:  # resumed: rows logged after the checkpoint (before the crash) are replayed, not kept twice
            path = self.run_dir / "metrics.jsonl"
            self.metrics_file.close()
            rows = [(line, _row(line)) for line in path.read_text().splitlines()]
            keep = [(line, row) for line, row in rows if row is not None and row.get("step", 1e300) <= first_step]
            write_text(path, "".join(line + "\n" for line, _ in keep))
            # row times count from the run's start across segments (compare's wall time), not from this one's
            times = [row["time"] for _, row in keep if isinstance(row.get("time"), int | float)]
            self.t0 -= max(times, default=0.0)
            self.metrics_file = open(path, "a", buffering=1)  # noqa: SIM115 (closed in close())
            if self.wandb is not None and self.wandb.mode == "offline":
                # A killed process loses what wandb had not flushed yet; metrics.jsonl is the durable record,
                # so this segment carries the history up to the checkpoint again. `wandb sync` of all segments
                # then holds every step; steps present twice are dropped by the server as non-increasing.
                for _, row in keep:
                    self.wandb.log(row["step"], {k: v for k, v in row.items() if k not in ("step", "time")})
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
            self.task = self.progress.add_task("train", total=total_steps, completed=first_step, epoch=0, rate="")

    def open_backends(self, first_step: int) -> None:
        """track.backends, in the order listed; wandb first sets the run id the others are told of."""
        for name in self.cfg.track.backends:
            if name == "wandb":
                self.wandb = WandbSink(self.cfg, self.run_dir, self.run_id, self.info, self.parent)
                self.sinks.append(self.wandb)
            elif name == "tensorboard":
                self.sinks.append(TensorBoardSink(self.cfg, self.run_dir, first_step, self.info))
            elif name == "mlflow":
                sink = MLflowSink(self.cfg, self.run_dir, self.mlflow_id, first_step, self.info, self.parent)
                if sink.alive:
                    self.mlflow_id = sink.run_id
                    write_text(self.run_dir / "mlflow_id", self.mlflow_id + "\n")
                self.sinks.append(sink)

    def advance(self, step: int, epoch: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, epoch=epoch)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, "time": round(time.time() - self.t0, 3), **metrics}
        try:
            self.metrics_file.write(json.dumps(row) + "\n")
        except OSError as exc:  # an append cannot go through files.py's rename; a full disk is named the same
            if disk_full(exc):
                raise DiskFullError(
                    errno.ENOSPC,
                    f"disk full while writing {self.metrics_file.name}; free space there and resume",
                ) from None
            raise
        for sink in self.sinks:
            sink.log(step, metrics)
        if self.progress is not None:
            self.progress.update(self.task, rate=f"{metrics.get('img_per_s', 0):,.0f} img/s")
            self.progress.console.print(_table(step, metrics))
        else:
            self.info(f"step {step}  " + "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))

    def log_images(self, step: int, name: str, image: np.ndarray) -> None:
        """`name` like "samples/grid_epoch0010": the PNG path under the run directory, and the wandb key."""
        save_png(image, self.run_dir / f"{name}.png")
        # samples/grid_step0000100 -> samples/grid: one key per kind of grid, stepped
        key = name.split("/")[0] + "/" + name.split("/")[-1].split("_")[0]
        for sink in self.sinks:
            sink.image(step, key, image)

    def record(self, name: str, obj: dict[str, Any]) -> None:
        """A fact about the run that is not a number per step (the evaluation protocol): RUN_DIR/NAME.json."""
        write_json(self.run_dir / f"{name}.json", obj)

    def summary(self, rows: dict[str, str]) -> None:
        if self.progress is not None:
            table = Table(title="run summary", show_header=False, box=None)
            for k, v in rows.items():
                table.add_row(Text(k, style="bold"), Text(v))
            self.progress.console.print(table)
        else:
            self.info("summary: " + "; ".join(f"{k}: {v}" for k, v in rows.items()))

    def status(self, state: str, **info: Any) -> None:
        """RUN_DIR/status.json: running | finished | preempted | failed, with host, pid and time (read by
        `distgan compare` and by sweeps, which skip finished points). The last one is the backends' end state."""
        self.end_state = state

        try:
            write_json(
                self.run_dir / "status.json",
                {
                    "state": state,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "time": time.time(),
                    **info,
                },
            )
        except OSError as exc:  # a full disk: the status cannot be written; the error that stops the run says so
            log.warning("could not write %s: %s", self.run_dir / "status.json", exc)

    def info(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message, highlight=False, markup=False)  # paths are literal
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{stamp} {message}", flush=True)

    def close(self) -> None:
        if self.metrics_file.closed:
            return
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        for sink in self.sinks:
            sink.finish(self.end_state)
        self.sinks = []
        try:
            self.metrics_file.close()
        except OSError as exc:  # the full disk that stopped the run: already reported by the error itself
            log.warning("closing %s: %s", self.metrics_file.name, exc)
        if self.cfg.track.plot and (self.run_dir / "metrics.jsonl").stat().st_size:
            try:
                from distgan.run.plots import plot_run

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


def _row(line: str) -> dict | None:
    """A metrics.jsonl row; None for a line torn by a crash."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _fmt(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1):
        return f"{int(v)}"
    return f"{v:.4g}"


def make_tracker(cfg: Config, run_dir: Path, main: bool) -> RunTracker | NullTracker:
    """The main process shows and writes (run directory, resolved config, metrics); other ranks stay silent."""
    if not main:
        return NullTracker()
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunTracker(cfg, run_dir)
