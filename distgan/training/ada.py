"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): StyleGAN2-ADA's 'bgc' pipeline applied to
everything D sees, each operation with probability p, and p steered by how sure D is of the reals.

The operations, their order, distributions and defaults follow StyleGAN2-ADA's training/augment.py: geometric
ones (x-flip, 90-degree rotations, integer translation; isotropic scaling, rotation, anisotropic scaling,
fractional translation) compose one 3x3 matrix per image, colour ones (brightness, contrast, luma flip, hue,
saturation) one 4x4 matrix, both in its [-1, 1] range. Written here rather than imported: the reference needs
its custom CUDA ops (upfirdn2d, grid_sample_gradfix) and draws from the global RNG, while distgan needs plain
PyTorch and one seeded stream drawn for the global batch (2 ranks then augment exactly what 1 process does, and
a resume continues the stream). One difference, said plainly: the geometric matrix is applied with a single
bilinear grid_sample with symmetric-reflection padding, without the reference's 2x wavelet supersampling, so
fractional transforms are a little blurrier than StyleGAN's.

p adapts as in the paper: every `train.ada_interval` D steps, r_t = E[sign(D(augmented real))] over those steps
(all-reduced, so every rank gets the same p) moves p by sign(r_t - target) * images / (ada_kimg * 1000).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from distgan.config import TrainConfig, parse_ada_ops
from distgan.training.part import StepPart
from distgan.utils.draws import GlobalDraws, stream_seed

LUMA = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)


def _mat(rows: list[list[torch.Tensor | float]], n: int) -> torch.Tensor:
    """Per-image matrices from rows of per-image tensors (or constants)."""
    cols = [[c if isinstance(c, torch.Tensor) else torch.full((n,), float(c)) for c in row] for row in rows]
    return torch.stack([torch.stack(row, -1) for row in cols], -2)


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], len(tx))


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], len(sx))


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], len(theta))


