"""Issue 20, run side: work never lost, one writer per run, messages instead of tracebacks (one test per case)."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distgan.cli import main as cli
from distgan.config import ConfigError
from distgan.configure import load_config
from tests.conftest import ROOT, run, train_cmd

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def small(data: Path, out: Path, name: str = "e", *more: str) -> list[str]:
    return [
        "configs/mnist_mlp.yaml",
        f"data.path={data}",
        f"train.out_dir={out}",
        f"train.run_name={name}",
        "train.epochs=2",
        "ckpt.every=4",
        "track.wandb=disabled",
        "track.plot=false",
        "model.g_hidden=[32]",
        "model.d_hidden=[32]",
        *more,
    ]


@pytest.fixture
def small_run(run_once, small_data: Path, tmp_path: Path):
    """A finished 12-step run (checkpoints 4, 8, 12; EMA on) of its own and its arguments (trained once per
    session, copied)."""
    args = small(small_data, tmp_path, "e", "train.ema_kimg=1")
    run_once(
        [a for a in args if not a.startswith(("train.out_dir=", "train.run_name=", "data.path="))],
        tmp_path / "e",
    )
    return args, tmp_path / "e"


def long_run(data: Path, out: Path, name: str) -> list[str]:
    return [
        "configs/mnist_mlp.yaml",
        f"data.path={data}",
        f"train.out_dir={out}",
        f"train.run_name={name}",
        "train.max_steps=100000",
        "train.log_every=20",
        "track.wandb=disabled",
        "track.plot=false",
    ]


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(train_cmd(*args), cwd=ROOT, env=ENV, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115


def wait_rows(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.time()
    while not (path.is_file() and path.read_text().strip()):
        assert proc.poll() is None, "the run ended early"
        assert time.time() - t0 < timeout
        time.sleep(0.05)


def test_fresh_start_sets_the_old_run_aside(small_run) -> None:
    """#5: ckpt.resume='' in a used run directory: the old run moves to .previous/, the new one keeps its own
    checkpoints (not pruned as older than the old run's) and its own metrics only."""
    args, run_dir = small_run
    res = run(train_cmd(*args, "ckpt.resume=", "train.epochs=1", "ckpt.keep=2"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "is kept in" in res.stdout
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-000000004", "step-000000006"]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6 and steps == sorted(steps)
    (old,) = (run_dir / ".previous").iterdir()
    assert (old / "checkpoints" / "step-000000012").is_dir() and (old / "metrics.jsonl").is_file()


def test_refused_resume_keeps_config_yaml(small_run) -> None:
    """#13: a resume refused for another batch size leaves the run's config.yaml as the run wrote it."""
    args, run_dir = small_run
    before = (run_dir / "config.yaml").read_bytes()
    res = run(train_cmd(*args, "train.epochs=4", "train.batch_size=200"))
    assert res.returncode == 2 and "train.batch_size=100" in res.stderr
    assert (run_dir / "config.yaml").read_bytes() == before


def test_resume_without_ema_removes_the_stale_ema_and_keeps_wall_time(small_run) -> None:
    """#16: resuming with train.ema_kimg=0 leaves no older final/G_ema for samplers to prefer; row times run
    on from the first segment's, so compare's wall time is the run's."""
    args, run_dir = small_run
    assert (run_dir / "final" / "G_ema.safetensors").is_file()
    first = [json.loads(r)["time"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    time.sleep(1.5)
    res = run(train_cmd(*args[:-1], "train.ema_kimg=0", "train.epochs=3"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (run_dir / "final" / "G_ema.safetensors").exists()
    times = [json.loads(r)["time"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert times == sorted(times) and times[-1] >= max(first)
    from distgan.sweeps.compare import read_run

    assert 0 <= read_run(run_dir).wall_s < 120


def test_damaged_marker_falls_back_and_sample_says_so(small_run, capsys: pytest.CaptureFixture) -> None:
    """#23: garbage, a JSON list and bad bytes in COMPLETE: sample names the file; resume takes the older one."""
    args, run_dir = small_run
    newest = run_dir / "checkpoints" / "step-000000012"
    for junk in (b"garbage", b"[1, 2]", b"\xff\xfe\x00", b'{"files": {"../x": 1}}'):
        (newest / "COMPLETE").write_bytes(junk)
        assert cli(["sample", "--ckpt", str(newest), "--out", str(run_dir / "s.png")]) == 2
        assert "COMPLETE" in capsys.readouterr().err
    res = run(train_cmd(*args, "train.epochs=3"))
    assert res.returncode == 0 and "resuming at step 8" in res.stdout, res.stderr[-2000:]


def test_sample_npz_without_suffix_and_export_onto_a_file(small_run, tmp_path: Path) -> None:
    """#27, #29: --format npz --out NAME writes NAME; export --out naming a file is refused; class names are
    stored in the checkpoint and --class takes a name (or says the model is unconditional)."""
    args, run_dir = small_run
    ckpt = run_dir / "checkpoints" / "step-000000012"
    assert cli(["sample", "--ckpt", str(ckpt), "--out", str(tmp_path / "NAME"), "--format", "npz", "--n", "4"]) == 0
    assert np_load(tmp_path / "NAME").shape == (4, 28, 28)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (tmp_path / "file").write_text("mine")
    assert cli(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "file")]) == 2
    assert (tmp_path / "file").read_text() == "mine"
    from distgan.run.checkpoint_read import read_checkpoint
    from distgan.run.sample import class_index

    assert read_checkpoint(ckpt)["classes"] == [str(i) for i in range(10)]
    assert class_index("cat", ["dog", "cat"], 2) == 1 and class_index("1", ["10", "2"], 2) == 1
    assert class_index("10", ["2", "10"], 2) == 1
    with pytest.raises(ConfigError, match="not a class"):
        class_index("cow", ["dog", "cat"], 2)
    assert cli(["sample", "--ckpt", str(ckpt), "--out", str(tmp_path / "c.png"), "--class", "3"]) == 2


def np_load(path: Path):
    import numpy as np

    with np.load(path) as z:
        return z["x"]


def test_checkpoint_of_another_version_gets_messages(small_run, tmp_path: Path) -> None:
    """#29: an unknown config key (a newer version's) is ignored with a warning; missing weights are named."""
    from distgan.run.checkpoint_read import read_marker
    from distgan.utils.files import sha256_file

    args, run_dir = small_run
    ckpt = run_dir / "checkpoints" / "step-000000012"
    state = torch.load(ckpt / "state.pt", weights_only=True)
    state["config"]["model"]["future_knob"] = 3

    def plant(obj: dict) -> None:
        torch.save(obj, ckpt / "state.pt")
        marker = read_marker(ckpt)
        marker["files"]["state.pt"] = sha256_file(ckpt / "state.pt")
        (ckpt / "COMPLETE").write_text(json.dumps(marker))

    plant(state)
    assert cli(["sample", "--ckpt", str(ckpt), "--out", str(tmp_path / "a.png"), "--n", "4"]) == 0
    del state["objects"]["trainer"]["G"]
    plant(state)
    res = run([sys.executable, "-m", "distgan.cli", "sample", "--ckpt", str(ckpt), "--out", str(tmp_path / "b.png")])
    assert res.returncode == 2 and "generator weights" in res.stderr and "Traceback" not in res.stderr
    res = run(train_cmd(*args, "train.epochs=3", f"ckpt.resume={ckpt}"))
    assert res.returncode == 2 and "'trainer'" in res.stderr and "Traceback" not in res.stderr


def test_ctrl_c_checkpoints_and_exits_cleanly(make_shards, tmp_path: Path) -> None:
    """#6: SIGINT (Ctrl-C) with ckpt.every=0: a checkpoint, status 'interrupted', exit 130, no traceback. Issue 45:
    the message gives the exact command that resumes it (the same command would start a new run when the run is
    named by its timestamp), and `--resume` alone finds the newest unfinished run of the config."""
    data = make_shards(1200, shard_size=300)
    args = long_run(data, tmp_path, "c")
    proc = start(args, tmp_path / "c.log")
    wait_rows(tmp_path / "c" / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    log = (tmp_path / "c.log").read_text()
    assert "Traceback" not in log and "resume with: " in log, log[-2000:]
    assert list((tmp_path / "c" / "checkpoints").glob("step-*"))
    status = json.loads((tmp_path / "c" / "status.json").read_text())
    assert status["state"] == "interrupted"
    cmd = shlex.split(next(x for x in log.splitlines() if "resume with: " in x).split("resume with: ", 1)[1])
    assert cmd[-2:] == ["--resume", str(tmp_path / "c")] and not any("run_name" in a for a in cmd)
    plain = [a for a in args if not a.startswith("train.run_name=")]
    latest = run(train_cmd(*plain, "--resume", "--dry-run"))
    assert latest.returncode == 0 and "run_name: c\n" in latest.stdout, latest.stderr[-2000:]
    res = run([*cmd[:-2], f"train.max_steps={status['step'] + 40}", *cmd[-2:]], timeout=300)
    assert res.returncode == 0 and f"resuming at step {status['step']}" in res.stdout, res.stderr[-2000:]
    res = run(train_cmd(*plain, "--resume"))  # the only run has finished now
    assert res.returncode == 2 and "no unfinished run of 'mnist_mlp' with a checkpoint" in res.stderr


def test_second_writer_is_refused_naming_the_first(make_shards, tmp_path: Path) -> None:
    """#7: a second run on a run directory that a live run writes is refused with the holder's pid; the sweep
    driver does not start such a point."""
    data = make_shards(1200, shard_size=300)
    args = long_run(data, tmp_path, "w")
    proc = start(args, tmp_path / "w.log")
    try:
        wait_rows(tmp_path / "w" / "metrics.jsonl", proc)
        res = run(train_cmd(*args), timeout=120)
        assert res.returncode == 2 and f"pid {proc.pid}" in res.stderr, res.stderr[-2000:]
        from distgan.run.rundir import held_by

        assert f"pid {proc.pid}" in held_by(tmp_path / "w")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    from distgan.run.rundir import held_by

    assert held_by(tmp_path / "w") == ""  # the OS lock died with the process


def test_data_error_is_one_line(make_shards, tmp_path: Path) -> None:
    """#26: data.on_error=raise on a damaged shard: one line naming the shard, exit 2."""
    data = make_shards(1200, shard_size=300)
    shard = data / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    res = run(train_cmd(*small(data, tmp_path, "d", "data.on_error=raise", "data.workers=0")))
    assert res.returncode == 2 and "train-000001.tar" in res.stderr and "Traceback" not in res.stderr


def test_disk_full_while_logging_ends_like_disk_full_anywhere(tmp_path: Path) -> None:
    """#25: ENOSPC appending metrics.jsonl raises distgan's DiskFullError naming the file (one line at the
    boundary), and the tracker can still write its status and close."""
    from distgan.run.tracking import RunTracker
    from distgan.utils.files import DiskFullError

    cfg = load_config("configs/mnist_mlp.yaml", ["track.wandb=disabled", "track.plot=false"])
    tracker = RunTracker(cfg, tmp_path)

    class Full:
        name = str(tmp_path / "metrics.jsonl")
        closed = False

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    tracker.metrics_file.close()
    tracker.metrics_file = Full()  # type: ignore[assignment]
    with pytest.raises(DiskFullError, match="metrics.jsonl"):
        tracker.log_metrics(1, {"loss_d": 1.0})
    tracker.status("failed", error="disk full")
    tracker.close()
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "failed"


def test_text_overrides_stay_text_and_bad_seed_is_named() -> None:
    """#15, #29: a str field keeps what was typed; train.seed=-1 fails at load naming the key."""
    cfg = load_config("configs/mnist_mlp.yaml", ["train.run_name=0123", "track.name=12:30", "track.group=1.10"])
    assert (cfg.train.run_name, cfg.track.name, cfg.track.group) == ("0123", "12:30", "1.10")
    assert load_config("configs/mnist_mlp.yaml", ["train.epochs=3"]).train.epochs == 3
    with pytest.raises(ConfigError, match="train.seed=-1"):
        load_config("configs/mnist_mlp.yaml", ["train.seed=-1"])


def test_compare_skips_foreign_configs_and_plot_tolerates_missing_g_rows(tmp_path: Path) -> None:
    """#28: compare over folders with an empty, invalid and foreign config.yaml says so (no KeyError); plot of
    a run whose log rows lack loss_g (train.d_steps > train.log_every) draws what there is."""
    for name, text in (("empty", ""), ("invalid", "a: [1,\n"), ("foreign", "model:\n  x: 1\n")):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.yaml").write_text(text)
    res = run([sys.executable, "-m", "distgan.cli", "compare", str(tmp_path / "runs")])
    assert res.returncode == 2 and res.stderr.count("skipped") == 3 and "Traceback" not in res.stderr
    from distgan.run.plots import plot_run

    rows = [
        {"step": s, "loss_d": 1.0, "d_real": 0.6, "d_fake": 0.4, **({"loss_g": 2.0} if s % 4 == 0 else {})}
        for s in range(2, 20, 2)
    ]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_run(tmp_path / "r").is_file()


def test_compare_groups_runs_of_older_versions_with_their_defaults(tmp_path: Path) -> None:
    """A config written before a key existed (here: train.batch_per_device, model.d_freeze) is the same point as
    one that holds the key at its default; a real difference still splits the points."""
    from distgan.configure import load_config
    from distgan.sweeps.compare import label_points, read_run

    new = load_config(None, ["train.seed=1"]).to_dict()
    old = load_config(None, ["train.seed=2"]).to_dict()
    del old["train"]["batch_per_device"], old["model"]["d_freeze"]
    other = load_config(None, ["train.seed=3", "optim.lr_g=0.001"]).to_dict()
    for name, cfg in (("new", new), ("old", old), ("other", other)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(json.dumps(cfg))
    runs = [read_run(tmp_path / n) for n in ("new", "old", "other")]
    label_points(runs)
    assert runs[0].point == runs[1].point != runs[2].point and "lr_g=0.001" in runs[2].point


def test_sweep_options_overrides_and_points(tmp_path: Path) -> None:
    """#14, #19, #30: overrides after options; train.out_dir honoured (or refused when --out disagrees);
    --local 0/-1 refused; a shared ckpt.dir refused; the config path absolute; specs named by content."""
    sweep = [sys.executable, "-m", "distgan.cli", "sweep", "configs/debug.yaml"]
    res = run([*sweep, "--seeds", "2", "--dry-run", "train.epochs=1", f"train.out_dir={tmp_path / 'o'}"])
    assert res.returncode == 0, res.stderr
    assert str(tmp_path / "o" / "debug") in res.stdout and "train.epochs=1" in res.stdout
    res = run([*sweep, "--dry-run", "--out", str(tmp_path / "x"), f"train.out_dir={tmp_path / 'o'}"])
    assert res.returncode == 2 and "disagree" in res.stderr
    for j in ("0", "-1"):
        res = run([*sweep, "--out", str(tmp_path), "--local", j], timeout=60)
        assert res.returncode == 2 and f"--local {j}" in res.stderr
    res = run([*sweep, "--seeds", "2", "--out", str(tmp_path), "--dry-run", "ckpt.dir=/shared/ck"])
    assert res.returncode == 2 and "ckpt.dir" in res.stderr
    from distgan.sweeps.sweep import Sweep, plan, task_overrides

    a = Sweep(str(Path("configs/debug.yaml").resolve()), "s", tmp_path, plan("configs/debug.yaml", [], 1))
    b = Sweep(a.config, "s", tmp_path, plan("configs/debug.yaml", [("optim.lr_g", ["1e-4"])], 1))
    spec_a, spec_b = a.write(), b.write()
    assert spec_a != spec_b and spec_a.is_file()  # a queued array keeps reading its own points
    config, name, overrides = task_overrides(spec_a, 0)
    assert Path(config).is_absolute() and name == "seed=0"
    spec_a.write_text(spec_a.read_text().replace("seed=0", "seed=9"))
    with pytest.raises(ConfigError, match="changed"):
        task_overrides(spec_a, 0)


def test_no_unpickling_and_no_fixed_temp_folders_in_the_repo() -> None:
    """#2: no file in the repository unpickles (torch.load with weights_only off) and no script uses a fixed
    /tmp folder."""
    needle = "weights_only=" + "False"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    offenders = []
    for rel in files.split():
        path = ROOT / rel
        if path.suffix not in (".py", ".sh", ".sbatch") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if needle in text:
            offenders.append(f"{rel}: {needle}")
        if path.suffix in (".sh", ".sbatch") and any(
            "/tmp/" in line and "mktemp" not in line and not line.lstrip().startswith("#") for line in text.splitlines()
        ):
            offenders.append(f"{rel}: a fixed /tmp path")
    assert not offenders, offenders


def test_sweep_driver_forwards_a_stop_to_its_points(make_shards, tmp_path: Path) -> None:
    """#7: TERM to `distgan sweep --local` reaches the running point, which checkpoints and stops (before: the
    driver died and left the point running as an orphan that a rerun would race)."""
    data = make_shards(1200, shard_size=300)
    cmd = [
        sys.executable,
        "-m",
        "distgan.cli",
        "sweep",
        "configs/mnist_mlp.yaml",
        "--out",
        str(tmp_path),
        "--name",
        "s",
        f"data.path={data}",
        "train.max_steps=100000",
        "train.log_every=20",
        "track.wandb=disabled",
        "track.plot=false",
    ]
    driver = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    point = tmp_path / "s" / "seed=0"
    wait_rows(point / "metrics.jsonl", driver)
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 1, out
    assert json.loads((point / "status.json").read_text())["state"] == "preempted", out
    assert list((point / "checkpoints").glob("step-*"))
    from distgan.run.rundir import held_by

    assert held_by(point) == ""  # the point ended with the driver: nothing left running
