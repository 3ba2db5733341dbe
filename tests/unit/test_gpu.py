"""GPU-only checks (skipped without CUDA; run on a lent GPU, see README): fp16 loss scaling across G and D."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from distgan.training import losses
from tests.unit.test_trainer import fresh_accelerate_state, make_trainer  # noqa: F401

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


CONV = ["model.arch=dcgan", "model.g_channels=16", "model.d_channels=16", "model.spectral_norm=true"]


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_fp16_overflow_in_d_neither_skips_nor_distorts_g(arch: str) -> None:
    conv = [*CONV, "train.channels_last=true"] if arch == "dcgan" else []
    trainer = make_trainer(["train.precision=fp16", *conv])
    acc = trainer.acc
    assert acc.scaler is not None
    g = torch.Generator().manual_seed(0)
    batch = lambda: (torch.rand(100, 1, 28, 28, generator=g).cuda(), torch.randn(100, 16, generator=g).cuda())  # noqa: E731
    trainer.train_step(*batch())
    G, D = acc.unwrap_model(trainer.G), acc.unwrap_model(trainer.D)
    g_before, d_before = copy.deepcopy(G), copy.deepcopy(D)
    steps = lambda opt: {int(s["step"]) for s in opt.state_dict()["state"].values()}  # noqa: E731
    scale_before = acc.scaler.get_scale()
    first = D.net[0].weight if arch == "mlp" else D.downs[0].parametrizations.weight.original
    overflow = first.register_hook(lambda grad: grad * float("inf"))  # only D's own backward sees it
    real, z = batch()
    trainer.train_step(real, z)
    overflow.remove()
    # D's step was skipped (inf gradient), and the shared scaler backed off once
    for p, q in zip(D.parameters(), d_before.parameters(), strict=True):
        assert torch.equal(p, q)
    assert steps(trainer.opt_d) == {1} and acc.scaler.get_scale() < scale_before
    # G still stepped, with exactly the gradient an unscaled fp16-autocast pass gives
    assert steps(trainer.opt_g) == {2}
    assert any(not torch.equal(p, q) for p, q in zip(G.parameters(), g_before.parameters(), strict=True))
    g_ref = copy.deepcopy(g_before)
    d_before.eval()  # as in G's phase: spectral norm reads its vectors without a power iteration
    with torch.autocast("cuda", dtype=torch.float16):
        loss = losses.g_ns(None, d_before(g_ref(z)))
    loss.backward()
    for p, ref in zip(G.parameters(), g_ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, ref.grad, rtol=2e-2, atol=1e-5)


@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_gpu_steps_are_finite(precision: str, arch: str) -> None:
    extra = [*CONV[1:], f"model.arch={arch}", "train.channels_last=true"] if arch != "mlp" else []
    trainer = make_trainer([f"train.precision={precision}", *extra])
    for _ in range(5):
        trainer.train_step(torch.rand(100, 1, 28, 28).cuda(), torch.randn(100, 16).cuda())
    c = trainer.stats.local()
    assert all(np.isfinite(c.mean(n)) for n in ("loss_d", "loss_g", "d_real", "d_fake")) and c.total("steps") == 5
    assert (trainer.acc.scaler is None) == (precision != "fp16")


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_hot_loop_never_waits_for_the_gpu(precision: str) -> None:
    """Between log steps nothing copies from the GPU to the host (fp16's GradScaler must, so it is left out)."""
    trainer = make_trainer([f"train.precision={precision}", "train.ema_kimg=1"])
    batch = {"image": torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8).pin_memory()}
    trainer.train_step(trainer.to_device(batch), trainer.sample_noise(), measure=False)  # lazy optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.train_step(trainer.to_device(batch), trainer.sample_noise(), measure=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert trainer.stats.local().total("steps") == 4


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_cudagraph_mode_replays_graphs_and_steps_like_eager(arch: str) -> None:
    """train.compile_mode=reduce-overhead on a GPU: no compiled graph skips CUDA graphs (a skip logs why), a
    sample grid drawn between steps from the plain G is intact, and 5 steps land where eager's do."""
    from torch._dynamo.utils import counters

    conv = [*CONV[:3], "train.channels_last=true"] if arch == "dcgan" else []
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.rand(100, 1, 28, 28, generator=g).cuda(), torch.randn(100, 16, generator=g).cuda()) for _ in range(5)
    ]
    counters.clear()
    eager = make_trainer([*conv, "train.ema_kimg=0"])  # samples from G itself
    graphed = make_trainer([*conv, "train.ema_kimg=0", "train.compile=true", "train.compile_mode=reduce-overhead"])
    grid = kept = None
    for i, (real, z) in enumerate(batches):
        eager.train_step(real, z)
        graphed.train_step(real, z)
        if i == 2:
            with torch.no_grad():
                grid = graphed.sample_model()(graphed.fixed_z[:8])
            kept = grid.clone()
    assert grid is not None and torch.equal(grid, kept)  # two replays later, the sample is untouched
    assert counters["inductor"]["cudagraph_skips"] == 0
    for a, b in zip(eager.G_plain.parameters(), graphed.G_plain.parameters(), strict=True):
        # Adam moves a weight by about lr = 2e-4 a step: a wrong update moves most weights by that much, while
        # rounding (TF32, inductor's fusions) flips the step of only a few weights whose gradient is near zero
        diff = (a - b).abs()
        assert diff.median() < 2e-5 and diff.max() < 5 * 2 * 2e-4
