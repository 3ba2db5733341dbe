"""StyleGAN2's parts against their definitions (distgan/models/stylegan2.py, distgan/training/stylegan.py)."""

from __future__ import annotations

import math

import pytest
import torch

from distgan.config import ConfigError, ModelConfig
from distgan.configure import check_run, load_config
from distgan.models import build_discriminator, build_generator
from distgan.models.layers import minibatch_std
from distgan.models.stylegan2 import (
    EqLinear,
    StyleGAN2Config,
    downsample2d,
    fir_filter,
    modulated_conv2d,
    update_w_avg,
    upsample2d,
)
from distgan.training.stylegan import StyleTraining, path_lengths

TINY = dict(w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)
"""model.stylegan2 of the tiny test networks."""


def tiny(shape: list[int], **kw: object) -> ModelConfig:
    """kw: model.* keys, or model.stylegan2.* keys by their names."""
    own = {k: kw.pop(k) for k in list(kw) if k in StyleGAN2Config.__dataclass_fields__}
    return ModelConfig(arch="stylegan2", noise_dim=16, image_shape=shape, sections={"stylegan2": {**TINY, **own}}, **kw)  # type: ignore[arg-type]


def test_demodulated_conv_keeps_unit_variance() -> None:
    """Unit-variance inputs give unit-variance outputs whatever the weights and styles; without demodulation
    the variance follows the styles (the control)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 32, 32, generator=g)
    weight = torch.randn(32, 64, 3, 3, generator=g) * 3.0
    styles = torch.rand(8, 64, generator=g) * 4 + 0.5
    out = modulated_conv2d(x, weight, styles)
    var = out[:, :, 1:-1, 1:-1].var(dim=(0, 2, 3))  # interior: the zero padding lowers the border's variance
    assert torch.allclose(var, torch.ones_like(var), atol=0.08), var
    raw = modulated_conv2d(x, weight, styles, demodulate=False)
    assert raw[:, :, 1:-1, 1:-1].var() > 20


def test_modulated_conv_equals_per_image_weights() -> None:
    """The batched form equals StyleGAN2's definition: each image convolved with w * s / ||w * s||."""
    g = torch.Generator().manual_seed(1)
    x, weight, styles = (
        torch.randn(3, 5, 8, 8, generator=g),
        torch.randn(4, 5, 3, 3, generator=g),
        torch.rand(3, 5),
    )
    out = modulated_conv2d(x, weight, styles)
    for i in range(3):
        w = weight * styles[i][None, :, None, None]
        w = w / w.square().sum((1, 2, 3), keepdim=True).add(1e-8).sqrt()
        ref = torch.nn.functional.conv2d(x[i : i + 1], w, padding=1)
        assert torch.allclose(out[i : i + 1], ref, atol=1e-5)


def test_upsampling_conv_gives_twice_the_size_and_fir_keeps_constants() -> None:
    f = fir_filter()
    x = torch.ones(1, 2, 6, 6)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 12, 12) and torch.allclose(up[:, :, 2:-2, 2:-2], torch.ones(1, 2, 8, 8))
    down = downsample2d(torch.ones(1, 2, 12, 12), f)
    assert down.shape == (1, 2, 6, 6) and torch.allclose(down[:, :, 1:-1, 1:-1], torch.ones(1, 2, 4, 4))
    out = modulated_conv2d(torch.randn(2, 4, 7, 7), torch.randn(3, 4, 3, 3), torch.rand(2, 4), up=True, f=f)
    assert out.shape == (2, 3, 14, 14)


def test_equalised_lr_scales_at_run_time() -> None:
    """Weights are stored N(0, 1/lr_mul^2) and multiplied by lr_mul / sqrt(fan_in) in the forward; so is their
    gradient, which is what makes Adam's steps equal across layers (and 100x smaller in the mapping)."""
    torch.manual_seed(0)
    for lr_mul in (1.0, 0.01):
        layer = EqLinear(400, 300, lr_mul=lr_mul)
        assert abs(layer.weight.std().item() - 1 / lr_mul) < 0.02 / lr_mul
        assert layer.weight_gain == pytest.approx(lr_mul / 20)
        x = torch.randn(2, 400)
        layer(x).sum().backward()
        assert layer.weight.grad is not None
        expected = layer.weight_gain * x.sum(0)[None, :].expand(300, -1)
        assert torch.allclose(layer.weight.grad, expected, atol=1e-6)
    out = EqLinear(1024, 256)(torch.randn(512, 1024))
    assert abs(out.var().item() - 1) < 0.1  # unit in, unit out


