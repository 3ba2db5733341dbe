"""An imported StyleGAN2-ADA pickle sampled, exported and fine-tuned by real commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.run.weights import read_state
from tests.unit.test_pretrained import FIX, PICKLES, ROOT


@pytest.mark.slow
def test_import_sample_export_and_finetune_with_freezed_and_ada(tmp_path: Path) -> None:
    from distgan.data.shard_writer import write_shards
    from tests.conftest import synthetic

    out = tmp_path / "imported"
    cli = [sys.executable, "-m", "distgan.cli"]
    pkl = FIX / f"{PICKLES[1]}.pkl"
    r = subprocess.run([*cli, "import", str(pkl), "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {"state.pt", "COMPLETE", "G_ema.safetensors", "config.yaml", "import.json"} <= {
        p.name for p in out.iterdir()
    }
    again = subprocess.run([*cli, "import", str(pkl), "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "not an empty folder" in again.stdout + again.stderr
    for src in (out, pkl):
        s = subprocess.run(
            [
                *cli,
                "sample",
                "--ckpt",
                str(src),
                "--out",
                str(tmp_path / "s.npz"),
                "--format",
                "npz",
                "--n",
                "4",
                "--trunc",
                "0.7",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert s.returncode == 0, s.stdout + s.stderr
        with np.load(tmp_path / "s.npz") as f:
            assert f["x"].shape[0] == 4 and f["x"].shape[-2:] == (64, 64)
    e = subprocess.run(
        [*cli, "export", "--ckpt", str(pkl), "--out", str(tmp_path / "exp")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert e.returncode == 0 and (tmp_path / "exp" / "generator.pt2").is_file(), e.stdout + e.stderr
    data = tmp_path / "shards"
    write_shards(data, {"train": synthetic(64, shape=(64, 64))}, [str(i) for i in range(10)], "synthetic", 32, 32)
    train = [
        sys.executable,
        "distgan/train.py",
        str(out / "config.yaml"),
        f"data.path={data}",
        f"train.init_from={pkl}",
        "model.d_freeze=2",
        f"train.out_dir={tmp_path}",
        "train.run_name=ft",
        "train.batch_size=8",
        "train.max_steps=3",
        "train.log_every=1",
        "eval.every=0",
        "track.wandb=disabled",
        "track.plot=false",
        "train.ada_p=0.5",
    ]
    t = subprocess.run(train, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert t.returncode == 0, t.stdout[-2000:] + t.stderr[-2000:]
    assert "initialised from" in t.stdout and "G_ema from the source" in t.stdout
    from safetensors.torch import load_file

    start = read_state(pkl)["objects"]["trainer"]
    final = {k: load_file(tmp_path / "ft" / "final" / f"{k}.safetensors") for k in ("G", "D")}
    assert any(not torch.equal(final["G"][k], start["G"][k]) for k in final["G"])  # trained on
    frozen = [k for k in final["D"] if k.startswith(("fromrgb", "blocks.0."))]
    assert frozen and all(torch.equal(final["D"][k], start["D"][k]) for k in frozen)  # FreezeD: untouched
    assert any(not torch.equal(final["D"][k], start["D"][k]) for k in final["D"] if k not in frozen)
