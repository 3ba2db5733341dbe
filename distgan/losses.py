"""GAN losses in logit form. Equal in value to the tutorial's log formulas, but finite where they overflow.

log D = log sigmoid(l) = -softplus(-l) and log(1 - D) = -softplus(l), computed in float32 even under autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean(log D(x) + log(1 - D(G(z)))): D maximises the tutorial's objective."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean(log D(G(z))): the non-saturating generator loss."""
    return F.softplus(-fake_logits.float()).mean()


def d_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))): the hinge loss of SNGAN and BigGAN (Lim & Ye 2017)."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def g_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean(D(G(z))): G's side of the hinge loss."""
    return -fake_logits.float().mean()


LOSSES: dict[
    str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
] = {
    "ns": (d_loss, g_loss),
    "hinge": (d_hinge, g_hinge),
}
"""`train.loss` -> (D's loss, G's loss), both on logits."""


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """mean over images of ||d D(x) / d x||^2 on real images (Mescheder et al. 2018; StyleGAN2's R1), with x
    on StyleGAN2's [-1, 1] scale so that train.r1_gamma means what its gamma means: our images are in [0, 1], the
    gradient w.r.t. x in [-1, 1] is half the gradient w.r.t. ours, and its squared norm a quarter.

    create_graph: the penalty is itself differentiated in D's backward. `real` must require grad and be the
    tensor D's input was computed from (augmentation in between is differentiable)."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().square().sum((1, 2, 3)).mean() / 4