def reference_mbstd(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """stylegan2-ada-pytorch's MinibatchStdLayer.forward (training/networks.py), transcribed line by line."""
    N, C, H, W = x.shape
    G = min(group_size, N)
    F_, c = num_channels, C // num_channels
    y = x.reshape(G, -1, F_, c, H, W)
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = (y + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])
    y = y.reshape(-1, F_, 1, 1)
    y = y.repeat(G, 1, H, W)
    return torch.cat([x, y], dim=1)


def test_minibatch_std_strides_over_the_batch_as_the_reference() -> None:
    """Issue 45: groups were consecutive images, the reference's stride (image i of n joins group i mod n/G), so
    an imported D scored a batch larger than its group differently (1.1e-2 on logits). Each part of a [reals,
    fakes] forward is grouped alone, as the reference's two forwards would be."""
    x = torch.zeros(8, 2, 2, 2)
    x[0::2] = torch.tensor([0.0, 1.0, 2.0, 3.0])[:, None, None, None]  # group of images 0, 2, 4, 6: std of 0..3
    x[1::2] = 5.0  # images 1, 3, 5, 7: constant
    out = minibatch_std(x, 4)
    assert out.shape == (8, 3, 2, 2) and torch.equal(out[:, :2], x)
    assert torch.allclose(out[0::2, 2], torch.full((4, 2, 2), math.sqrt(1.25 + 1e-8)))
    assert torch.allclose(out[1::2, 2], torch.full((4, 2, 2), 1e-4))  # sqrt(0 + 1e-8)
    torch.manual_seed(0)
    for n, g, f in ((8, 4, 1), (16, 4, 1), (12, 3, 2), (4, 8, 1)):
        x = torch.randn(n, 4, 3, 5)
        torch.testing.assert_close(minibatch_std(x, g, f), reference_mbstd(x, g, f), rtol=0, atol=1e-6)
        both = torch.cat([x, torch.randn(n, 4, 3, 5)])
        halves = torch.cat([reference_mbstd(h, g, f) for h in both.split(n)])
        torch.testing.assert_close(minibatch_std(both, g, f, batches=2), halves, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="groups of 4"):
        minibatch_std(torch.zeros(6, 1, 2, 2), 4)


def test_path_length_gradient_matches_finite_differences() -> None:
    """d/dtheta of (||J_w^T y|| - a)^2 by double backward against central differences, float64, on a tiny G."""
    torch.manual_seed(0)
    G = build_generator(tiny([1, 16, 16], mapping_layers=1)).double()
    z, y = torch.randn(4, 16, dtype=torch.float64), torch.randn(4, 1, 16, 16, dtype=torch.float64) / 16
    a = 0.3

    def penalty() -> torch.Tensor:
        img, ws = G(z, return_ws=True)
        return (path_lengths(img, ws, y, 1) - a).square().mean()

    params = [G.blocks[1].convs[0].weight, G.mapping.fcs[0].weight, G.blocks[0].const]
    grads = torch.autograd.grad(penalty(), params)
    for p, grad in zip(params, grads, strict=True):
        for idx in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            old = p.data[idx].item()
            h = 1e-5 * max(1.0, abs(old))
            p.data[idx] = old + h
            up = penalty().item()
            p.data[idx] = old - h
            down = penalty().item()
            p.data[idx] = old
            fd = (up - down) / (2 * h)
            assert grad[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-9)


def test_truncation_towards_the_mean_w() -> None:
    torch.manual_seed(0)
    G = build_generator(tiny([3, 16, 16])).eval()
    w_avg = update_w_avg(G, n=2000)
    z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(w_avg, G.mapping(z, None)[:, 0].mean(0), atol=1e-5)  # the mean of the same latents
    G.truncation = 0.0
    imgs = G(torch.randn(5, 16))
    assert torch.allclose(imgs, imgs[:1].expand_as(imgs), atol=1e-6)  # psi 0: every latent gives the mean image
    G.truncation = 1.0
    assert not torch.allclose(G(torch.randn(5, 16))[0], G(torch.randn(5, 16))[1])


