"""Issue 55, in-process: what careless and hostile users did to distgan at fcf9e97 and got a silent wrong result,
a hang, a traceback or a misleading line (one test per case; docs/robustness.md maps each to its number)."""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.cli import main
from distgan.config import ConfigError
from distgan.configure import load_config
from tests.unit.test_pickle_reader import Rec, g_kwargs, write
from tests.unit.test_trainer import make_trainer


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.fixture(scope="module")
def dcgan_ckpt(tmp_path_factory) -> Path:
    """A checkpoint folder of a tiny dcgan, written in this process by the run's own Checkpointer."""
    from accelerate.state import AcceleratorState

    from distgan.run.checkpoint import Checkpointer
    from distgan.training.build import register

    AcceleratorState._reset_state(True)
    folder = tmp_path_factory.mktemp("dcgan") / "checkpoints"
    trainer = make_trainer(["model.arch=dcgan", "model.g_channels=4", "model.d_channels=4", "train.batch_size=8"])
    ckpt = Checkpointer(trainer.cfg.ckpt, folder, trainer.acc, trainer.cfg.to_dict())
    register(ckpt, [trainer, *trainer.gan_step.parts, trainer.tracker])
    path = ckpt.save(0)
    AcceleratorState._reset_state(True)
    return path


def test_1_resume_takes_the_configs_lr_betas_and_eps(tmp_path: Path, caplog) -> None:
    """#1: the checkpoint's param groups used to win over new optim.* values (lr 2e-4 logged after asking for
    0.05); eps was not even named in the warning."""
    from distgan.run.checkpoint import check_resumable

    old = make_trainer(["optim.lr_decay=none"])
    old.train_step(torch.rand(100, 1, 28, 28), torch.randn(100, 16))  # Adam has moments to keep
    state = old.state_dict()
    new_values = ["optim.lr_g=0.05", "optim.lr_d=0.03", "optim.betas=[0.1,0.9]", "optim.eps=1e-5"]
    new = make_trainer(["optim.lr_decay=none", *new_values])
    new.load_state_dict(state)
    for opt, lr in ((new.opt_g, 0.05), (new.opt_d, 0.03)):
        for group in opt.param_groups:
            assert (group["lr"], group["betas"], group["eps"]) == (lr, (0.1, 0.9), 1e-5)
    assert new.opt_g.state_dict()["state"]  # Adam's moments still come from the checkpoint
    with caplog.at_level(logging.WARNING, logger="distgan"):
        check_resumable(old.cfg.to_dict(), new.cfg)
    assert "optim.eps: checkpoint 1e-08, now 1e-05" in caplog.text and "optim.lr_g" in caplog.text


def test_2_a_branched_run_gets_tracker_runs_of_its_own(dcgan_ckpt: Path, tmp_path: Path) -> None:
    """#2: run B started from run A's checkpoint took A's tracker ids (B's MLflow: "Run with id=... not found"
    and nothing logged; B's wandb history in A's run). Now B keeps its own ids and names its parent."""
    from accelerate import Accelerator
    from mlflow import MlflowClient

    from distgan.run.checkpoint import Checkpointer
    from distgan.run.checkpoint_read import read_checkpoint
    from distgan.run.tracking import RunTracker

    a_ids = read_checkpoint(dcgan_ckpt)["objects"]["tracker"]
    cfg = load_config(None, ["track.backends=[mlflow]", "track.wandb=disabled"])
    run_b = tmp_path / "b"
    run_b.mkdir()
    tracker = RunTracker(cfg, run_b)
    ckpt = Checkpointer(cfg.ckpt, run_b / "checkpoints", Accelerator(cpu=True), cfg.to_dict())
    ckpt.register("tracker", tracker, run_bound=True)
    ckpt.load(dcgan_ckpt, {"objects": {"tracker": {"wandb_id": "aaaa", "mlflow_id": "f" * 32}}, "world": 1})
    assert tracker.run_id != "aaaa" and tracker.mlflow_id == ""
    tracker.start(10, 0)
    tracker.log_metrics(1, {"loss_d": 0.5})
    tracker.close()
    run_id = (run_b / "mlflow_id").read_text().strip()
    client = MlflowClient(f"sqlite:///{run_b / 'mlflow.db'}")
    assert [m.value for m in client.get_metric_history(run_id, "loss_d")] == [0.5]
    assert client.get_run(run_id).data.tags["distgan.branched_from"] == str(dcgan_ckpt.resolve())
    parent = json.loads((run_b / "branched_from.json").read_text())
    assert parent["checkpoint"] == str(dcgan_ckpt.resolve()) and parent["mlflow_id"] == "f" * 32
    assert a_ids is not None  # the source checkpoint does carry tracker ids (they were the problem)
    # the run's own checkpoint (same folder) still restores its ids: a resume continues its tracker runs
    own = ckpt.save(3)
    again = RunTracker(cfg, run_b)
    ckpt.objects["tracker"].obj = again
    ckpt.load(own)
    assert again.mlflow_id == run_id


