"""Issue 20, data side: hostile or careless inputs to `distgan data` and the shard readers (one test per case)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgan.cli import main
from distgan.data import images as im
from distgan.data.records import decode_sample, read_split
from distgan.data.shards import DataSpecError, is_command, refuse_saved_commands, resolve


def png(seed: int, size: int = 12) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def folder(root: Path, names: list[str], seed: int = 0) -> Path:
    for i, n in enumerate(names):
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(png(seed + i))
    return root


def convert(src: Path | str, out: Path, *extra: str) -> int:
    return main(
        [
            "data",
            "images",
            str(src),
            "--out",
            str(out),
            "--size",
            "8",
            "--shard-size",
            "4",
            "--block-size",
            "2",
            "--workers",
            "1",
            *extra,
        ]
    )


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_brace_pattern_cannot_smuggle_a_command(tmp_path: Path) -> None:
    """#1: pipe: hidden in a brace alternative or after `::` is a command; a checkpoint cannot run it."""
    marker = tmp_path / "ran"
    spec = f"{{data/test-000000.tar,pipe:touch {marker}; cat data/test-000000.tar}}"
    assert is_command(spec) and is_command(f"a.tar::pipe:touch {marker}") and is_command("x{.tar,pipe:ls}")
    assert not is_command("shards/train-{000000..000003}.tar")
    with pytest.raises(DataSpecError, match="shell command"):
        refuse_saved_commands({"data": {"path": spec}}, [], "checkpoint c")
    assert not marker.exists()


def test_progress_record_cannot_reach_outside_the_folder(tmp_path: Path) -> None:
    """#3: a shard name '../victim/...' in a range record makes the range damaged; nothing outside is touched."""
    folder(tmp_path / "src", [f"{i}.png" for i in range(6)])
    out = tmp_path / "out"
    assert convert(tmp_path / "src", out, "--part", "1/1") == 0
    victim = tmp_path / "victim" / "train-000000.tar"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    rec_path = out / im.PROGRESS_DIR / "range-000000.json"
    rec = json.loads(rec_path.read_text())
    rec["shards"][0]["name"] = "../victim/train-000000.tar"
    rec["shards"][0]["sha256"] = __import__("hashlib").sha256(b"precious").hexdigest()
    rec_path.write_text(json.dumps(rec))
    assert main(["data", "merge", str(out)]) == 2
    assert victim.read_bytes() == b"precious"


