"""Seeing a run: wandb files read back with wandb's own CLI, offline fallback, console, averaged metrics, plots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distgan.run.backends import wandb_mode
from tests.conftest import ROOT, accelerate_launch, run, train_cmd, wandb_steps

SMALL = ["model.g_hidden=[64]", "model.d_hidden=[64]", "train.log_every=4", "train.print_every_epochs=1"]


def wandb_records(run_dir: Path) -> list[dict]:
    wandb_cli = Path(sys.executable).parent / "wandb"
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_two_rank_offline_run_is_one_wandb_run_with_metrics_and_images(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300)
    args = [
        str(ROOT / "distgan/train.py"),
        "configs/mnist_mlp.yaml",
        f"data.path={data}",
        "train.epochs=2",
        f"train.out_dir={tmp_path}",
    ]
    args += [
        "train.run_name=r",
        "track.wandb=offline",
        "track.backends=[wandb,tensorboard,mlflow]",
        "train.sample_every=6",
        "track.tags=[ci,test]",
        *SMALL,
    ]
    res = accelerate_launch(args)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1  # rank 1 made none
    run_id = (tmp_path / "r" / "wandb_id").read_text().strip()
    assert runs[0].name.endswith(run_id)
    records = wandb_records(runs[0])
    meta = next(r["run"] for r in records if r["type"] == "run")
    assert meta["run_id"] == run_id and meta["run_group"] == "r" and meta["config"]["update"]["train"]["epochs"] == 2
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    metric_rows = [h for h in history if "loss_d" in h]
    steps = [h["_step"] for h in metric_rows]
    assert steps == [4, 8, 12, 16, 20, 24]  # global optimizer steps, once each (nothing from rank 1)
    expected = {
        "loss_d",
        "loss_g",
        "d_real",
        "d_fake",
        "grad_norm_g",
        "grad_norm_d",
        "lr_g",
        "lr_d",
        "img_per_s",
        "step_time_ms",
        "data_wait_frac",
        "images_seen",
        "epoch",
        "skipped_steps_d",
        "skipped_steps_g",
    }
    assert expected <= set(metric_rows[0])
    image_steps = sorted(h["_step"] for h in history if h.get("samples/grid._type") == "image-file")
    assert image_steps == [6, 12, 18, 24]  # every sample_every steps (the final grid shares step 24's row)
    assert any(h.get("samples/real._type") == "image-file" for h in history)
    all_steps = [h["_step"] for h in history]
    assert all_steps == sorted(all_steps)
    assert "wandb sync" in res.stdout
    jsonl = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in jsonl] == steps
    # TensorBoard and MLflow: one stream each (rank 0's), the same keys at the same steps, the same images
    from tests.helpers.trackers import mlflow_run, tensorboard

    keys = set(jsonl[0]) - {"step", "time"}
    assert len(list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    scalars, tb_images = tensorboard(tmp_path / "r")
    mlrun, history, ml_images = mlflow_run(tmp_path / "r")
    assert set(scalars) == set(history) == keys and keys <= set(metric_rows[0])
    for k in keys:
        assert [s for s, _ in scalars[k]] == [s for s, _ in history[k]] == steps
        assert [v for _, v in history[k]] == pytest.approx([r[k] for r in jsonl], nan_ok=True)
        assert [v for _, v in scalars[k]] == pytest.approx([r[k] for r in jsonl], rel=1e-6, nan_ok=True)
    # step 24 has two grids under the key, as in wandb: the step's and the last epoch's (wandb keeps one per row)
    assert (
        tb_images
        == ml_images
        == {"samples/real": [0], "samples/strip": [6, 12, 18, 24, 24], "samples/grid": [6, 12, 18, 24, 24]}
    )
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["train.epochs"] == "2"
    assert mlrun.data.tags["mlflow.runName"] == mlrun.data.tags["group"] == "r"


@pytest.mark.slow
@pytest.mark.parametrize("server", ["refused", "silent"])
def test_online_without_a_server_falls_back_to_a_real_offline_run(make_shards, tmp_path: Path, server: str) -> None:
    """refused: no route, offline at once. silent: a server that accepts and never answers, offline after
    track.init_timeout_s; the failed online run must not keep its id ("run ID ... is in use")."""
    import socket

    data = make_shards(600, shard_size=300)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if server == "silent":
            listener.listen(16)  # the kernel completes handshakes; nothing ever answers
        port = listener.getsockname()[1]
        env = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"}
        args = ["configs/mnist_mlp.yaml", f"data.path={data}", "train.epochs=1", f"train.out_dir={tmp_path}"]
        t0 = time.time()
        res = run(
            train_cmd(*args, "train.run_name=r", "track.wandb=online", "track.init_timeout_s=8", *SMALL),
            env=env,
            timeout=300,
        )
    assert res.returncode == 0, res.stderr[-3000:]
    if server == "refused":
        assert "unreachable" in res.stderr and "logging to an offline run instead" in res.stderr
        assert time.time() - t0 < 60
    else:
        m = re.search(r"wandb online failed after (\d+)s", res.stderr)
        assert m and 8 <= int(m.group(1)) < 30 and "falling back to an offline run" in res.stderr, res.stderr
    assert "offline failed too" not in res.stderr and "in use" not in res.stderr
    run_id = (tmp_path / "r" / "wandb_id").read_text().strip()
    segments = list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    assert len(segments) == 1 and segments[0].name.endswith(run_id)
    assert wandb_steps(tmp_path / "r") == [4, 6]  # the run's history, read back by wandb's own CLI
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2


def test_auto_mode_reads_the_host_from_wandb_settings(tmp_path: Path, monkeypatch) -> None:
    """`wandb login --host` writes the host to wandb's settings file; auto must look for that host's netrc
    entry, not api.wandb.ai's."""
    from distgan.run.backends import wandb_base_url, wandb_mode

    (tmp_path / "settings").write_text("[default]\nbase_url = https://wandb.example.org\n")
    (tmp_path / ".netrc").write_text("machine wandb.example.org login user password " + "k" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"WANDB_CONFIG_DIR": str(tmp_path), "HOME": str(tmp_path)}
    code = (
        "from distgan.run.backends import wandb_base_url, wandb_mode; print(wandb_base_url(), wandb_mode('auto', {}))"
    )
    res = run([sys.executable, "-c", code], env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["https://wandb.example.org", "online"]
    # the same netrc with the default host only: no credentials for the configured host -> offline
    assert wandb_mode("auto", {}, base_url="https://other.example.org") == "offline"
    assert wandb_base_url({"WANDB_BASE_URL": "http://h:1"}) == "http://h:1"


@pytest.mark.slow
def test_plain_console_has_one_line_per_log_step(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300)
    res = run(
        train_cmd(
            "configs/mnist_mlp.yaml",
            f"data.path={data}",
            "train.epochs=2",
            f"train.out_dir={tmp_path}",
            "train.run_name=r",
            "track.wandb=disabled",
            *SMALL,
        )
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "\x1b" not in out and "\r" not in out  # no colours, no redraws
    step_lines = [
        line for line in res.stdout.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step \d+ ", line)
    ]
    assert [int(line.split()[3]) for line in step_lines] == [4, 8, 12, 16, 20, 24]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in res.stdout.splitlines())
    assert "summary:" in res.stdout and (tmp_path / "r" / "plots" / "losses.png").is_file()


@pytest.mark.slow
def test_logged_metrics_are_averaged_over_ranks(tmp_path: Path) -> None:
    res = accelerate_launch(
        [
            str(ROOT / "tests/helpers/steps.py"),
            "average",
            str(tmp_path),
            "track.wandb=disabled",
            "track.plot=false",
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert (
        row["loss_d"] == pytest.approx(1.5)
        and row["loss_g"] == pytest.approx(15.0)
        and row["d_real"] == pytest.approx(0.4)
    )
    # names only some ranks reported are collected too: skipped data on rank 1 only, a new metric on rank 0
    assert row["skipped_samples"] == 7 and row["d_accuracy"] == pytest.approx(0.9)


def test_wandb_mode_resolution(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert wandb_mode("offline", {"WANDB_API_KEY": "k"}) == "offline"
    assert wandb_mode("auto", {}) == "offline"
    assert wandb_mode("auto", {"WANDB_API_KEY": "k"}) == "online"
    assert wandb_mode("auto", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}) == "disabled"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "s" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode("auto", {}) == "online"


def test_a_wandb_error_mid_run_does_not_stop_training(tmp_path: Path, caplog) -> None:
    """The one stand-in here is the failing wandb call (no server can be made to fail on cue)."""
    from distgan.configure import load_config
    from distgan.run.tracking import RunTracker

    cfg = load_config(None, ["track.wandb=offline", "track.plot=false"])
    tracker = RunTracker(cfg, tmp_path)
    tracker.start(10, 0)  # wandb starts with the run, after a resume has restored the run id
    assert tracker.wandb is not None and tracker.wandb.run is not None

    def broken(*args, **kwargs):
        raise ConnectionError("server went away")

    tracker.wandb.run.log = broken
    tracker.log_metrics(1, {"loss_d": 1.0})
    tracker.log_metrics(2, {"loss_d": 0.5})
    assert caplog.text.count("wandb error") == 1 and tracker.wandb.run is None
    tracker.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_plot_command(tmp_path: Path) -> None:
    from distgan.cli import main

    rows = [{"step": s, "loss_d": 1 / s, "loss_g": 2.0, "d_real": 0.7, "d_fake": 0.3} for s in range(1, 20)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 2')  # torn last line
    assert main(["plot", str(tmp_path)]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "plots" / "losses.png").size == (1100, 400)
    assert main(["plot", str(tmp_path / "missing")]) == 2


def test_a_killed_runs_half_written_images_are_removed_at_start(tmp_path: Path) -> None:
    from distgan.configure import load_config
    from distgan.run.tracking import RunTracker

    (tmp_path / "samples").mkdir()
    left = [tmp_path / "samples" / ".grid_000100.png.tmp-4242.png", tmp_path / ".status.json.tmp-4242.json"]
    for p in left:
        p.write_bytes(b"\x89PNG half")
    kept = tmp_path / "samples" / "grid_000050.png"
    kept.write_bytes(b"\x89PNG whole")
    tracker = RunTracker(load_config(None, ["track.wandb=disabled", "track.plot=false"]), tmp_path)
    tracker.start(10, 0)
    tracker.close()
    assert not any(p.exists() for p in left) and kept.read_bytes() == b"\x89PNG whole"


SEGMENT = """
import os, signal, sys
from pathlib import Path
import numpy as np
from distgan.configure import load_config
from distgan.run.tracking import RunTracker
run_dir, first, last = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
scale, end = float(sys.argv[4]), sys.argv[5]
tracker = RunTracker(load_config(None, ["track.backends=[tensorboard,mlflow]", "track.plot=false"]), run_dir)
tracker.start(100, first)
for s in range(first + 10, last + 1, 10):
    tracker.log_metrics(s, {"loss_d": s * scale, "loss_g": 1.0})
    if s % 20 == 0:
        tracker.log_images(s, f"samples/grid_step{s:07d}", np.full((8, 8, 3), s % 256, np.uint8))
if end == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
tracker.status(end)
tracker.close()
"""


def test_tensorboard_and_mlflow_resume_after_kill9_without_duplicate_steps(tmp_path: Path) -> None:
    """A process logging to both is killed at step 60 with its checkpoint at step 30; the resumed process logs
    30..100 again (other values, to tell them apart). Each library's reader shows every step once, in the same
    TensorBoard directory and the same MLflow run (finished, with the config as its parameters)."""
    from tests.helpers.trackers import mlflow_run, tensorboard, tensorboard_hparams

    def segment(first: int, last: int, scale: float, end: str) -> subprocess.CompletedProcess:
        return run([sys.executable, "-c", SEGMENT, str(tmp_path), str(first), str(last), str(scale), end])

    assert segment(0, 60, 1.0, "kill").returncode == -9
    first_id = (tmp_path / "mlflow_id").read_text()
    res = segment(30, 100, 2.0, "finished")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "mlflow_id").read_text() == first_id and not (tmp_path / "wandb").exists()
    steps = list(range(10, 101, 10))
    scalars, images = tensorboard(tmp_path)
    # TensorBoard: the resumed writer's purge_step hides the killed segment's 40..60; the new values stand
    assert scalars["loss_d"] == [(s, s * (1.0 if s <= 30 else 2.0)) for s in steps]
    assert images == {"samples/grid": [20, 40, 60, 80, 100]}
    assert tensorboard_hparams(tmp_path)["model.arch"] == "mlp"
    mlrun, history, mlimages = mlflow_run(tmp_path)
    # MLflow keeps what it was sent, so the resumed run leaves out the steps it already holds (40..60)
    assert history["loss_d"] == [(s, s * (1.0 if s <= 60 else 2.0)) for s in steps]
    assert [s for s, _ in history["loss_g"]] == steps and mlimages == {"samples/grid": [20, 40, 60, 80, 100]}
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["model.arch"] == "mlp"
    assert mlrun.data.params["model.g_hidden"] == "[256]"