def rotate3d(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta about the unit axis v (Rodrigues), as a 4x4 homogeneous matrix per image."""
    vx, vy, vz = (float(v[i]) for i in range(3))
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _mat(
        [
            [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
            [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
            [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
            [0, 0, 0, 1],
        ],
        len(theta),
    )


class AdaptiveAugment(StepPart):
    """Call on all ranks with the same sequence of calls: each call draws parameters for `global_n` images."""

    draws: GlobalDraws  # always drawing (StepPart's may be None)
    state_name = "augment"

    def __init__(self, cfg: TrainConfig, seed: int, rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.target, self.kimg, self.interval, self.p_max = (
            cfg.ada_target,
            cfg.ada_kimg,
            cfg.ada_interval,
            cfg.ada_p_max,
        )
        self.p = float(cfg.ada_p)
        self.ops = parse_ada_ops(cfg.ada_ops)
        self.gen = torch.Generator().manual_seed(stream_seed(seed, "ada"))
        self.draws = GlobalDraws(self.gen, rank, world)
        self.signs = torch.zeros(2, dtype=torch.float64)  # sum of sign(D(real)) and count: this rank, this interval
        self.d_steps = 0
        self.rt = float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {
            "p": self.p,
            "gen": self.gen.get_state(),
            "signs": self.signs.cpu().clone(),
            "d_steps": self.d_steps,
            "rt": self.rt,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.d_steps, self.rt = float(state["p"]), int(state["d_steps"]), float(state["rt"])
        self.gen.set_state(state["gen"])
        self.signs = state["signs"].clone()

    # -- the pipeline ------------------------------------------------------------------------------------------
    def _draw(self, global_n: int, kind: str, *shape: int) -> torch.Tensor:
        """Global-batch random numbers from the one stream; this rank's rows (its contiguous share)."""
        fn = torch.rand if kind == "u" else torch.randn
        return self.draws.rows(global_n, lambda n: fn(n, *shape, generator=self.gen))

    def _gate(self, n: int, p: float, op: str) -> torch.Tensor:
        """1 where operation op applies to an image (probability p; never when op is not in train.ada_ops),
        else 0; always one draw per image, so the stream does not depend on p or the ops chosen."""
        return (self._draw(n, "u") < p).double() * (op in self.ops)

    def geometric(self, n: int, h: int, w: int) -> torch.Tensor:
        """The inverse 3x3 matrices (output pixel -> input pixel, centred coordinates) of this rank's images."""
        p = self.p
        g = torch.eye(3, dtype=torch.float64).repeat(n // self.world, 1, 1)
        i = torch.floor(self._draw(n, "u") * 2) * self._gate(n, p, "xflip")
        g = g @ scale2d(1 - 2 * i, torch.ones_like(i))
        i = torch.floor(self._draw(n, "u") * 4) * self._gate(n, p, "rotate90")
        g = g @ rotate2d(-math.pi / 2 * i)
        t = (self._draw(n, "u", 2).double() * 2 - 1) * self._gate(n, p, "xint")[:, None]  # max 0.125
        g = g @ translate2d(torch.round(t[:, 0] * w * 0.125), torch.round(t[:, 1] * h * 0.125))
        s = torch.exp2(self._draw(n, "n").double() * 0.2 * self._gate(n, p, "scale"))  # std 0.2
        g = g @ scale2d(s, s)
        p_rot = 1 - math.sqrt(max(0.0, 1 - p))  # rotation is drawn twice (before and after aniso)
        theta = (self._draw(n, "u").double() * 2 - 1) * math.pi * self._gate(n, p_rot, "rotate")
        g = g @ rotate2d(-theta)
        s = torch.exp2(self._draw(n, "n").double() * 0.2 * self._gate(n, p, "aniso"))  # std 0.2
        g = g @ scale2d(s, 1 / s)
        theta = (self._draw(n, "u").double() * 2 - 1) * math.pi * self._gate(n, p_rot, "rotate")
        g = g @ rotate2d(-theta)
        t = self._draw(n, "n", 2).double() * 0.125 * self._gate(n, p, "xfrac")[:, None]  # std 0.125
        return g @ translate2d(t[:, 0] * w, t[:, 1] * h)

    def colour(self, n: int) -> torch.Tensor:
        """The 4x4 colour matrices of this rank's images (homogeneous RGB in [-1, 1])."""
        p, m = self.p, n // self.world
        c = torch.eye(4, dtype=torch.float64).repeat(m, 1, 1)
        v = LUMA.double()
        b = self._draw(n, "n").double() * 0.2 * self._gate(n, p, "brightness")  # std 0.2
        c = translate3d(b) @ c
        s = torch.exp2(self._draw(n, "n").double() * 0.5 * self._gate(n, p, "contrast"))  # std 0.5
        c = torch.diag_embed(torch.stack([s, s, s, torch.ones_like(s)], -1)) @ c
        i = torch.floor(self._draw(n, "u") * 2).double() * self._gate(n, p, "lumaflip")
        c = (torch.eye(4, dtype=torch.float64) - 2 * torch.outer(v, v) * i[:, None, None]) @ c
        theta = (self._draw(n, "u").double() * 2 - 1) * math.pi * self._gate(n, p, "hue")  # up to +-pi
        c = rotate3d(v, theta) @ c
        s = torch.exp2(self._draw(n, "n").double() * 1.0 * self._gate(n, p, "saturation"))  # std 1
        vv = torch.outer(v, v)
        return (vv + (torch.eye(4, dtype=torch.float64) - vv) * s[:, None, None]) @ c

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """x: this rank's (b, C, H, W) images in [0, 1]; the global batch is b * world. Differentiable in x."""
        n, h, w = len(x) * self.world, x.shape[2], x.shape[3]
        g, c = self.geometric(n, h, w), self.colour(n)  # drawn whatever p is: the stream stays aligned
        if self.p == 0:
            return x
        y = apply_geometric(x * 2 - 1, g)
        return (apply_colour(y, c) + 1) / 2

    # -- adaptation --------------------------------------------------------------------------------------------
    def observe(self, real_logits: torch.Tensor) -> None:
        """D's raw outputs on this rank's augmented reals of one D step."""
        logits = real_logits.detach().flatten()
        self.signs = self.signs.to(logits.device)  # stays on the device: no host sync per step
        self.signs[0] += logits.sign().sum().double()
        self.signs[1] += len(logits)
        self.d_steps += 1

    def after_step(self, all_reduce: Any, images_per_step: int, report: Any) -> None:
        """Every ada_interval D steps (call on all ranks): r_t over the interval, all-reduced; then p moves
        (towards more augmentation while D is surer of the reals than the target). Reports ada_p and ada_rt."""
        if self.d_steps < self.interval:
            return
        total = all_reduce(self.signs.clone())
        self.rt = float(total[0] / total[1]) if float(total[1]) else float("nan")
        if self.target > 0 and math.isfinite(self.rt) and self.rt != self.target:
            adjust = math.copysign(images_per_step * self.d_steps / (self.kimg * 1000), self.rt - self.target)
            self.p = min(max(self.p + adjust, 0.0), self.p_max)
        self.signs.zero_()
        self.d_steps = 0
        report("ada_p", self.p)
        report("ada_rt", self.rt)


def translate3d(b: torch.Tensor) -> torch.Tensor:
    return _mat([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]], len(b))


def apply_geometric(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Resample each image through its inverse matrix (pixel units, origin at the centre), bilinear, reflecting
    at the border. An identity matrix returns the image itself (no resampling)."""
    b, _, h, w = x.shape
    ident = torch.eye(3, dtype=g.dtype)
    if torch.equal(g, ident.expand_as(g)):
        return x
    # pixel -> normalised [-1, 1] coordinates (align_corners=False): u = 2 (x + W/2) / W - 1 = 2 x / W
    to_norm = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], dtype=g.dtype))
    from_norm = torch.diag(torch.tensor([w / 2, h / 2, 1.0], dtype=g.dtype))
    theta = (to_norm @ g @ from_norm)[:, :2, :].to(x.device, x.dtype)
    grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def apply_colour(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """x' = C[:3,:3] x + C[:3,3] per pixel; a grey image uses the mean row (StyleGAN2-ADA's rule)."""
    c = c.to(x.device, x.dtype)
    if x.shape[1] == 3:
        return torch.einsum("bij,bjhw->bihw", c[:, :3, :3], x) + c[:, :3, 3, None, None]
    m = c[:, :3, :].mean(1)  # (b, 4)
    return x * m[:, :3].sum(1)[:, None, None, None] + m[:, 3, None, None, None]
