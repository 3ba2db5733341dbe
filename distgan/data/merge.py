"""Finishing a conversion: `merge` verifies every range and writes the manifest (dropping duplicates across
parts), `prepare_out` decides where a conversion writes, and `promote` replaces an old dataset with a new one
only once the new one is complete."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from distgan.data.convert import PROGRESS_DIR, REASONS, hashes_path, intact_record, record_path
from distgan.data.image_sources import shown
from distgan.data.options import Options
from distgan.data.shard_writer import FORMAT, FORMAT_VERSION, ShardError, replaceable_shards, write_shard
from distgan.utils.files import atomic_path, remove_temporaries, write_json, write_text

STAGING = ".distgan-staging"
"""Where a conversion that replaces an existing dataset writes, inside --out: the old dataset stays whole
(and usable) until the new manifest takes its place."""


def merge(out: Path) -> dict:
    """Verifies every range's record and shards, drops duplicates across parts (rewriting only the shards
    that hold a later copy), then writes report.tsv and manifest.json. Returns the manifest."""
    job, opts, records = _intact_ranges(out)
    seen: set[bytes] = set()
    for k, rec in enumerate(records):
        digests = [bytes(d) for d in np.load(hashes_path(out, k))]
        dup = [d in seen for d in digests]
        seen.update(digests)
        if any(dup):
            records[k] = _drop(out, rec, dup, digests, opts)
    skipped: Counter = Counter()
    report: list[str] = []
    splits: dict[str, dict] = {}
    max_label = -1
    for rec in records:
        skipped.update(rec["skipped"])
        report.extend(f"{shown(name)}\t{reason}" for name, reason, _ in rec["report"])
        for shard in rec["shards"]:
            split = splits.setdefault(shard["split"], {"samples": 0, "shards": []})
            split["samples"] += shard["samples"]
            split["shards"].append({k: shard[k] for k in ("name", "samples", "records", "sha256")})
            max_label = max(max_label, shard["max_label"])
    write_text(out / "report.tsv", "path\treason\n" + "".join(f"{line}\n" for line in report))
    if "train" not in splits:
        if splits:  # nothing skipped that explains it: every kept input was held out
            raise ShardError(
                f"{out}: every kept input went to the test split (--test-fraction "
                f"{opts.test_fraction}); use a smaller --test-fraction"
            )
        raise ShardError(f"{out}: every input was skipped ({dict(skipped)}); see {out / 'report.tsv'}")
    for split in splits.values():
        split["content_sha256"] = _content_sha256(out, split["shards"])
    classes = job["classes"] or ([str(i) for i in range(max_label + 1)] if max_label >= 0 else [])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": job["source"],
        "image_shape": opts.shape,
        "dtype": "uint8",
        "classes": classes,
        "labelled": max_label >= 0,
        "block_size": opts.block_size,
        "splits": dict(sorted(splits.items(), key=lambda kv: kv[0] != "train")),
        "skipped": {r: int(skipped.get(r, 0)) for r in REASONS},
        "report": "report.tsv",
        "conversion": {**job["options"], "resample": "PIL Lanczos (antialiased)"},
    }
    write_json(out / "manifest.json", manifest)
    # every range is intact, so every part has finished: what a killed writer left behind can go
    remove_temporaries(out)
    remove_temporaries(out / PROGRESS_DIR)
    return manifest


def _intact_ranges(out: Path) -> tuple[dict, Options, list[dict]]:
    """The conversion's job, its options and every range's record; refused, naming the ranges, when any is
    missing, damaged or converted from another listing of the source."""
    try:
        job = json.loads((out / PROGRESS_DIR / "job.json").read_text())
    except (OSError, ValueError) as exc:
        raise ShardError(
            f"{out}: no conversion to merge ({exc}); run `distgan data images ... --out {out}` first"
        ) from exc
    fp, ranges = job["fingerprint"], job["ranges"]
    opts = Options(**{**job["options"], "size": tuple(job["options"]["size"])})
    inputs = job.get("range_inputs") or [None] * ranges
    records = [intact_record(out, k, fp, inputs[k] if k < len(inputs) else None) for k in range(ranges)]
    missing = [k for k, rec in enumerate(records) if rec is None]
    if missing:
        listed = ", ".join(str(k) for k in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ShardError(
            f"{out}: {len(missing)} of {ranges} ranges are missing, damaged or converted from another listing "
            f"of the source ({listed}); rerun the parts that hold them (the same command; intact ranges are "
            "kept), then merge again"
        )
    return job, opts, [rec for rec in records if rec is not None]


def _drop(out: Path, rec: dict, dup: list[bool], digests: list[bytes], opts: Options) -> dict:
    """Rewrites a range's shards without the samples already kept by an earlier range (a later part)."""
    from distgan.data.records import decode_block
    from distgan.data.shard_writer import _iter_records

    pos, shards, skipped, report = 0, [], Counter(rec["skipped"]), list(rec["report"])
    kept_digests: list[bytes] = []
    for shard in rec["shards"]:
        images, labels = [], []
        for _, members in _iter_records(out / shard["name"]):
            imgs, labs = decode_block({"images.npy": members["images.npy"], "labels.npy": members["labels.npy"]})
            images.append(imgs)
            labels.append(labs)
        imgs_all, labs_all = np.concatenate(images), np.concatenate(labels)
        n = len(imgs_all)
        keep = [not d for d in dup[pos : pos + n]]
        for (name, at), drop in zip(shard["names"], dup[pos : pos + n], strict=True):
            if drop:
                skipped["duplicate"] += 1
                report.append([name, "duplicate", at])
        kept_digests.extend(d for d, k in zip(digests[pos : pos + n], keep, strict=True) if k)
        pos += n
        split, index = shard["split"], rec["range"]
        (out / shard["name"]).unlink()
        if any(keep):
            mask = np.asarray(keep)
            new = write_shard(out, split, index, imgs_all[mask], labs_all[mask], opts.block_size)
            names = [nm for nm, k in zip(shard["names"], keep, strict=True) if k]
            shards.append({**new, "split": split, "names": names, "max_label": int(labs_all[mask].max())})
    report.sort(key=lambda r: r[2])  # input order, as a one-machine conversion lists them
    new_rec = {**rec, "shards": shards, "skipped": dict(skipped), "report": report}
    with atomic_path(hashes_path(out, rec["range"])) as tmp, open(tmp, "wb") as fh:
        np.save(
            fh,
            np.frombuffer(b"".join(kept_digests), np.uint8).reshape(-1, 32)
            if kept_digests
            else np.zeros((0, 32), np.uint8),
        )
    write_json(record_path(out, rec["range"]), new_rec)
    return new_rec


