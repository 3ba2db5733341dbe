"""Your images in real processes: training on a flat folder, a killed conversion, bounded memory."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgan.cli import main
from distgan.data import images as im
from tests.conftest import ROOT
from tests.unit.test_images import convert, noise_pngs, shard_bytes


def _rss_kib(src: Path, out: Path) -> int:
    code = (
        "import resource, sys\n"
        "from distgan.cli import main\n"
        f"rc = main(['data', 'images', {str(src)!r}, '--out', {str(out)!r}, '--size', '64', '--workers', '1'])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    return int(res.stdout.strip().splitlines()[-1])


def _variant(png: bytes, i: int) -> bytes:
    """The same image, different file bytes: a tEXt chunk with the counter after the PNG signature + IHDR."""
    import struct
    import zlib

    body = b"tEXt" + b"n\x00" + str(i).encode()
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:33] + chunk + png[33:]


def test_flat_folder_is_unlabelled_and_trains(tmp_path: Path) -> None:
    noise_pngs(tmp_path / "flat", 40, 40)
    manifest = convert(tmp_path / "flat", tmp_path / "d", "--test-fraction", "0.25")
    assert manifest["classes"] == [] and manifest["labelled"] is False
    held = {f"{i:04d}.png" for i in range(40) if im.in_test(f"{i:04d}.png", 0.25)}
    assert manifest["splits"]["test"]["samples"] == len(held) and 0 < len(held) < 40
    from tests.conftest import run, train_cmd

    args = [
        "configs/debug.yaml",
        f"data.path={tmp_path / 'd'}",
        "model.arch=dcgan",
        "model.image_shape=[3,32,32]",
        "model.g_channels=8",
        "model.d_channels=8",
        "train.batch_size=10",
        f"train.out_dir={tmp_path}",
        "track.wandb=disabled",
    ]
    res = run(train_cmd(*args, "train.run_name=r"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "r" / "samples" / "grid_final.png").is_file()
    res = run(train_cmd(*args, "train.run_name=e", "eval.every=2", "eval.metrics=[mnistcnn]"))
    assert res.returncode == 2 and "need labels" in res.stderr and "eval.classifier" in res.stderr
    # by default unlabelled data gets the Inception metrics, which need no labels (here: no weights offline)
    res = run(
        train_cmd(*args, "train.run_name=f", "eval.every=2", "eval.inception_download=false"),
        env={"TORCH_HOME": str(tmp_path / "torch")},
    )
    assert res.returncode == 2 and "weights-inception-2015-12-05" in res.stderr and "need labels" not in res.stderr


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    """2k and 20k images of the same size: the peak differs by what 18k more names and content hashes cost
    (~1 KB each, measured), not by the images: 18k decoded inputs (48 KB each) would add ~860 MB, 18k
    outputs (64x64x3, 12 KB each) ~220 MB."""
    rng = np.random.default_rng(0)
    img = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(img, "PNG", compress_level=1)
    data = img.getvalue()
    for n in (2000, 20000):
        d = tmp_path / f"src{n}"
        d.mkdir()
        for i in range(n):  # distinct bytes (else they are duplicates): a counter in a PNG text chunk
            (d / f"{i:05d}.png").write_bytes(_variant(data, i))
    small, large = (
        _rss_kib(tmp_path / "src2000", tmp_path / "o1"),
        _rss_kib(tmp_path / "src20000", tmp_path / "o2"),
    )
    print(f"peak RSS: {small} KiB for 2,000 images, {large} KiB for 20,000")  # shown with pytest -s
    assert large - small < 40 * 1024, f"peak RSS {small} KiB for 2k images, {large} KiB for 20k"
    assert json.loads((tmp_path / "o2" / "manifest.json").read_text())["splits"]["train"]["samples"] == 20000


@pytest.mark.slow
def test_killed_conversion_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    noise_pngs(tmp_path / "src", 600, 48)
    convert(tmp_path / "src", tmp_path / "straight", "--workers", "1")
    straight = shard_bytes(tmp_path / "straight")
    cmd = [
        sys.executable,
        "-m",
        "distgan.cli",
        "data",
        "images",
        str(tmp_path / "src"),
        "--out",
        str(tmp_path / "b"),
        "--size",
        "32",
        "--shard-size",
        "8",
        "--block-size",
        "4",
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "b" / im.PROGRESS_DIR
    t0 = time.time()
    while len(list(progress.glob("range-*.json"))) < 10:
        assert proc.poll() is None and time.time() - t0 < 120
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "manifest.json").exists()
    done = len(list(progress.glob("range-*.json")))
    assert 10 <= done < 75  # killed part-way (75 ranges in all)
    (tmp_path / "b" / "train-000003.tar").write_bytes(b"half-written")  # a damaged shard is redone
    # what a kill inside a shard leaves (the kill above lands there only sometimes): removed once all is done
    (tmp_path / "b" / ".train-000074.tar.tmp-4242.tar").write_bytes(b"partial")
    (progress / ".range-000074.json.tmp-4242.json").write_bytes(b"{")
    assert main(cmd[3:]) == 0
    assert shard_bytes(tmp_path / "b") == straight
    assert not [p.name for p in (*(tmp_path / "b").iterdir(), *progress.iterdir()) if ".tmp-" in p.name]
