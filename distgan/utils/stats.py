"""Named statistics: any part of a rank reports by name; one reduction per log step returns them all.

After StyleGAN2-ADA's `training_stats.report(name, value)` + `Collector`: device values stay on the device
(a running sum and a count per name, no host sync), Python numbers stay on the host, and `collect()` gathers
every rank's sums and counts in one device gather. Adding a metric is one `report()` call where it is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Collected:
    """Every rank's sums and counts of one log interval, as numpy arrays of shape (world,)."""

    sums: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]

    def __contains__(self, name: str) -> bool:
        return name in self.sums

    def mean(self, name: str, default: float = 0.0) -> float:
        """Each rank's mean over its reports, then the mean over the ranks that reported."""
        if name not in self.sums:
            return default
        n = self.counts[name]
        if not (n > 0).any():
            return default
        return float((self.sums[name][n > 0] / n[n > 0]).mean())

    def total(self, name: str) -> float:
        """The sum over every report of every rank."""
        return float(self.sums[name].sum()) if name in self.sums else 0.0

    def per_rank(self, name: str) -> np.ndarray:
        return self.sums[name]


class Stats:
    """One per process; `report` from anywhere in the training process, `collect` on all ranks at once."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._dev: dict[str, torch.Tensor] = {}  # name -> running sum on the device
        self._dev_n: dict[str, int] = {}  # name -> its count (known on the host: no device work for it)
        self._host: dict[str, list[float]] = {}  # name -> [sum, count] as Python numbers

    def report(self, name: str, value: torch.Tensor | float, count: int = 1) -> None:
        """Adds `value` (a sum of `count` measurements) to `name`. A tensor is summed to a scalar on its device
        and never read back here; a non-finite value stays non-finite in the sum."""
        if isinstance(value, torch.Tensor):
            v = value.detach()
            if v.dim() or v.dtype != torch.float32:  # a loss is already a float32 scalar: one add, no copy
                v = v.float().sum()
            acc = self._dev.get(name)
            if acc is None:
                self._dev[name] = v.clone()
                self._dev_n[name] = count
            else:
                acc += v
                self._dev_n[name] += count
        else:
            h = self._host.setdefault(name, [0.0, 0.0])
            h[0] += float(value)
            h[1] += count

    def names(self) -> list[str]:
        return sorted({*self._dev, *self._host})

    def local(self) -> Collected:
        """This rank's values alone (no collective): for checks that must not wait on other ranks."""
        return self._collect_from(self.names(), None)

    def reset(self) -> None:
        self._dev.clear()
        self._dev_n.clear()
        self._host.clear()

    def collect(self, group: dist.ProcessGroup | None = None) -> Collected:
        """Call on all ranks (when distributed): every rank's sums and counts, then everything is reset.

        The union of names is agreed first over `group` (names can differ: one rank may have skipped data),
        then one gather of a (names x 2) tensor. This is the one host sync of a log step.
        """
        names = self.names()
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world > 1:
            everyone: list[list[str]] = [[] for _ in range(world)]
            dist.all_gather_object(everyone, names, group=group)
            names = sorted({n for ns in everyone for n in ns})
        out = self._collect_from(names, world if world > 1 else None)
        self.reset()
        return out

    def _collect_from(self, names: list[str], world: int | None) -> Collected:
        if not names:
            return Collected({}, {})
        dev = [self._dev.get(n) for n in names]
        device = next((d.device for d in dev if d is not None), self.device)
        zero = torch.zeros((), device=device)
        dev_sums = torch.stack([zero if d is None else d.to(device) for d in dev])  # one copy when gathered
        dev_counts = torch.tensor([float(self._dev_n.get(n, 0)) for n in names], device=device)
        rows = torch.stack([dev_sums, dev_counts], 1)
        host = torch.tensor([self._host.get(n, [0.0, 0.0]) for n in names], dtype=torch.float64)
        if world is None:
            table = (rows.double().cpu() + host)[None].numpy()
        else:
            mine = torch.cat([rows.double(), host.to(device)], 1)  # sums in float64 on the wire
            gathered = [torch.zeros_like(mine) for _ in range(world)]
            dist.all_gather(gathered, mine)
            g = torch.stack(gathered).cpu()
            table = (g[:, :, :2] + g[:, :, 2:]).numpy()
        sums = {n: table[:, i, 0] for i, n in enumerate(names)}
        counts = {n: table[:, i, 1] for i, n in enumerate(names)}
        return Collected(sums, counts)


_default = Stats()


def default() -> Stats:
    """The process's collector: the loader and other parts report here without being handed the trainer's."""
    return _default


def report(name: str, value: torch.Tensor | float, count: int = 1) -> None:
    _default.report(name, value, count)