def _content_sha256(out: Path, shards: list[dict]) -> str:
    """records.content_sha256 of a split, streamed over its shards: all images' bytes, then all labels."""
    from distgan.data.records import decode_block
    from distgan.data.shard_writer import _iter_records

    h, labels = hashlib.sha256(), []
    for shard in shards:
        for _, members in _iter_records(out / shard["name"]):
            imgs, labs = decode_block({"images.npy": members["images.npy"], "labels.npy": members["labels.npy"]})
            h.update(np.ascontiguousarray(imgs).tobytes())
            labels.append(np.ascontiguousarray(labs, dtype="<i8"))
    for labs in labels:
        h.update(labs.tobytes())
    return h.hexdigest()


def _same_job(folder: Path, fingerprint: str, source_spec: str) -> bool | None:
    """None: no conversion in folder; else whether it is this one (same options and source)."""
    job = folder / PROGRESS_DIR / "job.json"
    if not job.is_file():
        return None
    try:
        prev = json.loads(job.read_text())
    except ValueError:
        prev = {}
    prev = prev if isinstance(prev, dict) else {}
    return prev.get("fingerprint") == fingerprint and prev.get("source") == source_spec


def prepare_out(out: Path, fingerprint: str, source_spec: str, parts: int = 1) -> Path:
    """The folder this conversion writes to; nothing is deleted here.

    --out must be new, empty, a previous distgan dataset, or this same conversion (resumed). A previous dataset
    is replaced only when the new one is complete: the conversion writes into out/.distgan-staging and
    `promote` moves it in after its manifest is written (a --strict stop, a crash or a kill leaves the old
    dataset as it was). Parts (parts > 1) start at the same time on other machines: they only check, so one
    part cannot remove what another has begun to write; they need a new or empty folder, or this conversion's.
    """
    staged = out / STAGING
    same = _same_job(out, fingerprint, source_spec)
    if same:
        return out  # resuming (or another part of) the same conversion
    if same is False and (parts > 1 or not (out / "manifest.json").is_file()):
        raise ShardError(
            f"--out {out} holds an unfinished conversion of another source or with other options; rerun that "
            "command to resume it, or choose another --out"
        )
    if parts > 1:
        others = sorted(p.name for p in out.iterdir() if p.name != PROGRESS_DIR) if out.is_dir() else []
        if others:
            raise ShardError(
                f"--out {out} holds {', '.join(others[:5])}: parts write into a new or empty folder (or one "
                "holding this same conversion); choose another --out"
            )
        return out
    names = replaceable_shards(out)  # refuses a folder holding anything but a distgan dataset
    if not names and not (out / "manifest.json").is_file():
        return out  # new or empty: nothing to keep whole
    if _same_job(staged, fingerprint, source_spec) is False:
        shutil.rmtree(staged)  # an interrupted replacement by other options: none of it was published
    return staged


def promote(staged: Path, out: Path) -> None:
    """Moves a complete conversion from out/.distgan-staging over the dataset in out: its shards, its progress
    records (so the same command rerun keeps every range), report and manifest last; then the old dataset's
    shards that the new one does not reuse by name are removed."""
    manifest = json.loads((staged / "manifest.json").read_text())
    new = {s["name"] for split in manifest["splits"].values() for s in split["shards"]}
    old = replaceable_shards(out)
    for name in sorted(new):
        os.replace(staged / name, out / name)
    shutil.rmtree(out / PROGRESS_DIR, ignore_errors=True)
    os.replace(staged / PROGRESS_DIR, out / PROGRESS_DIR)
    os.replace(staged / "report.tsv", out / "report.tsv")
    os.replace(staged / "manifest.json", out / "manifest.json")
    for stale in old - new:
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(staged, ignore_errors=True)
