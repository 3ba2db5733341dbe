"""R3GAN's parts against their definitions: the RpGAN loss, R1 and R2 through the phases, the init rule, the
networks' shapes, the schedules on one decay curve; StackedMNIST's construction and its mode count."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from distgan.config import Config, ConfigError, ModelConfig, OptimConfig, TrainConfig
from distgan.configure import load_config
from distgan.data import stackedmnist
from distgan.models import build_discriminator, build_generator, r3gan
from distgan.training import losses
from distgan.training.ema import ema_beta
from distgan.training.schedule import beta2_at, decay_curve
from distgan.training.step import Batch, GANStep, StepOptions, build_phases
from distgan.training.warmstart import d_blocks, freeze_d


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def test_rpgan_on_known_logits() -> None:
    real, fake = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 1.0, -1.0])
    d = losses.d_rpgan(real, fake)
    g = losses.g_rpgan(real, fake)
    assert float(d) == pytest.approx((sp(-2) + sp(1) + sp(0)) / 3, rel=1e-6)
    assert float(g) == pytest.approx((sp(2) + sp(-1) + sp(0)) / 3, rel=1e-6)
    # pairing, not batch means: the same logits paired otherwise give another value
    assert float(losses.d_rpgan(real, fake.flip(0))) != pytest.approx(float(d))
    with pytest.raises(ValueError, match="reals"):
        losses.g_rpgan(None, fake)
    assert torch.isfinite(losses.d_rpgan(torch.tensor([-300.0]), torch.tensor([300.0])))


class Quadratic(nn.Module):
    """D(x) = sum(w * u^2), u = 2x - 1 (StyleGAN2's scale): dD/du = 2 w u, so R1/R2 = mean ||2 w u||^2."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (self.w * (2 * x - 1) ** 2).sum((1, 2, 3))


@pytest.mark.parametrize("r1_gamma", [0.0, 0.4])
def test_r1_and_r2_by_hand_through_the_phases(r1_gamma: float) -> None:
    """R2 alone and R1 with R2 (one backward for both input gradients): each equals its hand formula, and the
    phase's total is the RpGAN loss plus gamma/2 times each, weighted by the lazy interval."""
    shape = (1, 3, 3)
    D = Quadratic(shape)
    g = torch.Generator().manual_seed(0)
    real, fake = (torch.rand(4, *shape, dtype=torch.float64, generator=g) for _ in range(2))
    t = TrainConfig(loss="rpgan", r1_gamma=r1_gamma, r2_gamma=0.6, r1_every=4)
    seen: dict[str, float] = {}
    step = GANStep(
        SimpleNamespace(D=D, D_plain=D),  # type: ignore[arg-type]
        build_phases(t, losses.LOSSES["rpgan"]),
        SimpleNamespace(report=lambda k, v: seen.__setitem__(k, float(v))),
    )  # type: ignore[arg-type]
    terms = step.terms("D", {"D", "Dreg"})
    ctx, total = step.d_forward(Batch(real, torch.zeros(4, 1)), fake, terms)

    def pen(x: torch.Tensor) -> float:
        return float((2 * D.w.detach() * (2 * x - 1)).square().sum((1, 2, 3)).mean())

    assert seen["r2_penalty"] == pytest.approx(pen(fake), rel=1e-6)
    assert ("r1_penalty" in seen) == (r1_gamma > 0)
    expect = seen["loss_d"] + 0.6 / 2 * 4 * pen(fake)
    if r1_gamma:
        assert seen["r1_penalty"] == pytest.approx(pen(real), rel=1e-6)
        expect += r1_gamma / 2 * 4 * pen(real)
    assert float(total) == pytest.approx(expect, rel=1e-6)
    total.backward()  # the penalties are differentiable in D's weights (create_graph)
    assert D.w.grad is not None and torch.isfinite(D.w.grad).all()


def test_g_phase_of_a_relativistic_loss_reads_the_reals() -> None:
    D = Quadratic((1, 3, 3))
    g = torch.Generator().manual_seed(1)
    real, fake = (torch.rand(4, 1, 3, 3, dtype=torch.float64, generator=g) for _ in range(2))
    seen: dict[str, float] = {}
    step = GANStep(
        SimpleNamespace(D=D, D_plain=D, D_for_g=D),  # type: ignore[arg-type]
        build_phases(TrainConfig(loss="rpgan"), losses.LOSSES["rpgan"]),
        SimpleNamespace(report=lambda k, v: seen.__setitem__(k, float(v))),
        StepOptions(g_needs_real=True),
    )  # type: ignore[arg-type]
    step.g_forward(Batch(real, torch.zeros(4, 1)), fake, step.terms("G", {"G"}), None)
    assert seen["loss_g"] == pytest.approx(float(losses.g_rpgan(D(real), D(fake))), rel=1e-9)


def small(**kw: object) -> ModelConfig:
    """kw: model.* keys, or model.r3gan.* keys by their names."""
    own = {k: kw.pop(k) for k in list(kw) if k in r3gan.R3GANConfig.__dataclass_fields__}
    base: dict = dict(arch="r3gan", image_shape=[1, 28, 28], noise_dim=16)
    base.update(kw)
    return ModelConfig(**base, sections={"r3gan": {"channel_base": 448, "channel_max": 32, **own}})


def test_init_rule_fixup_scaled_msr_and_identity_blocks() -> None:
    """Weights N(0, gain / sqrt(fan_in)), the activation gain scaled by L^(-1/4) (L blocks, 3 layers each),
    every block's last conv zero: each residual block starts as the identity."""
    torch.manual_seed(0)
    cfg = small(blocks=2, channel_max=64, channel_base=1792)
    G = build_generator(cfg)
    blocks = [m for m in G.modules() if isinstance(m, r3gan.ResidualBlock)]
    assert len(blocks) == 2 * 3  # 2 per stage, 3 stages (7, 14, 28 px)
    gain = math.sqrt(2 / 1.04) * 6 ** (-1 / 4)
    b = blocks[0]
    for conv, fan_in in ((b.conv1, 64), (b.conv2, 16 * 9)):
        assert float(conv.weight.std()) == pytest.approx(gain / math.sqrt(fan_in), rel=0.1)
    assert b.conv2.groups == 128 // 16
    assert all(float(blk.conv3.weight.abs().max()) == 0 for blk in blocks)
    x = torch.randn(2, 64, 7, 7)
    assert torch.equal(b(x), x)


@pytest.mark.parametrize(
    "shape,classes",
    [([1, 28, 28], 0), ([3, 28, 28], 0), ([3, 32, 32], 10), ([3, 32, 48], 0), ([3, 64, 64], 5)],
)
def test_networks_take_every_size_the_other_families_do(shape: list[int], classes: int) -> None:
    cfg = small(image_shape=shape, num_classes=classes)
    G, D = build_generator(cfg), build_discriminator(cfg)
    z = torch.randn(4, 16)
    y = torch.arange(4) % classes if classes else None
    x = G(z, y)
    assert x.shape == (4, *shape) and 0.2 < float(x.mean()) < 0.8  # [0, 1] images from the [-1, 1] output
    assert D(x, y).shape == (4,)
    if classes:
        with pytest.raises(ValueError, match="labels"):
            D(x)
    res, chans = r3gan.plan(cfg)
    assert all(c % r3gan.opts(cfg).group_channels == 0 for c in chans) and res[-1] == tuple(shape[1:])


def test_tanh_output_is_the_linear_output_squashed_into_the_unit_range() -> None:
    """model.r3gan.output=tanh (issue 44's cheap fix for grey backgrounds): the same weights, G's output layer x
    through tanh, so images lie in [0, 1] and a black pixel needs x << -1 rather than x = -1 exactly."""
    torch.manual_seed(0)
    linear = build_generator(small())
    tanh = build_generator(small(output="tanh"))
    tanh.load_state_dict(linear.state_dict())  # no parameters of its own
    z = torch.randn(4, 16) * 3
    a, b = linear(z), tanh(z)
    torch.testing.assert_close(b, (torch.tanh(a * 2 - 1) + 1) / 2, rtol=1e-5, atol=1e-6)
    assert float(b.min()) >= 0 and float(b.max()) <= 1
    with pytest.raises(ConfigError, match="model.r3gan.output='sigmoid'"):
        build_generator(small(output="sigmoid"))  # a section given in code is made (and checked) when read


def test_d_freeze_counts_r3gan_stages_from_the_input() -> None:
    D = build_discriminator(small())
    assert len(d_blocks(D)) == 3
    names = freeze_d(D, 1)
    assert names and all(n.startswith(("fromrgb", "stages.0.")) for n in names)


def test_spectral_norm_is_refused_for_r3gan() -> None:
    with pytest.raises(ConfigError, match="spectral_norm"):
        build_discriminator(small(spectral_norm=True))


def test_schedules_follow_one_decay_curve() -> None:
    """R3GAN's schedules: cosine over decay_kimg thousand images whatever the run's length, then holding;
    lr 1 -> 0.25, beta2 0.9 -> 0.99, gamma 1 -> 0.1, the EMA half-life growing from 0."""
    o = OptimConfig(
        lr_decay="cosine",
        decay_start=0.0,
        decay_kimg=10,
        lr_min_ratio=0.25,
        betas=[0.0, 0.9],
        beta2_final=0.99,
    )
    # 10k images at batch 100: 100 steps, whatever `total` says
    assert decay_curve(o, 0, 10**6, 100) == 0.0
    assert decay_curve(o, 50, 10**6, 100) == pytest.approx(0.5)
    assert decay_curve(o, 100, 10**6, 100) == decay_curve(o, 5000, 10**6, 100) == 1.0
    assert beta2_at(o, 0.5) == pytest.approx(0.945) and beta2_at(OptimConfig(), 0.5) == 0.999
    assert ema_beta(100, 50_000, 10, 0.05, grow=0.5) == pytest.approx(0.5 ** (100 / 5000))
    with pytest.raises(ConfigError, match="decay curve"):
        load_config(None, ["train.ema_grow=true"])
    cfg = load_config(None, ["optim.lr_decay=cosine", "train.gamma_min_ratio=0.1", "optim.beta2_final=0.99"])
    assert isinstance(cfg, Config)


def test_trainer_applies_the_schedule_to_optimizers_and_gammas() -> None:
    from tests.unit.test_trainer import make_trainer

    tr = make_trainer(
        [
            "model.arch=r3gan",
            "model.noise_dim=16",
            "model.r3gan.channel_base=448",
            "model.r3gan.channel_max=32",
            "train.loss=rpgan",
            "train.r1_gamma=1",
            "train.r2_gamma=1",
            "optim.lr_decay=cosine",
            "optim.decay_start=0",
            "optim.lr_min_ratio=0.25",
            "optim.beta2_final=0.99",
            "optim.betas=[0,0.9]",
            "train.gamma_min_ratio=0.1",
        ]
    )
    cfg = tr.cfg
    tr.state.step = 1  # the last step of a 1-step run: the curve at its end
    tr.train_batch({"image": torch.zeros(100, 1, 28, 28, dtype=torch.uint8)}, total=1)
    assert tr.state.curve == 1.0
    assert tr.opt_g.param_groups[0]["betas"] == (0.0, 0.99) and tr.opt_d.param_groups[0]["betas"][1] == 0.99
    assert tr.opt_d.param_groups[0]["lr"] == pytest.approx(0.25 * cfg.optim.lr_d)
    reg = next(t for t in tr.gan_step.phases["Dreg"].terms if t.name == "r2_penalty")
    assert callable(reg.weight) and reg.weight() == pytest.approx(1 / 2 * 16 * 0.1)  # gamma/2 x r1_every x factor


def test_stack_draws_each_channel_independently_and_labels_its_mode() -> None:
    digits = np.arange(10, dtype=np.uint8).repeat(28 * 28).reshape(10, 28, 28)  # image d is filled with d
    split = stackedmnist.stack(digits, np.arange(10), 5000, seed=0)
    assert split.images.shape == (5000, 28, 28, 3)
    r, g, b = (split.images[:, 0, 0, c].astype(np.int64) for c in range(3))
    assert np.array_equal(split.labels, 100 * r + 10 * g + b)
    assert abs(np.corrcoef(r, g)[0, 1]) < 0.05 and abs(np.corrcoef(g, b)[0, 1]) < 0.05
    assert not np.array_equal(stackedmnist.stack(digits, np.arange(10), 50, 1).labels, split.labels[:50])
    grey, labels = stackedmnist.channel_digits(split.images.transpose(0, 3, 1, 2)[:3], split.labels[:3])
    assert grey.shape == (9, 1, 28, 28) and np.array_equal(grey[:, 0, 0, 0], labels)


def test_mode_coverage_counts_and_kl() -> None:
    every = np.arange(1000).repeat(3)
    assert stackedmnist.coverage(every) == {"modes_covered": 1000.0, "mode_kl_uniform": pytest.approx(0.0)}
    half = np.arange(500).repeat(6)
    out = stackedmnist.coverage(half)
    assert out["modes_covered"] == 500 and out["mode_kl_uniform"] == pytest.approx(math.log(2))
    assert stackedmnist.coverage(np.zeros(100, np.int64))["mode_kl_uniform"] == pytest.approx(math.log(1000))


def test_modes_of_reads_each_channel_with_the_digit_classifier() -> None:
    from distgan.eval.classifier import MnistCNN
    from distgan.eval.modes import modes_of

    torch.manual_seed(0)
    model = MnistCNN((1, 28, 28), 10).eval()
    images = torch.randint(0, 256, (7, 3, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        per = [model(images[:, c : c + 1].float() / 255).argmax(1) for c in range(3)]
    expect = (100 * per[0] + 10 * per[1] + per[2]).numpy()
    assert np.array_equal(modes_of(model, images, 2, torch.device("cpu")), expect)
    assert stackedmnist.is_stacked(tuple(stackedmnist.CLASSES), 3)
    assert not stackedmnist.is_stacked(tuple(stackedmnist.CLASSES), 1)
    assert not stackedmnist.is_stacked(tuple(str(i) for i in range(10)), 3)
