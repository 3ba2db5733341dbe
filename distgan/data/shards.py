"""Which samples each (rank, worker) reads in an epoch.

WebDataset's split_by_node/split_by_worker hand out whole shards, so with fewer shards than ranks x workers
some readers get nothing, and uneven shards give uneven batch counts (a DDP hang). We know every shard's
sample count (from the manifest), so we cut the epoch's shuffled concatenation of shards into one contiguous
sample range per reader instead: every reader gets an equal share (+-1 sample) and touches few shards.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext


class DataSpecError(ValueError):
    """A shard spec or manifest that cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class Shard:
    url: str
    samples: int
    records: tuple[int, ...]  # samples in each tar record, in order


@dataclass(frozen=True)
class Dataset:
    shards: tuple[Shard, ...]
    image_shape: tuple[int, ...]  # (H, W) or (H, W, C) as stored
    blocks: bool  # True: our block records; False: one image per record (.png/.jpg/.npy + .cls)
    classes: tuple[str, ...]

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)


@dataclass(frozen=True)
class Piece:
    """Samples [first, first+count) of one shard, in record order."""

    shard: Shard
    first: int
    count: int


def is_remote(url: str) -> bool:
    return url.startswith(("pipe:", "http://", "https://", "gs://", "s3://"))


SHARD_NAME = re.compile(r"^[^/\\\x00]+\.(tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$")
"""A shard's name in a manifest or a progress record: a plain file name beside it (WebDataset reads these
compressions too), so a name read back from a file can never point elsewhere."""


def safe_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(SHARD_NAME.match(name))
        and not name.startswith((".", "pipe:"))
        and name not in (".", "..")
    )


def is_command(spec: str) -> bool:
    """A shard spec that runs a shell command (`pipe:...`) in any URL it stands for: checked after brace
    expansion and `::` splitting, which is what the reader sees (`{a.tar,pipe:cmd}` is two URLs)."""
    text = str(spec)
    try:
        urls = expand_urls(text)
    except Exception:  # an unbalanced brace: judge the raw text, every piece of it
        urls = []
    pieces = [*urls, *text.split("::"), *re.split(r"[{},]", text)]
    return any(p.strip().startswith("pipe:") for p in pieces)


def refuse_saved_commands(saved: dict, overrides: list[str], origin: str) -> None:
    """Shard specs are trusted input: a `pipe:` command runs as the user. One read from a saved config (a
    checkpoint someone else wrote) runs only if the user repeats it on the command line."""
    data = saved.get("data", {}) if isinstance(saved, dict) else {}
    given = {o.partition("=")[0].strip() for o in overrides}
    for key in ("path", "manifest"):
        value = data.get(key, "")
        if value and is_command(value) and f"data.{key}" not in given:
            raise DataSpecError(
                f"data.{key} in {origin} is a shell command ({value!r}); distgan never runs a command read "
                f"from a checkpoint. If you trust it, give it yourself (--data / --set data.{key}=...)"
            )


def check_manifest(info: object, location: str) -> dict:
    """The fields the loader and `verify` rely on, with their types; a bad one is named with the fix."""

    def bad(what: str) -> DataSpecError:
        return DataSpecError(
            f"manifest {location!r}: {what}; re-create it with `distgan data` (or `distgan data index`)"
        )

    if not isinstance(info, dict):
        raise bad(f"holds a {type(info).__name__}, not a JSON object")
    fmt = info.get("format")
    if fmt not in ("distgan-blocks", "webdataset-samples"):
        raise bad(f"unknown format {fmt!r}")
    shape = info.get("image_shape", [])
    if not isinstance(shape, list) or not all(isinstance(v, int) and v > 0 for v in shape):
        raise bad(f"'image_shape' is {shape!r}, not a list of positive integers")
    if fmt == "webdataset-samples":
        groups = {"shards": info.get("shards")}
    else:
        splits = info.get("splits")
        if not isinstance(splits, dict) or not splits:
            raise bad("no 'splits' object")
        groups = {}
        for name, split in splits.items():
            if not isinstance(split, dict) or not isinstance(split.get("samples"), int):
                raise bad(f"split {name!r} has no integer 'samples'")
            groups[f"splits.{name}.shards"] = split.get("shards")
    for where, shards in groups.items():
        if not isinstance(shards, list):
            raise bad(f"'{where}' is not a list")
        for i, s in enumerate(shards):
            key = f"{where}[{i}]"
            if not isinstance(s, dict) or not isinstance(s.get("name"), str):
                raise bad(f"'{key}' has no 'name'")
            name = s["name"]
            if not safe_name(name):
                raise bad(
                    f"'{key}.name' is {name!r}: shard names are plain .tar file names (or .tar.gz, .tgz) "
                    "beside the manifest"
                )
            if not isinstance(s.get("samples"), int) or isinstance(s.get("samples"), bool) or s["samples"] < 0:
                raise bad(f"'{key}.samples' is {s.get('samples')!r}, not a count (a JSON integer)")
            recs = s.get("records")
            if fmt == "distgan-blocks" and (
                not isinstance(recs, list)
                or not all(isinstance(r, int) and r > 0 for r in recs)
                or sum(recs) != s["samples"]
            ):
                raise bad(f"'{key}.records' is {recs!r}: positive integers adding up to samples={s['samples']}")
    return info


def shard_name(url: str) -> str:
    """The file name of a shard inside a path, URL or pipe: command (`pipe:aws s3 cp s3://b/x.tar -`)."""
    names = re.findall(r"([^/\s]+\.(?:tar\.gz|tar\.bz2|tar\.xz|tgz|tar))(?![\w.])", url)
    return names[-1] if names else os.path.basename(url)


