"""`distgan compare runs/NAME [RUN_DIR ...]`: one table of runs (or sweep points) and a plot, seeds pooled.

Reads what every run writes anyway: config.yaml, metrics.jsonl (eval/* rows, img/s), status.json. Points
that differ only in train.seed are one row, with mean ± std over the seeds.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from distgan.config import LOWER_IS_BETTER


@dataclass
class Run:
    dir: Path
    config: dict
    status: str
    rows: list[dict]
    point: str = ""
    seed: int = 0
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    img_per_s: float = float("nan")
    wall_s: float = float("nan")
    images: int = 0


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories (holding config.yaml) given directly or one level below a sweep/out folder."""
    runs: list[Path] = []
    for p in paths:
        if (p / "config.yaml").is_file():
            runs.append(p)
        elif p.is_dir():
            runs.extend(sorted(d for d in p.iterdir() if (d / "config.yaml").is_file()))
    return runs


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class NotARun(ValueError):
    """A folder whose config.yaml is not a distgan run's; the message names it."""


def read_run(path: Path) -> Run:
    try:
        config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"))
    except Exception as exc:  # OmegaConf's parse errors have no common base beyond Exception
        raise NotARun(f"{path / 'config.yaml'} is not valid YAML ({str(exc).splitlines()[0]})") from exc
    seed = config.get("train", {}).get("seed") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict) or not isinstance(seed, int):
        raise NotARun(f"{path / 'config.yaml'} is not a distgan run's config (no train.seed)")
    try:
        status = json.loads((path / "status.json").read_text()).get("state", "unknown")
    except (OSError, ValueError):
        status = "unknown"
    rows = []
    if (path / "metrics.jsonl").is_file():
        for line in (path / "metrics.jsonl").read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill
    rows = [r for r in rows if isinstance(r, dict)]
    run = Run(path, config, status, rows, seed=seed)
    for row in rows:
        for k, v in row.items():
            if k.startswith("eval/") and k.count("/") == 1 and isinstance(v, int | float):
                name = k[5:]
                if name.startswith("best_") or name.endswith("_std") or name in ("time_s", "best_step"):
                    continue
                run.final[name] = float(v)
                better = LOWER_IS_BETTER.get(name)
                if name not in run.best or (better is not None and (v < run.best[name]) == better):
                    run.best[name] = float(v)
    rates = [r["img_per_s"] for r in rows if "img_per_s" in r]
    if rates:
        run.img_per_s = statistics.median(rates)
    times = [r["time"] for r in rows if isinstance(r.get("time"), int | float)]
    if times:  # seconds since the run began, carried across resumed segments by the tracker
        run.wall_s = max(times)
    run.images = max((r.get("images_seen", 0) for r in rows), default=0)
    return run


def label_points(runs: list[Run]) -> None:
    """A point is the config's name plus what differs between that name's runs, apart from the seed and the
    runs' own names: `mnist_dcgan` for a seeds-only sweep, `lr: lr_g=0.001` for a point of a grid."""
    from distgan.configure import load_config

    ignore = {"train.seed", "train.run_name", "train.out_dir", "track.name", "track.group", "name"}
    # a key an older distgan did not write had its default then: the same point as a run that wrote it
    defaults = _flat(load_config(None).to_dict())
    by_name: dict[str, list[tuple[Run, dict]]] = {}
    for r in runs:
        by_name.setdefault(str(r.config.get("name", "")), []).append((r, {**defaults, **_flat(r.config)}))
    for name, group in by_name.items():
        keys = sorted({k for _, f in group for k in f} - ignore)
        varying = [k for k in keys if len({json.dumps(f.get(k)) for _, f in group}) > 1]
        for run, f in group:
            point = ",".join(f"{k.rsplit('.', 1)[-1]}={f.get(k)}" for k in varying)
            run.point = f"{name}: {point}" if point else name


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def table(runs: list[Run], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.point, []).append(r)
    header = ["point", "seeds", "status"]
    for m in metrics:
        header += [f"final {m}", f"best {m}"]
    header += ["img/s", "wall s", "images"]
    out = []
    for point, rs in groups.items():
        states = sorted({r.status for r in rs})
        row = [point, str(len(rs)), ", ".join(f"{s} {sum(r.status == s for r in rs)}" for s in states)]
        for m in metrics:
            row += [
                _mean_std([r.final.get(m, float("nan")) for r in rs]),
                _mean_std([r.best.get(m, float("nan")) for r in rs]),
            ]
        row += [
            _mean_std([r.img_per_s for r in rs]),
            _mean_std([r.wall_s for r in rs]),
            f"{max(r.images for r in rs):,}",
        ]
        out.append(row)
    return header, out


def render(header: list[str], rows: list[list[str]], fmt: str) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *rows])
        return buf.getvalue()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)]) + "\n"


def plot(runs: list[Run], metric: str, out: Path) -> Path | None:
    """metric against images seen: one line per point (mean over seeds), the seeds' range as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.point, []).append(r)
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = False
    for point, rs in groups.items():
        curves = []
        for r in rs:
            batch = int(r.config["train"]["batch_size"])  # eval rows carry the step; images = step x batch
            pts = [(row["step"] * batch, row[f"eval/{metric}"]) for row in r.rows if f"eval/{metric}" in row]
            if pts:
                curves.append(dict(pts))
        if not curves:
            continue
        xs = sorted(set.intersection(*(set(c) for c in curves)))
        if not xs:
            continue
        ys = np.array([[c[x] for x in xs] for c in curves])
        (line,) = ax.plot(xs, ys.mean(0), label=f"{point} ({len(curves)} seeds)")
        if len(curves) > 1:
            ax.fill_between(xs, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("images seen")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean over seeds, band = seeds' range")
    ax.legend(fontsize=7)
    fig.tight_layout()
    from distgan.utils.files import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
