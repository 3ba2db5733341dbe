"""Real launches: python, accelerate launch with two gloo ranks, torchrun; distributed correctness and failure."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, accelerate_launch, free_port, run, train_cmd
from tests.helpers.compare import UPDATE_RTOL, assert_same_updates, worst_update_error

pytestmark = pytest.mark.slow
SMALL = [
    "model.g_hidden=[64]",
    "model.d_hidden=[64]",
    "train.log_every=5",
    "train.sample_every_epochs=1",
    "train.print_every_epochs=1",
]


CONV = [
    "model.g_channels=8",
    "model.d_channels=8",
    "model.spectral_norm=true",
    "model.num_classes=10",
    "model.init_std=0.02",
    "train.loss=hinge",
    "train.r1_gamma=1.0",
    "train.r1_every=2",
    "train.augment=color,translation,cutout",
    "train.d_steps=2",
    "train.ema_kimg=0.01",
    "train.batch_size=16",
    "train.max_steps=6",
]
"""Everything a rank could get wrong at once: cross-rank BN (conditional), SN buffers, projection D, lazy R1
(double backward through DDP), DiffAugment on the global batch, two D steps per G step, EMA with buffers."""
BUFFERS = ("_u", "_v", "running_mean", "running_var", "num_batches_tracked")


ADA = [
    "train.augment=ada",
    "train.ada_p=0.5",
    "train.ada_kimg=0.2",
    "train.ada_interval=2",
    "train.ada_target=0.3",
]
STYLEGAN2 = [
    "model.spectral_norm=false",
    "model.stylegan2.w_dim=16",
    "model.stylegan2.mapping_layers=2",
    "model.stylegan2.channel_base=128",
    "model.stylegan2.channel_max=8",
    "model.mbstd_group=1",
    "train.pl_every=2",
    "train.style_mixing=0.5",
    "train.augment=ada",
    "train.ada_p=0.3",
    "train.d_steps=1",
    "train.loss=ns",
]
R3GAN = [
    "model.spectral_norm=false",
    "model.r3gan.channel_base=112",
    "model.r3gan.channel_max=16",
    "train.loss=rpgan",
    "train.r2_gamma=1.0",
]
PACKED = [
    "model.num_classes=0",
    "model.d_pack=2",
    "model.mbstd_channels=1",
    "model.mbstd_group=1",
    "train.loss=rpgan",
    "train.r2_gamma=1.0",
]
NO_BN = ["model.arch=dcgan", *CONV, "model.g_norm=none", "model.spectral_norm=false"]
CASES = {
    "mlp": ["train.batch_size=16", "train.max_steps=6"],
    "dcgan": ["model.arch=dcgan", *CONV],
    "resnet": ["model.arch=resnet", *CONV],
    "ada": ["model.arch=dcgan", *CONV, *ADA],
    "stylegan2": ["model.arch=stylegan2", *CONV, *STYLEGAN2],
    "r3gan": ["model.arch=r3gan", *CONV, *R3GAN],
    "packed": ["model.arch=dcgan", *CONV, *PACKED],
    "bn_per_rank": ["model.arch=dcgan", *CONV, "model.sync_bn=false"],
    "whole_batch": NO_BN,
    "micro_batches": [*NO_BN, "train.batch_per_device=4"],
}
"""Every configuration the 2-ranks = 1-process tests compare, trained in one launch of each kind (tests/helpers/
steps.py `cases`): two launches instead of two per test, each of which starts three interpreters."""
TRAJECTORIES = pytest.mark.xdist_group("trajectories")  # one worker runs the two launches for all of them


@pytest.fixture(scope="session")  # a module scope is set up again when a worker interleaves other modules
def trajectories(tmp_path_factory) -> Path:
    """OUT/{one,two}/CASE/rank{r}.pt: every case's trajectory in 1 process and in 2 gloo ranks."""
    out = tmp_path_factory.mktemp("trajectories")
    args = [str(ROOT / "tests/helpers/steps.py"), "cases"]
    for kind in ("one", "two"):
        (out / kind).mkdir()
        (out / kind / "cases.json").write_text(json.dumps(CASES))
    one = run([sys.executable, *args, str(out / "one")], timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = accelerate_launch([*args, str(out / "two")], timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    return out


def _case(trajectories: Path, name: str) -> tuple[dict, dict, dict]:
    """(1 process, rank 0, rank 1) of one case."""
    ref = torch.load(trajectories / "one" / name / "rank0.pt", weights_only=True)
    r0, r1 = (torch.load(trajectories / "two" / name / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    return ref, r0, r1


def test_python_single_process_run_writes_outputs(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=400)
    res = run(
        train_cmd(
            "configs/mnist_mlp.yaml",
            f"data.path={data}",
            "train.epochs=2",
            f"train.out_dir={tmp_path}",
            "train.run_name=r",
            *SMALL,
        )
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "r"
    assert (out / "config.yaml").is_file() and (out / "final" / "G.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 24]
    assert all(r["img_per_s"] > 0 and 0 < r["d_real"] < 1 for r in rows)
    for name in ("strip_epoch0001", "grid_epoch0002", "grid_final"):
        assert (out / "samples" / f"{name}.png").is_file()
    from PIL import Image

    assert Image.open(out / "samples" / "strip_final.png").size == (10 * 30 + 2, 32)
    assert Image.open(out / "samples" / "grid_final.png").size == (8 * 30 + 2, 8 * 30 + 2)
    # not a terminal: plain timestamped lines, no control sequences
    assert "\x1b[" not in res.stdout, repr(res.stdout[res.stdout.find("\x1b[") - 300 :][:400])
    assert "Epoch: 0002" in res.stdout and "img/s" in res.stdout


@pytest.mark.numeric
@TRAJECTORIES
def test_two_ranks_match_one_process_and_each_other(trajectories: Path) -> None:
    ref, r0, r1 = _case(trajectories, "mlp")
    assert r0["world"] == 2
    for net in ("G", "D"):
        for k in ref[net]:  # the replicas of one run: the same kernels, bit-identical
            assert torch.equal(r0[net][k], r1[net][k]), f"ranks differ in {net}.{k}"
    # 2 ranks of batch 8 against 1 process of batch 16: other GEMM shapes, so other kernels; compared by the
    # relative error of each update (tests/helpers/compare.py), which a wrong slice or reduction makes O(1)
    flat = {k: {f"{n}.{p}": v for n in ("G", "D") for p, v in d[n].items()} for k, d in (("two", r0), ("one", ref))}
    assert_same_updates(flat["two"], flat["one"], ref["init"])
    for opt in ("opt_g", "opt_d"):
        for pid, state in r0[opt]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, r1[opt]["state"][pid][key]), f"{opt} state {pid}.{key} differs"
            assert int(state["step"]) == 6
    # D is all-reduced once per step (its own phase), never in G's phase
    assert r0["calls"] == {"G": 6, "D": 6}


def _replicas_equal_and_updates_match(ref: dict, r0: dict, r1: dict) -> None:
    """The two ranks' replicas bit-identical; their updates those of the one process (over the elements whose
    gradient is more than float noise: tests/helpers/compare.py says why)."""
    for net in ("G", "D", "G_ema"):
        for k in r0[net]:
            assert torch.equal(r0[net][k], r1[net][k]), f"ranks differ in {net}.{k}"
    params, _ = _split(r0)
    ref_params, _ = _split(ref)
    keep = {k: ~v for k, v in ref["no_signal"].items()}
    left_out = sum(int(v.sum()) for v in ref["no_signal"].values())
    assert left_out <= 0.01 * sum(v.numel() for v in ref_params.values()), left_out  # a few elements, not tensors
    assert_same_updates(params, ref_params, {k: ref["init"][k] for k in ref_params}, keep=keep)


def _split(d: dict) -> tuple[dict, dict]:
    flat = {f"{n}.{k}": v for n in ("G", "D") for k, v in d[n].items()}
    params = {k: v for k, v in flat.items() if not k.endswith(BUFFERS)}
    return params, {k: v for k, v in flat.items() if k.endswith(BUFFERS)}


@pytest.mark.numeric
@TRAJECTORIES
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_conv_families_two_ranks_match_one_process(trajectories: Path, arch: str) -> None:
    ref, r0, r1 = _case(trajectories, arch)
    for net in ("G", "D", "G_ema"):  # replicas of one run, buffers included: bit-identical
        for k in r0[net]:
            assert torch.equal(r0[net][k], r1[net][k]), f"ranks differ in {net}.{k}"
    params, buffers = _split(r0)
    ref_params, ref_buffers = _split(ref)
    init = {k: ref["init"][k] for k in ref_params}
    assert_same_updates(params, ref_params, init)  # the update comparison of tests/helpers/compare.py
    assert {k for k in buffers if "running" in k} and {k for k in buffers if k.endswith("_u")}
    for k, v in ref_buffers.items():
        # BN statistics are means over the global batch and SN vectors a power iteration on the same
        # weights: both are smooth functions of the parameters compared above, so they agree to float noise
        assert torch.allclose(buffers[k].double(), v.double(), rtol=1e-3, atol=1e-5), k


@pytest.mark.numeric
@TRAJECTORIES
def test_ada_two_ranks_match_one_process_including_p(trajectories: Path) -> None:
    """ADA in place of DiffAugment, p adapting every 2 D steps from the all-reduced sign statistic: the same p
    on both ranks and in one process, and the same updates."""
    ref, r0, r1 = _case(trajectories, "ada")
    p = [d["augment"]["p"] for d in (ref, r0, r1)]
    assert p[0] == p[1] == p[2] and p[0] != 0.5, p  # 6 D steps: 3 moves of 0.16 (16 img x 2 D steps / 200)
    assert torch.equal(r0["augment"]["gen"], r1["augment"]["gen"]) and torch.equal(
        ref["augment"]["gen"], r0["augment"]["gen"]
    )
    params, _ = _split(r0)
    ref_params, _ = _split(ref)
    assert_same_updates(params, ref_params, {k: ref["init"][k] for k in ref_params})


@pytest.mark.numeric
@TRAJECTORIES
def test_stylegan2_two_ranks_match_one_process_including_path_length_mean(trajectories: Path) -> None:
    """StyleGAN2 with mixing, per-layer noise, lazy R1 and path length every 2nd G step, conditional, with
    ADA: the same pl running mean on both ranks and in one process, and the same updates. Minibatch std groups
    of 1: its groups stride over each rank's batch as stylegan2-ada's do, so larger groups are per rank by
    design (docs/models.md); the tracked w_avg is drawn for the global batch and is the same everywhere."""
    ref, r0, r1 = _case(trajectories, "stylegan2")
    means = [float(d["stylegan"]["pl_mean"]) for d in (ref, r0, r1)]
    assert means[0] > 0 and means[1] == means[2], means  # 3 path-length steps of 6 moved it, alike on both
    assert means[0] == pytest.approx(means[1], rel=1e-4), means
    w = [d["G"]["mapping.w_avg"] for d in (ref, r0, r1)]  # truncation's centre, tracked as the reference does
    assert w[0].abs().sum() > 0 and torch.allclose(w[0], w[1], rtol=1e-4, atol=1e-6), w
    _replicas_equal_and_updates_match(ref, r0, r1)


@pytest.mark.numeric
@TRAJECTORIES
def test_r3gan_two_ranks_match_one_process(trajectories: Path) -> None:
    """R3GAN with RpGAN (G's phase runs D on the reals too), R1 and R2 from one input-gradient backward through
    DDP, conditional, DiffAugment, two D steps per G step: the same updates on 2 ranks as in one process."""
    ref, r0, r1 = _case(trajectories, "r3gan")
    assert any(".conv2.weight" in k for k in r0["D"]) and "embed.weight" in r0["D"]  # R3GAN's conditional D
    _replicas_equal_and_updates_match(ref, r0, r1)


@pytest.mark.numeric
@TRAJECTORIES
def test_packed_dcgan_two_ranks_match_one_process(trajectories: Path) -> None:
    """PacGAN's packing (packs of 2, formed within each rank's batch) with minibatch std, RpGAN and R1 + R2 on
    the packed inputs through DDP, unconditional: the same updates on 2 ranks as in one process. Minibatch std
    groups of 1, as in the stylegan2 test: larger groups are per rank by design."""
    ref, r0, r1 = _case(trajectories, "packed")
    assert [v.shape[1] for k, v in r0["D"].items() if k.startswith("downs.0.") and v.dim() == 4] == [2]
    _replicas_equal_and_updates_match(ref, r0, r1)


@pytest.mark.numeric
@TRAJECTORIES
def test_accumulation_one_process_four_micro_equals_two_ranks_two_equals_one_batch(
    trajectories: Path,
) -> None:
    """train.batch_per_device=4 at batch 16: 1 process x 4 micro-batches, 2 ranks x 2 micro-batches and 1
    process x 1 batch make the same updates (dcgan without batch norm; conditional, hinge, lazy R1, DiffAugment
    drawn for the global batch, 2 D steps per G step, EMA), and the images counted are the same."""
    ref = _case(trajectories, "whole_batch")[0]
    acc1, r0, _ = _case(trajectories, "micro_batches")
    assert ref["augment"]["gen"].equal(acc1["augment"]["gen"]) and ref["augment"]["gen"].equal(r0["augment"]["gen"])
    ref_params, _ = _split(ref)
    init = {k: ref["init"][k] for k in ref_params}
    for other in (acc1, r0):
        params, _ = _split(other)
        assert_same_updates(params, ref_params, init)
    assert r0["calls"]["D"] > 0 and r0["calls"]["G"] > 0


@pytest.mark.numeric
@TRAJECTORIES
def test_per_rank_batch_norm_is_what_the_conv_test_would_catch(trajectories: Path) -> None:
    """Negative control: with each rank's own BN statistics (model.sync_bn=false) the same comparison fails."""
    ref, r0, _ = _case(trajectories, "bn_per_rank")
    params, _ = _split(r0)
    ref_params, _ = _split(ref)
    assert worst_update_error(params, ref_params, {k: ref["init"][k] for k in ref_params}) > 4 * UPDATE_RTOL


def test_two_ranks_two_workers_read_each_sample_once(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300, block_size=100)  # 4 even shards for 2 ranks x 2 workers
    res = accelerate_launch(
        [str(ROOT / "tests/helpers/steps.py"), "epoch", str(tmp_path), f"data.path={data}", "data.workers=2"]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [p["batches"] for p in per_rank] == [12, 12]  # global batch 100 = 2 x 50
    keys = torch.cat([p["index"].flatten() for p in per_rank]).tolist()
    assert sorted(keys) == list(range(1200))  # the whole dataset, no duplicates


def test_accelerate_launch_two_ranks_trains_on_uneven_shards(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=500)  # three shards: 500, 500, 200 samples
    args = [
        str(ROOT / "distgan/train.py"),
        "configs/debug.yaml",
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "train.run_name=r",
        *SMALL,
    ]
    res = accelerate_launch(args)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 24 and rows[-1]["images_seen"] == 2400  # global batch 100 = 2 x 50
    assert "2 process(es)" in res.stdout
    assert res.stdout.count("done:") == 1  # only rank 0 reports


def test_accelerate_launch_one_process(make_shards, tmp_path: Path) -> None:
    data = make_shards(600, shard_size=300)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
    ]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    args = [
        "configs/mnist_mlp.yaml",
        f"data.path={data}",
        "train.epochs=1",
        f"train.out_dir={tmp_path}",
        "train.run_name=r",
    ]
    res = run([*cmd, *train_cmd(*args, *SMALL)[1:]])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 1 process(es)" in res.stdout and (tmp_path / "r" / "final" / "G.safetensors").is_file()


def test_torchrun_two_processes(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    res = run(
        [
            *cmd,
            *train_cmd(
                "configs/mnist_mlp.yaml",
                f"data.path={data}",
                "train.epochs=1",
                f"train.out_dir={tmp_path}",
                "train.run_name=r",
                *SMALL,
            )[1:],
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 2 process(es)" in res.stdout and (tmp_path / "r" / "final" / "D.safetensors").is_file()


def test_nan_on_one_rank_stops_the_whole_job(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300)
    t0 = time.time()
    res = accelerate_launch(
        [
            str(ROOT / "tests/helpers/steps.py"),
            "nan",
            str(tmp_path),
            f"data.path={data}",
            "train.debug_checks=true",
            "data.workers=0",
        ],
        timeout=240,
    )
    assert res.returncode != 0
    assert time.time() - t0 < 180
    # rank 1 goes non-finite first; D's all-reduce then carries the NaN to rank 0 within the same step
    assert re.search(r"TrainingAborted: non-finite loss on rank\(s\) \[(0, )?1\] at step 2", res.stderr + res.stdout)


def test_bad_shard_in_raise_mode_stops_the_whole_job(make_shards, tmp_path: Path) -> None:
    data = make_shards(1200, shard_size=300)
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    raw = (bad / "train-000002.tar").read_bytes()
    (bad / "train-000002.tar").write_bytes(raw[: len(raw) // 3])
    t0 = time.time()
    args = [
        str(ROOT / "distgan/train.py"),
        "configs/mnist_mlp.yaml",
        f"data.path={bad}",
        "data.on_error=raise",
        f"train.out_dir={tmp_path}",
        *SMALL,
    ]
    res = accelerate_launch(args, timeout=240)
    assert res.returncode != 0
    assert time.time() - t0 < 180
    text = res.stderr + res.stdout
    assert "train-000002.tar" in text and "stopping: DataError" in text and "rank" in text


def test_foreign_png_shards_are_trained_on(tmp_path: Path) -> None:
    from tests.unit.test_shards_and_loader import write_foreign

    write_foreign(tmp_path / "f", n=400, rgb=True)
    res = run(
        train_cmd(
            "configs/debug.yaml",
            f"data.path={tmp_path / 'f'}",
            "model.image_shape=[3,28,28]",
            "train.batch_size=50",
            f"train.out_dir={tmp_path}",
            "train.run_name=r",
            *SMALL,
        )
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 16 and rows[-1]["skipped_samples"] == 0
    from PIL import Image

    assert Image.open(tmp_path / "r" / "samples" / "grid_final.png").mode == "RGB"


def test_bad_config_fails_before_training(make_shards, tmp_path: Path) -> None:
    res = run(train_cmd("configs/mnist_mlp.yaml", "train.bach_size=3"))
    assert res.returncode == 2 and "did you mean 'train.batch_size'" in res.stderr
    data = make_shards(300, shard_size=100)
    res = run(train_cmd("configs/mnist_mlp.yaml", f"data.path={data}", "model.image_shape=[1,32,32]"))
    assert res.returncode == 2 and "model.image_shape" in res.stderr
    res = accelerate_launch(
        [str(ROOT / "distgan/train.py"), "configs/mnist_mlp.yaml", f"data.path={data}", "train.batch_size=75"]
    )
    assert res.returncode != 0 and "not divisible by the 2 processes" in res.stderr


def test_accelerate_launch_without_a_config_uses_the_allotted_cores(make_shards, tmp_path: Path) -> None:
    """`accelerate launch train.py` with no accelerate config sets OMP_NUM_THREADS=1 on its own; one process per
    machine gets all its cores unless the user chose a thread count."""
    import os
    import subprocess

    data = make_shards(600, shard_size=300)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env |= {"HF_HOME": str(tmp_path / "hf"), "PYTHONUNBUFFERED": "1"}  # no default accelerate config either
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--main_process_port",
        str(free_port()),
        str(ROOT / "distgan/train.py"),
        "configs/debug.yaml",
        f"data.path={data}",
        f"train.out_dir={tmp_path}",
        "train.max_steps=2",
        "track.wandb=disabled",
        "track.plot=false",
    ]
    cores = len(os.sched_getaffinity(0))
    res = subprocess.run([*cmd, "train.run_name=a"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{cores} threads/process ({cores} cores of this machine over 1 local process(es)" in res.stdout
    env["OMP_NUM_THREADS"] = "1"  # the user's choice wins
    res = subprocess.run([*cmd, "train.run_name=b"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0 and "1 threads/process (OMP_NUM_THREADS)" in res.stdout


@pytest.mark.parametrize("preset", ["rgb64_dcgan", "rgb64_resnet"])
def test_rgb64_presets_train_on_generated_images(tmp_path: Path, preset: str) -> None:
    """The 64x64 RGB presets as shipped (widths, losses, R1, DiffAugment, d_steps), on generated RGB shards,
    a few steps at a small batch; with 2 gloo ranks for the resnet (cross-rank BN at full width)."""
    from distgan.data.shard_writer import write_shards
    from tests.conftest import synthetic

    write_shards(tmp_path / "data", {"train": synthetic(64, shape=(64, 64, 3))}, [], "generated", 32, 16)
    args = [
        f"configs/{preset}.yaml",
        f"data.path={tmp_path / 'data'}",
        f"train.out_dir={tmp_path}",
        "train.run_name=r",
        "train.batch_size=8",
        "train.max_steps=6",
        "train.log_every=2",
        "train.sample_every=6",
        "track.wandb=disabled",
        "train.r1_every=2",
        "eval.every=0",
    ]
    if preset == "rgb64_resnet":
        res = accelerate_launch([str(ROOT / "distgan/train.py"), *args])
    else:
        res = run(train_cmd(*args))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss_d" in r] == [2, 4, 6]
    assert all(np.isfinite(r["loss_d"]) for r in rows if "loss_d" in r)
    from PIL import Image

    grid = Image.open(tmp_path / "r" / "samples" / "grid_final.png")
    assert grid.size == (8 * 66 + 2, 8 * 66 + 2) and grid.mode == "RGB"
