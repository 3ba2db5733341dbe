"""`distgan data images`: every kind of input a user brings, skip reasons, determinism, parts, resume, memory."""

from __future__ import annotations

import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from distgan.cli import main
from distgan.data import images as im

REASONS = {"empty": 1, "unreadable": 1, "truncated": 1, "too_small": 1, "too_large": 0, "duplicate": 2}


def _jpeg(arr: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def zoo(root: Path, n_plain: int = 24) -> dict[str, bytes]:
    """Every input kind in two class folders (one nested), as {relative path: bytes}; written under root."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    smooth = (np.stack([yy * 2, xx * 2, (yy + xx)], -1) % 256).astype(np.uint8)  # (96, 128, 3)
    files: dict[str, bytes] = {}

    def png(arr: np.ndarray, mode: str | None = None) -> bytes:
        buf = io.BytesIO()
        (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, "PNG")
        return buf.getvalue()

    for i in range(n_plain):  # mixed sizes and formats
        h, w = 40 + 3 * i, 90 - i
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        fmt = ("PNG", "JPEG", "WEBP", "BMP")[i % 4]
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        files[f"{'cats' if i % 2 else 'dogs/nested'}/{i:03d}.{fmt.lower().replace('jpeg', 'jpg')}"] = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    files["cats/exif_rotated.jpg"] = _jpeg(smooth, exif=exif.tobytes())
    files["cats/grey.png"] = png(smooth[..., 0])
    files["cats/rgba.png"] = png(np.dstack([smooth, np.full((96, 128), 128, np.uint8)]))
    cmyk = io.BytesIO()
    Image.fromarray(smooth).convert("CMYK").save(cmyk, "JPEG")
    files["dogs/cmyk.jpg"] = cmyk.getvalue()
    sixteen = io.BytesIO()
    Image.fromarray(smooth[..., 1].astype(np.uint16) * 257).save(sixteen, "PNG")
    files["dogs/sixteen_bit.png"] = sixteen.getvalue()
    files["dogs/palette.png"] = png(smooth[..., :1].repeat(3, 2))
    files["dogs/zero.png"] = b""
    files["dogs/garbage.jpg"] = b"this is not an image at all" * 10
    files["cats/truncated.jpg"] = _jpeg(smooth)[:1500]
    files["cats/tiny.png"] = png(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    files["dogs/copy_of_000.png"] = files["dogs/nested/000.png"]  # sorts first: the nested one is the copy
    files["cats/zz_copy_of_grey.png"] = files["cats/grey.png"]
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def convert(src: Path | str, out: Path, *extra: str) -> dict:
    args = [
        "data",
        "images",
        str(src),
        "--out",
        str(out),
        "--size",
        "32",
        "--shard-size",
        "8",
        "--block-size",
        "4",
    ]
    assert main([*args, *extra]) == 0
    return json.loads((out / "manifest.json").read_text())


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))} | {
        "manifest.json": (folder / "manifest.json").read_bytes(),
        "report.tsv": (folder / "report.tsv").read_bytes(),
    }


def test_every_input_kind_and_exact_skip_counts(tmp_path: Path) -> None:
    files = zoo(tmp_path / "src")
    manifest = convert(tmp_path / "src", tmp_path / "out")
    assert manifest["skipped"] == REASONS
    assert manifest["classes"] == ["cats", "dogs"] and manifest["image_shape"] == [32, 32, 3]
    kept = len(files) - sum(REASONS.values())
    assert manifest["splits"]["train"]["samples"] == kept
    report = (tmp_path / "out" / "report.tsv").read_text().splitlines()
    assert report[0] == "path\treason" and sorted(report[1:]) == sorted(
        [
            "dogs/zero.png\tempty",
            "dogs/garbage.jpg\tunreadable",
            "cats/truncated.jpg\ttruncated",
            "cats/tiny.png\ttoo_small",
            "dogs/nested/000.png\tduplicate",
            "cats/zz_copy_of_grey.png\tduplicate",
        ]
    )
    assert main(["data", "verify", str(tmp_path / "out")]) == 0


def test_conversion_rules_exif_grey_alpha_cmyk_16bit(tmp_path: Path) -> None:
    opts = im.Options(size=(64, 48), crop="center")
    yy, xx = np.mgrid[0:96, 0:128]
    smooth = (np.stack([yy * 2, xx * 2, (yy + xx)], -1) % 256).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = im.convert(_jpeg(smooth, exif=exif.tobytes()), opts)
    upright = im.convert(_jpeg(np.ascontiguousarray(np.rot90(smooth, -1))), opts)
    assert isinstance(rotated, np.ndarray) and rotated.shape == (64, 48, 3)
    assert np.abs(rotated.astype(int) - upright.astype(int)).mean() < 3  # displayed orientation honoured
    buf = io.BytesIO()
    Image.fromarray(np.dstack([smooth, np.zeros((96, 128), np.uint8)])).save(buf, "PNG")  # fully transparent
    white = im.convert(buf.getvalue(), opts)
    assert isinstance(white, np.ndarray) and white.min() == 255  # composited over white
    buf = io.BytesIO()
    Image.fromarray(np.full((96, 128), 65535, np.uint16)).save(buf, "PNG")
    assert im.convert(buf.getvalue(), im.Options(size=(8, 8), mode="L")).min() == 255  # 16 bit scaled, not clipped
    buf = io.BytesIO()
    Image.fromarray(np.full((96, 128, 3), 200, np.uint8)).convert("CMYK").save(buf, "JPEG")
    cmyk = im.convert(buf.getvalue(), im.Options(size=(8, 8)))
    assert isinstance(cmyk, np.ndarray) and np.abs(cmyk.astype(int) - 200).max() <= 3
    pad = im.convert(_jpeg(smooth), im.Options(size=(64, 64), crop="none"))  # 4:3 fitted, black bars
    assert isinstance(pad, np.ndarray) and pad[:8].max() == 0 and pad[-8:].max() == 0 and pad[32].max() > 0


def test_bytes_identical_for_any_worker_count_and_over_parts(tmp_path: Path) -> None:
    zoo(tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "w1", "--workers", "1")
    one = shard_bytes(tmp_path / "w1")
    convert(tmp_path / "src", tmp_path / "w2", "--workers", "2")
    assert shard_bytes(tmp_path / "w2") == one
    # two parts into one folder (as two Slurm array tasks would), then merge: the duplicate of part 1's image
    # sitting in part 2 is found at merge time and its shard rewritten, exactly as one machine drops it
    base = [
        "data",
        "images",
        str(tmp_path / "src"),
        "--out",
        str(tmp_path / "p"),
        "--size",
        "32",
        "--shard-size",
        "8",
        "--block-size",
        "4",
    ]
    assert main([*base, "--part", "2/2"]) == 0 and not (tmp_path / "p" / "manifest.json").exists()
    assert main([*base, "--part", "1/2"]) == 0
    assert main(["data", "merge", str(tmp_path / "p")]) == 0
    assert shard_bytes(tmp_path / "p") == one


def test_merge_refuses_missing_parts(tmp_path: Path) -> None:
    zoo(tmp_path / "src")
    base = [
        "data",
        "images",
        str(tmp_path / "src"),
        "--out",
        str(tmp_path / "p"),
        "--size",
        "32",
        "--shard-size",
        "8",
    ]
    assert main([*base, "--part", "1/3"]) == 0
    assert main(["data", "merge", str(tmp_path / "p")]) == 2
    assert not (tmp_path / "p" / "manifest.json").exists()


def test_zip_tar_and_other_tools_webdataset_shards(tmp_path: Path) -> None:
    files = zoo(tmp_path / "src")
    ref = convert(tmp_path / "src", tmp_path / "ref")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:  # a zipped folder: its top folder is not a class
        for name, data in sorted(files.items()):
            zf.writestr(f"photos/{name}", data)
    z = convert(tmp_path / "photos.zip", tmp_path / "z")
    assert z["classes"] == ["cats", "dogs"] and z["skipped"] == REASONS
    assert z["splits"]["train"]["content_sha256"] == ref["splits"]["train"]["content_sha256"]
    with tarfile.open(tmp_path / "photos.tar", "w") as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    t = convert(tmp_path / "photos.tar", tmp_path / "t")
    assert t["splits"]["train"]["content_sha256"] == ref["splits"]["train"]["content_sha256"]
    # per-sample shards as webdataset.ShardWriter / img2dataset write them: KEY.jpg + KEY.cls (+ KEY.json)
    rng = np.random.default_rng(1)
    for s in range(2):
        with tarfile.open(tmp_path / f"wds-{s:03d}.tar", "w") as tf:
            for i in range(5):
                key = f"{s:03d}{i:03d}"
                members = {
                    f"{key}.jpg": _jpeg(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)),
                    f"{key}.cls": str((s * 5 + i) % 3).encode(),
                    f"{key}.json": b"{}",
                }
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    w = convert(str(tmp_path / "wds-{000..001}.tar"), tmp_path / "w")
    assert w["splits"]["train"]["samples"] == 10 and w["classes"] == ["0", "1", "2"]
    served = _serve(tmp_path)
    try:
        h = convert(f"{served}/wds-{{000..001}}.tar", tmp_path / "h")  # over http, streamed
    finally:
        served.shutdown()  # type: ignore[attr-defined]
    assert h["splits"]["train"]["content_sha256"] == w["splits"]["train"]["content_sha256"]


class _Server(str):
    shutdown: object


def _serve(folder: Path) -> _Server:
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = _Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    url.shutdown = httpd.shutdown
    return url


def test_strict_names_the_file_and_writes_no_manifest(tmp_path: Path) -> None:
    zoo(tmp_path / "src")
    args = ["data", "images", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--size", "32", "--strict"]
    assert main(args) == 2
    assert not (tmp_path / "o" / "manifest.json").exists()


def noise_pngs(folder: Path, n: int, size: int) -> None:
    """n distinct random RGB PNGs, named 0000.png ... in a flat folder."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def test_subset_of_a_folder_balanced_by_class_and_seeded(tmp_path: Path) -> None:
    """`data images --subset N`: per class balanced for class folders, uniform for a flat folder, seeded."""
    for c in ("cat", "dog", "owl"):
        noise_pngs(tmp_path / "zoo" / c, 10, 16)
    manifest = convert(tmp_path / "zoo", tmp_path / "a", "--subset", "6")
    assert manifest["splits"]["train"]["samples"] == 6 and manifest["classes"] == ["cat", "dog", "owl"]
    from distgan.data.records import read_split

    _, labels = read_split(str(tmp_path / "a"), "train")
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    again = convert(tmp_path / "zoo", tmp_path / "b", "--subset", "6")
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")  # the same seed picks the same images
    other = convert(tmp_path / "zoo", tmp_path / "c", "--subset", "6", "--subset-seed", "1")
    assert again["splits"]["train"]["samples"] == other["splits"]["train"]["samples"] == 6
    assert shard_bytes(tmp_path / "a") != shard_bytes(tmp_path / "c")
    noise_pngs(tmp_path / "flat", 20, 16)
    assert convert(tmp_path / "flat", tmp_path / "d", "--subset", "7")["splits"]["train"]["samples"] == 7
    assert main(["data", "images", str(tmp_path / "flat"), "--out", str(tmp_path / "e"), "--subset", "21"]) == 2
