"""ADA: each operation against its definition, p's adaptation, and the mirror flips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distgan.config import TrainConfig
from distgan.data.loader import mirror_mask
from distgan.training.ada import LUMA, AdaptiveAugment, apply_colour, rotate3d


def ada(p: float = 1.0, ops: str = "bgc", target: float = 0.0, **kw) -> AdaptiveAugment:
    cfg = TrainConfig(augment="ada", ada_p=p, ada_ops=ops, ada_target=target, **kw)
    return AdaptiveAugment(cfg, seed=0, rank=0, world=1)


def pattern(n: int = 64, c: int = 1, h: int = 16, w: int = 16) -> torch.Tensor:
    """Distinct pixel values (an asymmetric ramp), so any flip, rotation or shift is visible."""
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w) / (h * w)
    return x.repeat(n, c, 1, 1)


def test_p_zero_is_the_identity_and_keeps_the_stream() -> None:
    x = torch.rand(8, 3, 16, 16)
    a, b = ada(p=0.0), ada(p=0.0)
    assert a.augment(x) is x
    b.p = 0.7
    b.augment(x)  # another p draws the same numbers: the stream does not depend on p
    assert torch.equal(a.gen.get_state(), b.gen.get_state())


@pytest.mark.parametrize("op", ["xflip", "rotate90", "xint"])
def test_blit_operations_at_p1_against_their_definition(op: str) -> None:
    x = pattern()
    y = ada(ops=op).augment(x)
    base = x[0, 0]
    h, w = base.shape
    if op == "xflip":
        allowed = [base, base.flip(-1)]
    elif op == "rotate90":
        allowed = [torch.rot90(base, k, (0, 1)) for k in range(4)]
    else:  # integer shifts of up to 0.125 of the size, reflecting at the border (symmetric)
        padded = torch.from_numpy(np.pad(base.numpy(), 2, mode="symmetric"))
        allowed = [padded[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w] for dy in range(-2, 3) for dx in range(-2, 3)]
    seen = set()
    for img in y[:, 0]:
        match = [i for i, a in enumerate(allowed) if torch.allclose(img, a, atol=1e-5)]
        assert match, f"{op}: an output is none of the allowed transforms"
        seen.add(match[0])
    assert len(seen) >= min(len(allowed), 2) and (op != "rotate90" or len(seen) == 4), seen


def test_colour_operations_on_known_colours() -> None:
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)  # in the pipeline's [-1, 1] range
    # hue: a third of a turn about the luma axis takes red to green
    c = rotate3d(LUMA.double(), torch.tensor([2 * math.pi / 3], dtype=torch.float64))
    assert torch.allclose(apply_colour(red, c).flatten(), torch.tensor([-1.0, 1.0, -1.0]), atol=1e-6)
    # the pipeline, one operation at a time at p = 1, on one colour per image
    x = torch.tensor([0.8, 0.3, 0.1]).view(1, 3, 1, 1).repeat(256, 1, 2, 2)
    grey = (x * 2 - 1).mean(1, keepdim=True)
    out = {op: ada(ops=op).augment(x) * 2 - 1 for op in ("brightness", "contrast", "lumaflip", "hue", "saturation")}
    shift = out["brightness"] - (x * 2 - 1)  # the same offset on every channel
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-6) and shift.std() > 0.1
    ratio = out["contrast"] / (x * 2 - 1)  # one factor per image, log2-normal with std 0.5
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio), atol=1e-5)
    assert 0.3 < torch.log2(ratio[:, 0, 0, 0]).std() < 0.7
    flipped = out["lumaflip"].mean(1, keepdim=True)  # luma kept or negated, chroma kept
    assert all(torch.allclose(f, grey[0], atol=1e-6) or torch.allclose(f, -grey[0], atol=1e-6) for f in flipped)
    for op in ("hue", "saturation"):  # luma unchanged
        assert torch.allclose(out[op].mean(1, keepdim=True), grey, atol=1e-5), op
    chroma = lambda t: (t - t.mean(1, keepdim=True)).norm(dim=1)  # noqa: E731
    assert torch.allclose(chroma(out["hue"]), chroma(x * 2 - 1), atol=1e-5)  # hue rotates, keeps saturation
    assert chroma(out["saturation"]).std() > 0.05


def test_every_image_changes_at_p1_and_gradients_reach_the_input() -> None:
    x = torch.rand(16, 3, 16, 16, requires_grad=True)
    y = ada(p=1.0).augment(x)
    assert all(not torch.allclose(a, b) for a, b in zip(y, x, strict=True))
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_p_rises_when_d_is_sure_of_the_reals_and_falls_when_not() -> None:
    reported: dict[str, float] = {}
    a = ada(p=0.0, target=0.6, ada_kimg=1, ada_interval=4)
    for _ in range(4):
        a.observe(torch.full((50,), 3.0))  # always right on reals: r_t = 1
    a.after_step(lambda t: t, 50, reported.__setitem__)
    assert reported["ada_rt"] == 1.0 and a.p == pytest.approx(4 * 50 / 1000) and reported["ada_p"] == a.p
    for _ in range(4):
        a.observe(torch.full((50,), -3.0))  # wrong on every real: r_t = -1
    a.after_step(lambda t: t, 50, reported.__setitem__)
    assert a.p == 0.0 and reported["ada_rt"] == -1.0
    for _ in range(3):
        a.observe(torch.full((50,), 3.0))
    a.after_step(lambda t: t, 50, reported.__setitem__)
    assert a.p == 0.0  # not yet: adjusted every ada_interval D steps
    capped = ada(p=0.5, target=0.6, ada_kimg=0.001, ada_p_max=0.8)
    for _ in range(4):
        capped.observe(torch.ones(10))
    capped.after_step(lambda t: t, 10, lambda *a: None)
    assert capped.p == 0.8


def test_state_round_trip_continues_the_same_stream_and_p() -> None:
    a = ada(p=0.3, target=0.6)
    a.observe(torch.ones(5))
    a.augment(torch.rand(4, 1, 8, 8))
    b = ada(p=0.0, target=0.6)
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, 1, 8, 8)
    assert b.p == 0.3 and torch.equal(a.augment(x), b.augment(x)) and b.d_steps == 1


def test_two_ranks_augment_their_slices_of_what_one_process_does() -> None:
    x = torch.rand(8, 3, 16, 16)
    one = ada(p=0.8).augment(x)
    cfg = TrainConfig(augment="ada", ada_p=0.8, ada_target=0.0)
    two = [AdaptiveAugment(cfg, seed=0, rank=r, world=2).augment(x[r * 4 : (r + 1) * 4]) for r in range(2)]
    assert torch.allclose(torch.cat(two), one, atol=1e-6)


def test_mirror_mask_is_a_function_of_seed_epoch_and_index_only() -> None:
    index = torch.arange(10000)
    m = mirror_mask(3, 5, index)
    assert 0.48 < m.float().mean() < 0.52
    assert torch.equal(m[7000:], mirror_mask(3, 5, index[7000:]))  # any slice: any rank, worker, resume point
    assert 0.45 < (m == mirror_mask(3, 6, index)).float().mean() < 0.55  # another epoch, other flips
