"""2x resampling with a separable FIR filter (StyleGAN2's [1, 3, 3, 1]; R3GAN's "bilinear" [1, 2, 1] convolved
with [1, 1] is the same filter), in plain conv2d: stylegan2-ada's upfirdn2d reference path, no CUDA op to build."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fir_filter(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """A separable FIR filter, normalised to unit sum (StyleGAN2's [1, 3, 3, 1])."""
    f = torch.tensor(taps, dtype=torch.float32)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, filter with the separable f, downsample: stylegan2-ada's upfirdn2d
    reference path in two depthwise conv2d calls. pad = (before, after), the same on both axes."""
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = (f * gain**0.5).to(x.dtype).flip(0)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample2d(x: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
    """2x upsampling: FIR (f given) or bilinear."""
    if f is None:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    n = len(f)
    return upfirdn2d(x, f, up=2, pad=((n + 1) // 2, (n - 2) // 2), gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
    """2x downsampling: FIR (f given) or bilinear (a 2x2 average)."""
    if f is None:
        return F.avg_pool2d(x, 2)
    n = len(f)
    return upfirdn2d(x, f, down=2, pad=((n - 1) // 2, (n - 2) // 2))
