"""A randomly initialised network of the standard Inception's architecture, saved as a weights file, so tests run
the real loading path (sha256 check, weights_only read, torch-fidelity's own module) without a download."""

from __future__ import annotations

import io
import math
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from distgan.eval import inception


def random_inception_weights(path: Path, seed: int = 0) -> Path:
    cls = inception.library().Inception
    buffer = io.BytesIO()
    torch.save({}, buffer)
    buffer.seek(0)
    torch.manual_seed(seed)
    with mock.patch.object(cls, "load_state_dict", lambda self, *a, **k: None):  # leave the fresh layers
        net = cls("inception-v3-compat", [inception.FEATURES], feature_extractor_weights_path=buffer)
    for m in net.modules():  # He init with identity batch norm: activations keep their scale through the depth
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            nn.init.normal_(m.weight, std=math.sqrt(2 / fan_in))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight), nn.init.zeros_(m.bias), nn.init.zeros_(m.running_mean)
            nn.init.ones_(m.running_var)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1 / math.sqrt(m.in_features)), nn.init.zeros_(m.bias)
    torch.save(net.state_dict(), path)
    return path