def test_3_an_apostrophe_in_the_project_reaches_mlflow(tmp_path: Path) -> None:
    """#3: track.project="bob's gan" with MLflow: "Invalid clause(s) in filter string", nothing logged."""
    from mlflow import MlflowClient

    from distgan.run.tracking import RunTracker

    cfg = load_config(None, ["track.backends=[mlflow]", "track.wandb=disabled", "track.project=bob's gan"])
    for _ in range(2):  # the second time finds the experiment the first made
        tracker = RunTracker(cfg, tmp_path)
        tracker.start(10, 0)
        tracker.log_metrics(1, {"loss_d": 0.25})
        tracker.close()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bob's gan")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss_d")] == [0.25, 0.25]


def test_4_16_latents_are_checked_as_float32_and_read_from_npz(dcgan_ckpt: Path, tmp_path: Path, capsys) -> None:
    """#4: float64 1e300 passed the finite check and became inf ("wrote 2 samples" of NaN). #16: the .npz that
    `sample --format npz` writes was an AttributeError traceback as --z."""
    z = np.zeros((2, 16))
    z[1, 3] = 1e300
    np.save(tmp_path / "big.npy", z)
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(dcgan_ckpt),
                "--z",
                str(tmp_path / "big.npy"),
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    assert "float32" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(dcgan_ckpt),
                "--n",
                "3",
                "--format",
                "npz",
                "--out",
                str(tmp_path / "a.npz"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(dcgan_ckpt),
                "--z",
                str(tmp_path / "a.npz"),
                "--format",
                "npz",
                "--out",
                str(tmp_path / "b.npz"),
            ]
        )
        == 0
    )
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(a["x"], b["x"])
    np.savez(tmp_path / "noz.npz", x=np.zeros((2, 16)))
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(dcgan_ckpt),
                "--z",
                str(tmp_path / "noz.npz"),
                "--out",
                str(tmp_path / "c.png"),
            ]
        )
        == 2
    )
    assert "without a 'z' array (it has x)" in capsys.readouterr().err


def test_6_a_record_shared_under_many_names_is_refused_at_once(tmp_path: Path) -> None:
    """#6: a 3.5 KB pickle whose G shares one submodule twice at each of 40 levels made `import`, `sample` and
    `init_from` walk 2^40 paths (still spinning after 60 s)."""
    from distgan.run.errors import PickleRefused
    from distgan.run.stylegan2_ada import import_state

    node = Rec("Block", {})
    for _ in range(40):
        node = Rec("Block", {"_modules": {"a": node, "b": node}})
    write(
        tmp_path / "shared.pkl",
        {"G": Rec("Generator", {"_init_kwargs": g_kwargs(), "_modules": {"x": node}})},
    )
    assert (tmp_path / "shared.pkl").stat().st_size < 10_000
    t0 = time.perf_counter()
    with pytest.raises(PickleRefused, match="same record as") as err:
        import_state(tmp_path / "shared.pkl")
    assert time.perf_counter() - t0 < 10 and "\n" not in str(err.value)


def test_7_samples_are_generated_in_batches(dcgan_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    """#7: `sample --n 50000` ran G on all N at once (1.4 GB more from 1,000 to 60,000 samples of a tiny dcgan).
    Now G sees GENERATE_BATCH latents at a time and the output equals the one-pass result."""
    from distgan.run import sample
    from distgan.run.sample import generate, latents, load_generator

    G, _ = load_generator(dcgan_ckpt)
    seen: list[int] = []
    G.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    monkeypatch.setattr(sample, "load_generator", lambda *a, **k: (G, True))
    monkeypatch.setattr(sample, "GENERATE_BATCH", 8)
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(dcgan_ckpt),
                "--n",
                "20",
                "--format",
                "npz",
                "--float",
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 0
    )
    assert seen == [8, 8, 4]
    whole = generate(G, latents(G, 20, 0), None)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["x"], whole.numpy())


