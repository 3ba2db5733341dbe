"""Where a run's numbers go besides metrics.jsonl (track.backends): wandb, TensorBoard and MLflow. TensorBoard and
MLflow log as wandb does: the same scalars under the same keys, the sample grids as images and the
resolved config as hyperparameters, at the same (global optimizer) steps, from the main process only.

Both go through Accelerate's tracker classes (`TensorBoardTracker`, `MLflowTracker`), the ones `log_with` uses.
Two things they lack are added here, each where it is used: images in MLflow (the class has no `log_images`;
`mlflow.log_image` with a step is MLflow's own per-step image API) and a resume without duplicate steps.

A resume after kill -9 goes back to the last checkpoint, so the steps the killed process logged after it come
again. TensorBoard's own answer is the writer's `purge_step`: its readers hide every event of the earlier
files at or after that step, so the resumed values replace them. MLflow keeps every value it was sent, so the
resumed run leaves out the steps the run already holds (what wandb's server does with non-increasing steps);
a resume on the same world size is bit-exact, so the values it leaves out are the ones already there.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from distgan.config import Config

log = logging.getLogger("distgan")


def wandb_base_url(env: dict[str, str] | None = None) -> str:
    """The server the installed wandb would talk to: WANDB_BASE_URL, else wandb's own settings file (what
    `wandb login --host` wrote), else its default."""
    env = dict(os.environ) if env is None else env
    if env.get("WANDB_BASE_URL"):
        return env["WANDB_BASE_URL"]
    try:  # wandb's settings loader; not a documented API, so any failure means "its default"
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url)
    except Exception:
        return "https://api.wandb.ai"


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443)


def wandb_mode(configured: str, env: dict[str, str] | None = None, base_url: str | None = None) -> str:
    """auto -> WANDB_MODE if set, else online with credentials (for wandb's configured host), else offline."""
    env = dict(os.environ) if env is None else env
    if configured != "auto":
        return configured
    if env.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return env["WANDB_MODE"]
    if env.get("WANDB_API_KEY"):
        return "online"
    return "online" if netrc_credentials(base_url or wandb_base_url(env)) else "offline"


def netrc_credentials(url: str) -> bool:
    """Whether ~/.netrc (or $NETRC) has wandb credentials for `url`, looked up as wandb itself does (it also
    accepts the entry of a forge host's upstream, api.wandb.ai); stdlib netrc when wandb is absent."""
    try:
        from wandb.sdk.lib.wbauth import wbnetrc

        return bool(wbnetrc.read_netrc_auth(host=url))
    except Exception:  # not a documented API: fall back to the host's own entry
        import netrc

        try:
            return bool(netrc.netrc().authenticators(_host_port(url)[0]))
        except (OSError, netrc.NetrcParseError):
            return False


def reachable(url: str, timeout: float) -> str:
    """'' when a TCP connection to the server opens within `timeout`, else why not."""
    host, port = _host_port(url)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc})"


