"""GAN losses in logit form. Equal in value to the tutorial's log formulas, but finite where they overflow.

log D = log sigmoid(l) = -softplus(-l) and log(1 - D) = -softplus(l), computed in float32 even under autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def d_ns(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean(log D(x) + log(1 - D(G(z)))): D maximises the tutorial's objective."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_ns(real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean(log D(G(z))): the non-saturating generator loss (real_logits unused)."""
    return F.softplus(-fake_logits.float()).mean()


def d_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))): the hinge loss of SNGAN and BigGAN (Lim & Ye 2017)."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def g_hinge(real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean(D(G(z))): G's side of the hinge loss (real_logits unused)."""
    return -fake_logits.float().mean()


def d_rpgan(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean(softplus(D(G(z_i)) - D(x_i))): the relativistic pairing loss (RpGAN; Jolicoeur-Martineau 2019, R3GAN's
    form): D wants each real's logit above its paired fake's. Pairs are rows i of the two halves of a batch."""
    return F.softplus(fake_logits.float() - real_logits.float()).mean()


def g_rpgan(real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean(softplus(D(x_i) - D(G(z_i)))): G's side of RpGAN; the reals' logits come from D on the (detached)
    reals of the same step."""
    if real_logits is None:
        raise ValueError("the rpgan generator loss needs D's logits on the reals")
    return F.softplus(real_logits.float() - fake_logits.float()).mean()


@dataclass(frozen=True)
class Loss:
    """`train.loss`: D's loss of (real, fake) logits, G's of (real or None, fake); g_needs_real: G's phase runs D
    on the reals too (relativistic losses)."""

    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor]
    g_needs_real: bool = False


LOSSES: dict[str, Loss] = {
    "ns": Loss(d_ns, g_ns),
    "hinge": Loss(d_hinge, g_hinge),
    "rpgan": Loss(d_rpgan, g_rpgan, g_needs_real=True),
}
"""`train.loss` -> its D and G losses, both on logits. config checks train.loss against its own list of the names
(config.training.LOSS_NAMES; tests/unit/test_family.py holds the two equal): config sits below this module."""


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, pack: int = 1) -> torch.Tensor:
    """mean over images of ||d D(x) / d x||^2 on real images (Mescheder et al. 2018; StyleGAN2's R1), with x
    on StyleGAN2's [-1, 1] scale so that train.r1_gamma means what its gamma means: our images are in [0, 1], the
    gradient w.r.t. x in [-1, 1] is half the gradient w.r.t. ours, and its squared norm a quarter.

    create_graph: the penalty is itself differentiated in D's backward. `real` must require grad and be the
    tensor D's input was computed from (augmentation in between is differentiable)."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return gradient_penalty(grad, pack)


def gradient_penalty(grad: torch.Tensor, pack: int = 1) -> torch.Tensor:
    """mean over D's inputs of the squared norm of D's input gradient, on StyleGAN2's [-1, 1] image scale (a
    quarter of the [0, 1] one): R1 on reals, R2 on fakes (R3GAN's zero-centred penalties). `grad` is per image;
    with packing (model.d_pack) D's input is `pack` consecutive images, whose squared norms add up."""
    per_image = grad.float().square().sum((1, 2, 3))
    return (per_image.reshape(-1, pack).sum(1) if pack > 1 else per_image).mean() / 4