def test_style_mixing_takes_the_second_latent_from_the_cutoff() -> None:
    torch.manual_seed(0)
    G = build_generator(tiny([1, 28, 28], num_classes=3))
    z, z2, y = torch.randn(2, 16), torch.randn(2, 16), torch.tensor([0, 2])
    ws = G.styles(z, y, (z2, 2))
    assert G.num_ws == 6 and torch.equal(ws[:, :2], G.styles(z, y)[:, :2])
    assert torch.equal(ws[:, 2:], G.styles(z2, y)[:, 2:])
    assert G(z, y).shape == (2, 1, 28, 28)  # 28 px: 7 -> 14 -> 28


@pytest.mark.parametrize("shape", [[1, 28, 28], [3, 16, 16], [3, 32, 32], [3, 32, 48], [1, 64, 96]])
def test_shapes_grey_rgb_conditional_and_bilinear(shape: list[int]) -> None:
    for kw in ({}, {"num_classes": 4}, {"resample": "bilinear"}):
        cfg = tiny(shape, **kw)
        G, D = build_generator(cfg), build_discriminator(cfg)
        y = torch.arange(4) if kw.get("num_classes") else None
        img = G(torch.randn(4, 16), y)
        assert img.shape == (4, *shape)
        logits = D(img, y)
        assert logits.shape == (4,) and torch.isfinite(logits).all()


def test_spectral_norm_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="spectral_norm=true with model.arch=stylegan2"):
        build_discriminator(tiny([1, 28, 28], spectral_norm=True))


def test_group_and_shrink_must_divide_the_rank_batch() -> None:
    """Refused at load, once the launch is known (configure.check_run), not while the step is built."""
    cfg = load_config(None, ["model.arch=stylegan2", "train.batch_size=6"])
    with pytest.raises(ConfigError, match="mbstd_group"):
        check_run(cfg, 1, 2**40)
    cfg = load_config(
        None, ["model.arch=stylegan2", "train.pl_batch_shrink=3", "model.mbstd_group=2", "train.batch_size=8"]
    )
    with pytest.raises(ConfigError, match="pl_batch_shrink"):
        check_run(cfg, 1, 2**40)


def test_stream_draws_the_global_batch_per_rank() -> None:
    """Two ranks' draws are the two halves of one process's: mixing cutoff, second latents and noise."""
    G = build_generator(tiny([1, 28, 28]))
    cfg = load_config(None, ["model.arch=stylegan2", "train.style_mixing=1.0"])
    one = StyleTraining(cfg, G, 0, 1).g_inputs(8, torch.device("cpu"), {"D", "G", "Greg"})
    halves = [StyleTraining(cfg, G, r, 2).g_inputs(8, torch.device("cpu"), {"D", "G"}) for r in (0, 1)]
    assert one["return_ws"] and "return_ws" not in halves[0]
    assert one["mix"][1] == halves[0]["mix"][1] == halves[1]["mix"][1] and 1 <= one["mix"][1] < G.num_ws
    assert torch.equal(one["mix"][0], torch.cat([h["mix"][0] for h in halves]))
    for i, shape in enumerate(G.noise_shapes()):
        assert one["noise"][i].shape == (8, *shape)
        assert torch.equal(one["noise"][i], torch.cat([h["noise"][i] for h in halves]))


def test_compile_with_path_length_is_refused_by_name() -> None:
    cfg = load_config(None, ["model.arch=stylegan2", "train.compile=true"])
    with pytest.raises(ConfigError, match="train.compile with train.pl_weight"):
        check_run(cfg, 1, 2**40)


def test_path_length_is_measured_on_stylegans_image_scale() -> None:
    """G's images are (x + 1) / 2; the lengths are ||J^T y|| of x, StyleGAN2's [-1, 1] images, so pl_weight and
    pl_mean mean its values (with pl_decay 1 the first pl_mean is the mean length of the same draw y)."""
    torch.manual_seed(0)
    G = build_generator(tiny([1, 16, 16]))
    cfg = load_config(None, ["model.arch=stylegan2", "train.pl_batch_shrink=1", "train.pl_decay=1.0"])
    st = StyleTraining(cfg, G, 0, 1)
    y_gen = torch.Generator()
    y_gen.set_state(st.gen.get_state())
    y = torch.randn(4, 1, 16, 16, generator=y_gen) / 16
    fake, ws = G(torch.randn(4, 16), return_ws=True)
    st.pl_penalty(fake, ws, lambda t: t, 4)
    expected = path_lengths(2 * fake - 1, ws, y, 1).mean().item()
    assert float(st.pl_mean) == pytest.approx(expected, rel=1e-5)
