"""Comparing trained parameters across runs whose kernels may differ (batch shapes, CPU kinds, rank counts).

Adam normalises each update to about lr in size whatever the gradient's scale, so a last-bit difference in a
gradient (another GEMM kernel, another summation order) can move an element by up to ~lr, and it does where a
gradient is near zero. Element-wise tolerances tuned to one CPU therefore fail on another. What a real bug
causes (a gradient leaking between phases, a rank training on the wrong slice, a missing all-reduce) changes the
*direction* of whole updates: the relative error of the update over a tensor is then of order 1. We compare that
relative error with a bound far from both: kernel noise stays below 1e-2, bugs are above 0.3.
"""

from __future__ import annotations

import torch

UPDATE_RTOL = 0.05


def update_error(after: torch.Tensor, ref_after: torch.Tensor, before: torch.Tensor) -> float:
    """||(after - before) - (ref_after - before)|| / ||ref_after - before||, in float64."""
    a, r, b = (t.detach().double().cpu() for t in (after, ref_after, before))
    ref_update = (r - b).norm()
    if ref_update == 0:
        return float((a - b).norm())
    return float(((a - b) - (r - b)).norm() / ref_update)


def assert_same_updates(after: dict, ref_after: dict, before: dict, rtol: float = UPDATE_RTOL) -> None:
    for k in ref_after:
        err = update_error(after[k], ref_after[k], before[k])
        assert err < rtol, f"{k}: update differs by {err:.3g} of its size (allowed {rtol}: kernel noise)"


def worst_update_error(after: dict, ref_after: dict, before: dict) -> float:
    return max(update_error(after[k], ref_after[k], before[k]) for k in ref_after)
