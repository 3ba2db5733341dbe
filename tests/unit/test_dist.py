"""distgan/dist.py's in-process parts (the launches that exercise it are tests/integration/test_launch.py)."""

from __future__ import annotations

import torch

from distgan.config import ModelConfig
from distgan.dist import CrossRankBatchNorm2d, sync_batchnorm
from distgan.models import build_generator


def test_cross_rank_batch_norm_keeps_the_parameters_the_optimizer_holds() -> None:
    """The swap happens after the optimizer is built on G (training/build.py), so it must keep G's Parameter
    and buffer objects: copies left an unconditional G's BN weights and biases out of every update on 2+ CPU
    ranks (the 2-rank packed test found it; the conditional tests use class embeddings instead)."""
    G = build_generator(ModelConfig(arch="dcgan", image_shape=[1, 28, 28], g_channels=4, noise_dim=8))
    held = {id(p) for p in torch.optim.Adam(G.parameters()).param_groups[0]["params"]}
    buffers = {name: id(b) for name, b in G.named_buffers()}
    G = sync_batchnorm(G, torch.device("cpu"))
    assert any(isinstance(m, CrossRankBatchNorm2d) for m in G.modules())
    assert {id(p) for p in G.parameters()} == held
    assert {name: id(b) for name, b in G.named_buffers()} == buffers
