"""One table of what benchmarks/gpu_bench.sh measured, and the same as summary.json beside its inputs.

usage: python benchmarks/summary.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def rows(out: Path) -> list[dict]:
    """One row per measured cell: the MLP throughput cells, then the presets, then the scaling projection.
    `cell` names what was measured apart from torch.compile, so a compiled row finds its eager twin."""
    found: list[dict] = []
    for path in sorted(out.glob("throughput-*.json")):
        data = json.loads(path.read_text())
        mode = data.get("compile_mode", "default") if data["compile"] else ""
        for r in data["rows"]:
            found.append(
                {
                    "what": "mnist_mlp (throughput.py)",
                    "setting": f"batch {r['batch']}, {data['precision']}" + (f", compile {mode}" if mode else ""),
                    "cell": f"mlp {r['batch']} {data['precision']}",
                    "compiled": mode,
                    "bare_img_per_s": r.get("bare_img_per_s", {}).get("median"),
                    "distgan_img_per_s": r["distgan_img_per_s"]["median"],
                    "ratio": r.get("ratio", {}).get("median"),
                    "device": data["device"],
                }
            )
    for path in sorted(out.glob("presets*.json")):
        data = json.loads(path.read_text())
        overrides = data.get("overrides") or []
        plain = [o for o in overrides if not o.startswith("train.compile")]
        mode = next((o.split("=", 1)[1] for o in overrides if o.startswith("train.compile_mode=")), "default")
        compiled = mode if "train.compile=true" in overrides else ""
        for r in data["rows"]:
            found.append(
                {
                    "what": f"{r['preset']} (presets.py)",
                    "setting": " ".join(overrides) or "as configured",
                    "cell": f"{r['preset']} {' '.join(plain)}",
                    "compiled": compiled,
                    "bare_img_per_s": r["bare_img_per_s"],
                    "distgan_img_per_s": r["distgan_img_per_s"],
                    "ratio": r["ratio"],
                    "tflops": r.get("distgan_tflops"),
                    "mfu": r.get("mfu"),
                    "device": data["device"],
                }
            )
    eager = {r["cell"]: r["distgan_img_per_s"] for r in found if not r["compiled"]}
    for r in found:
        if r["compiled"] and r["cell"] in eager:  # issue 26's launch-bound step: >= 3x
            r["vs_eager"] = r["distgan_img_per_s"] / eager[r["cell"]]
    path = out / "scaling.json"
    if path.is_file():
        for r in json.loads(path.read_text())["rows"]:
            found.append(
                {
                    "what": f"{r['preset']} (scaling.py, projected)",
                    "setting": "8 / 64 GPUs, eager",
                    "efficiency_8": r["eager_eff_8"],
                    "efficiency_64": r["eager_eff_64"],
                }
            )
    return found


def main() -> int:
    out = Path(sys.argv[1])
    found = rows(out)
    device = next((r["device"] for r in found if "device" in r), "unknown")
    summary = {"date": time.strftime("%Y-%m-%d"), "device": device, "rows": found}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    table = Table(title=f"gpu_bench on {device}, {summary['date']}")
    for col in (
        "what",
        "setting",
        "bare img/s",
        "distgan img/s",
        "distgan / bare",
        "vs eager",
        "TFLOP/s",
        "MFU",
        "eff 8 / 64",
    ):
        table.add_column(col, justify="right" if col not in ("what", "setting") else "left")
    for r in found:
        eff = f"{r['efficiency_8']:.2f} / {r['efficiency_64']:.2f}" if "efficiency_8" in r else "-"
        mfu = r.get("mfu")
        table.add_row(
            r["what"],
            r["setting"],
            fmt(r.get("bare_img_per_s"), ",.0f"),
            fmt(r.get("distgan_img_per_s"), ",.0f"),
            fmt(r.get("ratio"), ".3f"),
            fmt(r.get("vs_eager"), ".2f"),
            fmt(r.get("tflops"), ".3f"),
            "-" if mfu is None else f"{100 * mfu:.1f}%",
            eff,
        )
    Console(width=200).print(table)
    if not found:
        print(f"no results in {out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
