"""Shards on disk -> loader: exactly-once epochs, balance across readers, bad data, specs, interop."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from distgan.config import DataConfig
from distgan.data.loader import DataError, Loader
from distgan.data.shard_writer import verify
from distgan.data.shards import Dataset, DataSpecError, Shard, plan, resolve
from distgan.utils import stats
from tests.conftest import synthetic


def epoch_arrays(loader: Loader, epoch: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One epoch's arrays and the samples the loader reported as skipped (the `data/skipped_samples` stat)."""
    stats.default().reset()
    images, labels, index = [], [], []
    for batch in loader.epoch(epoch):
        images.append(batch["image"].numpy())
        labels.append(batch["label"].numpy())
        index.append(batch["index"].numpy())
    skipped = int(stats.default().local().total("data/skipped_samples"))
    return np.concatenate(images), np.concatenate(labels), np.concatenate(index), skipped


@pytest.mark.parametrize("workers", [0, 2])
def test_epoch_gives_every_sample_exactly_once_bit_exact(make_shards, workers: int) -> None:
    data = synthetic(1200)
    folder = make_shards(1200, shard_size=400, block_size=100)
    loader = Loader(DataConfig(path=str(folder), workers=workers, shuffle_buffer=300), 100, 0, 1, 7, (1, 28, 28))
    images, labels, index, skipped = epoch_arrays(loader)
    assert skipped == 0 and loader.batches_per_epoch == 12
    assert sorted(index.tolist()) == list(range(1200))
    np.testing.assert_array_equal(images[:, 0], data.images[index])
    np.testing.assert_array_equal(labels, data.labels[index])
    assert images.dtype == np.uint8 and images.shape[1:] == (1, 28, 28)


def test_shuffle_is_deterministic_per_seed_and_epoch(make_shards) -> None:
    folder = make_shards(1200)

    def make(seed):
        return Loader(DataConfig(path=str(folder), workers=0, shuffle_buffer=500), 100, 0, 1, seed, (1, 28, 28))  # noqa: E731

    a0, a1, b0 = epoch_arrays(make(1), 0)[2], epoch_arrays(make(1), 1)[2], epoch_arrays(make(2), 0)[2]
    np.testing.assert_array_equal(a0, epoch_arrays(make(1), 0)[2])
    assert not np.array_equal(a0, a1) and not np.array_equal(a0, b0)
    assert not np.array_equal(a0, np.sort(a0))  # actually shuffled


def test_real_mnist_round_trip(mnist_dir: Path, tmp_path: Path) -> None:
    from distgan.cli import main
    from distgan.data.mnist import from_folder

    assert main(["data", "mnist", "--from", str(mnist_dir), "--out", str(tmp_path / "m")]) == 0
    ref = from_folder(mnist_dir)
    for split, images_ref, labels_ref in (
        ("train", ref.train_images, ref.train_labels),
        ("test", ref.test_images, ref.test_labels),
    ):
        loader = Loader(DataConfig(path=str(tmp_path / "m"), split=split, workers=1), 100, 0, 1, 0, (1, 28, 28))
        images, labels, index, _ = epoch_arrays(loader)
        assert sorted(index.tolist()) == list(range(len(labels_ref)))
        np.testing.assert_array_equal(images[:, 0], images_ref[index])
        np.testing.assert_array_equal(labels, labels_ref[index])


@pytest.mark.parametrize(
    ("sizes", "slots"), [((400, 400, 400), 4), ((700, 100, 37), 4), ((5,), 8), ((100, 3, 0, 50), 3)]
)
def test_plan_partitions_each_epoch(sizes: tuple[int, ...], slots: int) -> None:
    ds = Dataset(tuple(Shard(f"s{i}.tar", n, (1,) * n) for i, n in enumerate(sizes)), (28, 28), False, ())
    offsets = np.cumsum((0, *sizes))
    for epoch in range(3):
        seen, shares = [], []
        for slot in range(slots):
            pieces = plan(ds, 0, epoch, slot, slots)
            n = sum(p.count for p in pieces)
            shares.append(n)
            for p in pieces:
                k = int(p.shard.url[1:-4])
                seen.extend(range(offsets[k] + p.first, offsets[k] + p.first + p.count))
        assert sorted(seen) == list(range(sum(sizes)))
        assert max(shares) - min(shares) <= 1


