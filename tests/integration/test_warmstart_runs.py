"""Warm starts as runs: fine-tuning from an export starts fresh counters."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run, train_cmd
from tests.unit.test_trainer import fresh_accelerate_state, make_trainer  # noqa: F401 (autouse fixture)
from tests.unit.test_warmstart import TINY


def test_fine_tune_run_from_an_export_starts_fresh_counters(source: Path, tmp_path: Path) -> None:
    """An export holds G only: D starts fresh; the run counts from step 0 with fresh optimizers; a resume of the
    new run ignores init_from."""
    from distgan.cli import main

    ckpt = sorted((source / "r" / "checkpoints").glob("step-*"))[-1]
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    args = [
        "configs/debug.yaml",
        f"data.path={source / 'data'}",
        f"train.out_dir={tmp_path}",
        "train.run_name=ft",
        *TINY,
        "model.num_classes=10",
        f"train.init_from={tmp_path / 'exp'}",
        "model.d_freeze=1",
        "track.wandb=disabled",
        "train.batch_size=20",
        "train.max_steps=4",
        "train.log_every=2",
    ]
    res = run(train_cmd(*args))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "D fresh (not in the source)" in res.stdout and "G_ema from G" in res.stdout
    rows = [json.loads(r) for r in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines() if '"loss_d"' in r]
    assert [r["step"] for r in rows] == [2, 4] and rows[0]["images_seen"] == 40
    res = run(train_cmd(*args, "train.max_steps=6"))
    assert res.returncode == 0 and "resuming at step 4" in res.stdout and "initialised from" not in res.stdout
    res = run(train_cmd(*args, "train.max_steps=8", "model.d_freeze=0"))  # D's optimizer holds other tensors
    assert res.returncode != 0 and "model.d_freeze: checkpoint 1 vs now 0" in res.stderr
