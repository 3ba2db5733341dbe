"""Robustness cases that need a real process: the CLI's exit codes and messages, full disks, bad labels in a run."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.config import CkptConfig, ConfigError
from distgan.configure import load_config
from distgan.data.shard_writer import write_shards
from distgan.data.shards import DataSpecError, resolve
from distgan.run.checkpoint import Checkpointer
from distgan.utils.files import DiskFullError
from tests.conftest import run, synthetic, train_cmd
from tests.unit.test_robustness import Box, cli


def _set(m: dict, value: object) -> dict:
    m["splits"]["train"]["shards"][0]["samples"] = value
    return m


def _rename(m: dict, name: str) -> dict:
    m["splits"]["train"]["shards"][0]["name"] = name
    return m


class _Big(Box):
    def state_dict(self) -> dict:
        return {"t": torch.zeros(1 << 16)}


def test_cli_data_refuses_a_foreign_folder_with_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "x.npz"
    np.savez(src, x=synthetic(50).images, y=np.zeros(50, np.int64))
    out = tmp_path / "out"
    out.mkdir()
    (out / "backup-2024.tar").write_bytes(b"precious")
    res = cli("data", "folder", str(src), "--out", str(out))
    assert res.returncode == 2 and "backup-2024.tar" in res.stderr and "Traceback" not in res.stderr
    assert (out / "backup-2024.tar").read_bytes() == b"precious"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: "{not json", "not valid JSON"),
        (lambda m: {k: v for k, v in m.items() if k != "splits"}, "no 'splits'"),
        (lambda m: _set(m, "10000"), r"'splits.train.shards\[0\].samples' is '10000'"),
        (lambda m: _rename(m, "../../etc/x.tar"), "plain .tar file names"),
    ],
)
def test_bad_manifests_are_named_by_verify_and_the_loader(make_shards, edit, message: str) -> None:
    folder = make_shards(300, shard_size=100, block_size=50)
    manifest = json.loads((folder / "manifest.json").read_text())
    new = edit(manifest)
    (folder / "manifest.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(DataSpecError, match=message):
        resolve(str(folder))
    res = cli("data", "verify", str(folder))
    assert res.returncode == 2 and "manifest.json" in res.stderr and "Traceback" not in res.stderr
    assert res.stderr.count("\n") < 8  # one message, not a traceback


@pytest.mark.parametrize(
    "text, message",
    [
        ("- a\n- b\n", "top level must be a mapping"),
        ("train: 5\n", "section 'train' must be a mapping"),
        ("train:\n  precision: no\n", r"train.precision is the boolean False.*quote"),
    ],
)
def test_config_file_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    res = run(train_cmd(str(path)))
    assert res.returncode == 2 and "Traceback" not in res.stderr and str(path) in res.stderr


def test_full_disk_names_the_file(acc, tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    try:
        ck = Checkpointer(CkptConfig(), mnt / "ckpt", acc, {"name": "t"})
        ck.register("trainer", Box())
        ck.register("big", _Big())
        with pytest.raises(DiskFullError, match=r"disk full while writing .*state.pt"):
            ck.save(10)
        assert not (mnt / "ckpt" / "step-000000010").exists()
        src = tmp_path / "x.npz"
        np.savez(src, x=synthetic(2000).images, y=np.zeros(2000, np.int64))
        res = cli("data", "folder", str(src), "--out", str(mnt / "data"))
        assert res.returncode == 2 and "disk full while writing" in res.stderr and "Traceback" not in res.stderr
        assert not list((mnt / "data").glob("*.tar"))  # nothing half-written under a final name
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["umount", str(mnt)], check=False)


def test_sample_n_zero_is_refused(tmp_path: Path) -> None:
    res = cli("sample", "--ckpt", str(tmp_path), "--n", "0", "--out", str(tmp_path / "x.png"))
    assert res.returncode == 2 and "--n 0" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_labels_beyond_the_models_classes_are_refused_naming_the_shard(tmp_path: Path) -> None:
    """Data with no class list (other tools' shards, a classes-less manifest) and model.num_classes=N set by
    hand: a label >= N would index G's class embedding out of range, which names no file (a device-side assert
    on a GPU); the loader refuses it with the shard, the record and what to set."""
    write_shards(tmp_path / "d", {"train": synthetic(600)}, [], "test", 300, 100)  # labels 0-9, no class names
    args = [
        f"data.path={tmp_path / 'd'}",
        "data.workers=1",
        "model.arch=dcgan",
        "model.g_channels=8",
        "model.d_channels=8",
        "model.num_classes=5",
        "train.batch_size=50",
        "train.max_steps=3",
        f"train.out_dir={tmp_path / 'runs'}",
        "track.wandb=disabled",
        "track.plot=false",
    ]
    res = run(train_cmd("configs/debug.yaml", *args))
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr
    assert "train-000000.tar" in err and "class label" in err and "model.num_classes=5" in err, err[-2000:]
    ok = run(train_cmd("configs/debug.yaml", *[a.replace("num_classes=5", "num_classes=10") for a in args]))
    assert ok.returncode == 0, ok.stderr[-2000:]
