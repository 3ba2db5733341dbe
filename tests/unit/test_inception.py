"""Inception metrics: torch-fidelity's network and statistics through distgan's loading path, on a randomly
initialised network of the standard architecture that the tests save to a file (no download)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.eval import inception
from distgan.utils.files import sha256_file
from tests.helpers.inception import random_inception_weights


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    return random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


def test_yardstick_chosen_by_config_before_data() -> None:
    from distgan.configure import load_config
    from distgan.eval.evaluate import choose_groups, default_best

    missing = "data.path=/nonexistent/shards"  # not read: the config decides
    assert choose_groups(load_config(None, [missing, "eval.best_metric=fid_mnistcnn"])) == ("mnistcnn",)
    both = choose_groups(load_config(None, [missing, "eval.metrics=[inception,mnistcnn]"]))
    assert both == ("fid_inception", "kid_inception", "pr_inception", "is_inception", "mnistcnn")
    assert default_best(both) == "fid_inception" and default_best(("pr_inception",)) == "precision_inception"


def test_the_stand_in_for_torchvision_parts_stays_out_of_the_way() -> None:
    """Where torchvision does not import, torch_fidelity.utils is a stand-in whose names raise when called; it
    must not answer module-protocol names (inspect.getmodule walks every module's __file__)."""
    import inspect

    inception.library()
    inspect.getmodule(test_the_stand_in_for_torchvision_parts_stays_out_of_the_way)  # walks sys.modules
    utils = sys.modules.get("torch_fidelity.utils")
    if utils is not None and not hasattr(utils, "DataLoader"):  # the stand-in, not the real module
        assert not hasattr(utils, "__file__")
        with pytest.raises(RuntimeError, match="needs torchvision"):
            utils.create_feature_extractor()


def test_features_are_the_library_modules_own(weights: Path) -> None:
    """distgan's featurisation of grey float images equals torch-fidelity's module, loaded from its file, fed
    the same images as uint8 RGB (how torch-fidelity reads a grey PNG)."""
    inception.library()  # its helper modules, importable without torchvision
    origin = importlib.util.find_spec("torch_fidelity").submodule_search_locations[0]  # type: ignore[union-attr]
    spec = importlib.util.spec_from_file_location("tf_extractor", Path(origin) / "feature_extractor_inceptionv3.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    theirs = module.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
    )
    state, sha = inception.read_weights(weights, sha256_file(weights))
    ours = inception.build_network(state)
    x = torch.rand(6, 1, 20, 20)
    rows = inception.featurize(ours, x, 4, torch.device("cpu"))
    as_png = x.mul(255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    f, logits = theirs(as_png)
    assert rows.shape == (6, 2048 + 1008) and f.std() > 0.01
    np.testing.assert_allclose(rows[:, :2048], f.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows[:, 2048:], logits.numpy(), rtol=1e-5, atol=1e-5)
