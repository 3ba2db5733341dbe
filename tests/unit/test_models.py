"""Model families, DiffAugment, R1, d_steps and class conditioning in one process."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distgan.config import ConfigError, ModelConfig
from distgan.configure import load_config
from distgan.models import FAMILIES, build_discriminator, build_generator
from distgan.models.layers import stages
from distgan.training import losses
from distgan.training.augment import DiffAugment
from tests.unit.test_trainer import fresh_accelerate_state, make_trainer  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize("shape", [[1, 28, 28], [3, 32, 32], [3, 64, 64], [1, 128, 128], [3, 32, 48], [1, 64, 96]])
@pytest.mark.parametrize("classes", [0, 5])
def test_conv_families_make_and_judge_images_of_any_size(arch: str, shape: list[int], classes: int) -> None:
    cfg = ModelConfig(
        arch=arch,
        image_shape=shape,
        g_channels=4,
        d_channels=4,
        num_classes=classes,
        spectral_norm=True,
        noise_dim=16,
    )
    G, D = build_generator(cfg), build_discriminator(cfg)
    y = torch.tensor([0, classes - 1, 1]) if classes else None
    x = G(torch.randn(3, 16), y)
    assert x.shape == (3, *shape) and x.min() >= 0 and x.max() <= 1
    logits = D(x, y)
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    if classes:  # the class changes what G makes and what D says (once the class embeddings have trained)
        for m in G.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight)
        y2 = torch.tensor([1, 0, 0])
        z = torch.randn(3, 16)
        assert not torch.allclose(G.eval()(z, y), G(z, y2))
        assert not torch.allclose(D(x, y), D(x, y2))


def test_stages_and_refusals() -> None:
    def s(h: int, w: int | None = None) -> tuple[int, int]:
        (h0, w0), n = stages(ModelConfig(arch="dcgan", image_shape=[1, h, w or h]))
        assert w is not None or h0 == w0
        return (h0, n) if w is None else (h0, w0, n)  # type: ignore[return-value]

    assert (s(28), s(32), s(48), s(64), s(128)) == ((7, 2), (4, 3), (6, 3), (4, 4), (4, 5))
    assert (s(32, 48), s(64, 96), s(28, 56), s(32, 64)) == ((4, 6, 3), (4, 6, 4), (7, 14, 2), (4, 8, 3))
    with pytest.raises(ConfigError, match="at least 8x8"):
        s(7)
    with pytest.raises(ConfigError, match="model.arch='gan'"):
        build_generator(ModelConfig(arch="gan"))
    with pytest.raises(ConfigError, match="dcgan, resnet, stylegan2 or r3gan"):
        build_generator(ModelConfig(arch="mlp", num_classes=10))
    assert set(FAMILIES) >= {"mlp", "dcgan", "resnet"}


def test_dcgan_28_matches_the_published_layout() -> None:
    """DCGAN for 28x28 at width 64: 128x7x7 -> 64x14x14 -> 1x28x28 in G, the mirror in D."""
    cfg = ModelConfig(arch="dcgan", g_channels=64, d_channels=64)
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert [tuple(m.weight.shape) for m in G.ups] == [(128, 64, 4, 4), (64, 1, 4, 4)]
    assert [tuple(m.weight.shape) for m in D.downs] == [(64, 1, 4, 4), (128, 64, 4, 4)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())  # the rule: no BN in D


def test_spectral_norm_bounds_every_d_layer_and_freezes_in_eval_mode() -> None:
    cfg = ModelConfig(arch="dcgan", g_channels=8, d_channels=8, spectral_norm=True)
    D = build_discriminator(cfg)
    for _ in range(30):  # power iterations converge
        D(torch.rand(2, 1, 28, 28))
    for m in D.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            w = m.weight.detach().reshape(m.weight.shape[0], -1)
            assert torch.linalg.matrix_norm(w, 2).item() == pytest.approx(1.0, rel=0.02)
    u = {k: v.clone() for k, v in D.state_dict().items() if k.endswith("_u")}
    D.eval()(torch.rand(2, 1, 28, 28))
    assert all(torch.equal(D.state_dict()[k], v) for k, v in u.items())  # eval: read, not advanced
    D.train()(torch.rand(2, 1, 28, 28))
    assert not all(torch.equal(D.state_dict()[k], v) for k, v in u.items())


def test_r1_penalty_is_the_squared_input_gradient_on_stylegans_scale() -> None:
    """The squared gradient w.r.t. the image on [-1, 1] (StyleGAN2's gamma then means the same here): with
    x01 in [0, 1] and D(x01) = f(2 x01 - 1), the gradient w.r.t. x11 = 2 x01 - 1 is computed by hand."""
    w = torch.randn(1, 1, 4, 4)
    x = torch.rand(3, 1, 4, 4, requires_grad=True)
    x11 = 2 * x - 1
    logits = (x11 * w).sum((1, 2, 3)) ** 2 / 2  # gradient per image w.r.t. x11: (x11.w) * w
    expected = (((x11 * w).sum((1, 2, 3))[:, None, None, None] * w) ** 2).sum((1, 2, 3)).mean()
    torch.testing.assert_close(losses.r1_penalty(logits, x), expected)
    # differentiable: D's backward sees the penalty's own gradient (double backward)
    losses.r1_penalty((x * w).sum((1, 2, 3)) ** 2 / 2, x).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffaugment_is_differentiable_and_sliced_from_the_global_batch() -> None:
    x = torch.rand(8, 3, 16, 16)
    one = DiffAugment("color,translation,cutout", seed=3, rank=0, world=1).augment(x)
    parts = [
        DiffAugment("color,translation,cutout", seed=3, rank=r, world=2).augment(x[4 * r : 4 * r + 4]) for r in (0, 1)
    ]
    torch.testing.assert_close(torch.cat(parts), one)  # 2 ranks augment exactly what 1 process does
    assert not torch.allclose(one, x)
    xg = x.clone().requires_grad_(True)
    DiffAugment("color,translation,cutout", seed=3, rank=0, world=1).augment(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="unknown flip"):
        load_config(None, ["train.augment=color,flip"])


def test_translation_shifts_and_cutout_blanks_a_half_size_square() -> None:
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    moved = DiffAugment("translation", seed=0, rank=0, world=1).augment(x)
    ys, xs = (moved[:, 0] > 0.9).nonzero()[:, 1:].T  # the bright pixel's new place, at most 2 (=16/8) away
    assert (ys - 8).abs().max() <= 2 and (xs - 8).abs().max() <= 2 and len(ys) == 64
    assert (ys != 8).any() and (xs != 8).any()
    cut = DiffAugment("cutout", seed=0, rank=0, world=1).augment(torch.ones(64, 1, 16, 16))
    blanked = (cut[:, 0] < 1).sum((1, 2))  # cutout writes DiffAugment's 0 of [-1, 1], i.e. 0.5 here
    assert blanked.max() == 64 and blanked.min() > 0 and torch.allclose(cut[cut < 1], torch.tensor(0.5))


def test_d_steps_trains_g_on_every_kth_batch(make_shards) -> None:
    folder = make_shards(1200, shard_size=400)
    trainer = make_trainer(
        [
            f"data.path={folder}",
            "train.epochs=2",
            "train.batch_size=100",
            "data.workers=0",
            "train.d_steps=3",
        ],
        folder,
    )
    trainer.train()
    steps_d = {int(s["step"]) for s in trainer.opt_d.state_dict()["state"].values()}
    steps_g = {int(s["step"]) for s in trainer.opt_g.state_dict()["state"].values()}
    assert steps_d == {24} and steps_g == {8}


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_conditional_conv_run_with_r1_and_augment(make_shards, arch: str) -> None:
    folder = make_shards(600, shard_size=300)
    trainer = make_trainer(
        [
            f"data.path={folder}",
            "data.workers=0",
            "train.epochs=1",
            "train.batch_size=50",
            f"model.arch={arch}",
            "model.g_channels=8",
            "model.d_channels=8",
            "model.num_classes=10",
            "model.spectral_norm=true",
            "train.loss=hinge",
            "train.r1_gamma=1",
            "train.r1_every=4",
            "train.augment=translation,color",
            "train.log_every=4",
        ],
        folder,
    )
    trainer.train()
    assert trainer.state.step == 12
    assert trainer.sampling.num_classes == 10
    assert "r1_penalty" in trainer.state.last_print and trainer.state.last_print["r1_penalty"] > 0
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())


def test_num_classes_from_the_manifest() -> None:
    from distgan.config import resolve_num_classes

    cfg = load_config(None, ["model.arch=dcgan", "model.num_classes=-1"])
    assert resolve_num_classes(cfg, tuple("abc")).model.num_classes == 3
    with pytest.raises(ConfigError, match="lists no classes"):
        resolve_num_classes(cfg, ())
    with pytest.raises(ConfigError, match="has 3 classes"):
        resolve_num_classes(load_config(None, ["model.arch=dcgan", "model.num_classes=4"]), tuple("abc"))


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_bf16_autocast_and_channels_last_conv_steps(arch: str) -> None:
    trainer = make_trainer(
        [
            f"model.arch={arch}",
            "model.g_channels=8",
            "model.d_channels=8",
            "model.spectral_norm=true",
            "train.precision=bf16",
            "train.channels_last=true",
            "train.r1_gamma=1",
            "train.r1_every=1",
        ]
    )
    assert trainer.acc.scaler is None
    before = [p.detach().clone() for p in trainer.G.parameters()]
    for _ in range(3):
        trainer.train_step(
            trainer.to_device({"image": torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)}),
            torch.randn(20, 16),
            r1=True,
        )
    c = trainer.stats.local()
    assert all(torch.isfinite(torch.tensor(c.mean(n))) for n in ("loss_d", "loss_g", "r1_penalty"))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters(), strict=True))
    conv = next(m for m in trainer.D.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_stylegan2_bf16_only_in_the_high_resolutions_with_clamping() -> None:
    """train.precision=bf16 with model.sg_mp_res=1: the 28-px layers compute in bf16 and are clamped, the 7 and
    14 px ones and the mapping in float32; path length and R1 on the same steps; channels_last."""
    from distgan.models.stylegan2 import SynthesisLayer

    trainer = make_trainer(
        [
            "model.arch=stylegan2",
            "model.stylegan2.w_dim=16",
            "model.stylegan2.channel_base=128",
            "model.stylegan2.channel_max=8",
            "model.stylegan2.mp_res=1",
            "model.stylegan2.conv_clamp=0.5",
            "train.precision=bf16",
            "train.channels_last=true",
            "train.r1_gamma=1",
            "train.r1_every=1",
            "train.pl_every=1",
            "train.batch_size=20",
        ]
    )
    seen: dict[tuple[int, int], set[torch.dtype]] = {}
    layers = [m for m in trainer.G.modules() if isinstance(m, SynthesisLayer)]
    for layer in layers:
        layer.register_forward_hook(lambda m, a, out: seen.setdefault(m.res, set()).add(out.dtype))
    for _ in range(2):
        trainer.train_step(
            trainer.to_device({"image": torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)}),
            torch.randn(20, 16),
            r1=True,
            pl=True,
        )
    assert seen == {(7, 7): {torch.float32}, (14, 14): {torch.float32}, (28, 28): {torch.bfloat16}}
    c = trainer.stats.local()
    assert all(torch.isfinite(torch.tensor(c.mean(n))) for n in ("loss_d", "loss_g", "r1_penalty", "pl_penalty"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layers[-1](torch.randn(2, layers[-1].weight.shape[1], 28, 28) * 100, torch.randn(2, 16), None)
    assert out.abs().max() <= 0.5 * 2**0.5 + 1e-2  # clamp x sqrt(2), the lrelu gain


def test_micro_batches_draw_what_one_batch_draws() -> None:
    """The augmentation streams (DiffAugment, ADA) on 4 micro-batches of 2 augment each image as one batch of
    8 does, and leave the generator where one batch leaves it."""
    from distgan.training.ada import AdaptiveAugment

    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cfg = load_config(None, ["train.augment=ada", "train.ada_p=0.8"]).train
    for make in (
        lambda: DiffAugment("color,translation,cutout", 3, 0, 1),
        lambda: AdaptiveAugment(cfg, 3, 0, 1),
    ):
        whole, parts = make(), make()  # one batch; its micro-batches
        ref = [whole.augment(x), whole.augment(x)]  # two call sites (reals, fakes) of one phase
        got: list[list[torch.Tensor]] = [[], []]
        for i in range(4):
            parts.draws.micro(i, 4)
            got[0].append(parts.augment(x[2 * i : 2 * i + 2]))
            got[1].append(parts.augment(x[2 * i : 2 * i + 2]))
        for r, g in zip(ref, got, strict=True):
            torch.testing.assert_close(torch.cat(g), r)
        assert torch.equal(whole.gen.get_state(), parts.gen.get_state())


def test_batch_per_device_refusals() -> None:
    """Refused when the config is checked against the launch (configure.check_run, before a run directory)."""
    from distgan.configure import check_run

    bad = ["model.arch=dcgan", "model.g_norm=none", "train.batch_per_device=3", "train.batch_size=8"]
    with pytest.raises(ConfigError, match="multiple of it"):
        check_run(load_config(None, bad), 1, 2**40)
    with pytest.raises(ConfigError, match="batch norm in G"):
        check_run(load_config(None, ["model.arch=dcgan", "train.batch_per_device=4", "train.batch_size=8"]), 1, 2**40)
    trainer = make_trainer(["model.arch=dcgan", "model.g_norm=none", "train.batch_per_device=200"])
    assert trainer.gan_step.micro == 0  # a batch that fits runs in one pass
