"""Defects found by trying to break distgan (issue 11): each case fails on the code before its fix.

Bad data under `on_error=skip`, a data folder holding other files, bad manifests and configs, leftover
checkpoint temporaries, corrupt and malicious checkpoints, a full disk, stop requests during a replay.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.config import CkptConfig, ConfigError, DataConfig
from distgan.configure import load_config
from distgan.data.loader import Loader
from distgan.data.shard_writer import ShardError, verify, write_shards
from distgan.data.shards import DataSpecError, refuse_saved_commands
from distgan.run.checkpoint import Checkpointer, RngState
from distgan.run.checkpoint_read import read_checkpoint, read_marker
from distgan.run.errors import CheckpointError
from distgan.utils import stats
from distgan.utils.files import sha256_file
from tests.conftest import run, synthetic


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "distgan.cli", *args], **kw)


# -- data ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["zero_filled", "overcounted"])
def test_skip_mode_fills_every_rank_from_bad_shards(make_shards, damage: str) -> None:
    """Two of three shards hold nothing readable: every rank of 2 still yields its full epoch under skip
    (before: `need at least one array to concatenate`, or a DataError, on the rank whose share was bad)."""
    folder = make_shards(1200, shard_size=400, block_size=100)
    if damage == "zero_filled":
        for i in (0, 2):
            p = folder / f"train-{i:06d}.tar"
            p.write_bytes(b"\0" * p.stat().st_size)
    else:  # the manifest promises 800 more samples than the shards hold (one extra shard's worth each)
        m = json.loads((folder / "manifest.json").read_text())
        for s in m["splits"]["train"]["shards"][:2]:
            s["samples"] += 400
            s["records"] += [100] * 4
        (folder / "manifest.json").write_text(json.dumps(m))
    for rank in (0, 1):
        loader = Loader(DataConfig(path=str(folder), workers=0), 100, rank, 2, 0, (1, 28, 28))
        stats.default().reset()
        batches = [b["label"] for b in loader.epoch(0)]
        assert len(batches) == loader.batches_per_epoch and all(len(b) == 50 for b in batches)
    assert stats.default().local().total("data/skipped_samples") > 0


def test_whole_dataset_unreadable_is_an_error_naming_the_shards(make_shards) -> None:
    folder = make_shards(400, shard_size=200, block_size=100)
    for p in folder.glob("*.tar"):
        p.write_bytes(b"\0" * p.stat().st_size)
    from distgan.data.records import DataError

    loader = Loader(DataConfig(path=str(folder), workers=0), 100, 0, 1, 0, (1, 28, 28))
    with pytest.raises(DataError, match="no readable sample in the whole dataset.*train-000000.tar"):
        list(loader.epoch(0))


def test_writing_shards_never_deletes_other_files(make_shards, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "backup-2024.tar").write_bytes(b"precious")
    data = {"train": synthetic(300)}
    with pytest.raises(ShardError, match=r"backup-2024\.tar.*nothing was written"):
        write_shards(out, data, ["0"], "x", 100, 50)
    assert (out / "backup-2024.tar").read_bytes() == b"precious" and not (out / "manifest.json").exists()
    # replacing a distgan dataset removes exactly the shards its manifest listed
    ds = tmp_path / "ds"
    write_shards(ds, {"train": synthetic(300)}, ["0"], "x", 100, 50)
    assert len(list(ds.glob("*.tar"))) == 3
    write_shards(ds, {"train": synthetic(150)}, ["0"], "x", 100, 50)
    assert sorted(p.name for p in ds.glob("*.tar")) == ["train-000000.tar", "train-000001.tar"]
    assert verify(ds, log=lambda m: None) == []


def test_pipe_commands_from_a_saved_config_are_refused() -> None:
    saved = {"data": {"path": "pipe:touch /tmp/x", "manifest": ""}}
    with pytest.raises(DataSpecError, match="never runs a command read from a checkpoint"):
        refuse_saved_commands(saved, [], "checkpoint c")
    refuse_saved_commands(saved, ["data.path=pipe:touch /tmp/x"], "checkpoint c")  # repeated by the user
    refuse_saved_commands({"data": {"path": "data/mnist"}}, [], "checkpoint c")


# -- config ----------------------------------------------------------------------------------------------


def test_quoted_precision_no_still_works(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('train:\n  precision: "no"\n')
    assert load_config(path).train.precision == "no"


# -- checkpoints -----------------------------------------------------------------------------------------
class Box:
    def __init__(self, value: float = 0.0) -> None:
        self.t = torch.tensor([value])

    def state_dict(self) -> dict:
        return {"t": self.t.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.t = state["t"].clone()


def checkpointer(acc, folder: Path, value: float = 0.0, resume: str = "auto") -> tuple[Checkpointer, Box]:
    ck = Checkpointer(CkptConfig(keep=5, resume=resume), folder, acc, {"name": "t"})
    box = Box(value)
    ck.register("trainer", box)
    ck.register("rng", RngState(torch.Generator().manual_seed(0)), per_rank=True)
    return ck, box


def test_marker_records_checksums_and_a_step_is_written_once(acc, tmp_path: Path) -> None:
    ck, _ = checkpointer(acc, tmp_path)
    path = ck.save(20)
    marker = read_marker(path)
    assert marker["step"] == 20 and marker["world"] == 1
    assert set(marker["files"]) == {"state.pt", "rng-rank0.pt"}
    assert all(sha256_file(path / f) == h for f, h in marker["files"].items())
    before = (path / "COMPLETE").stat().st_mtime_ns
    assert ck.save(20) == path  # e.g. a stop request on a periodic-checkpoint step
    assert (path / "COMPLETE").stat().st_mtime_ns == before and not list(tmp_path.glob("*.old"))


def test_leftover_temporaries_never_break_a_resume(acc, tmp_path: Path) -> None:
    ck, _ = checkpointer(acc, tmp_path, 1.0)
    ck.save(10)
    ck.save(20)
    # what a stop between the two renames of a double write left, plus a half-written temporary
    os.rename(tmp_path / "step-000000020", tmp_path / "step-000000020.old")
    (tmp_path / "step-000000030.tmp").mkdir()
    (tmp_path / "best.tmp").mkdir()
    ck2, box = checkpointer(acc, tmp_path)
    found = ck2.find_resume()
    assert found == tmp_path / "step-000000020"  # the .old copy got its name back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000010", "step-000000020"]
    ck2.load(found)
    assert box.t.item() == 1.0


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing_rng"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(acc, tmp_path: Path, caplog, damage: str) -> None:
    ck, box = checkpointer(acc, tmp_path, 1.0)
    ck.save(10)
    box.t += 1
    newest = ck.save(20)
    if damage == "truncated":
        data = (newest / "state.pt").read_bytes()
        (newest / "state.pt").write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        (newest / "state.pt").write_bytes(b"\x80\x02garbage" * 100)
    else:
        (newest / "rng-rank0.pt").unlink()
    ck2, box2 = checkpointer(acc, tmp_path)
    with caplog.at_level(logging.WARNING, logger="distgan"):
        found = ck2.find_resume()
    assert found == tmp_path / "step-000000010"
    bad = "rng-rank0.pt" if damage == "missing_rng" else "state.pt"
    assert str(newest / bad) in caplog.text
    ck2.load(found)
    assert box2.t.item() == 1.0
    # none intact: refused, naming the files, instead of a raw traceback on every requeue
    (tmp_path / "step-000000010" / "state.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="no intact checkpoint.*step-000000010, step-000000020"):
        checkpointer(acc, tmp_path)[0].find_resume()


def test_an_explicit_corrupt_checkpoint_is_refused_by_name(acc, tmp_path: Path) -> None:
    ck, _ = checkpointer(acc, tmp_path)
    path = ck.save(10)
    (path / "state.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"state.pt is corrupt"):
        checkpointer(acc, tmp_path / "other", resume=str(path))[0].find_resume()


def test_weights_another_version_names_otherwise_are_refused_naming_file_and_keys(acc, tmp_path: Path) -> None:
    """A checkpoint whose layer names this version does not have (e.g. a conditional StyleGAN2 D's `embed`,
    now `mapping`): a CheckpointError naming the file and the keys, not torch's bare RuntimeError."""
    ck = Checkpointer(CkptConfig(keep=5), tmp_path, acc, {"name": "t"})
    ck.register("trainer", torch.nn.ModuleDict({"embed": torch.nn.Linear(2, 2)}))
    path = ck.save(10)
    ck2 = Checkpointer(CkptConfig(keep=5, resume=str(path)), tmp_path / "other", acc, {"name": "t"})
    ck2.register("trainer", torch.nn.ModuleDict({"mapping": torch.nn.Linear(2, 2)}))
    with pytest.raises(CheckpointError, match=r"state.pt: its 'trainer' state does not fit .*embed\.weight"):
        ck2.load(ck2.find_resume())


