"""PacGAN's packing (distgan/training/pack.py) and minibatch std in the conv families, against their definitions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from distgan.config import ConfigError, ModelConfig, TrainConfig
from distgan.configure import check_run, load_config
from distgan.models import build_discriminator
from distgan.training import losses
from distgan.training.pack import Pack, pack
from distgan.training.step import Batch, GANStep, StepOptions, build_phases

SMALL: dict[str, dict] = {
    "mlp": dict(d_hidden=[16]),
    "dcgan": dict(d_channels=4),
    "resnet": dict(d_channels=4),
    "r3gan": dict(sections={"r3gan": dict(channel_base=224, channel_max=16)}),
    "stylegan2": dict(sections={"stylegan2": dict(w_dim=8, mapping_layers=1, channel_base=64, channel_max=8)}),
}


def model(arch: str, **kw: object) -> ModelConfig:
    return ModelConfig(arch=arch, image_shape=[3, 16, 16], noise_dim=8, **{**SMALL[arch], **kw})  # type: ignore[arg-type]


def test_a_pack_is_consecutive_images_stacked_along_channels() -> None:
    x = torch.randn(6, 3, 4, 4)
    packed = pack(x, 3)
    assert packed.shape == (2, 9, 4, 4)
    for k in range(2):
        assert torch.equal(packed[k], torch.cat([x[3 * k], x[3 * k + 1], x[3 * k + 2]]))
    with pytest.raises(ValueError, match="packs of 4"):
        pack(x, 4)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_every_family_builds_a_packed_d_that_judges_one_pack_as_one_input(arch: str) -> None:
    """D of model.d_pack=2 is D of 2x the channels: n images give n / 2 logits, each a function of its own pack
    only (perturbing image 0 moves logit 0 alone; minibatch std off, stylegan2's by model.mbstd_channels=0)."""
    torch.manual_seed(0)
    D = build_discriminator(model(arch, d_pack=2, mbstd_channels=0)).eval()
    x = torch.rand(8, 3, 16, 16)
    out = D(Pack(2).d_input(x))
    assert out.shape == (4,)
    moved = x.clone()
    moved[0] += 0.5
    diff = (D(pack(moved, 2)) - out).abs()
    assert diff[0] > 0 and torch.equal(diff[1:], torch.zeros(3))


def test_r1_and_r2_are_taken_on_the_packed_inputs() -> None:
    """A quadratic D on packs of 2: R1/R2 are the mean over packs of the squared norm of D's gradient by its
    packed input (the sum over the pack's two images), by hand."""

    class Quadratic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))

        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return (self.w * (2 * x - 1) ** 2).sum((1, 2, 3))

    D = Quadratic()
    g = torch.Generator().manual_seed(0)
    real, fake = (torch.rand(4, 1, 3, 3, dtype=torch.float64, generator=g) for _ in range(2))
    t = TrainConfig(loss="rpgan", r1_gamma=0.4, r2_gamma=0.6, r1_every=4)
    seen: dict[str, float] = {}
    step = GANStep(
        SimpleNamespace(D=D, D_plain=D),  # type: ignore[arg-type]
        build_phases(t, losses.LOSSES["rpgan"], pack=2),
        SimpleNamespace(report=lambda k, v: seen.__setitem__(k, float(v))),  # type: ignore[arg-type]
        StepOptions(parts=[Pack(2)]),
    )
    ctx, total = step.d_forward(Batch(real, torch.zeros(4, 1)), fake, step.terms("D", {"D", "Dreg"}))
    assert ctx.real_logits is not None and ctx.real_logits.shape == (2,)  # 4 reals: 2 packs; reals and fakes apart
    assert torch.allclose(ctx.real_logits, D(pack(real, 2)).detach())

    def pen(x: torch.Tensor) -> float:
        return float((2 * D.w.detach() * (2 * pack(x, 2) - 1)).square().sum((1, 2, 3)).mean())

    assert seen["r1_penalty"] == pytest.approx(pen(real), rel=1e-6)
    assert seen["r2_penalty"] == pytest.approx(pen(fake), rel=1e-6)
    assert float(total.detach()) == pytest.approx(
        seen["loss_d"] + 0.4 / 2 * 4 * pen(real) + 0.6 / 2 * 4 * pen(fake), rel=1e-6
    )


def test_packing_refuses_what_it_cannot_pack() -> None:
    with pytest.raises(ConfigError, match=r"model.d_pack=2 with model.num_classes=10: .*unconditional"):
        load_config(None, ["model.arch=dcgan", "model.d_pack=2", "model.num_classes=10"])
    cfg = load_config(None, ["model.arch=dcgan", "model.d_pack=3", "train.batch_size=64"])
    with pytest.raises(ConfigError, match=r"model.d_pack=3: each rank's batch of 32 images"):
        check_run(cfg, 2, 2**40)  # 64 over 2 ranks: refused at load, before anything is built
    check_run(load_config(None, ["model.arch=dcgan", "model.d_pack=3", "train.batch_size=66"]), 2, 2**40)
    cfg = load_config(
        None,
        ["model.arch=dcgan", "model.d_pack=2", "model.mbstd_channels=1", "model.mbstd_group=4", "train.batch_size=12"],
    )
    with pytest.raises(ConfigError, match="model.mbstd_group=4: each rank's batch \\(6 inputs of D"):
        check_run(cfg, 1, 2**40)
    with pytest.raises(ConfigError, match="model.mbstd_channels=1 with model.arch=mlp"):
        build_discriminator(load_config(None, ["model.mbstd_channels=1"]).model)


@pytest.mark.parametrize("arch", ["dcgan", "resnet", "r3gan", "stylegan2"])
def test_minibatch_std_groups_stride_over_the_batch_and_keep_reals_from_fakes(arch: str) -> None:
    """Group 4 of a batch of 8 (stylegan2-ada's grouping): image i shares its group with i + 2, i + 4, i + 6,
    so perturbing image 0 moves logits 0, 2, 4, 6 only; with batches=2 (GANStep's [reals, fakes]) the two halves
    are grouped apart, and perturbing a real moves no fake's logit."""
    torch.manual_seed(0)
    D = build_discriminator(model(arch, mbstd_channels=1, mbstd_group=4)).eval()
    assert D.mbstd.channels == 1
    x = torch.rand(8, 3, 16, 16)
    moved = x.clone()
    moved[0] += 0.5
    diff = (D(moved) - D(x)).abs()
    assert (diff[[0, 2, 4, 6]] > 0).all() and torch.equal(diff[[1, 3, 5, 7]], torch.zeros(4))
    both = torch.cat([x, torch.rand(8, 3, 16, 16)])
    moved = both.clone()
    moved[0] += 0.5
    diff = (D(moved, batches=2) - D(both, batches=2)).abs()
    assert diff[0] > 0 and torch.equal(diff[8:], torch.zeros(8))


def test_minibatch_std_defaults_keep_old_networks() -> None:
    """mbstd_channels=-1 is each family's old network: stylegan2 with one feature (its checkpoints and the
    imported pickles), the other families without (theirs), so saved weights still load."""
    for arch, k in (("dcgan", 0), ("resnet", 0), ("r3gan", 0), ("stylegan2", 1)):
        assert build_discriminator(model(arch)).mbstd.channels == k, arch
    with pytest.raises(ConfigError, match="model.mbstd_channels=3"):
        build_discriminator(model("dcgan", mbstd_channels=3))  # 4 x 2 = 8 channels at the coarsest stage
