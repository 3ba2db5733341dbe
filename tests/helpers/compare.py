"""Comparing trained parameters across runs whose kernels may differ (batch shapes, CPU kinds, rank counts).

Adam normalises each update to about lr in size whatever the gradient's scale, so a last-bit difference in a
gradient (another GEMM kernel, another summation order) can move an element by up to ~lr, and it does where a
gradient is near zero. Element-wise tolerances tuned to one CPU therefore fail on another. What a real bug
causes (a gradient leaking between phases, a rank training on the wrong slice, a missing all-reduce) changes the
*direction* of whole updates: the relative error of the update over a tensor is then of order 1. We compare that
relative error with a bound far from both: kernel noise stays below 1e-2, bugs are above 0.3.

One exception needs the optimizer's state: an element whose gradient is zero analytically (a relativistic loss
cancels the gradient of a bias whose channel never crosses its activation's kink: D(x_r) - D(x_f) does not depend
on it) still gets float noise of ~1e-8 as its gradient, which Adam turns into steps of ~lr in a direction the
noise picks (on Adam's first step, whatever the gradient's size). In a small tensor that one element dominates the
error. `keep` leaves such elements out: those whose gradient in the reference run was below NO_SIGNAL of its
tensor's largest at some step (tests/helpers/steps.py watches them). A bug changes the direction of the elements
that do have gradients, so it still shows.
"""

from __future__ import annotations

import torch

UPDATE_RTOL = 0.05
NO_SIGNAL = 1e-5


def update_error(
    after: torch.Tensor, ref_after: torch.Tensor, before: torch.Tensor, keep: torch.Tensor | None = None
) -> float:
    """||(after - before) - (ref_after - before)|| / ||ref_after - before||, in float64, over the `keep` elements."""
    a, r, b = (t.detach().double().cpu() for t in (after, ref_after, before))
    if keep is not None:
        a, r, b = a[keep], r[keep], b[keep]
    ref_update = (r - b).norm()
    if ref_update == 0:
        return float((a - b).norm())
    return float(((a - b) - (r - b)).norm() / ref_update)


def assert_same_updates(
    after: dict, ref_after: dict, before: dict, rtol: float = UPDATE_RTOL, keep: dict | None = None
) -> None:
    """keep: by name, the elements to compare (where some have no gradient but float noise)."""
    for k in ref_after:
        err = update_error(after[k], ref_after[k], before[k], (keep or {}).get(k))
        assert err < rtol, f"{k}: update differs by {err:.3g} of its size (allowed {rtol}: kernel noise)"


def worst_update_error(after: dict, ref_after: dict, before: dict, keep: dict | None = None) -> float:
    return max(update_error(after[k], ref_after[k], before[k], (keep or {}).get(k)) for k in ref_after)
