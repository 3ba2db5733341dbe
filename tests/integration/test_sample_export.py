"""`distgan sample` and `export` in fresh interpreters: the exported program runs with PyTorch alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def run_without_distgan(program: Path, z: torch.Tensor, y: torch.Tensor | None, tmp_path: Path) -> torch.Tensor:
    """The exported program's output in a fresh interpreter (-I: no cwd or user paths) with distgan blocked."""
    torch.save({"z": z, "y": y}, tmp_path / "in.pt")
    script = (
        "import sys; sys.modules['distgan'] = None\n"
        "import torch\n"
        f"inp = torch.load({str(tmp_path / 'in.pt')!r})\n"
        f"G = torch.export.load({str(program)!r}).module()\n"
        "x = G(inp['z'], inp['y']) if inp['y'] is not None else G(inp['z'])\n"
        f"torch.save(x, {str(tmp_path / 'x.pt')!r})\n"
    )
    res = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    return torch.load(tmp_path / "x.pt")


def test_export_loads_with_plain_pytorch(trained: Path, tmp_path: Path) -> None:
    from distgan.cli import main
    from distgan.run.sample import load_generator

    ckpt = sorted((trained / "checkpoints").glob("step-*"))[-1]
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    spec = json.loads((tmp_path / "exp" / "generator.json").read_text())
    assert spec["noise_dim"] == 128 and spec["hidden"] == [32] and spec["image_shape"] == [1, 28, 28]
    z = torch.randn(5, 128, generator=torch.Generator().manual_seed(0))
    torch.save(z, tmp_path / "z.pt")
    snippet = (
        (Path(__file__).parents[2] / "docs" / "training.md")
        .read_text()
        .split("```python\n# plain-pytorch-export\n")[1]
        .split("```")[0]
    )
    script = snippet.replace("export/", f"{tmp_path}/exp/").replace(
        'torch.randn(16, spec["noise_dim"])', f"torch.load('{tmp_path}/z.pt')"
    )
    script += f"\ntorch.save(x, '{tmp_path}/x.pt')\nimport sys\n"
    script += "assert not any(m.startswith('distgan') for m in sys.modules)\n"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    G, _ = load_generator(ckpt)
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "x.pt"), G(z))


@pytest.mark.parametrize("which", ["cond", "mlp"])
def test_exported_program_runs_without_distgan(trained_cond: Path, trained: Path, tmp_path: Path, which: str) -> None:
    """generator.pt2 loads in a fresh interpreter that cannot import distgan (-I: no cwd or user paths;
    the module blocked outright), and makes what the checkpoint's G makes, at a batch size never traced."""
    from distgan.cli import main
    from distgan.run.sample import labels_for, load_generator

    run_dir = trained_cond if which == "cond" else trained
    ckpt = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    spec = json.loads((tmp_path / "exp" / "generator.json").read_text())
    assert spec["program"] == "generator.pt2"
    G, _ = load_generator(ckpt)
    z = torch.randn(7, spec["noise_dim"], generator=torch.Generator().manual_seed(1))
    y = labels_for(G, 7, None)
    with torch.no_grad():
        torch.testing.assert_close(run_without_distgan(tmp_path / "exp" / "generator.pt2", z, y, tmp_path), G(z, y))


def test_stylegan2_truncated_export_runs_without_distgan(trained_sg: Path, tmp_path: Path) -> None:
    """`export --trunc 0.7`: the program carries the mapping network, the mean w and psi, and makes what the
    checkpoint's G makes under the same truncation, in an interpreter that cannot import distgan."""
    from distgan.cli import main
    from distgan.run.sample import load_generator, set_truncation

    ckpt = sorted((trained_sg / "checkpoints").glob("step-*"))[-1]
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exp"), "--trunc", "0.7"]) == 0
    spec = json.loads((tmp_path / "exp" / "generator.json").read_text())
    assert spec["architecture"] == "stylegan2" and spec["truncation"]["psi"] == 0.7
    G, _ = load_generator(ckpt)
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(5)
    with torch.no_grad():
        plain = G(z, y)
        set_truncation(G, 0.7)
        truncated = G(z, y)
    assert G.mapping.w_avg.abs().sum() > 0 and not torch.allclose(plain, truncated)
    torch.testing.assert_close(run_without_distgan(tmp_path / "exp" / "generator.pt2", z, y, tmp_path), truncated)
