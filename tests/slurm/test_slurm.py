"""launch/slurm against a real Slurm on this host (started by tests/slurm/start_local_slurm.sh, as .ci/run does).

Skipped, with the reason, where no Slurm controller answers (a laptop).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # one worker: the jobs share one node


def _slurm_up() -> str:
    if not shutil.which("sbatch"):
        return "no Slurm installed (sbatch not found); .ci/run installs and starts one"
    res = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if res.returncode != 0 or not any(s in res.stdout for s in ("idle", "mix", "alloc")):
        answer = res.stderr.strip() or res.stdout.strip()
        return f"no Slurm controller/node answering (sinfo: {answer}); run tests/slurm/start_local_slurm.sh"
    return ""


SKIP = _slurm_up()
needs_slurm = pytest.mark.skipif(bool(SKIP), reason=SKIP)
CPU_JOB = {
    "DISTGAN_ACCEL_CONFIG": "launch/accelerate/cpu_2proc.yaml",
    "DISTGAN_NPROC": "2",
    "OMP_NUM_THREADS": "1",
}


def sbatch(args: list[str], out: Path, env: dict[str, str]) -> str:
    cmd = [
        "sbatch",
        "--parsable",
        "--export=ALL",
        f"--output={out}",
        "launch/slurm/single_node.sbatch",
        *args,
    ]
    res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return res.stdout.strip().split(";")[0]


def state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def wait_gone(job: str, timeout: float = 400) -> None:
    """Until the job has left the queue for good (a requeue passes through states squeue may not show)."""
    t0, absent, pending_since = time.time(), 0, None
    while absent < 5:
        st = state(job)
        absent = absent + 1 if not st else 0
        if time.time() - t0 > timeout:
            subprocess.run(["scancel", job])
            pytest.fail(f"job {job} still {st} after {timeout}s")
        # an array lists one state per task: any task pending (a requeued one among running ones) counts
        pending_since = (pending_since or time.time()) if "PENDING" in st.split() else None
        if pending_since and time.time() - pending_since > 5:
            # a requeued job waits ~2 minutes (Slurm's fixed delay); skip the wait, nothing else changes. Not
            # at once: started within a second of the requeue, slurmctld kills it ("Job credential revoked")
            # because the node is still tearing down the previous run.
            subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True)
        time.sleep(1)


def wait_training(job: str, run_dir: Path) -> None:
    t0 = time.time()
    while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
        assert time.time() - t0 < 180 and state(job), "job did not start training"
        time.sleep(0.5)


def train_args(data: Path, out: Path, steps: int) -> list[str]:
    return [
        f"data.path={data}",
        f"train.out_dir={out}",
        f"train.max_steps={steps}",
        "train.log_every=50",
        "track.plot=false",
    ]


@needs_slurm
def test_single_node_script_runs_to_completion(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300)
    job = sbatch(train_args(data, tmp_path, 100), tmp_path / "job.out", CPU_JOB)
    wait_gone(job)
    log = (tmp_path / "job.out").read_text()
    assert "training step exited with status 0" in log, log[-3000:]
    run_dir = tmp_path / f"distgan-{job}"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 100 and (run_dir / "final" / "G.safetensors").is_file()
    assert "on 2 process(es)" in log and list((run_dir / "wandb").glob("offline-run-*"))  # offline by default


@needs_slurm
def test_signal_mid_run_checkpoints_requeues_and_completes(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300)
    job = sbatch(train_args(data, tmp_path, 400), tmp_path / "job.out", CPU_JOB)
    run_dir = tmp_path / f"distgan-{job}"
    wait_training(job, run_dir)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)  # what --signal=B:USR1@T sends
    wait_gone(job)
    log = (tmp_path / "job.out").read_text()
    assert "got USR1" in log and "stopped by signal at step" in log and "requeueing" in log, log[-3000:]
    assert "restart 1" in log and "resuming at step" in log and "training step exited with status 0" in log
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(50, 401, 50))  # exact total, nothing twice
    assert rows[-1]["images_seen"] == 40_000
    run_id = (run_dir / "wandb_id").read_text().strip()
    segments = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and all(s.name.endswith(run_id) for s in segments)  # one wandb run id


@needs_slurm
def test_scancel_checkpoints_and_stays_cancelled(make_shards, tmp_path: Path) -> None:
    """Issue 20 #8: a plain `scancel JOB` (TERM) checkpoints and ends; the job is not requeued (before: it
    requeued itself again and again)."""
    data = make_shards(1200, shard_size=300)
    job = sbatch(train_args(data, tmp_path, 100000), tmp_path / "job.out", CPU_JOB)
    run_dir = tmp_path / f"distgan-{job}"
    wait_training(job, run_dir)
    subprocess.run(["scancel", job], check=True)
    wait_gone(job, timeout=120)
    time.sleep(5)
    assert state(job) == "", "the cancelled job came back"
    log = (tmp_path / "job.out").read_text()
    assert "got TERM" in log and "requeueing" not in log and "restart 1" not in log, log[-3000:]
    assert list((run_dir / "checkpoints").glob("step-*")), log[-3000:]


def node_env(rank: int, port: int, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SLURM_NNODES": "2",
        "SLURM_NODEID": str(rank),
        "DISTGAN_NPROC": "1",
        "DISTGAN_MAIN_ADDR": "127.0.0.1",
        "DISTGAN_PORT": str(port),
        "DISTGAN_ACCEL_CONFIG": "launch/accelerate/multinode.yaml",
        "DISTGAN_CONFIG": "configs/mnist_mlp.yaml",
        "DISTGAN_PYTHON": str(Path(os.sys.executable)),
        "DISTGAN_RUN_NAME": "mn",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def test_multi_node_launch_lines_and_a_two_machine_job(make_shards, tmp_path: Path) -> None:
    """node_launch.sh as srun runs it on each node: the per-node command lines, then both 'nodes' for real
    (two machine ranks rendezvousing over TCP on this host)."""
    data = make_shards(1200, shard_size=300)
    port = free_port()
    args = train_args(data, tmp_path, 24)
    lines = []
    for rank in (0, 1):
        res = subprocess.run(
            ["bash", "launch/slurm/node_launch.sh", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**node_env(rank, port, tmp_path), "DISTGAN_DRY_RUN": "1"},
        )
        assert res.returncode == 0, res.stderr
        lines.append(res.stdout.split())
    for rank, line in enumerate(lines):
        flag = lambda name, line=line: line[line.index(name) + 1]  # noqa: E731
        assert flag("--machine_rank") == str(rank) and flag("--num_machines") == "2" and flag("--num_processes") == "2"
        assert flag("--main_process_ip") == "127.0.0.1" and flag("--main_process_port") == str(port)
        assert "train.run_name=mn" in line and "ckpt.resume=auto" in line
    assert [a for a in lines[0] if a != "0"] == [a for a in lines[1] if a != "1"]  # only the machine rank differs
    procs = [
        subprocess.Popen(
            ["bash", "launch/slurm/node_launch.sh", *args],
            cwd=ROOT,
            env=node_env(rank, port, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "on 2 process(es)" in outs[0]
    rows = [json.loads(line) for line in (tmp_path / "mn" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 24


def _multi_partition() -> str:
    if SKIP:
        return SKIP
    res = subprocess.run(["sinfo", "-h", "-p", "multi", "-N", "-o", "%N %t"], capture_output=True, text=True)
    up = [line for line in res.stdout.splitlines() if line.split()[1] in ("idle", "mix", "alloc")]
    if len(up) < 2:
        return "no 2-host 'multi' partition (run tests/slurm/start_netns_nodes.sh as root, as .ci/run does)"
    return ""


@pytest.mark.skipif(bool(_multi_partition()), reason=_multi_partition() or "ok")
def test_multi_node_script_on_two_slurmd_hosts(make_shards, tmp_path: Path) -> None:
    """Two slurmd hosts in network namespaces (10.77.0.11/12): one srun task per node, gloo across them."""
    data = make_shards(1200, shard_size=300)
    env = {"DISTGAN_NPROC": "1", "GLOO_SOCKET_IFNAME": "dg0", "OMP_NUM_THREADS": "1"}
    cmd = ["sbatch", "--parsable", "--export=ALL", "-p", "multi", f"--output={tmp_path / 'job.out'}"]
    res = subprocess.run(
        [*cmd, "launch/slurm/multi_node.sbatch", *train_args(data, tmp_path, 48)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    job = res.stdout.strip().split(";")[0]
    wait_gone(job)
    log = (tmp_path / "job.out").read_text()
    assert "training step exited with status 0" in log, log[-3000:]
    assert "--machine_rank 0" in log and "--machine_rank 1" in log and "--main_process_ip n1" in log
    assert "on 2 process(es)" in log
    rows = [json.loads(line) for line in (tmp_path / f"distgan-mn-{job}" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 48 and rows[-1]["images_seen"] == 4800


@pytest.mark.skipif(bool(_multi_partition()), reason=_multi_partition() or "ok")
def test_image_conversion_as_a_job_array_on_two_hosts_then_merge(tmp_path: Path) -> None:
    """launch/slurm/convert_images.sbatch as documented: 2 array tasks on the 2 namespace hosts, a dependent
    merge job; the merged dataset is byte-identical to a one-machine conversion."""
    from tests.unit.test_images import shard_bytes, zoo

    zoo(tmp_path / "src", n_plain=60)
    conv = ["--size", "32", "--shard-size", "8", "--block-size", "4"]
    from distgan.cli import main

    assert main(["data", "images", str(tmp_path / "src"), "--out", str(tmp_path / "one"), *conv]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["sbatch", "--parsable", "--export=ALL", "-p", "multi"]
    res = subprocess.run(
        [
            *base,
            "--array=1-2",
            "--exclusive",  # a whole node each: one task per host
            f"--output={tmp_path}/conv-%a.out",
            "launch/slurm/convert_images.sbatch",
            str(tmp_path / "src"),
            str(tmp_path / "arr"),
            *conv,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    array = res.stdout.strip().split(";")[0]
    res = subprocess.run(
        [
            *base,
            f"--dependency=afterok:{array}",
            f"--output={tmp_path}/merge.out",
            "launch/slurm/convert_images.sbatch",
            "--merge",
            str(tmp_path / "arr"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    merge_job = res.stdout.strip().split(";")[0]
    wait_gone(merge_job)
    logs = [(tmp_path / f"conv-{i}.out").read_text() for i in (1, 2)]
    assert all("exited with status 0" in log for log in logs), logs
    hosts = {log.split(" on ", 1)[1].split(":", 1)[0] for log in logs}
    assert "task 1/2" in logs[0] and "task 2/2" in logs[1] and hosts == {"n1", "n2"}
    assert (tmp_path / "arr" / "manifest.json").is_file(), (tmp_path / "merge.out").read_text()
    assert shard_bytes(tmp_path / "arr") == shard_bytes(tmp_path / "one")


@needs_slurm
def test_sweep_is_one_job_array_with_a_preempted_task_requeued(make_shards, tmp_path: Path) -> None:
    """A grid of 2 x 2 seeds as one array on the real Slurm, 3 tasks at a time; task 0 gets the preemption
    signal, checkpoints, is requeued and finishes; re-submitting skips finished points; compare pools the
    seeds. (A 2 x 2 grid: the grid's product is test_sweep.py's, in a local sweep.)"""
    import sys

    data = make_shards(1200, shard_size=300)
    env = {
        **os.environ,
        "DISTGAN_ACCEL_CONFIG": "launch/accelerate/cpu_2proc.yaml",
        "DISTGAN_NPROC": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "distgan.cli",
        "sweep",
        "configs/mnist_mlp.yaml",
        f"data.path={data}",
        "train.max_steps=1500",
        "train.log_every=100",
        "ckpt.every=500",
        "model.g_hidden=[64]",
        "model.d_hidden=[64]",
        "track.wandb=disabled",
        "track.plot=false",
        "--grid",
        "optim.lr_g=1e-4,2e-4",
        "--seeds",
        "2",
        "--name",
        "sw",
        "--out",
        str(tmp_path),
        "--slurm",
        "--array-limit",
        "3",
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    job = res.stderr.split("submitted job array ")[1].split()[0]
    assert "with 4 of 4 points (0,1,2,3%3)" in res.stderr
    first = tmp_path / "sw" / "lr_g=1e-4,seed=0"
    t0 = time.time()
    while not (first / "metrics.jsonl").is_file() or not (first / "metrics.jsonl").read_text():
        assert time.time() - t0 < 180, "task 0 did not start training"
        time.sleep(0.3)
    # The signal reaches the batch shell, and the task requeues itself; scancel meanwhile retries for about 80 s
    # ("Job can not be altered now") and would signal the requeued task again: it is stopped once the task
    # has said it got the signal.
    signal_ = subprocess.Popen(
        ["scancel", "--signal=USR1", "--batch", f"{job}_0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    task_log = tmp_path / "sw" / f"slurm-{job}_0.out"
    try:
        t0 = time.time()
        while "got USR1" not in (task_log.read_text() if task_log.is_file() else ""):
            assert time.time() - t0 < 120, "task 0 never got the signal"
            time.sleep(0.2)
    finally:
        signal_.kill()
        signal_.wait()
    wait_gone(job, timeout=600)
    log = "".join(p.read_text() for p in (tmp_path / "sw").glob(f"slurm-{job}_0.out"))
    assert "got USR1" in log and "requeueing" in log and "resuming at step" in log, log[-3000:]
    points = sorted(p for p in (tmp_path / "sw").iterdir() if p.is_dir())
    assert len(points) == 4
    for p in points:
        assert json.loads((p / "status.json").read_text())["state"] == "finished", p
        rows = [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss_d" in r] == list(range(100, 1201, 100)), (
            p
        )  # 100 epochs of 12: nothing twice
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "all 4 points finished; nothing submitted" in again.stderr
    table = subprocess.run(
        [sys.executable, "-m", "distgan.cli", "compare", str(tmp_path / "sw"), "--format", "markdown"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert table.returncode == 0 and table.stdout.count("| finished 2 |") == 2, table.stdout