class Guarded:
    """A backend is never allowed to stop training: its first error is reported and it logs no more."""

    name = ""

    def __init__(self) -> None:
        self.alive = True

    def guard(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.alive:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            log.warning("%s error, logging to %s stops here (training goes on): %s", self.name, self.name, exc)
            self.stop()
            return None

    def stop(self) -> None:
        """No more logging to this backend (after its first error, or when it is finished)."""
        self.alive = False


class WandbSink(Guarded):
    """One wandb run per training run, on the main process only; never allowed to stop training.

    The run id is the tracker's (kept in RUN_DIR/wandb_id and in checkpoints) so a resumed run continues the
    same run (online: resume="allow"; offline ignores resume, so each segment is its own offline run with the
    same id and group, and `wandb sync` of all of them gives one history). Online with no route to the server
    falls back to an offline run with the same id at once; a server that answers but fails falls back after
    track.init_timeout_s.
    """

    name = "wandb"

    def __init__(self, cfg: Config, run_dir: Path, run_id: str, say: Any, parent: dict[str, str] | None = None) -> None:
        super().__init__()
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
        t = cfg.track
        kwargs: dict[str, Any] = dict(
            project=t.project,
            entity=t.entity or None,
            name=t.name or run_dir.name,
            group=t.group or run_dir.name,
            tags=list(t.tags) or None,
            notes=t.notes or None,
            config={**cfg.to_dict(), **({"branched_from": parent} if parent else {})},
            id=run_id,
            resume="allow",
            dir=str(run_dir),
        )
        settings = wandb.Settings(init_timeout=t.init_timeout_s, silent=True, console="off")
        if self.mode == "online":
            url = wandb_base_url()
            why = reachable(url, min(5.0, t.init_timeout_s))
            if why:
                log.warning("wandb server %s: %s; logging to an offline run instead", url, why)
                self.mode = "offline"
        t0 = time.perf_counter()
        try:
            self.run = wandb.init(mode=self.mode, settings=settings, **kwargs)  # type: ignore[arg-type]
        except Exception as exc:  # bad credentials, server down: keep training, offline
            if self.mode != "online":
                log.warning("wandb disabled for this run: %s", exc)
                return
            log.warning(
                "wandb online failed after %.0fs (%s); falling back to an offline run",
                time.perf_counter() - t0,
                str(exc).splitlines()[0],
            )
            self.mode = "offline"
            wandb.teardown()  # the failed run still holds its id in wandb's service: "run ID ... is in use"
            try:
                self.run = wandb.init(mode="offline", settings=settings, **kwargs)
            except Exception as exc2:
                log.warning("wandb offline failed too, wandb disabled: %s", exc2)
                return
        if self.mode == "offline":
            say(
                f"wandb offline run in {self.run.dir.rsplit('/files', 1)[0]}; upload later: "
                f"wandb sync {run_dir}/wandb/offline-run-*"
            )

    def stop(self) -> None:
        super().stop()
        self.run = None

    def log(self, step: int, data: dict[str, Any]) -> None:
        if self.run is not None:
            self.guard(self.run.log, data, step=step)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        # uint8 HWC: wandb.Image would otherwise guess the value range per image
        if self.run is not None:
            self.guard(self.run.log, {name: self.wandb.Image(image)}, step=step)

    def finish(self, state: str = "finished") -> None:
        if self.run is not None:
            self.guard(self.run.finish)
        self.stop()


def accelerate_state() -> None:
    """Accelerate's tracker classes log through its logger, which needs its process state: the training process
    has it (the Accelerator made it); a tracker used alone (a test, a notebook) makes the one-process state."""
    from accelerate import PartialState

    PartialState()


def flat_config(cfg: Config) -> dict[str, Any]:
    """The resolved config as dotted keys with scalar values (lists as JSON): what hyperparameter tables take."""
    out: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, bool | int | float | str):
                out[prefix + k] = v
            else:
                out[prefix + k] = json.dumps(v)

    walk(cfg.to_dict(), "")
    return out


class TensorBoardSink(Guarded):
    """Event files in RUN_DIR/tensorboard (one stream per run: only the main process writes)."""

    name = "tensorboard"

    def __init__(self, cfg: Config, run_dir: Path, first_step: int, say: Any) -> None:
        super().__init__()
        from accelerate.tracking import TensorBoardTracker

        accelerate_state()
        self.dir = run_dir / "tensorboard"
        # purge_step: events the killed segment logged after the checkpoint are hidden by every reader
        purge = {"purge_step": first_step + 1} if first_step else {}
        self.tracker = TensorBoardTracker("tensorboard", str(run_dir), **purge)
        self.tracker.main_process_only = False  # only the main process builds one (make_tracker)
        self.guard(self.tracker.start)
        if not first_step:  # a resumed run's hyperparameters were written when it started
            self.guard(self.tracker.store_init_configuration, flat_config(cfg))
        if self.alive:
            say(f"tensorboard: tensorboard --logdir {self.dir}")

    def log(self, step: int, data: dict[str, Any]) -> None:
        self.guard(self.tracker.log, data, step=step)

    def image(self, step: int, key: str, image: np.ndarray) -> None:
        """uint8 HWC (H x W x 3, or H x W for grey)."""
        hwc = image if image.ndim == 3 else image[..., None]
        self.guard(self.tracker.log_images, {key: hwc[None]}, step=step, dataformats="NHWC")

    def finish(self, state: str) -> None:
        self.guard(self.tracker.finish)
        self.stop()


MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "preempted": "KILLED", "interrupted": "KILLED"}
"""distgan's end state (status.json) -> the MLflow run's status."""