def test_a_checkpoint_without_a_generator_is_named_by_sample_and_init_from(acc, tmp_path: Path) -> None:
    """The readers of a run's weights (sample, export, eval, init_from) share one check: a checkpoint whose
    'trainer' holds no G is refused naming its folder, not a KeyError deep in a loader."""
    from distgan.run.sample import load_generator
    from distgan.run.weights import read_weights

    path = checkpointer(acc, tmp_path)[0].save(10)  # 'trainer' is a Box here: {"t": ...}
    for read in (load_generator, read_weights):
        with pytest.raises(CheckpointError, match=rf"{path}: its state.pt holds no generator weights"):
            read(path)


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, name: str, obj: object) -> None:
    """Replace a checkpoint file and record its checksum, as an attacker who writes the folder would."""
    torch.save(obj, path / name)
    marker = read_marker(path)
    marker["files"][name] = sha256_file(path / name)
    (path / "COMPLETE").write_text(json.dumps(marker))


@pytest.mark.parametrize("name", ["state.pt", "rng-rank0.pt"])
def test_a_checkpoint_that_would_run_code_is_refused(acc, tmp_path: Path, name: str) -> None:
    ck, _ = checkpointer(acc, tmp_path)
    path = ck.save(10)
    marker = tmp_path / "pwned"
    state = torch.load(path / name, weights_only=True)
    state["evil"] = Payload(marker)
    _plant(path, name, state)
    ck2, _ = checkpointer(acc, tmp_path / "other", resume=str(path))
    with pytest.raises(CheckpointError, match="refused unread: a checkpoint is data, never code"):
        ck2.load(ck2.find_resume())
    assert not marker.exists()


