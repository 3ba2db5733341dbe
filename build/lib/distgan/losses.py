"""GAN losses in logit form. Equal in value to the tutorial's log formulas, but finite where they overflow.

log D = log sigmoid(l) = -softplus(-l) and log(1 - D) = -softplus(l), computed in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean(log D(x) + log(1 - D(G(z)))): D maximises the tutorial's objective."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean(log D(G(z))): the non-saturating generator loss."""
    return F.softplus(-fake_logits.float()).mean()
