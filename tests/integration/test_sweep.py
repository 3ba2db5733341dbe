"""`distgan sweep` and `distgan compare`: points, --local J, skipping finished points, the table's means."""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from pathlib import Path

import pytest

from tests.conftest import run

pytestmark = pytest.mark.slow
SWEEP = [sys.executable, "-m", "distgan.cli", "sweep"]


def test_dry_run_lists_points_and_a_bad_key_fails_before_anything(tmp_path: Path) -> None:
    res = run(
        [
            *SWEEP,
            "configs/debug.yaml",
            "--grid",
            "optim.lr_g=1e-4,2e-4",
            "--grid",
            "model.g_hidden=[64],[32,32]",
            "--seeds",
            "2",
            "--name",
            "s",
            "--out",
            str(tmp_path),
            "--dry-run",
        ]
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 8 and "lr_g=1e-4,g_hidden=32-32,seed=1" in lines[3]
    assert "model.g_hidden=[32,32]" in lines[3] and "train.seed=1" in lines[3]
    assert not (tmp_path / "s").exists()
    bad = run([*SWEEP, "configs/debug.yaml", "--grid", "optim.lr_gg=1e-4", "--out", str(tmp_path), "--slurm"])
    assert bad.returncode == 2 and "optim.lr_gg" in bad.stderr and "lr_g" in bad.stderr
    bad = run([*SWEEP, "configs/debug.yaml", "--grid", "train.precision=fp64", "--out", str(tmp_path)])
    assert bad.returncode == 2 and "train.precision" in bad.stderr
    assert not any(tmp_path.iterdir())  # nothing written, nothing submitted


def test_local_two_at_a_time_then_skip_finished_and_compare_means(make_shards, tmp_path: Path) -> None:
    data = make_shards(600, shard_size=300, test=200)
    args = [
        *SWEEP,
        "configs/debug.yaml",
        f"data.path={data}",
        "train.max_steps=8",
        "train.batch_size=50",
        "eval.every=4",
        "eval.n_samples=200",
        "eval.classifier_epochs=1",
        f"eval.cache_dir={tmp_path / 'cache'}",
        "track.wandb=disabled",
        "--grid",
        "optim.lr_g=1e-4,1e-3",
        "--seeds",
        "2",
        "--name",
        "sw",
        "--out",
        str(tmp_path),
        "--local",
        "2",
    ]
    first = run(args, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stderr.count("started") == 4 and "(1 threads)" in first.stderr  # 2 cores / 2 at a time
    again = run(args, timeout=300)
    assert again.returncode == 0 and "4 of 4 points finished already; running 0" in again.stderr
    res = run(
        [
            sys.executable,
            "-m",
            "distgan.cli",
            "compare",
            str(tmp_path / "sw"),
            "--format",
            "csv",
            "--metric",
            "fid_mnistcnn",
        ]
    )
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {r["point"] for r in rows} == {"debug: lr_g=0.0001", "debug: lr_g=0.001"}
    for r in rows:
        finals = []
        for seed in (0, 1):
            lr = r["point"].split("=")[1]
            name = f"lr_g={'1e-4' if lr == '0.0001' else '1e-3'},seed={seed}"
            metrics = [json.loads(x) for x in (tmp_path / "sw" / name / "metrics.jsonl").read_text().splitlines()]
            finals.append([m["eval/fid_mnistcnn"] for m in metrics if "eval/fid_mnistcnn" in m][-1])
        mean, std = statistics.fmean(finals), statistics.stdev(finals)
        shown_mean, shown_std = (float(v) for v in r["final fid_mnistcnn"].split(" ± "))
        assert shown_mean == pytest.approx(mean, rel=1e-3) and shown_std == pytest.approx(std, rel=0.05, abs=1e-3)
        assert r["seeds"] == "2" and r["status"] == "finished 2"
    assert (tmp_path / "sw" / "compare_fid_mnistcnn.png").is_file()