def test_stop_during_replay_is_honoured(acc, tmp_path: Path) -> None:
    """The replay of a resumed epoch checks for a stop like training steps do, and keeps the checkpoint."""
    from distgan.dist import StopAgreement, StopFlag
    from distgan.run.tracking import NullTracker
    from distgan.training.build import build_trainer
    from distgan.training.trainer import Preempted

    cfg = load_config(None, ["model.g_hidden=[8]", "model.d_hidden=[8]"])
    ck, _ = checkpointer(acc, tmp_path)
    resumed = ck.save(500)
    flag = StopFlag()
    flag.requested = True
    from distgan.data.loader import Loader
    from tests.helpers.shards import shards_for

    data = DataConfig(path=str(shards_for(cfg.model.image_shape, 200)))
    loader = Loader(data, cfg.train.batch_size, 0, 1, 0, cfg.model.image_shape)
    trainer = build_trainer(cfg, acc, loader, NullTracker(), ck, StopAgreement(flag, 10, None, 1))
    trainer.state.step = 500
    seen = []
    with pytest.raises(Preempted) as exc:
        trainer._replay((seen.append(i) or i for i in range(10_000)), 5_000)
    assert len(seen) == 10 and exc.value.path == resumed


def test_read_checkpoint_names_a_folder_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        read_checkpoint(tmp_path)


