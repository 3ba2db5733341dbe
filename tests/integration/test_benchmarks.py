"""The benchmark harness cannot rot: its FLOP count is checked by hand, its projection formula by numbers, and
the GPU script runs end to end on a CPU with a tiny budget (the way a lent GPU runs it, minus the CUDA tests)."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from costs import count, preset_config  # noqa: E402
from scaling import allreduce_s, project  # noqa: E402


def test_mlp_step_flops_match_a_count_by_hand() -> None:
    # per image, in multiply-adds of G (128-256-784) and D (784-256-1): D phase = G forward (2 FLOPs per MAC),
    # D forward on real + fake, D backward on both (weight grads of both layers, input grad of the hidden layer
    # only: images need none); G phase = D forward, D backward (input grads only: D is frozen), G backward
    # (both weight grads, the hidden layer's input grad)
    g1, g2, d1, d2 = 128 * 256, 256 * 784, 784 * 256, 256 * 1
    by_hand = 2 * (g1 + g2) + 2 * 2 * (d1 + d2) + 2 * (2 * d2 + 2 * d2 + 2 * d1)
    by_hand += 2 * (d1 + d2) + 2 * d2 + 2 * d1 + (2 * g2 + 2 * g2 + 2 * g1)
    c = count(preset_config("mnist_mlp", "unused"))
    assert c["flops_per_image"] == by_hand == 3_747_840
    assert c["params_g"] == g1 + 256 + g2 + 784 and c["params_d"] == d1 + 256 + d2 + 1
    assert c["grad_bytes_per_step"] == 4 * (c["params_g"] + c["params_d"])  # d_steps 1: both every step


def test_costs_per_image_do_not_depend_on_the_counting_batch() -> None:
    cfg = preset_config("mnist_dcgan_cond", "unused")
    a, b = count(cfg, batch=4), count(cfg, batch=8)
    assert a["flops_per_image"] == b["flops_per_image"] > 0 and a["ops_per_step"] == b["ops_per_step"]
    assert a["allreduce_calls_per_step"] > 2  # D's bucket, G's bucket, and G's synchronised batch norms


def test_projection_formula() -> None:
    a = argparse.Namespace(
        nvlink_gbs=360.0,
        inter_gbs=50.0,
        alpha_intra_us=10.0,
        alpha_inter_us=30.0,
        peak_tflops=1000.0,
        mfu=0.5,
        t_op_us=10.0,
        t_kernel_us=2.0,
    )
    assert allreduce_s(1, 3, 1e9, a) == 0.0
    assert math.isclose(allreduce_s(8, 1, 36e9, a), 10e-6 + 2 * 7 / 8 * 0.1)
    assert math.isclose(allreduce_s(64, 2, 50e9, a), 60e-6 + 2 * 63 / 64 * 1.0)
    c = {
        "preset": "x",
        "batch": 100,
        "ops_per_step": 100,
        "flops_per_image": 5e9,
        "allreduce_calls_per_step": 1,
        "grad_bytes_per_step": 36e6,
        "bn_bytes_per_step": 0.0,
    }
    p = project(c, a, {})
    assert math.isclose(p["eager_t_step_ms"], 1.0)  # both bounds 1 ms: 100 ops x 10 us = 100 x 5e9 / 5e14
    comm8 = 10e-6 + 2 * 7 / 8 * 36e6 / 360e9
    assert math.isclose(p["eager_eff_8"], 1e-3 / (1e-3 + comm8))
    assert p["eager_eff_64"] < p["eager_eff_8"] < 1
    b90 = p["eager_batch_90_64"]
    t = max(1e-3, 5e9 * b90 / 5e14)  # the smallest power of two reaching 90%, and half of it does not
    comm64 = 30e-6 + 2 * 63 / 64 * 36e6 / 50e9
    assert (
        t / (t + comm64) >= 0.9 and max(1e-3, 5e9 * b90 / 2 / 5e14) / (max(1e-3, 5e9 * b90 / 2 / 5e14) + comm64) < 0.9
    )
    measured = project(c, a, {"x": 50_000.0})  # a measured rate replaces the modelled eager step
    assert math.isclose(measured["eager_t_step_ms"], 2.0)


@pytest.mark.slow
def test_gpu_bench_script_runs_on_a_cpu_with_a_tiny_budget(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BUDGET": "tiny",
        "OUT": str(tmp_path / "out"),
        "DATA": str(tmp_path / "syn"),
        "PYTHON": sys.executable,
    }
    res = subprocess.run(
        ["bash", "benchmarks/gpu_bench.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    whats = [r["what"] for r in summary["rows"]]
    assert "mnist_mlp (throughput.py)" in whats and "mnist_dcgan (presets.py)" in whats
    assert "mnist_dcgan (scaling.py, projected)" in whats
    for r in summary["rows"]:
        if "distgan_img_per_s" in r:
            assert r["distgan_img_per_s"] > 0 and r["bare_img_per_s"] > 0 and 0.1 < r["ratio"] < 10
        else:
            assert 0 < r["efficiency_64"] <= r["efficiency_8"] <= 1
    assert "gpu_bench on CPU" in res.stdout  # the one table, with the device it ran on


def test_summary_sets_each_compiled_cell_against_its_eager_twin(tmp_path: Path) -> None:
    """Issue 26's >= 3x is read off the "vs eager" column: a compiled row over the eager row of the same cell
    (same model, batch, precision and other overrides), never over another cell's."""
    from summary import rows

    def throughput(name: str, precision: str, compile_: bool, rate: float) -> None:
        data = {
            "device": "X",
            "precision": precision,
            "compile": compile_,
            "compile_mode": "reduce-overhead",
            "rows": [{"batch": 100, "distgan_img_per_s": {"median": rate}}],
        }
        (tmp_path / f"throughput-{name}.json").write_text(json.dumps(data))

    throughput("no", "no", False, 100.0)
    throughput("bf16", "bf16", False, 150.0)
    throughput("no-graphs", "no", True, 400.0)
    for name, overrides, rate in [
        ("-e", [], 10.0),
        ("-g", ["train.compile=true", "train.compile_mode=reduce-overhead"], 35.0),
    ]:
        row = {"preset": "mnist_dcgan", "bare_img_per_s": 1.0, "distgan_img_per_s": rate, "ratio": 1.0}
        (tmp_path / f"presets{name}.json").write_text(
            json.dumps({"device": "X", "overrides": overrides, "rows": [row]})
        )
    found = {(r["what"], r["setting"]): r.get("vs_eager") for r in rows(tmp_path)}
    assert found[("mnist_mlp (throughput.py)", "batch 100, no, compile reduce-overhead")] == 4.0
    assert found[("mnist_dcgan (presets.py)", "train.compile=true train.compile_mode=reduce-overhead")] == 3.5
    assert found[("mnist_mlp (throughput.py)", "batch 100, bf16")] is None
