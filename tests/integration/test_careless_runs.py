"""Issue 55, run side: the resume lines distgan prints must work as printed, and what cannot fit is refused
before anything is made (docs/robustness.md maps each case to its number)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run, train_cmd

pytestmark = pytest.mark.slow
DISTGAN = str(Path(sys.executable).parent / "distgan")  # the console script a user runs


def test_5_10_11_12_a_stopped_run_resumes_with_the_line_it_printed(make_shards, tmp_path: Path) -> None:
    """#11: `distgan train` + Ctrl-C printed a command with --resume, which `distgan train` rejected. #10: with
    ckpt.dir set that command was refused ("holds no complete checkpoint"). #12: an override after
    `--resume RUN_DIR` was "unrecognized", and `--resume key=value` was read as RUN_DIR. #5: `--resume .` from
    inside the run directory started a new run from step 0 inside the old one."""
    data = make_shards(600, shard_size=300)
    elsewhere = tmp_path / "ckpts"
    args = [
        "train",
        "configs/mnist_mlp.yaml",
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "train.run_name=r",
        f"ckpt.dir={elsewhere}",
        "train.max_steps=100000",
        "train.log_every=20",
        "track.wandb=disabled",
        "track.plot=false",
        "model.g_hidden=[32]",
        "model.d_hidden=[32]",
    ]
    log = tmp_path / "r.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    rows = tmp_path / "r" / "metrics.jsonl"
    with open(log, "w") as out:
        proc = subprocess.Popen([DISTGAN, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        t0 = time.time()
        while not (rows.is_file() and rows.read_text()):
            assert proc.poll() is None and time.time() - t0 < 180, log.read_text()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    text = log.read_text()
    line = next(x for x in text.splitlines() if "resume with: " in x).split("resume with: ", 1)[1]
    cmd = shlex.split(line)
    assert "distgan" in cmd[1] and cmd[2] == "train" and cmd[-2:] == ["--resume", str(tmp_path / "r")], cmd
    stopped = int(text.split("stopped by signal at step ")[1].split(";")[0])
    # the line as printed, with an override after it (#10, #11, #12)
    res = run([*cmd, f"train.max_steps={stopped + 20}"], timeout=300)
    assert res.returncode == 0 and f"resuming at step {stopped}" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    # `--resume key=value`: the newest unfinished run, the key an override (#12); the run finished: none left
    res = run([DISTGAN, *args[:4], f"ckpt.dir={elsewhere}", "--resume", "train.max_steps=5"], timeout=300)
    assert res.returncode == 2 and "no unfinished run of 'mnist_mlp'" in res.stderr, res.stderr[-2000:]
    # `--resume .` inside the run directory continues it (#5)
    inside = [
        sys.executable,
        str(ROOT / "distgan" / "train.py"),
        str(ROOT / "configs" / "mnist_mlp.yaml"),
        f"data.path={data}",
        f"ckpt.dir={elsewhere}",
        "track.wandb=disabled",
        "track.plot=false",
        "model.g_hidden=[32]",
        "model.d_hidden=[32]",
        "--resume",
        ".",
        f"train.max_steps={stopped + 40}",
    ]
    res = run(inside, cwd=tmp_path / "r", timeout=300)
    assert res.returncode == 0 and f"resuming at step {stopped + 20}" in res.stdout, res.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir() and p.name.startswith("mnist_mlp")) == []


def test_9_a_network_no_machine_holds_is_one_line_before_any_folder(make_shards, tmp_path: Path) -> None:
    """#9: model.g_channels=100000000 was an allocator RuntimeError traceback."""
    data = make_shards(600, shard_size=300)
    res = run(
        train_cmd(
            "configs/mnist_dcgan.yaml",
            f"data.path={data}",
            f"train.out_dir={tmp_path}",
            "train.run_name=big",
            "model.g_channels=100000000",
        )
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.stderr.startswith("error: model.g_channels=100000000: G would hold") and res.stderr.count("\n") == 1
    assert not (tmp_path / "big").exists()
