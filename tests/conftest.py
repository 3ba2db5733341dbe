"""Shared fixtures: synthetic shards (always), real MNIST (when ../shared/data/mnist exists), launch helpers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from distgan.data.shard_writer import Split, write_shards
from tests.helpers.shards import made as made_shards
from tests.helpers.shards import synthetic

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
CPU2 = ROOT / "launch" / "accelerate" / "cpu_2proc.yaml"

# torch.compile's on-disk cache is not keyed on ATEN_CPU_CAPABILITY: with torch 2.13, kernels cached by a run
# under the native capability gave an avx2 run wrong numbers, and the reverse aborted. The suite runs under
# several (.ci/run), so each session compiles into a folder of its own (subprocesses inherit it).
INDUCTOR_CACHE = tempfile.mkdtemp(prefix="distgan-test-inductor-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = INDUCTOR_CACHE


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker is one of N processes sharing the cores: in-process tests take one thread
    each (torch's default, one per core, would oversubscribe the machine N times). Launched programs choose
    their own threads (the launch helpers pass OMP_NUM_THREADS=1)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_sessionfinish() -> None:
    shutil.rmtree(INDUCTOR_CACHE, ignore_errors=True)
    for folder in made_shards():
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def make_shards(tmp_path: Path):
    def make(n: int = 1200, shard_size: int = 400, block_size: int = 100, name: str = "shards", test: int = 0) -> Path:
        out = tmp_path / name
        splits = {"train": synthetic(n)}
        if test:
            splits["test"] = synthetic(test, seed=1)
        write_shards(out, splits, [str(i) for i in range(10)], "synthetic", shard_size, block_size)
        return out

    return make


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not present at {MNIST_DIR} (a fresh clone has none)")
    return MNIST_DIR


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], timeout: float = 300, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


def accelerate_launch(args: list[str], nproc: int = 2, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU2)]
    cmd += ["--num_processes", str(nproc), "--main_process_port", str(free_port()), *args]
    return run(cmd, **kw)


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "distgan" / "train.py"), *args]


def patterns(n: int, seed: int = 0) -> Split:
    """A learnable stand-in for digits on a fresh clone: class c is a bright 6x6 square at one of 10 places,
    jittered by a pixel and over faint noise. A classifier learns it in one epoch."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = divmod(int(c), 4)
        y, x = 2 + 8 * r + rng.integers(-1, 2), 2 + 6 * col + rng.integers(-1, 2)
        images[i, max(y, 0) : y + 6, max(x, 0) : x + 6] = 255
    return Split(images, labels)


@pytest.fixture(scope="session")
def pattern_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("patterns") / "data"
    write_shards(
        out,
        {"train": patterns(3000), "test": patterns(1000, seed=1)},
        [str(i) for i in range(10)],
        "patterns",
        1000,
        500,
    )
    return out


@pytest.fixture(scope="session")
def mnist_shards(mnist_dir: Path, tmp_path_factory) -> Path:
    """Real MNIST (train + test) as our shards, once per session."""
    from distgan.data.mnist import from_folder

    out = tmp_path_factory.mktemp("mnist") / "data"
    m = from_folder(mnist_dir)
    splits = {"train": Split(m.train_images, m.train_labels), "test": Split(m.test_images, m.test_labels)}
    write_shards(out, splits, [str(i) for i in range(10)], "MNIST", 10000, 1000)
    return out


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """600 synthetic images in 2 shards, shared read-only by the session's small runs."""
    out = tmp_path_factory.mktemp("small-data") / "data"
    write_shards(out, {"train": synthetic(600)}, [str(i) for i in range(10)], "synthetic", 300, 100)
    return out


@pytest.fixture(scope="session")
def run_once(tmp_path_factory, small_data: Path):
    """`run_once(args, dest)`: a finished train.py run of `args` (train.out_dir and run_name left out) on
    small_data, trained once per session and copied to `dest` for each test that damages or continues it (a
    run costs a Python and torch start-up and its steps; a copy costs nothing)."""
    made: dict[tuple[str, ...], Path] = {}

    def copy(args: list[str], dest: Path) -> Path:
        key = tuple(args)
        if key not in made:
            out = tmp_path_factory.mktemp("run-once")
            res = run(train_cmd(*args, f"data.path={small_data}", f"train.out_dir={out}", "train.run_name=r"))
            assert res.returncode == 0, res.stderr[-2000:]
            made[key] = out / "r"
        shutil.copytree(made[key], dest, ignore=shutil.ignore_patterns(".lock"))
        return dest

    return copy


def wandb_steps(run_dir: Path) -> list[int]:
    cli = Path(sys.executable).parent / "wandb"
    steps = []
    for seg in sorted((run_dir / "wandb").glob("offline-run-*")):
        out = subprocess.run(
            [str(cli), "leet", "inspect", "--json", str(seg)], capture_output=True, text=True, timeout=120
        )
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        steps += [
            r["history"]["item"]["_step"] for r in rows if r["type"] == "history" and "loss_d" in r["history"]["item"]
        ]
    return steps


@pytest.fixture
def acc():
    """A single-process CPU Accelerator, its global state reset before and after."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)