def test_replacing_a_dataset_keeps_it_until_the_new_one_is_complete(tmp_path: Path) -> None:
    """#4: a --strict stop (like a crash) leaves the old dataset whole and usable; success replaces it."""
    folder(tmp_path / "a", [f"{i}.png" for i in range(6)])
    out = tmp_path / "out"
    assert convert(tmp_path / "a", out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    folder(tmp_path / "b", [f"{i}.png" for i in range(9)], seed=50)
    (tmp_path / "b" / "broken.png").write_bytes(b"not an image")
    assert convert(tmp_path / "b", out, "--strict") == 2
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert read_split(str(out))[0].shape[0] == 6
    assert convert(tmp_path / "b", out) == 0
    assert manifest(out)["splits"]["train"]["samples"] == 9
    assert not (out / im.STAGING).exists()
    assert main(["data", "verify", str(out)]) == 0


def test_changed_source_redoes_its_ranges(tmp_path: Path) -> None:
    """#9: images added (or rewritten) after a conversion are converted on the rerun, not skipped as done."""
    src = folder(tmp_path / "src", [f"{i:02d}.png" for i in range(6)])
    out = tmp_path / "out"
    assert convert(src, out) == 0
    folder(src, [f"{i:02d}.png" for i in range(6, 9)], seed=100)  # three more
    assert convert(src, out) == 0
    assert manifest(out)["splits"]["train"]["samples"] == 9
    (src / "03.png").write_bytes(png(999))  # same name, new content
    assert convert(src, out) == 0
    imgs, _ = read_split(str(out))
    fresh = tmp_path / "fresh"
    assert convert(src, fresh) == 0
    assert np.array_equal(imgs, read_split(str(fresh))[0])


def test_parts_that_listed_different_sources_do_not_merge(tmp_path: Path) -> None:
    """#9, parts: a part that listed the source before an image was inserted is redone, not mixed in."""
    src = folder(tmp_path / "src", [f"{i:02d}.png" for i in range(8)])
    out = tmp_path / "out"
    assert convert(src, out, "--part", "1/2") == 0
    (src / "00a.png").write_bytes(png(77))  # sorts into part 1's ranges: everything after it shifts
    assert convert(src, out, "--part", "2/2") == 0
    assert main(["data", "merge", str(out)]) == 2
    assert convert(src, out, "--part", "1/2") == 0
    assert main(["data", "merge", str(out)]) == 0
    assert manifest(out)["splits"]["train"]["samples"] == 9


def test_symlinked_class_folders_are_followed(tmp_path: Path) -> None:
    """#10: a class folder that is a link into another store is a class like any other."""
    folder(tmp_path / "store" / "dogs", ["a.png", "b.png"], seed=10)
    src = folder(tmp_path / "src", ["cats/a.png", "cats/b.png"])
    (src / "dogs").symlink_to(tmp_path / "store" / "dogs", target_is_directory=True)
    (src / "cats" / "loop").symlink_to(src, target_is_directory=True)  # a cycle is walked once
    out = tmp_path / "out"
    assert convert(src, out) == 0
    m = manifest(out)
    assert m["classes"] == ["cats", "dogs"] and m["splits"]["train"]["samples"] == 4


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_tar_of_class_folders_with_captions_keeps_classes_like_zip(tmp_path: Path) -> None:
    """#11: `cat/img01.png` + `cat/img01.txt` is an archive of class folders, as the same files zipped."""
    files = {
        f"{c}/img{i}.{e}": (png(i + 10 * (c == "dog")) if e == "png" else b"a caption")
        for c in ("cat", "dog")
        for i in range(3)
        for e in ("png", "txt")
    }
    tar = _tar(tmp_path / "x.tar", files)
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    assert convert(tar, tmp_path / "t") == 0 and convert(tmp_path / "x.zip", tmp_path / "z") == 0
    t, z = manifest(tmp_path / "t"), manifest(tmp_path / "z")
    assert t["classes"] == z["classes"] == ["cat", "dog"]
    assert t["splits"]["train"]["content_sha256"] == z["splits"]["train"]["content_sha256"]


def test_webdataset_tar_with_dot_slash_names_keeps_labels(tmp_path: Path) -> None:
    """#11: members named './000.png' + './000.cls' (tar -C dir .) keep their keys and labels."""
    members = {}
    for i in range(4):
        members[f"./{i:03d}.png"] = png(i)
        members[f"./{i:03d}.cls"] = str(i % 2).encode()
    assert convert(_tar(tmp_path / "w.tar", members), tmp_path / "o") == 0
    _, labels = read_split(str(tmp_path / "o"))
    assert labels.tolist() == [0, 1, 0, 1]


def test_foreign_samples_without_labels_are_unlabelled(tmp_path: Path) -> None:
    """#12: no .cls member means no label (-1), never class 0; the classifier refuses such data."""
    img, lab = decode_sample({"png": png(0)})
    assert lab == -1 and img.shape == (12, 12, 3)
    assert decode_sample({"png": png(0), "cls": b"3"})[1] == 3
    shard = _tar(tmp_path / "s" / "a-000.tar", {f"{i:03d}.png": png(i) for i in range(4)})
    _, labels = read_split(str(shard))
    assert (labels == -1).all()
    from distgan.eval.classifier import train_classifier

    imgs = np.zeros((4, 1, 8, 8), np.uint8)
    with pytest.raises(Exception, match="unlabelled"):
        train_classifier((imgs, labels), (imgs, labels), epochs=1)


def test_numeric_class_folders_sort_as_numbers(tmp_path: Path) -> None:
    """#17: folders 0, 1, 2, 9, 10, 11: label 2 is folder "2", not "10"."""
    names = [f"{c}/a.png" for c in (0, 1, 2, 9, 10, 11)]
    out = tmp_path / "out"
    assert convert(folder(tmp_path / "src", names), out) == 0
    assert manifest(out)["classes"] == ["0", "1", "2", "9", "10", "11"]
    assert im.sort_classes({"b", "a10", "a2"}) == ["a10", "a2", "b"]


def test_gzipped_foreign_shards_index_and_train(tmp_path: Path) -> None:
    """#18: a .tar.gz / .tgz shard indexed by `distgan data index` is read by training's resolver."""
    d = tmp_path / "s"
    d.mkdir()
    for n, name in enumerate(("a-000.tar.gz", "a-001.tgz")):
        members = {f"{n}{i:02d}.{e}": png(i) if e == "png" else b"1" for i in range(3) for e in ("png", "cls")}
        raw = _tar(tmp_path / f"raw{n}.tar", members)
        with tarfile.open(d / name, "w:gz") as tf, tarfile.open(raw) as src:
            for m in src:
                tf.addfile(m, src.extractfile(m))
    assert main(["data", "index", f"{d}/a-000.tar.gz::{d}/a-001.tgz", "--out", str(d / "manifest.json")]) == 0
    ds = resolve(f"{d}/a-000.tar.gz::{d}/a-001.tgz")
    assert ds.samples == 6 and not ds.blocks
    imgs, labels = read_split(f"{d}/a-000.tar.gz::{d}/a-001.tgz")
    assert len(imgs) == 6 and (labels == 1).all()


def test_decompression_bombs_are_skipped_as_too_large(tmp_path: Path) -> None:
    """#20: a tiny PNG declaring 20000x20000 pixels and a zip member over --max-mb are skipped unread."""
    src = folder(tmp_path / "src", ["ok.png"])
    buf = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buf, "PNG")  # ~400 KB compressed, 400M pixels
    (src / "bomb.png").write_bytes(buf.getvalue())
    out = tmp_path / "out"
    assert convert(src, out) == 0
    assert manifest(out)["skipped"]["too_large"] == 1
    assert "bomb.png\ttoo_large" in (out / "report.tsv").read_text()
    with zipfile.ZipFile(tmp_path / "z.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", png(1))
        zf.writestr("big.png", b"\0" * (3 << 20))  # 3 MiB of zeros: a few KB compressed
    assert convert(tmp_path / "z.zip", tmp_path / "zo", "--max-mb", "1") == 0
    assert manifest(tmp_path / "zo")["skipped"]["too_large"] == 1