def expand_spec(spec: str) -> list[str]:
    """Local paths, brace patterns, globs, `::`-lists, pipe: and http(s) URLs -> list of shard URLs."""
    urls: list[str] = []
    for item in expand_urls(spec):
        if is_remote(item) or not any(c in item for c in "*?["):
            urls.append(item)
        else:
            urls.extend(sorted(glob.glob(item)))
    if not urls:
        raise DataSpecError(f"data.path={spec!r} matches no shard; check the path or brace pattern")
    for u in urls:
        if not is_remote(u) and not os.path.isfile(u):
            raise DataSpecError(f"data.path={spec!r}: shard {u!r} does not exist")
    return urls


def _read_json(location: str) -> dict | None:
    try:
        if location.startswith(("http://", "https://")):
            with urllib.request.urlopen(location, timeout=30) as resp:
                return json.loads(resp.read())
        if os.path.isfile(location):
            return json.loads(Path(location).read_text())
    except ValueError as exc:
        raise DataSpecError(
            f"manifest {location!r} is not valid JSON ({exc}); re-create it with `distgan data`"
        ) from exc
    except OSError as exc:
        raise DataSpecError(f"manifest {location!r} is unreadable: {exc}") from exc
    return None


def _beside(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name if "/" in url else name


def scan_shard(url: str) -> Shard:
    """Counts the records of a per-sample shard (one image per record) by walking its tar headers."""
    keys: list[str] = []
    try:
        with wds.gopen(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tf:
            for info in tf:
                key, _ = base_plus_ext(info.name)
                if info.isreg() and key is not None and (not keys or keys[-1] != key):
                    keys.append(key)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataSpecError(f"shard {url!r} could not be indexed: {exc}") from exc
    return Shard(url, len(keys), tuple([1] * len(keys)))


def resolve(path: str, split: str = "train", manifest: str = "") -> Dataset:
    """A data spec -> shards with sample counts, from a manifest or (local foreign shards) a header scan."""
    if not is_remote(path) and os.path.isdir(path):
        mpath = os.path.join(path, "manifest.json")
        info = _read_json(mpath)
        if info is None:
            urls = sorted(glob.glob(os.path.join(path, "*.tar")))
            if not urls:
                raise DataSpecError(f"data.path={path!r}: folder has no manifest.json and no .tar shards")
            return _foreign(urls, None)
        return _from_manifest(info, mpath, split, None, base=path)
    urls = expand_spec(path)
    location = manifest or _beside(urls[0], "manifest.json")
    info = _read_json(location) if not location.startswith("pipe:") else None
    if info is None:
        if manifest:
            raise DataSpecError(f"data.manifest={manifest!r} not found")
        return _foreign(urls, location)
    return _from_manifest(info, location, split, urls, base=None)


def _from_manifest(info: dict, location: str, split: str, urls: list[str] | None, base: str | None) -> Dataset:
    check_manifest(info, location)
    shape = tuple(info.get("image_shape", ()))
    if info.get("format") == "webdataset-samples":  # written by `distgan data index` for foreign shards
        by_name = {s["name"]: s for s in info["shards"]}
        if urls is None:
            urls = [os.path.join(base or "", s["name"]) for s in info["shards"]]
        shards = []
        for u in urls:
            entry = by_name.get(shard_name(u))
            if entry is None:
                raise DataSpecError(f"shard {u!r} is not in manifest {location!r}; re-run `distgan data index`")
            shards.append(Shard(u, entry["samples"], tuple([1] * entry["samples"])))
        return Dataset(tuple(shards), shape, False, tuple(info.get("classes", ())))
    if info.get("format") != "distgan-blocks":
        raise DataSpecError(f"manifest {location!r}: unknown format {info.get('format')!r}")
    splits = info["splits"]
    if split not in splits:
        raise DataSpecError(f"data.split={split!r} not in manifest {location!r}; it has {sorted(splits)}")
    entries = {s["name"]: s for s in splits[split]["shards"]}
    if urls is None:
        urls = [os.path.join(base or "", name) for name in entries]
        for u in urls:
            if not os.path.isfile(u):
                raise DataSpecError(f"shard {u!r} listed in {location!r} is missing; re-run `distgan data`")
    shards = []
    for u in urls:
        entry = entries.get(shard_name(u))
        if entry is None:
            raise DataSpecError(f"shard {u!r} is not in split {split!r} of manifest {location!r}")
        shards.append(Shard(u, entry["samples"], tuple(entry["records"])))
    return Dataset(tuple(shards), shape, True, tuple(info.get("classes", ())))


def _foreign(urls: list[str], location: str | None) -> Dataset:
    remote = [u for u in urls if is_remote(u)]
    if remote:
        raise DataSpecError(
            f"no manifest for remote shards (looked for {location!r}); run `distgan data index SPEC` once "
            "and pass data.manifest=PATH, so every rank knows the sample counts without reading the data"
        )
    shards = tuple(scan_shard(u) for u in urls)
    if not sum(s.samples for s in shards):
        raise DataSpecError(f"shards {urls[:3]}{'...' if len(urls) > 3 else ''} hold no samples")
    return Dataset(shards, (), False, ())


def plan(dataset: Dataset, seed: int, epoch: int, slot: int, slots: int) -> list[Piece]:
    """Reader `slot` of `slots`: its contiguous share of the epoch's shuffled shard order (same on all ranks)."""
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(dataset.shards))
    total = dataset.samples
    lo, hi = slot * total // slots, (slot + 1) * total // slots
    pieces, offset = [], 0
    for i in order:
        shard = dataset.shards[i]
        a, b = max(lo, offset), min(hi, offset + shard.samples)
        if a < b:
            pieces.append(Piece(shard, a - offset, b - a))
        offset += shard.samples
    return pieces
