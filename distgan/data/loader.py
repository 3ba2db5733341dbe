"""Shards -> uint8 batches on each rank: equal batch counts everywhere, deterministic shuffling, bad data skipped.

Not passed through `accelerator.prepare`: that would either dispatch every batch from rank 0 or make every rank
read the whole stream (accelerate #3547). We split by rank and worker here and the trainer moves batches itself.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing as mp
import os
import tarfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distgan.config import DataConfig
from distgan.data.records import (
    DataError,
    decode_block,
    decode_sample,
    first_image_shape,
    records,
    stored_shape,
    to_chw,
)
from distgan.data.shards import Dataset, DataSpecError, Piece, plan, resolve
from distgan.utils import stats

log = logging.getLogger("distgan.data")
GROUP_IMAGES = 8192


@dataclass
class _Chunk:
    images: np.ndarray  # (n, C, H, W) uint8
    labels: np.ndarray
    index: np.ndarray  # position in the dataset's concatenation of shards


def _stack(group: list[dict]) -> dict:
    out = {k: torch.stack([b[k] for b in group]) for k in ("image", "label", "index")}
    out["skipped"] = sum(b["skipped"] for b in group)
    return out


class ShardStream(IterableDataset):
    """One rank's stream for one epoch; inside DataLoader workers each worker takes its own share."""

    def __init__(
        self,
        dataset: Dataset,
        rank_batch: int,
        batches: int,
        rank: int,
        world: int,
        seed: int,
        image_shape: tuple[int, int, int],
        shuffle_buffer: int = 10000,
        on_error: str = "skip",
    ) -> None:
        self.dataset, self.rank_batch, self.batches = dataset, rank_batch, batches
        self.rank, self.world, self.seed = rank, world, seed
        self.shape = stored_shape(image_shape)
        self.shuffle_buffer, self.on_error = shuffle_buffer, on_error
        # Shared with persistent DataLoader workers (forked once), so a new epoch needs no new processes.
        self._epoch = mp.Value("q", 0, lock=False)
        self.offsets = {}
        total = 0
        for s in dataset.shards:
            self.offsets[s.url] = total
            total += s.samples

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = value

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        w, nw = (info.id, info.num_workers) if info else (0, 1)
        quota = self.batches // nw + (w < self.batches % nw)
        if quota == 0:
            return
        pieces = plan(self.dataset, self.seed, self.epoch, self.rank * nw + w, self.world * nw)
        if not pieces:  # fewer samples than readers: share the rank's range instead of idling
            pieces = plan(self.dataset, self.seed, self.epoch, self.rank, self.world)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, w, 0xB47C])
        # Batches travel from workers in groups of ~GROUP_IMAGES: DataLoader's per-item IPC costs ~4 ms, which
        # at batch 100 would cap a worker at ~25k images/s (measured), below what the model trains at.
        per_group = max(1, GROUP_IMAGES // self.rank_batch)
        group: list[dict] = []
        for batch in self._batches(pieces, quota, rng):
            group.append(batch)
            if len(group) == per_group:
                yield _stack(group)
                group = []
        if group:
            yield _stack(group)

    def _batches(self, pieces: list[Piece], quota: int, rng: np.random.Generator) -> Iterator[dict]:
        emitted, skipped, pending_n = 0, 0, 0
        pending: list[_Chunk] = []

        def drain() -> Iterator[dict]:
            nonlocal emitted, skipped
            if not pending:  # a pass that ended with nothing new (bad or missing data was skipped)
                return
            for batch in self._shuffled_batches(pending, rng):
                batch["skipped"], skipped = skipped, 0
                yield batch
                emitted += 1
                if emitted == quota:
                    return

        while emitted < quota:
            read_this_pass = 0
            for chunk, bad in self._chunks(pieces):
                skipped += bad
                if chunk is None:
                    continue
                read_this_pass += len(chunk.labels)
                pending.append(chunk)
                pending_n += len(chunk.labels)
                if pending_n >= max(self.shuffle_buffer, self.rank_batch):
                    yield from drain()
                    pending_n = sum(len(c.labels) for c in pending)  # the remainder: one chunk
                    if emitted == quota:
                        return
            if read_this_pass == 0:
                everything = plan(self.dataset, self.seed, self.epoch, 0, 1)
                if pieces == everything:
                    raise DataError(
                        f"rank {self.rank}: no readable sample in the whole dataset "
                        f"({', '.join(sorted({p.shard.url for p in pieces}))}); check it with `distgan data verify`"
                    )
                # this reader's share was all bad (skipped above, with warnings): fill its quota from the
                # rest of the data instead of stopping the job
                log.warning("rank %d: nothing readable in its share; reading from the whole dataset", self.rank)
                pieces = everything
            # End of this reader's range: go round again (reshuffled) until the quota is met, so every rank
            # yields exactly `batches` batches whatever its shards held.
            yield from drain()
            pending_n = sum(len(c.labels) for c in pending)

    def _shuffled_batches(self, pending: list[_Chunk], rng: np.random.Generator) -> Iterator[dict]:
        """Shuffles what is pending, yields full batches and leaves the remainder pending."""
        images = np.concatenate([c.images for c in pending])
        labels = np.concatenate([c.labels for c in pending])
        index = np.concatenate([c.index for c in pending])
        pending.clear()
        perm = rng.permutation(len(labels))
        b = self.rank_batch
        full = len(perm) // b * b
        for i in range(0, full, b):
            sel = perm[i : i + b]
            yield {
                "image": torch.from_numpy(images[sel]),
                "label": torch.from_numpy(labels[sel]),
                "index": torch.from_numpy(index[sel]),
            }
        if full < len(perm):
            tail = perm[full:]
            pending.append(_Chunk(images[tail], labels[tail], index[tail]))

    def _fail(self, url: str, what: str) -> None:
        if self.on_error == "raise":
            raise DataError(f"shard {url}: {what} (data.on_error=raise)")
        log.warning("skipping bad data in shard %s: %s", url, what)

    def _chunks(self, pieces: list[Piece]) -> Iterator[tuple[_Chunk | None, int]]:
        """Decoded samples of each piece, with the count of samples lost to bad data."""
        for piece in pieces:
            url, start, stop = piece.shard.url, piece.first, piece.first + piece.count
            accounted = 0  # samples of the piece delivered or counted as skipped
            pos = 0  # sample offset of the current record inside the shard
            rec = 0
            broken = False
            try:
                with wds.gopen(url, "rb") as stream:
                    for sample in records(url, stream):
                        n = piece.shard.records[rec] if rec < len(piece.shard.records) else 1
                        rec += 1
                        a, b = max(start - pos, 0), min(stop - pos, n)
                        pos += n
                        if a < b:
                            accounted += b - a
                            chunk = self._decode(sample, url, n, a, b)
                            if chunk is not None:
                                chunk.index = self.offsets[url] + pos - n + np.arange(a, b)
                            yield chunk, 0 if chunk is not None else b - a
                        if pos >= stop:
                            break
            except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                broken = True
                self._fail(url, f"truncated or unreadable after {pos} samples ({exc})")
            lost = piece.count - accounted
            if lost > 0:
                if not broken:
                    self._fail(url, f"ended after {pos} samples; the manifest says {piece.shard.samples}")
                yield None, lost

    def _decode(self, sample: dict, url: str, n: int, a: int, b: int) -> _Chunk | None:
        try:
            if self.dataset.blocks:
                images, labels = decode_block(sample)
                if len(images) != n:
                    raise ValueError(f"{len(images)} images where the manifest says {n}")
                images, labels = images[a:b], labels[a:b]
            else:
                img, lab = decode_sample(sample)
                images, labels = img[None], np.asarray([lab], dtype=np.int64)
            if images.shape[1:] != self.shape:
                raise ValueError(f"image shape {images.shape[1:]} != expected {self.shape}")
        except (ValueError, OSError, KeyError, EOFError) as exc:
            self._fail(url, f"record {sample.get('__key__')}: {exc}")
            return None
        return _Chunk(to_chw(images), labels, np.empty(0, np.int64))


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers must outlive a stop request while their rank saves: if one died, DataLoader's SIGCHLD handler
    would raise in the rank at an arbitrary point (even between the D and the G update).

    torchrun / accelerate launch send SIGTERM to each rank's whole process group, so a worker leaves it; Slurm
    (`scancel --signal=USR1 JOB.STEP`) reaches every process of a step, so workers ignore USR1. A plain `scancel`
    sends SIGTERM to every process of the step too, workers included: a worker ignores SIGTERM while its rank
    lives (the rank is checkpointing; DataLoader ends a healthy worker with a sentinel, not a signal) and obeys
    it once the rank is gone, or when it comes a second time. Slurm's SIGKILL after KillWait ends everything regardless.
    """
    import os
    import signal

    rank_pid = os.getppid()
    terms = [0]

    def on_term(signum: int, frame: object) -> None:
        terms[0] += 1
        if os.getppid() != rank_pid or terms[0] > 1:  # orphaned, or told twice (DataLoader ending a stuck worker)
            os._exit(1)

    os.setpgrp()
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the rank's to handle (checkpoint, then stop)
    signal.signal(signal.SIGTERM, on_term)


class Loader:
    """What the trainer iterates: `for batch in loader.epoch(e)`; `batches_per_epoch` is the same on every rank."""

    def __init__(
        self,
        cfg: DataConfig,
        global_batch: int,
        rank: int,
        world: int,
        seed: int,
        image_shape: tuple[int, int, int] | list[int],
        pin_memory: bool = False,
        dataset: Dataset | None = None,
    ) -> None:
        self.cfg = cfg
        self.dataset = dataset or resolve(cfg.path, cfg.split, cfg.manifest)
        check_shape(self.dataset, tuple(image_shape), cfg.path)
        if global_batch % world:
            raise DataSpecError(f"global batch {global_batch} is not divisible by {world} processes")
        self.batches_per_epoch = self.dataset.samples // global_batch
        if self.batches_per_epoch == 0:
            raise DataSpecError(
                f"data.path={cfg.path!r} holds {self.dataset.samples} samples, fewer than one global batch "
                f"of {global_batch}; lower train.batch_size or add data"
            )
        self.stream = ShardStream(
            self.dataset,
            global_batch // world,
            self.batches_per_epoch,
            rank,
            world,
            seed,
            (image_shape[0], image_shape[1], image_shape[2]),
            cfg.shuffle_buffer,
            cfg.on_error,
        )
        self.pin_memory = pin_memory
        self.seed = seed
        self.groups: DataLoader | None = None
        self.num_classes = 0  # > 0: a conditional model's class count, which every label must be below

    def _check_labels(self, labels: torch.Tensor, index: torch.Tensor) -> None:
        """Here, not in a worker: a worker's exception reaches the trainer wrapped in a traceback. A label out of
        range is not a damaged record to skip but data that does not fit the model; left alone it would index
        G's class embedding out of range, which names no file (on a GPU: a device-side assert)."""
        labels, index = labels.flatten(), index.flatten()  # a group stacks several batches
        bad = (labels < 0) | (labels >= self.num_classes)
        if not bool(bad.any()):
            return
        i = int(bad.nonzero()[0, 0])
        starts = list(self.stream.offsets.items())
        sample = int(index[i])
        url, start = next((u, s) for u, s in reversed(starts) if s <= sample)
        label = int(labels[i])
        raise DataSpecError(
            f"{url}: sample {sample - start} has class label {label}"
            + (" (unlabelled data)" if label < 0 else "")
            + f", but model.num_classes={self.num_classes}; set model.num_classes to the data's class count "
            "(-1 takes it from the manifest), 0 for an unconditional model, or convert the images with labels"
        )

    def epoch(self, epoch: int) -> Iterator[dict]:
        """Batches of epoch `epoch`: dicts of uint8 `image` (B,C,H,W), `label` and `index`. Samples lost to bad
        data are reported as the statistic `data/skipped_samples`."""
        self.stream.epoch = epoch
        if self.groups is None:
            workers = self.cfg.workers
            self.groups = DataLoader(
                self.stream,
                batch_size=None,
                num_workers=workers,
                pin_memory=self.pin_memory,
                prefetch_factor=2 if workers else None,
                persistent_workers=workers > 0,
                worker_init_fn=_ignore_stop_signals if workers else None,
            )
            if workers:
                atexit.register(_close_workers, weakref.ref(self.groups))
        groups = iter(self.groups)
        for w in getattr(groups, "_workers", []):  # parent side of the setpgid race (the worker does it too)
            with contextlib.suppress(OSError):
                os.setpgid(w.pid, w.pid)
        for group in groups:
            if group["skipped"]:  # counted in the worker, reported here in the training process
                stats.report("data/skipped_samples", float(group["skipped"]))
            if self.num_classes:
                self._check_labels(group["label"], group["index"])
            if self.cfg.mirror:
                flip = mirror_mask(self.seed, epoch, group["index"])
                group["image"] = torch.where(flip[..., None, None, None], group["image"].flip(-1), group["image"])
            for i in range(len(group["label"])):
                yield {"image": group["image"][i], "label": group["label"][i], "index": group["index"][i]}


def mirror_mask(seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """Which samples are x-flipped this epoch: one bit of a stateless integer hash of (seed, epoch, global sample
    index), every product kept below 2^62 so int64 arithmetic is exact. Any rank, worker or resume point computes
    the same flips for the same samples."""
    m = 0x7FFFFFFF
    h = (index.long() & m) ^ ((epoch * 0x27D4EB2D + seed * 0x165667B1) & m)
    for _ in range(3):  # a 31-bit variant of the "hash prospector" mixer: shift-xor, multiply, mask
        h = (((h >> 16) ^ h) * 0x45D9F3B) & m
    return ((h >> 16) ^ h) & 1 == 1


def _close_workers(ref: weakref.ref) -> None:
    """At exit, before multiprocessing's own handler (atexit runs last-registered first): persistent workers are
    told to stop by DataLoader's sentinel. multiprocessing would instead SIGTERM them, which they ignore while
    their rank lives (`_ignore_stop_signals`), and then wait for them forever. DataLoader has no public close;
    `_shutdown_workers` is what its own __del__ calls, and it is idempotent."""
    loader = ref()
    it = getattr(loader, "_iterator", None) if loader is not None else None
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()


def check_shape(dataset: Dataset, image_shape: tuple[int, ...], spec: str) -> None:
    """Fails before training when the images cannot feed the model."""
    want = stored_shape(image_shape)
    have = dataset.image_shape or first_image_shape(dataset.shards[0].url)
    if tuple(have) != want:
        c = 1 if len(have) == 2 else have[2]
        raise DataSpecError(
            f"images in {spec!r} are {tuple(have)} (H,W[,C]) but model.image_shape={list(image_shape)} expects "
            f"{want}; set model.image_shape=[{c},{have[0]},{have[1]}] or resize the data"
        )
