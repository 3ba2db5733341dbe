"""Never lose a run: kill -9 and resume bit-exactly, preemption signals, world-size changes, bad resumes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import CPU2, ROOT, free_port, run, train_cmd, wandb_steps
from tests.helpers.trackers import same_history

pytestmark = pytest.mark.slow
COMMON = [
    "configs/mnist_mlp.yaml",
    "train.log_every=250",
    "ckpt.every=500",
    "track.plot=false",
    "train.max_steps=1000",
]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def launch(nproc: int, args: list[str]) -> list[str]:
    if nproc == 1:
        return train_cmd(*args)
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CPU2),
        "--num_processes",
        str(nproc),
        "--main_process_port",
        str(free_port()),
        str(ROOT / "distgan/train.py"),
        *args,
    ]


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**ENV, **(env or {})},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # noqa: SIM115


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path} appeared"
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.02)


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it: torch elastic starts each rank in its own session, so
    killing the launcher's process group alone leaves the ranks running to the end as orphans."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    nets = [n for n in ("G", "D", "G_ema") if (run_dir / "final" / f"{n}.safetensors").is_file()]
    return {f"{n}.{k}": v for n in nets for k, v in load_file(run_dir / "final" / f"{n}.safetensors").items()}


# 2 ranks compare within a float tolerance, so CI reruns them under other CPU kernels; 1 process compares bit for
# bit, which the conv kill -9 tests below assert under those kernels too (bit-exact resume, with more of the step)
@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.numeric)])
def test_kill9_then_resume_matches_a_straight_run(make_shards, tmp_path: Path, nproc: int) -> None:
    data = make_shards(1200, shard_size=300)  # 12 batches per epoch: the kill lands mid-epoch (step 200)
    args = [
        *COMMON,
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "track.wandb=offline",
        "track.backends=[wandb,tensorboard,mlflow]",
        "train.ema_kimg=1",
        "train.max_steps=400",  # 200 steps after the checkpoint the kill waits for: it lands mid-run
        "ckpt.every=200",
        "train.log_every=100",
    ]
    straight = run(launch(nproc, [*args, "train.run_name=a"]), timeout=600)
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]

    proc = start(launch(nproc, [*args, "train.run_name=b"]), tmp_path / "b1.log")
    wait_for(tmp_path / "b" / "checkpoints" / "step-000000200" / "COMPLETE", proc)
    kill_tree(proc.pid)
    proc.wait()
    assert not (tmp_path / "b" / "final").exists()  # it really died mid-run
    resumed = run(launch(nproc, [*args, "train.run_name=b"]), timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming at step 200 (epoch 16)" in resumed.stdout

    a, b = params(tmp_path / "a"), params(tmp_path / "b")
    assert any(k.startswith("G_ema.") for k in a)  # the EMA generator resumes exactly too
    for k in a:
        if nproc == 1:
            # bit-identical: both runs execute the same kernels on the same shapes on this machine, so the
            # promise holds under any CPU kind; it is not a comparison across machines or batch shapes
            assert torch.equal(a[k], b[k]), f"{k} differs after resume"
        else:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    rows_a = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a] == [100, 200, 300, 400]
    assert [r["images_seen"] for r in rows_b] == [r["images_seen"] for r in rows_a]
    assert [r["epoch"] for r in rows_b] == [r["epoch"] for r in rows_a]
    if nproc == 1:  # the data stream continued exactly
        assert [r["loss_d"] for r in rows_b] == [r["loss_d"] for r in rows_a]
    # one wandb run id across both segments, and the same step sequence once synced together
    segments = sorted((tmp_path / "b" / "wandb").glob("offline-run-*"))
    run_id = (tmp_path / "b" / "wandb_id").read_text().strip()
    assert len(segments) == 2 and all(s.name.endswith(run_id) for s in segments)
    assert sorted(set(wandb_steps(tmp_path / "b"))) == wandb_steps(tmp_path / "a") == [100, 200, 300, 400]
    # TensorBoard and MLflow: the resumed segment appends to the same directory and run, each step once
    same_history(tmp_path / "a", tmp_path / "b", "loss_d", [100, 200, 300, 400], exact=nproc == 1)


def straight_and_killed(args: list[str], tmp_path: Path, ckpt: str) -> tuple[dict, dict]:
    """Run `a` straight through; run `b`, kill -9 it (all ranks) once checkpoint `ckpt` is complete, resume it
    to the end. Returns both runs' final weights."""
    straight = run(train_cmd(*args, "train.run_name=a"), timeout=600)
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]
    proc = start(train_cmd(*args, "train.run_name=b"), tmp_path / "b1.log")
    wait_for(tmp_path / "b" / "checkpoints" / ckpt / "COMPLETE", proc)
    kill_tree(proc.pid)
    proc.wait()
    assert not (tmp_path / "b" / "final").exists()
    resumed = run(train_cmd(*args, "train.run_name=b"), timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming at step" in resumed.stdout
    return params(tmp_path / "a"), params(tmp_path / "b")


@pytest.mark.numeric
@pytest.mark.parametrize("augment", ["color,translation,cutout", "ada"])
def test_kill9_then_resume_a_conditional_conv_run_bit_exactly(make_shards, tmp_path: Path, augment: str) -> None:
    """The conv preset with every stateful piece on: BN running statistics, spectral-norm vectors, the
    augmentation stream (DiffAugment's, or ADA's with its p), lazy R1's schedule, d_steps' G/D alternation,
    the label stream and the mirror flips."""
    data = make_shards(1000, shard_size=250)
    args = [
        "configs/mnist_dcgan.yaml",
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "track.wandb=disabled",
        "model.g_channels=8",
        "model.d_channels=8",
        "model.num_classes=10",
        "model.spectral_norm=true",
        "train.r1_gamma=1",
        "train.r1_every=4",
        f"train.augment={augment}",
        "train.d_steps=2",
        "data.mirror=true",
        "train.ada_kimg=1",
        "train.ada_target=0.5",
        "train.batch_size=50",
        "train.max_steps=300",
        "ckpt.every=100",
        "train.log_every=50",
        "eval.every=0",
        "track.plot=false",
    ]
    a, b = straight_and_killed(args, tmp_path, "step-000000100")
    assert any(k.endswith("running_mean") for k in a) and any(k.endswith("_u") for k in a)
    for k in a:  # same kernels, same shapes, one machine: bit-identical (see the test above)
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    if augment == "ada":  # p itself, logged at every log step, continued exactly
        rows = [[json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab"]
        p = [[x["ada_p"] for x in rr if "ada_p" in x] for rr in rows]
        assert p[0] == p[1] and len(p[0]) == 6 and max(p[0]) > 0, p


@pytest.mark.numeric
def test_kill9_then_resume_stylegan2_bit_exactly(make_shards, tmp_path: Path) -> None:
    """StyleGAN2's own state: the mixing/noise stream and the path-length running mean (logged as pl_mean),
    with lazy R1 and path length on different intervals, conditional, with ADA, in 2 micro-batches of 8
    (train.batch_per_device)."""
    data = make_shards(640, shard_size=160)
    args = [
        "configs/mnist_stylegan2.yaml",
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "track.wandb=disabled",
        "model.stylegan2.w_dim=16",
        "model.noise_dim=16",
        "model.stylegan2.channel_base=128",
        "model.stylegan2.channel_max=8",
        "model.num_classes=10",
        "train.r1_every=3",
        "train.pl_every=2",
        "train.augment=ada",
        "train.ada_kimg=1",
        "train.batch_size=16",
        "train.batch_per_device=8",
        "train.max_steps=90",
        "ckpt.every=30",
        "train.log_every=15",
        "eval.every=0",
        "track.plot=false",
    ]
    a, b = straight_and_killed(args, tmp_path, "step-000000030")
    assert any("noise_strength" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    rows = [[json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab"]
    pl = [[x["pl_mean"] for x in rr if "pl_mean" in x] for rr in rows]
    assert pl[0] == pl[1] and len(pl[0]) == 6 and pl[0][-1] > 0, pl


@pytest.mark.numeric
def test_kill9_then_resume_r3gan_bit_exactly(make_shards, tmp_path: Path) -> None:
    """R3GAN as its preset trains (RpGAN, R1 and R2, the cosine schedules of lr, beta2, gamma and the EMA's
    half-life), conditional, with DiffAugment, in 2 micro-batches: the schedules are functions of the step, the
    rest is state in the checkpoint."""
    data = make_shards(640, shard_size=160)
    args = [
        "configs/mnist_r3gan.yaml",
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "track.wandb=disabled",
        "model.noise_dim=16",
        "model.r3gan.channel_base=112",
        "model.r3gan.channel_max=16",
        "model.num_classes=10",
        "train.r1_every=3",
        "train.augment=color,translation",
        "train.batch_size=16",
        "train.batch_per_device=8",
        "train.max_steps=60",
        "ckpt.every=30",
        "train.log_every=15",
        "eval.every=0",
        "train.sample_every=0",
        "track.plot=false",
    ]
    a, b = straight_and_killed(args, tmp_path, "step-000000030")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    rows = [[json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab"]
    beta2 = [[x["beta2"] for x in rr if "beta2" in x] for rr in rows]
    assert beta2[0] == beta2[1] and len(beta2[0]) == 4 and 0.9 < beta2[0][0] < beta2[0][-1] <= 0.99, beta2
    assert all("r2_penalty" in x for x in rows[1] if "loss_d" in x)


@pytest.mark.numeric
def test_kill9_then_resume_a_packed_dcgan_with_minibatch_std_bit_exactly(make_shards, tmp_path: Path) -> None:
    """Issue 44's mode-coverage parts on the StackedMNIST recipe's backbone: D judging packs of 2 with minibatch
    std (groups of 2), RpGAN with lazy R1 and R2 on the packed inputs, DiffAugment; stateless parts, so the run
    continues bit-exactly from what the checkpoint already holds."""
    data = make_shards(640, shard_size=160)
    args = [
        "configs/mnist_dcgan.yaml",
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "track.wandb=disabled",
        "model.g_channels=8",
        "model.d_channels=8",
        "model.d_pack=2",
        "model.mbstd_channels=1",
        "model.mbstd_group=2",
        "train.loss=rpgan",
        "train.r1_gamma=1",
        "train.r2_gamma=1",
        "train.r1_every=3",
        "train.augment=color,translation",
        "train.batch_size=16",
        "train.max_steps=60",
        "ckpt.every=30",
        "train.log_every=15",
        "eval.every=0",
        "train.sample_every=0",
        "track.plot=false",
    ]
    a, b = straight_and_killed(args, tmp_path, "step-000000030")
    assert a["D.downs.0.weight"].shape[1] == 2  # grey images in packs of 2
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_signal_stops_all_ranks_at_one_step_then_resume_elsewhere(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300)
    args = [
        *COMMON,
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "train.run_name=p",
        "track.wandb=disabled",
        "ckpt.every=0",
    ]
    proc = start(launch(2, args), tmp_path / "p.log")
    wait_for(tmp_path / "p" / "metrics.jsonl", proc)
    time.sleep(1.0)
    workers = subprocess.run(
        ["pgrep", "-P", str(proc.pid), "-f", "train.py"], capture_output=True, text=True
    ).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[1]), signal.SIGUSR1)  # one rank only: the others must learn of it through the collective
    time.sleep(0.05)
    os.kill(int(workers[1]), signal.SIGUSR1)  # repeated signals must not corrupt the save
    os.kill(proc.pid, signal.SIGTERM)  # the launcher forwards SIGTERM to every worker
    proc.wait(timeout=120)
    log = (tmp_path / "p.log").read_text()
    assert "stopped by signal at step" in log and "exiting with status 75" in log
    ckpts = sorted((tmp_path / "p" / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "COMPLETE").is_file()
    assert {p.name for p in ckpts[0].iterdir()} == {"COMPLETE", "state.pt", "rng-rank0.pt", "rng-rank1.pt"}
    stopped = int(ckpts[0].name.split("-")[1])
    assert 0 < stopped < 1000 and stopped % 10 == 0  # a stop check step, the same on both ranks
    # the 2-rank checkpoint continues in a 1-process run (wrapper prefixes and world size handled)
    res = run(train_cmd(*args[:-1], "ckpt.every=0", f"ckpt.resume={ckpts[0]}", "train.run_name=q"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming at step {stopped}" in res.stdout and "re-seeded" in res.stderr
    rows = [json.loads(line) for line in (tmp_path / "q" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1000 and rows[-1]["images_seen"] == 100_000


def test_single_process_sigterm_exits_75_with_a_checkpoint(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300)
    args = [
        *COMMON,
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "train.run_name=s",
        "track.wandb=disabled",
        "ckpt.every=0",
    ]
    proc = start(train_cmd(*args), tmp_path / "s.log")
    wait_for(tmp_path / "s" / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 75
    assert len(list((tmp_path / "s" / "checkpoints").glob("step-*"))) == 1


def test_resume_edge_cases(make_shards, tmp_path: Path) -> None:
    data = make_shards(600, shard_size=300)
    args = [
        "configs/mnist_mlp.yaml",
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "train.run_name=e",
        "train.epochs=2",
    ]
    args += [
        "ckpt.every=4",
        "ckpt.keep=2",
        "track.wandb=disabled",
        "track.plot=false",
        "model.g_hidden=[32]",
        "model.d_hidden=[32]",
    ]
    assert run(train_cmd(*args)).returncode == 0
    ckpt = tmp_path / "e" / "checkpoints"
    assert [p.name for p in sorted(ckpt.iterdir())] == [
        "step-000000008",
        "step-000000012",
    ]  # checkpoints at 4, 8 and the end (12); the oldest pruned
    res = run(train_cmd(*args))  # finished: a no-op that says so
    assert res.returncode == 0 and "run already finished at step 12" in res.stdout
    res = run(train_cmd(*args, "model.d_hidden=[16]", "train.epochs=3"))
    assert res.returncode == 2 and "model.d_hidden: checkpoint [32] vs now [16]" in res.stderr
    # a half-written checkpoint (no COMPLETE marker) is never loaded; auto takes the newest complete one
    (ckpt / "step-000000016").mkdir()
    (ckpt / "step-000000016" / "state.pt").write_bytes(b"half")
    (ckpt / "step-000000020.tmp").mkdir()
    res = run(train_cmd(*args[:-6], "train.epochs=3", *args[-5:]))
    assert res.returncode == 0 and "resuming at step 12" in res.stdout, res.stderr[-2000:]


@pytest.fixture
def small_run(run_once, small_data: Path, tmp_path: Path):
    """A finished 12-step run of its own with checkpoints at 4, 8 and 12, and the arguments that made it
    (trained once per session, copied)."""
    common = [
        "configs/mnist_mlp.yaml",
        "train.epochs=2",
        "ckpt.every=4",
        "track.wandb=disabled",
        "track.plot=false",
        "model.g_hidden=[32]",
        "model.d_hidden=[32]",
    ]
    run_once(common, tmp_path / "e")
    args = [
        common[0],
        f"data.path={small_data}",
        f"train.out_dir={tmp_path}",
        "train.run_name=e",
        *common[1:],
    ]
    return args, tmp_path / "e" / "checkpoints"


def test_resume_under_another_batch_is_refused_at_once(small_run) -> None:
    """Before: the replay skipped every batch of every epoch, forever, ignoring SIGTERM."""
    args, ckpt = small_run
    t0 = time.time()
    res = run(train_cmd(*args, "train.epochs=4", "train.batch_size=200"), timeout=120)
    assert res.returncode == 2 and time.time() - t0 < 100
    assert "train.batch_size=100" in res.stderr and "train.batch_size=200" in res.stderr
    assert "Resume with train.batch_size=100" in res.stderr and "Traceback" not in res.stderr


def test_resume_warns_about_changed_activation_and_ema(small_run) -> None:
    args, _ = small_run
    res = run(train_cmd(*args, "train.epochs=3", "model.activation=leaky_relu", "train.ema_kimg=5"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "model.activation: checkpoint 'relu', now 'leaky_relu'" in res.stderr
    assert "train.ema_kimg: checkpoint 0.0, now 5.0" in res.stderr


def _plant(path: Path, name: str, obj: object) -> None:
    torch.save(obj, path / name)
    from distgan.run.checkpoint_read import read_marker
    from distgan.utils.files import sha256_file

    marker = read_marker(path)
    marker["files"][name] = sha256_file(path / name)
    (path / "COMPLETE").write_text(json.dumps(marker))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_no_command_from_a_checkpoint_ever_runs(small_run, tmp_path: Path) -> None:
    """A state.pt with a pickle payload, and a config whose data.path is a pipe: command: `distgan sample`,
    `distgan eval` and a resume refuse both, and nothing runs."""
    args, ckpt = small_run
    path = ckpt / "step-000000012"
    state = torch.load(path / "state.pt", weights_only=True)
    marker = tmp_path / "pwned"
    state["config"]["data"]["path"] = f"pipe:touch {marker}; cat x.tar"
    _plant(path, "state.pt", state)
    cli = [sys.executable, "-m", "distgan.cli"]
    res = run([*cli, "eval", "--ckpt", str(path), "--n", "50", "--cache-dir", str(tmp_path / "c")])
    assert res.returncode == 2 and "never runs a command read from a checkpoint" in res.stderr
    state["evil"] = _Payload(marker)
    _plant(path, "state.pt", state)
    for cmd in (
        [*cli, "sample", "--ckpt", str(path), "--out", str(tmp_path / "s.png")],
        [*cli, "eval", "--ckpt", str(path), "--n", "50", "--cache-dir", str(tmp_path / "c")],
        train_cmd(*args, "train.epochs=3", f"ckpt.resume={path}", "train.run_name=f"),
    ):
        res = run(cmd)
        assert res.returncode == 2, res.stderr[-2000:]
        assert "a checkpoint is data, never code" in res.stderr and "Traceback" not in res.stderr
    assert not marker.exists()


def test_a_checkpoint_of_the_previous_format_still_resumes(small_run, tmp_path: Path) -> None:
    """Before registered objects, state.pt was one flat dict, RNG files pickled numpy state and COMPLETE held
    `step N`. Such a checkpoint resumes (its RNG files unread, with a warning) and samples."""
    args, ckpt = small_run
    path = ckpt / "step-000000008"
    new = torch.load(path / "state.pt", weights_only=True)
    flat = {**new["objects"]["trainer"], "config": new["config"], "wandb_id": "abc", "world": 1}
    for k in ("batch_size", "batches_per_epoch", "best_metric"):
        flat.pop(k, None)  # best_metric: in the evaluation event's own state since the trainer was cut in parts
    torch.save(flat, path / "state.pt")
    (path / "COMPLETE").write_text("step 8\n")
    out = tmp_path / "s.png"
    sample = run([sys.executable, "-m", "distgan.cli", "sample", "--ckpt", str(path), "--out", str(out)])
    assert sample.returncode == 0, sample.stderr[-2000:]
    # the run that wrote it continues (a branch, another run_name, would keep tracker ids of its own: issue 55)
    res = run(train_cmd(*args, "train.epochs=3", f"ckpt.resume={path}"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming at step 8" in res.stdout and "older distgan" in res.stderr
    assert (ckpt.parent / "wandb_id").read_text().strip() == "abc"  # the flat format's tracker id, read


FIXTURE_ARGS = {
    "mlp": ["model.g_hidden=[16]", "model.d_hidden=[16]"],
    "dcgan": [
        "model.arch=dcgan",
        "model.g_channels=4",
        "model.d_channels=4",
        "model.noise_dim=8",
        "model.num_classes=-1",
        "train.batch_size=50",
        "train.r1_gamma=1",
        "train.r1_every=2",
        "train.augment=color,translation",
    ],
    # written at 9012c64 with the flat keys of before the families' sections (tests/fixtures/README.md), and
    # resumed with the same flat keys on the command line: each read as its model.<family> key, with a warning
    "stylegan2": [
        "model.w_dim=16",
        "model.noise_dim=16",
        "model.mapping_layers=2",
        "model.sg_channel_base=128",
        "model.sg_channel_max=8",
        "model.num_classes=10",
        "train.batch_size=48",
        "train.r1_every=2",
        "train.pl_every=2",
        "eval.every=0",
        "train.sample_every=0",
    ],
    "r3gan": [
        "model.noise_dim=16",
        "model.r3_channel_base=112",
        "model.r3_channel_max=16",
        "model.num_classes=10",
        "train.batch_size=50",
        "train.r1_every=2",
        "eval.every=0",
        "train.sample_every=0",
    ],
}
FIXTURE = {
    "mlp": ("851d0c4", "configs/mnist_mlp.yaml"),
    "dcgan": ("851d0c4", "configs/mnist_mlp.yaml"),
    "stylegan2": ("9012c64", "tests/fixtures/config-9012c64-stylegan2.yaml"),
    "r3gan": ("9012c64", "tests/fixtures/config-9012c64-r3gan.yaml"),
}
"""The commit that wrote each fixture checkpoint, and the config file it was trained from (then)."""


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "stylegan2", "r3gan"])
def test_checkpoints_of_an_older_main_resume(make_shards, tmp_path: Path, arch: str) -> None:
    """A checkpoint written by an older main (tests/fixtures/README.md: 851d0c4 before the phases, 9012c64 before
    the families' sections) resumes with today's code: every registered object loads, the weights are the
    checkpoint's, and the run goes on to its end; flat family keys are read with one warning each."""
    import shutil

    from distgan.run.checkpoint_read import read_checkpoint

    data = make_shards(600, shard_size=300)
    commit, config = FIXTURE[arch]
    fixture = ROOT / "tests" / "fixtures" / f"ckpt-{commit}-{arch}"
    step = read_checkpoint(fixture)["step"]
    shutil.copytree(fixture, tmp_path / arch / "checkpoints" / f"step-{step:09d}")
    args = [
        config,
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        f"train.run_name={arch}",
        "train.epochs=2",
        "ckpt.every=2",
        "train.ema_kimg=1",
        "track.wandb=disabled",
        "track.plot=false",
        "train.sample_every_epochs=100",
        "train.print_every_epochs=100",
        *FIXTURE_ARGS[arch],
    ]
    res = run(train_cmd(*args))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming at step {step}" in res.stdout and "random streams re-seeded" not in res.stderr
    final = {"mlp": 12, "dcgan": 24, "stylegan2": 24, "r3gan": 24}[arch]  # two epochs of 6 (batch 100) or 12
    if arch == "stylegan2":
        assert "model.sg_channel_base is now model.stylegan2.channel_base (the old key still works)" in res.stderr
    assert (tmp_path / arch / "checkpoints" / f"step-{final:09d}").is_dir()
