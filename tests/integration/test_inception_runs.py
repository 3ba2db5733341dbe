"""The Inception metrics through the CLI and real training runs (2 ranks against one process offline)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.data.shard_writer import Split, write_shards
from distgan.eval import inception
from distgan.utils.files import sha256_file
from tests.conftest import ROOT, accelerate_launch, run


def _sets(root: Path, grey: bool) -> tuple[Path, Path]:
    """Real: 32 coloured noise images; fake: 12 of them again and 12 brighter ones (PR neither 0 nor 1; KID's
    subsets of 16 fit). Each image is an Inception forward at 299 x 299 on a CPU: the sets are kept small."""
    rng = np.random.default_rng(1)
    real = [np.clip(rng.normal(90 + 40 * (i % 3), 30, (24, 24, 3)), 0, 255).astype(np.uint8) for i in range(32)]
    fake = real[:12] + [np.clip(r.astype(int) + 70, 0, 255).astype(np.uint8) for r in real[12:24]]
    for name, images in (("real", real), ("fake", fake)):
        (root / name).mkdir(parents=True)
        for i, a in enumerate(images):
            Image.fromarray(a[..., 0] if grey else a).save(root / name / f"{i:03d}.png")
    return root / "real", root / "fake"


def _eval_sets(real: Path, fake: Path, weights: Path, cache: Path, *extra: str) -> tuple[dict, str]:
    out = real.parent / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "distgan.cli",
        "eval",
        "--real",
        str(real),
        "--fake",
        str(fake),
        "--weights",
        str(weights),
        "--set",
        f"eval.inception_sha256={sha256_file(weights)}",
        "--set",
        "eval.kid_subset_size=16",
        "--cache-dir",
        str(cache),
        "--json",
        str(out),
        *extra,
    ]
    res = run(cmd, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text()), res.stdout + res.stderr


class _Payload:
    def __reduce__(self):  # what a hostile weights file does: run code when unpickled
        return (os.system, ("touch PWNED",))


def test_eval_two_image_sets_protocol_cache_and_library_numbers(weights: Path, tmp_path: Path) -> None:
    real, fake = _sets(tmp_path / "sets", grey=False)
    report, log = _eval_sets(real, fake, weights, tmp_path / "cache")
    m, proto = report["metrics"], report["protocol"]["inception"]
    assert "Inception features of 32" in log and "inception protocol" in log
    assert proto["weights_sha256"] == sha256_file(weights) and proto["standard_weights"] is False
    assert proto["real_images"] == 32 and proto["samples"] == 24 and proto["library"].startswith("torch-fidelity")
    assert 0 < m["precision_inception"] < 1 and 0 < m["recall_inception"] < 1, m
    assert m["fid_inception"] > 0 and m["is_inception"] >= 1 and "kid_inception_std" in m
    # the same numbers from torch-fidelity's functions on features from its own network
    lib = inception.library()
    state, _ = inception.read_weights(weights, sha256_file(weights))
    net = inception.build_network(state)

    def feats(folder: Path) -> np.ndarray:
        images = np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in sorted(folder.glob("*.png"))])
        return inception.featurize(net, torch.from_numpy(images), 16, torch.device("cpu"))

    f, r = feats(fake), feats(real)
    ft, rt = torch.from_numpy(f[:, :2048]), torch.from_numpy(r[:, :2048])
    fid = lib.fid.fid_statistics_to_metric(
        lib.fid.fid_features_to_statistics(ft), lib.fid.fid_features_to_statistics(rt), verbose=False
    )
    kid = lib.kid.kid_features_to_metric(ft, rt, kid_subset_size=16, verbose=False)
    pr = lib.prc.prc_features_to_metric(ft, rt, verbose=False)
    isc = lib.isc.isc_features_to_metric(torch.from_numpy(f[:, 2048:]))
    assert m["fid_inception"] == pytest.approx(fid["frechet_inception_distance"], rel=1e-4)
    assert m["kid_inception"] == pytest.approx(kid["kernel_inception_distance_mean"], rel=1e-4)
    assert (m["precision_inception"], m["recall_inception"]) == (pr["precision"], pr["recall"])
    assert m["is_inception"] == pytest.approx(isc["inception_score_mean"], rel=1e-4)
    # a second run reads the real statistics from the cache
    again, log = _eval_sets(real, fake, weights, tmp_path / "cache")
    assert "Inception features of" not in log and again["metrics"] == pytest.approx(m, rel=1e-6)


@pytest.mark.skipif(not os.environ.get("DISTGAN_REFERENCE_PYTHON"), reason="needs a Python with torchvision")
def test_equal_to_torch_fidelity_calculate_metrics(weights: Path, tmp_path: Path) -> None:
    """Against the library's own calculate_metrics (image reading, batching and all), run by a Python whose
    torchvision imports (DISTGAN_REFERENCE_PYTHON; see docs/evaluation.md), grey and RGB folders."""
    for grey in (False, True):
        real, fake = _sets(tmp_path / f"grey{grey}", grey=grey)
        ours, _ = _eval_sets(real, fake, weights, tmp_path / "cache")
        res = run(
            [
                os.environ["DISTGAN_REFERENCE_PYTHON"],
                str(ROOT / "benchmarks" / "fidelity_reference.py"),
                str(fake),
                str(real),
                str(weights),
                "16",
            ],
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        ref, m = json.loads(res.stdout.splitlines()[-1]), ours["metrics"]
        pairs = {
            "fid_inception": "frechet_inception_distance",
            "kid_inception": "kernel_inception_distance_mean",
            "precision_inception": "precision",
            "recall_inception": "recall",
            "is_inception": "inception_score_mean",
        }
        for k, theirs in pairs.items():
            assert m[k] == pytest.approx(ref[theirs], rel=1e-4, abs=1e-9), (grey, k, m[k], ref[theirs])


def test_weights_checked_then_read_as_data(weights: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(inception.WeightsError, match=r"sha256 .* is not the expected .*Download it again"):
        inception.read_weights(weights, inception.WEIGHTS_SHA256)
    hostile = tmp_path / "hostile.pth"
    torch.save({"fc.weight": torch.zeros(1), "x": _Payload()}, hostile)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(inception.WeightsError, match="not a state dict of tensors"):
        inception.read_weights(hostile, sha256_file(hostile))  # its sha256 accepted: still data only
    assert not (tmp_path / "PWNED").exists()
    # nothing given, nothing cached, no download: one line that says what to get and how
    real, fake = _sets(tmp_path / "sets", grey=True)
    res = run(
        [
            sys.executable,
            "-m",
            "distgan.cli",
            "eval",
            "--real",
            str(real),
            "--fake",
            str(fake),
            "--set",
            "eval.inception_download=false",
        ],
        env={"TORCH_HOME": str(tmp_path / "torch")},
    )
    assert res.returncode == 2, res.stderr[-2000:]
    line = [x for x in res.stderr.splitlines() if "error" in x.lower()]
    assert len(line) == 1 and inception.WEIGHTS_NAME in line[0] and inception.WEIGHTS_SHA256 in line[0]
    assert "distgan eval weights --fetch" in line[0] and inception.WEIGHTS_URL in line[0]


def test_eval_weights_command(weights: Path, tmp_path: Path) -> None:
    res = run([sys.executable, "-m", "distgan.cli", "eval", "weights", "--path", str(weights)])
    assert res.returncode == 1 and sha256_file(weights) in res.stdout and "NOT" in res.stdout
    res = run([sys.executable, "-m", "distgan.cli", "eval", "weights"], env={"TORCH_HOME": str(tmp_path)})
    assert res.returncode == 1 and "distgan eval weights --fetch" in res.stdout + res.stderr


@pytest.mark.slow
@pytest.mark.numeric
def test_training_on_unlabelled_rgb_two_ranks_agree_with_offline_eval(weights: Path, tmp_path: Path) -> None:
    """Unlabelled RGB data gets the Inception metrics by default; 2 ranks featurise their slices during training,
    keep checkpoints/best by fid_inception, store the protocol; one process offline gets the same numbers."""
    rng = np.random.default_rng(0)
    images = np.clip(rng.normal(120, 50, (256, 16, 16, 3)), 0, 255).astype(np.uint8)
    write_shards(tmp_path / "data", {"train": Split(images, np.zeros(256, np.int64))}, [], "rgb", 128, 64)
    cache, sha = tmp_path / "cache", sha256_file(weights)
    common = [
        f"eval.inception_weights={weights}",
        f"eval.inception_sha256={sha}",
        f"eval.cache_dir={cache}",
        "eval.kid_subset_size=12",
        "eval.n_real=32",
    ]
    args = [
        "configs/debug.yaml",
        f"data.path={tmp_path / 'data'}",
        "model.image_shape=[3,16,16]",
        f"train.out_dir={tmp_path}",
        "train.run_name=r",
        "track.wandb=disabled",
        "train.batch_size=32",
        "train.epochs=1",
        "eval.every=4",
        "eval.n_samples=24",
        "eval.batch_size=12",
        *common,
    ]
    res = accelerate_launch([str(ROOT / "distgan" / "train.py"), *args], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/fid_inception" in r]
    assert [r["step"] for r in evals] == [4, 8] and "eval/fid_mnistcnn" not in evals[0]
    assert {"eval/kid_inception", "eval/precision_inception", "eval/is_inception"} <= set(evals[0])
    best = min(evals, key=lambda r: r["eval/fid_inception"])
    protocol = json.loads((tmp_path / "r" / "eval_protocol.json").read_text())["inception"]
    res = run([sys.executable, "-m", "distgan.cli", "compare", str(tmp_path / "r")], env={"COLUMNS": "400"})
    assert res.returncode == 0 and "fid_inception" in res.stdout and "kid_inception" in res.stdout, res.stdout
    assert protocol["weights_sha256"] == sha and protocol["real_images"] == 32 and protocol["real_split"] == "train"
    out = tmp_path / "e.json"
    res = run(
        [
            sys.executable,
            "-m",
            "distgan.cli",
            "eval",
            "--ckpt",
            str(tmp_path / "r" / "checkpoints" / "best"),
            "--n",
            "24",
            "--json",
            str(out),
            *[a for c in common for a in ("--set", c)],
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Inception features of" not in res.stderr  # the real statistics the 2 ranks cached
    report = json.loads(out.read_text())
    assert report["step"] == best["step"]
    for k in ("fid_inception", "kid_inception", "precision_inception", "recall_inception", "is_inception"):
        assert report["metrics"][k] == pytest.approx(best[f"eval/{k}"], rel=1e-3, abs=1e-4), k


@pytest.mark.parametrize("arch", ["dcgan", "stylegan2"])
def test_non_square_photos_train_sample_evaluate_and_export(weights: Path, tmp_path: Path, arch: str) -> None:
    """64x96 photos -> `data images --size 32 48` -> a 32x48 model: trained with Inception evaluation, its grids
    32x48 tiles, `distgan eval --ckpt` and an export that makes (N, 3, 32, 48)."""
    from distgan.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in range(48):
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{i:03d}.png")
    assert main(["data", "images", str(tmp_path / "photos"), "--out", str(tmp_path / "d"), "--size", "32", "48"]) == 0
    cache, sha = tmp_path / "cache", sha256_file(weights)
    common = [
        f"eval.inception_weights={weights}",
        f"eval.inception_sha256={sha}",
        f"eval.cache_dir={cache}",
        "eval.kid_subset_size=8",
        "eval.n_real=16",
    ]
    size = {
        "dcgan": ["model.g_channels=4", "model.d_channels=4"],
        "stylegan2": [
            "model.stylegan2.w_dim=16",
            "model.stylegan2.channel_base=64",
            "model.stylegan2.channel_max=8",
        ],
    }[arch]
    args = [
        "configs/debug.yaml",
        f"data.path={tmp_path / 'd'}",
        f"model.arch={arch}",
        "model.image_shape=[3,32,48]",
        *size,
        f"train.out_dir={tmp_path}",
        "train.run_name=r",
        "track.wandb=disabled",
        "train.batch_size=8",
        "train.max_steps=4",
        "eval.every=4",
        "eval.n_samples=16",
        "eval.batch_size=8",
        *common,
    ]
    res = run([sys.executable, str(ROOT / "distgan" / "train.py"), *args], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/fid_inception" in r for r in rows)
    grid = Image.open(tmp_path / "r" / "samples" / "grid_final.png")
    assert grid.size == (8 * (48 + 2) + 2, 8 * (32 + 2) + 2)  # 8x8 tiles of 32 high, 48 wide
    ckpt = sorted((tmp_path / "r" / "checkpoints").glob("step-*"))[-1]
    res = run(
        [
            sys.executable,
            "-m",
            "distgan.cli",
            "eval",
            "--ckpt",
            str(ckpt),
            "--n",
            "16",
            *[a for c in common for a in ("--set", c)],
        ]
    )
    assert res.returncode == 0 and "fid_inception" in res.stdout, res.stderr[-2000:]
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    program = torch.export.load(str(tmp_path / "exp" / "generator.pt2")).module()
    assert program(torch.randn(3, 128)).shape == (3, 3, 32, 48)