def mlflow_uri(cfg: Config, run_dir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location of a new experiment): track.mlflow_uri, else $MLFLOW_TRACKING_URI, else
    a SQLite file in the run directory with its artifacts beside it (MLflow's file store is deprecated)."""
    uri = cfg.track.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri, None
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}", (run_dir / "mlartifacts").resolve().as_uri()


def _mlflow_tracker() -> type:
    """Accelerate's MLflowTracker with its experiment found by exact name: its own start() builds the search's
    filter string by hand (`name = '...'`), which a quote in track.project breaks ("Invalid clause(s) in
    filter string") and MLflow's grammar cannot escape; get_experiment_by_name takes the name as data."""
    from accelerate.tracking import MLflowTracker

    class ExactNameTracker(MLflowTracker):
        def start(self) -> None:
            import mlflow

            exp = mlflow.get_experiment_by_name(self.experiment_name)
            experiment_id = (
                exp.experiment_id
                if exp is not None
                else mlflow.create_experiment(
                    name=self.experiment_name, artifact_location=self.logging_dir, tags=self.tags
                )
            )
            self.active_run = mlflow.start_run(
                run_id=self.run_id,
                experiment_id=experiment_id,
                run_name=self.run_name,
                nested=self.nested_run,
                tags=self.tags,
                description=self.description,
            )

    return ExactNameTracker


class MLflowSink(Guarded):
    """One MLflow run per training run; a resumed run (its id in RUN_DIR/mlflow_id and in checkpoints) continues
    it."""

    name = "mlflow"

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        run_id: str,
        first_step: int,
        say: Any,
        parent: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        import mlflow

        accelerate_state()
        self.mlflow, self.run_id, self.logged_through = mlflow, run_id, -1
        self.images_held: set[tuple[str, int]] = set()  # (key, step) the resumed run already has
        uri, artifacts = mlflow_uri(cfg, run_dir)
        # set_tracking_uri also sets $MLFLOW_TRACKING_URI, which mlflow_uri reads as the user's choice: restored
        # in finish(), so a later run in this process (a sweep's, a test's) gets a store of its own
        self.prior_uri = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        branch = {"distgan.branched_from": parent["checkpoint"]} if parent else {}
        self.tracker = _mlflow_tracker()(
            experiment_name=cfg.track.project,
            logging_dir=artifacts,
            run_id=run_id or None,
            run_name=cfg.track.name or run_dir.name,
            tags={"group": cfg.track.group or run_dir.name, **{t: "" for t in cfg.track.tags}, **branch},
            description=cfg.track.notes or None,
        )
        self.tracker.main_process_only = False
        self.guard(self.tracker.start)
        if not self.alive:
            return
        self.run_id = self.tracker.active_run.info.run_id
        if first_step:
            self.logged_through = self.guard(self._last_step) or -1
            self.images_held = self.guard(self._images) or set()
        else:  # parameters cannot change in MLflow; a resume keeps those its run started with
            self.guard(self.tracker.store_init_configuration, flat_config(cfg))
        ui = f"; browse: mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else ""
        say(f"mlflow run {self.run_id} at {uri}{ui}")

    def _last_step(self) -> int:
        client = self.mlflow.MlflowClient()
        keys = client.get_run(self.run_id).data.metrics
        return max((m.step for k in keys for m in client.get_metric_history(self.run_id, k)), default=-1)

    def _images(self) -> set[tuple[str, int]]:
        """The images the run holds, by key and step, from their artifact names (mlflow.log_image names each
        images/KEY+step+N+..., "/" in KEY as "~"). A kill can lose an image logged just before it, so this is
        asked of the run rather than inferred from its metrics."""
        held = set()
        for art in self.mlflow.MlflowClient().list_artifacts(self.run_id, "images"):
            name = art.path.split("/", 1)[-1]
            if "+step+" in name:
                key, rest = name.split("+step+", 1)
                held.add((key.replace("~", "/"), int(rest.split("+", 1)[0])))
        return held

    def log(self, step: int, data: dict[str, Any]) -> None:
        if step > self.logged_through:
            self.guard(self.tracker.log, data, step=step)

    def image(self, step: int, key: str, image: np.ndarray) -> None:
        if (key, step) not in self.images_held:
            self.guard(self.mlflow.log_image, image, key=key, step=step)

    def finish(self, state: str) -> None:
        self.guard(self.mlflow.end_run, status=MLFLOW_STATUS.get(state, "FINISHED"))
        self.stop()
        if self.prior_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = self.prior_uri
