"""Loss curves and D(x) / D(G(z)) over steps from a run directory's metrics.jsonl, as one PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distgan.utils.files import atomic_path


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {run_dir} a distgan run directory?")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a crash can cut the last line short; the rest is still good
            if n != len(path.read_text().splitlines()):
                raise
    return rows


def _quality_panel(ax3: Any, evals: list[dict], fid: str) -> None:
    """The evaluations: the FID measured (log scale) and, for the classifier set, the classes covered."""
    ax4 = ax3.twinx()
    ax3.plot([r["step"] for r in evals], [r[f"eval/{fid}"] for r in evals], "o-", label=fid)
    ax3.set(xlabel="optimizer step", ylabel=f"{fid} (lower is better)", title="sample quality")
    ax3.set_yscale("log")
    covered = [(r["step"], r["eval/classes_covered"]) for r in evals if "eval/classes_covered" in r]
    if covered:
        ax4.plot(*zip(*covered, strict=True), "s--", color="C2")
        classes = sum(1 for k in evals[0] if k.startswith("eval/class_frac/"))
        ax4.set(ylabel="classes covered", ylim=(0, classes + 0.5))
    else:
        ax4.set_axis_off()


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Writes run_dir/plots/losses.png (or `out`) and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = read_metrics(run_dir)
    rows = [r for r in everything if "loss_d" in r]
    fid = next((k for k in ("fid_mnistcnn", "fid_inception") if any(f"eval/{k}" in r for r in everything)), "")
    evals = [r for r in everything if f"eval/{fid}" in r]
    if not rows:
        raise ValueError(f"{run_dir}/metrics.jsonl has no rows yet")
    panels = 3 if evals else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), constrained_layout=True)
    ax1, ax2 = axes[0], axes[1]
    if evals:
        _quality_panel(axes[2], evals, fid)

    def curve(ax: object, key: str, label: str) -> None:
        """A statistic may be absent from some rows (no G step in a log interval when train.d_steps >
        train.log_every): those rows are gaps, not a KeyError."""
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=label)  # type: ignore[attr-defined]

    curve(ax1, "loss_d", "D loss")
    curve(ax1, "loss_g", "G loss")
    ax1.set(xlabel="optimizer step", ylabel="loss", title="losses")
    curve(ax2, "d_real", "mean D(x)")
    curve(ax2, "d_fake", "mean D(G(z))")
    curve(ax2, "ada_p", "ADA p")  # the augmentation probability, on the same 0-1 scale
    curve(ax2, "ada_rt", "ADA r_t")
    ax2.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax2.set(
        xlabel="optimizer step",
        ylabel="probability",
        ylim=(-1 if any("ada_rt" in r for r in rows) else 0, 1),
        title="discriminator outputs",
    )
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    out = out or run_dir / "plots" / "losses.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out