def huge_npy() -> bytes:
    """A valid .npy header declaring 10^13 images of 28x28, over 16 bytes of data."""
    buf = io.BytesIO()
    header = {"descr": "|u1", "fortran_order": False, "shape": (10**13, 28, 28)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\x00" * 16


def test_8_a_npy_header_declaring_terabytes_is_a_bad_record(make_shards, tmp_path: Path) -> None:
    """#8: `data verify` died with MemoryError and training under data.on_error=skip stopped with a traceback."""
    from distgan.config import DataConfig
    from distgan.data.loader import Loader
    from distgan.data.records import load_npy
    from distgan.data.shard_writer import verify
    from tests.unit.test_shards_and_loader import epoch_arrays

    with pytest.raises(ValueError, match=r"declares uint8 \(10000000000000, 28, 28\)"):
        load_npy(huge_npy())
    folder = make_shards(1200, shard_size=400, block_size=100)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_bytes((folder / "manifest.json").read_bytes())
    for tar in folder.glob("*.tar"):
        (bad / tar.name).write_bytes(tar.read_bytes())
    with tarfile.open(folder / "train-000001.tar") as src, tarfile.open(bad / "train-000001.tar", "w") as dst:
        for info in src:
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name.endswith("00000.images.npy"):
                data = huge_npy()
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    problems = verify(bad, log=lambda m: None)
    assert len(problems) == 1 and "train-000001.tar" in problems[0], problems
    assert main(["data", "verify", str(bad)]) == 1
    loader = Loader(DataConfig(path=str(bad), workers=0), 100, 0, 1, 0, (1, 28, 28))
    _, _, index, skipped = epoch_arrays(loader)
    assert len(index) == 1200 and skipped >= 100


def test_9_a_width_no_machine_holds_is_refused_by_its_key() -> None:
    """#9: model.g_channels=100000000 was an allocator RuntimeError traceback from train.py."""
    from distgan.configure import check_run

    cfg = load_config("configs/mnist_dcgan.yaml", ["model.g_channels=100000000"])
    with pytest.raises(ConfigError, match=r"^model\.g_channels=100000000: G would hold 3\.\d+e\+17"):
        check_run(cfg, 1, 24 * 2**30)
    check_run(load_config("configs/mnist_dcgan.yaml"), 1, 24 * 2**30)  # the preset itself fits


@pytest.mark.parametrize(
    "override",
    ["model.sections=5", "model.sections=[1,2]", "model.sections.stylegan2=5", "model.sections={}"],
)
def test_13_model_sections_is_not_a_key(override: str) -> None:
    """#13: AttributeError/TypeError tracebacks; now one line naming the key and where a family's keys go."""
    with pytest.raises(ConfigError, match=r"model\.sections is not a setting; write a family's settings as"):
        load_config(None, [override])
    assert main(["train", "configs/mnist_stylegan2.yaml", override, "--dry-run"]) == 2


def test_14_paths_are_printed_literally(tmp_path: Path, capsys) -> None:
    """#14: `exp[v2]/ck` lost its `[v2]` (rich markup) and a `[/]` in a path was a MarkupError traceback."""
    for name in ("exp[v2]", "a[/]b", "[red]x"):
        assert main(["sample", "--ckpt", str(tmp_path / name / "ck"), "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / name / "ck") in err and "Traceback" not in err, err


def test_15_verify_says_what_is_missing(tmp_path: Path, capsys) -> None:
    """#15: "1 problem(s); re-create the shards", without saying the manifest or the folder is missing."""
    assert main(["data", "verify", str(tmp_path)]) == 2
    assert f"{tmp_path} has no manifest.json" in capsys.readouterr().err
    assert main(["data", "verify", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_17_18_images_that_are_no_source(tmp_path: Path, capsys) -> None:
    """#17: an .npz of (N,H,W,5) was a PIL TypeError traceback and left an empty .distgan-progress folder. #18:
    one PNG was called "an unreadable or truncated WebDataset shard"."""
    from PIL import Image

    np.savez(tmp_path / "five.npz", x=np.zeros((4, 8, 8, 5), np.uint8))
    out = tmp_path / "out"
    assert main(["data", "images", str(tmp_path / "five.npz"), "--out", str(out), "--size", "8"]) == 2
    assert "has 5 channels per pixel" in capsys.readouterr().err and not out.exists()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "photo.png")
    assert main(["data", "images", str(tmp_path / "photo.png"), "--out", str(out), "--size", "8"]) == 2
    err = capsys.readouterr().err
    assert "one image is not a source" in err and str(tmp_path.resolve()) in err and "WebDataset shard;" not in err
    assert not out.exists()


def test_19_and_float_png_name_the_flag_given(dcgan_ckpt: Path, tmp_path: Path, capsys) -> None:
    """#19: `--trunc-cutoff 3` on a dcgan blamed "--trunc 1.0"; `--float` with PNG output was silently ignored."""
    assert main(["sample", "--ckpt", str(dcgan_ckpt), "--trunc-cutoff", "3", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "--trunc-cutoff 3: truncation needs a stylegan2" in err and "--trunc 1.0" not in err
    assert main(["sample", "--ckpt", str(dcgan_ckpt), "--float", "--out", str(tmp_path / "x.png")]) == 2
    assert "add --format npz" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_smaller_ones(caplog) -> None:
    """An old key and its new name given together (a sweep over both made identical points); augmentation spelt
    `none`; a changed model.mbstd_group on resume named."""
    from distgan.run.checkpoint import check_resumable

    with pytest.raises(ConfigError, match="model.sg_channel_base and model.stylegan2.channel_base name one setting"):
        load_config("configs/mnist_stylegan2.yaml", ["model.sg_channel_base=64", "model.stylegan2.channel_base=128"])
    assert load_config(None, ["train.augment=none"]).train.augment == "none"
    from distgan.training.augment import DiffAugment

    assert DiffAugment(load_config(None, ["train.augment=none"]).train.augment, 0, 0, 1).ops == ()
    with pytest.raises(ConfigError, match="none \\(or an empty value\\) for no augmentation"):
        load_config(None, ["train.augment=nothing"])
    saved = load_config("configs/stackedmnist.yaml").to_dict()
    with caplog.at_level(logging.WARNING, logger="distgan"):
        check_resumable(saved, load_config("configs/stackedmnist.yaml", ["model.mbstd_group=2"]))
    assert "model.mbstd_group: checkpoint 4, now 2" in caplog.text