def test_uneven_shards_equal_batches_per_rank(tmp_path: Path) -> None:
    from distgan.data.shard_writer import write_shards

    data = synthetic(1100)
    # three shards of 700, 300 and 100 samples
    parts = [(0, 700), (700, 1000), (1000, 1100)]
    for i, (a, b) in enumerate(parts):
        from distgan.data.shard_writer import Split

        write_shards(tmp_path / f"p{i}", {"train": Split(data.images[a:b], data.labels[a:b])}, [], "t", 1000, 64)
        (tmp_path / f"p{i}" / "train-000000.tar").rename(tmp_path / f"train-{i:06d}.tar")
    manifest = json.loads((tmp_path / "p0" / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"] = []
    for i in range(3):
        m = json.loads((tmp_path / f"p{i}" / "manifest.json").read_text())["splits"]["train"]["shards"][0]
        manifest["splits"]["train"]["shards"].append({**m, "name": f"train-{i:06d}.tar"})
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    spec = str(tmp_path / "train-{000000..000002}.tar")
    counts, union = [], []
    for rank in range(4):
        loader = Loader(DataConfig(path=spec, workers=2), 80, rank, 4, 0, (1, 28, 28))
        _, _, index, _ = epoch_arrays(loader)
        counts.append(len(index) // 20)
        union.extend(index.tolist())
    assert counts == [1100 // 80] * 4
    assert len(set(union)) >= 0.85 * 1100  # about one pass over the data (the last partial batch is dropped)


def _corrupt_copy(folder: Path, out: Path) -> None:
    out.mkdir()
    (out / "manifest.json").write_bytes((folder / "manifest.json").read_bytes())
    for tar in folder.glob("*.tar"):
        (out / tar.name).write_bytes(tar.read_bytes())
    # shard 1: cut in the middle of its third record
    raw = (out / "train-000001.tar").read_bytes()
    (out / "train-000001.tar").write_bytes(raw[: len(raw) // 2 + 1000])
    # shard 2: its first block's images replaced by garbage bytes of the same size
    with tarfile.open(folder / "train-000002.tar") as src, tarfile.open(out / "train-000002.tar", "w") as dst:
        for info in src:
            data = src.extractfile(info).read()
            if info.name.endswith("00000.images.npy"):
                data = b"\x00garbage" * (len(data) // 8) + b"\x00" * (len(data) % 8)
            dst.addfile(info, io.BytesIO(data))


def test_truncated_shard_and_garbage_member_are_skipped_and_counted(make_shards, tmp_path: Path, caplog) -> None:
    folder = make_shards(1200, shard_size=400, block_size=100)
    bad = tmp_path / "bad"
    _corrupt_copy(folder, bad)
    problems = verify(bad, log=lambda m: None)
    assert (
        len(problems) == 2 and "train-000001.tar" in problems[0] + problems[1] and "train-000002" in "".join(problems)
    )
    loader = Loader(DataConfig(path=str(bad), workers=0), 100, 0, 1, 0, (1, 28, 28))
    with caplog.at_level(logging.WARNING, logger="distgan.data"):
        images, _, index, skipped = epoch_arrays(loader)
    assert len(index) == 1200  # the epoch is still full-length: the reader went round again
    assert skipped >= 100 + 200  # the garbage block plus the lost half of shard 1
    text = caplog.text
    assert "train-000001.tar" in text and "train-000002.tar" in text


def test_raise_mode_names_the_shard(make_shards, tmp_path: Path) -> None:
    folder = make_shards(1200, shard_size=400, block_size=100)
    bad = tmp_path / "bad"
    _corrupt_copy(folder, bad)
    loader = Loader(DataConfig(path=str(bad), workers=0, on_error="raise"), 100, 0, 1, 0, (1, 28, 28))
    with pytest.raises(DataError, match=r"train-00000[12]\.tar"):
        epoch_arrays(loader)


def test_clear_errors_before_training(make_shards, tmp_path: Path) -> None:
    folder = make_shards(300, shard_size=100)
    with pytest.raises(DataSpecError, match="matches no shard|does not exist"):
        resolve(str(tmp_path / "nothing-{000..003}.tar"))
    with pytest.raises(DataSpecError, match="model.image_shape"):
        Loader(DataConfig(path=str(folder)), 100, 0, 1, 0, (3, 32, 32))
    with pytest.raises(DataSpecError, match="fewer than one global batch"):
        Loader(DataConfig(path=str(folder)), 400, 0, 1, 0, (1, 28, 28))
    with pytest.raises(DataSpecError, match="data.split='valid'"):
        resolve(str(folder), "valid")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataSpecError, match="no manifest.json and no .tar"):
        resolve(str(empty))


def test_pipe_and_list_specs(make_shards) -> None:
    folder = make_shards(1200, shard_size=400)
    spec = "::".join(f"pipe:cat {folder}/train-{i:06d}.tar" for i in range(3))
    loader = Loader(DataConfig(path=spec, workers=0, manifest=str(folder / "manifest.json")), 100, 0, 1, 0, (1, 28, 28))
    assert sorted(epoch_arrays(loader)[2].tolist()) == list(range(1200))


def test_http_streaming_from_loopback(make_shards) -> None:
    import functools
    import http.server
    import threading

    folder = make_shards(1200, shard_size=400)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        loader = Loader(DataConfig(path=base + "/train-{000000..000002}.tar", workers=1), 100, 0, 1, 0, (1, 28, 28))
        images, _, index, _ = epoch_arrays(loader)
        assert sorted(index.tolist()) == list(range(1200))
    finally:
        server.shutdown()


def write_foreign(out: Path, n: int = 300, rgb: bool = False, per_shard: int = 100) -> np.ndarray:
    """Per-sample shards as other tools write them: webdataset.ShardWriter with .png + .cls."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(n, 28, 28, 3) if rgb else (n, 28, 28), dtype=np.uint8)
    with wds.ShardWriter(str(out / "part-%04d.tar"), maxcount=per_shard) as sink:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(images[i]).save(buf, format="PNG")
            sink.write({"__key__": f"img{i:05d}", "png": buf.getvalue(), "cls": i % 10})
    return images


@pytest.mark.parametrize("rgb", [False, True])
def test_reads_foreign_png_cls_shards(tmp_path: Path, rgb: bool) -> None:
    images = write_foreign(tmp_path / "f", rgb=rgb)
    shape = (3, 28, 28) if rgb else (1, 28, 28)
    loader = Loader(DataConfig(path=str(tmp_path / "f"), workers=0), 50, 0, 1, 0, shape)
    got, labels, index, _ = epoch_arrays(loader)
    assert sorted(index.tolist()) == list(range(300))
    want = images[index].transpose(0, 3, 1, 2) if rgb else images[index][:, None]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(labels, index % 10)


def test_image_folder_and_npz_sources(tmp_path: Path) -> None:
    from distgan.cli import main

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 16, 12, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        cls = tmp_path / "src" / ["cat", "dog", "eel"][i % 3]
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(cls / f"{i:03d}.png")
    assert main(["data", "folder", str(tmp_path / "src"), "--out", str(tmp_path / "a"), "--test-fraction", "0.2"]) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["classes"] == ["cat", "dog", "eel"] and manifest["image_shape"] == [16, 12, 3]
    assert {k: v["samples"] for k, v in manifest["splits"].items()} == {"train": 24, "test": 6}
    got = epoch_arrays(Loader(DataConfig(path=str(tmp_path / "a")), 4, 0, 1, 0, (3, 16, 12)))[0]
    assert got.shape[1:] == (3, 16, 12)
    assert {g.tobytes() for g in got} <= {img.transpose(2, 0, 1).tobytes() for img in images}

    np.savez(tmp_path / "d.npz", x=images[..., 0], y=np.arange(30) % 5)
    assert main(["data", "folder", str(tmp_path / "d.npz"), "--out", str(tmp_path / "b")]) == 0
    _, labels, index, _ = epoch_arrays(Loader(DataConfig(path=str(tmp_path / "b")), 10, 0, 1, 0, (1, 16, 12)))
    np.testing.assert_array_equal(labels, index % 5)
    np.savez(tmp_path / "bad.npz", x=images.astype(np.float32), y=np.arange(30))
    assert main(["data", "folder", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "c")]) == 2