def test_absurd_labels_are_refused_naming_the_sample(tmp_path: Path) -> None:
    """#21: one label of 10^9 in an .npz or a .cls is refused at once, not a billion-entry class list."""
    x = np.zeros((3, 8, 8), np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 10**9, 1]))
    t0 = time.perf_counter()
    assert convert(tmp_path / "a.npz", tmp_path / "o1") == 2
    assert time.perf_counter() - t0 < 20
    shard = _tar(tmp_path / "w.tar", {"000.png": png(0), "000.cls": b"1000000000"})
    assert convert(shard, tmp_path / "o2") == 2
    assert not (tmp_path / "o2" / "manifest.json").exists()


class _Stall(threading.Thread):
    """An http server on loopback that answers with headers and a few bytes, then sends nothing more."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []

    def run(self) -> None:
        self.sock.settimeout(30)
        try:
            while True:
                c, _ = self.sock.accept()
                c.recv(4096)
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 100)
                self.conns.append(c)  # held open, silent
        except OSError:
            return


def test_stalled_http_source_times_out_naming_the_url(tmp_path: Path) -> None:
    """#22: a server that stops sending is tried again, then named; the command does not hang."""
    server = _Stall()
    server.start()
    url = f"http://127.0.0.1:{server.port}/shard-000.tar"
    t0 = time.perf_counter()
    with pytest.raises(im.ShardError, match="127.0.0.1"):
        opts = im.Options(size=(8, 8), timeout_s=0.5)
        src = im.list_source(url, opts)
        im.Conversion(src, opts, tmp_path / "o", 1).run(range(src.ranges))
    assert time.perf_counter() - t0 < 30
    server.sock.close()


def test_undecodable_and_newline_names_are_safe(tmp_path: Path) -> None:
    """#24: a non-UTF-8 file name and one with a newline: conversion, --test-fraction and report.tsv work."""
    src = folder(tmp_path / "src", ["a.png", "b.png", "c.png"])
    bad = os.fsencode(src) + b"/caf\xe9.png"
    with open(bad, "wb") as fh:
        fh.write(b"broken")
    (src / "two\nlines.png").write_bytes(b"also broken")
    out = tmp_path / "out"
    assert convert(src, out, "--test-fraction", "0.3") == 0
    rows = (out / "report.tsv").read_text().splitlines()
    assert len(rows) == 3  # header + two skipped inputs, one line each
    assert any("caf\\xe9.png" in r for r in rows) and any("two\\nlines.png" in r for r in rows)


@pytest.mark.parametrize(
    "extra",
    [
        ["--size", "0"],
        ["--size", "-4"],
        ["--shard-size", "0"],
        ["--block-size", "0"],
        ["--test-fraction", "1"],
    ],
)
def test_bad_options_are_refused_by_name(tmp_path: Path, extra: list[str], capsys: pytest.CaptureFixture) -> None:
    """#29, #30: bad numbers are refused up front naming the option (no traceback, nothing written)."""
    src = folder(tmp_path / "src", ["a.png"])
    args = ["data", "images", str(src), "--out", str(tmp_path / "o"), *extra]
    assert main(args) == 2
    assert extra[0] in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_npz_is_refused_by_name(tmp_path: Path) -> None:
    """#29: an object array, and a file named .npz that is no zip, give one line naming the file."""
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    shutil.move(tmp_path / "obj.npy", tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip")
    np.savez(tmp_path / "objx.npz", x=np.array([None, 1], dtype=object))
    for name in ("obj.npz", "junk.npz", "objx.npz"):
        with pytest.raises(im.ShardError, match=name):
            im.list_source(str(tmp_path / name), im.Options(size=(8, 8)))