def test_block_decode_survives_cpythons_spurious_ast_systemerror(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython 3.11 can raise SystemError('AST constructor recursion depth mismatch') from the literal_eval that
    np.load parses a header with (python/cpython#106905; it failed a DataLoader worker here once): one retry.
    A SystemError that persists still surfaces."""
    import io

    from distgan.data import records

    buf = {}
    for name, arr in (
        ("images.npy", np.arange(8, dtype=np.uint8).reshape(2, 2, 2)),
        ("labels.npy", np.array([3, 4])),
    ):
        b = io.BytesIO()
        np.save(b, arr)
        buf[name] = b.getvalue()
    real_load, calls = np.load, []

    def flaky(*a: object, **k: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=198, after=218)")
        return real_load(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(records.np, "load", flaky)
    images, labels = records.decode_block(buf)
    assert images.shape == (2, 2, 2) and labels.tolist() == [3, 4] and len(calls) == 3

    def broken(*a: object, **k: object) -> object:
        raise SystemError("persistent")

    monkeypatch.setattr(records.np, "load", broken)
    with pytest.raises(SystemError, match="persistent"):
        records.decode_block(buf)


def test_an_old_conditional_stylegan2_d_is_refused_naming_keys_and_the_way_on(acc, tmp_path: Path) -> None:
    """A conditional stylegan2 checkpoint from before D's label mapping (D.embed.*): one line naming the keys,
    the cause and the warm start that does work."""
    from distgan.run.checkpoint import Value
    from tests.unit.test_trainer import make_trainer

    over = [
        "model.arch=stylegan2",
        "model.num_classes=10",
        "model.noise_dim=8",
        "model.stylegan2.w_dim=8",
        "model.stylegan2.mapping_layers=1",
        "model.stylegan2.channel_base=64",
        "model.stylegan2.channel_max=8",
        "train.batch_size=4",
    ]
    tr = make_trainer(over)
    state = tr.state_dict()
    state["D"] = {k: v for k, v in state["D"].items() if not k.startswith("mapping.")}
    state["D"]["embed.weight"] = torch.zeros(10, 8)  # the old D's plain label embedding
    ck = Checkpointer(CkptConfig(keep=5), tmp_path, acc, {"name": "t"})
    ck.register("trainer", Value(state))
    path = ck.save(10)
    ck2 = Checkpointer(CkptConfig(keep=5, resume=str(path)), tmp_path / "other", acc, {"name": "t"})
    ck2.register("trainer", tr)
    with pytest.raises(CheckpointError) as err:
        ck2.load(ck2.find_resume())
    msg = str(err.value)
    assert "\n" not in msg and "state.pt" in msg and "D's weights do not fit" in msg
    assert "unexpected embed.weight" in msg and "missing mapping." in msg and "init_skip=['mapping.*']" in msg


# -- messages that say what is true (issue 45) ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-test", "0"], "--n-test 0: give at least one image"),
        (["--seed", "-1"], "--seed -1: give a seed in 0..4294967294"),
        (["--n", "1000000000"], r"--n 1000000000 --n-test 10000: the set takes 2220.3 GiB in memory"),
    ],
)
def test_stackedmnist_numbers_are_named_by_their_flag(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    """--n-test 0 blamed --n, --seed -1 ended in numpy's message, --n 10^9 in an _ArrayMemoryError: each is
    refused before MNIST is read, naming the flag (and the memory it would take)."""
    import re

    from distgan.cli import main

    assert main(["data", "stackedmnist", "--out", str(tmp_path / "s"), *args]) == 2
    got = capsys.readouterr()
    out = " ".join((got.out + got.err).split())
    assert re.search(message, out), out
    assert not (tmp_path / "s").exists()


def test_a_mistyped_pkl_path_is_said_not_to_exist(tmp_path: Path, capsys) -> None:
    """It said "is not a checkpoint folder (no state.pt)" for `--ckpt net.pkl` and train.init_from=net.pkl."""
    from distgan.cli import main
    from distgan.run.weights import read_weights

    missing = tmp_path / "network-snapshot-000100.pkl"
    assert main(["sample", "--ckpt", str(missing), "--out", str(tmp_path / "x.png")]) == 2
    assert f"{missing} does not exist" in capsys.readouterr().err
    for path in (missing, tmp_path / "no-such-run" / "final"):
        with pytest.raises(ConfigError, match=f"train.init_from={path}: does not exist"):
            read_weights(path)
