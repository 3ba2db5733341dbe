"""Official StyleGAN2-ADA pickles read as data (distgan/run/stylegan2_ada.py): refusals, the reference's images from
the imported weights, and the imported folder used by sample, export and a fine-tuning run."""

from __future__ import annotations

import builtins
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.configure import config_from_dict
from distgan.models import build_discriminator
from distgan.run.errors import PickleRefused
from distgan.run.pickle_reader import Persistent, read_pickle
from distgan.run.sample import load_generator
from distgan.run.stylegan2_ada import model_config
from distgan.run.weights import read_state

FIX = Path(__file__).resolve().parents[1] / "fixtures"
ROOT = FIX.parents[1]
PICKLES = ["sg2ada-32px-rgb-cond10", "sg2ada-64px-grey"]


class WritesAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (builtins.open, (str(self.path), "w"))


def test_a_reduce_that_would_write_a_file_is_refused_and_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "written"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G": WritesAFile(target)}))
    with pytest.raises(PickleRefused, match=r"refused to load (io|builtins)\.open") as err:
        read_pickle(evil)
    assert str(evil) in str(err.value) and not target.exists()
    # a loader that unpickles normally would have written it: the pickle really does what it says
    with open(evil, "rb") as f:
        pickle.load(f)["G"].close()
    assert target.exists()


def test_a_persistent_objects_source_is_never_executed(tmp_path: Path) -> None:
    """The official loader exec()s each persistent object's module source; ours keeps only its hash."""
    target = tmp_path / "ran"
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta: dict) -> None:  # the name the official pickles call
        raise AssertionError("never called while pickling")

    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"

    class Net:
        def __reduce__(self) -> tuple:
            src = f"import pathlib; pathlib.Path({str(target)!r}).write_text('ran')"
            meta = {"type": "class", "version": 6, "module_src": src, "class_name": "Generator", "state": {}}
            return (_reconstruct_persistent_obj, (meta,))

    pkg = types.ModuleType("torch_utils")
    pkg.persistence = mod  # type: ignore[attr-defined]
    sys.modules.update({"torch_utils": pkg, "torch_utils.persistence": mod})  # only while pickling
    try:
        data = pickle.dumps({"G": Net()})
    finally:
        del sys.modules["torch_utils.persistence"], sys.modules["torch_utils"]
    path = tmp_path / "net.pkl"
    path.write_bytes(data)
    record = read_pickle(path)["G"]
    assert isinstance(record, Persistent) and record.class_name == "Generator" and not target.exists()
    with pytest.raises(PickleRefused, match="init kwargs"):
        read_state(path)
    assert not target.exists()


@pytest.mark.parametrize("kind", ["truncated", "text", "torch.save"])
def test_truncated_and_non_pickle_files_give_one_clear_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.pkl"
    if kind == "truncated":
        raw = (FIX / f"{PICKLES[0]}.pkl").read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "text":
        path.write_text("these are not the networks you are looking for\n")
    else:
        torch.save({"G": torch.zeros(2)}, path)
    with pytest.raises(PickleRefused) as err:
        read_pickle(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert ("truncated" in msg) if kind == "truncated" else ("pickle" in msg)


def test_stylegan3_is_refused_naming_what_is_supported() -> None:
    sg3 = Persistent(
        "Generator",
        {
            "_modules": {
                "synthesis": Persistent(
                    "SynthesisNetwork", {"_modules": {"input": Persistent("SynthesisInput", {}, "")}}, ""
                )
            }
        },
        "",
    )
    with pytest.raises(PickleRefused, match="StyleGAN3 .*StyleGAN2-ADA generators"):
        model_config(sg3, None)
    orig = Persistent(
        "Generator",
        {
            "_init_kwargs": {
                "z_dim": 8,
                "w_dim": 8,
                "img_resolution": 32,
                "img_channels": 3,
                "synthesis_kwargs": {"architecture": "orig"},
            }
        },
        "",
    )
    with pytest.raises(PickleRefused, match="synthesis architecture='orig'"):
        model_config(orig, None)


@pytest.mark.numeric
@pytest.mark.parametrize("name", PICKLES)
def test_imported_networks_give_the_references_outputs(name: str) -> None:
    """The reference code's own images (tests/fixtures/make_stylegan2_pickles.py) for the same z, c,
    truncation and (constant) noise, within 1e-5; raw G and EMA G apart; D's logits on one mbstd group."""
    ref = np.load(FIX / f"{name}.npz")
    state = read_state(FIX / f"{name}.pkl")
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    y = c.argmax(1) if c.shape[1] else None
    for ema, psi, key in ((True, 1.0, "img_psi10"), (True, 0.7, "img_psi7"), (False, 1.0, "img_G_psi10")):
        G, used = load_generator(FIX / f"{name}.pkl", ema, state)
        G.truncation = psi
        with torch.no_grad():
            img = G(z, y) * 2 - 1  # ours in [0, 1]
        assert used == ema
        torch.testing.assert_close(img, torch.from_numpy(ref[key]), atol=1e-5, rtol=0)
    D = build_discriminator(config_from_dict(state["config"]).model)
    D.load_state_dict(state["objects"]["trainer"]["D"])
    with torch.no_grad():
        d = D(torch.from_numpy(ref["x"]), y[:4] if y is not None else None)
    torch.testing.assert_close(d, torch.from_numpy(ref["d_logits"]), atol=1e-5, rtol=1e-5)


@pytest.mark.numeric
@pytest.mark.parametrize("name", PICKLES)
def test_truncation_cutoff_and_d_batches_give_the_references_outputs(name: str, tmp_path: Path) -> None:
    """Issue 45: `sample --trunc 0.7` recomputed truncation's centre from 10,000 latents and threw the pickle's
    tracked w_avg away (0.06 and 0.79 off the reference), and D grouped a batch of 8 otherwise. Against the
    reference's G_ema(z, c, truncation_psi, truncation_cutoff, noise_mode='const') and D on 8 images."""
    from distgan.cli import main
    from distgan.run.sample import generate, labels_for, set_truncation

    pkl, ref = FIX / f"{name}.pkl", np.load(FIX / f"{name}.npz")
    state = read_state(pkl)
    z = torch.from_numpy(ref["z"])
    G, _ = load_generator(pkl, True, state)
    y = labels_for(G, len(z), None)  # 0, 1, ...: the fixture's one-hot c
    for psi in (0.5, 0.7, 1.0):
        for cutoff in (None, 2):
            assert "tracked" in set_truncation(G, psi, cutoff) or psi == 1.0
            key = f"trunc_psi{int(psi * 10)}_cut{cutoff or 0}"
            torch.testing.assert_close(generate(G, z, y) * 2 - 1, torch.from_numpy(ref[key]), atol=1e-5, rtol=0)
    np.save(tmp_path / "z.npy", ref["z"])
    out = tmp_path / "s.npz"
    args = [
        "sample",
        "--ckpt",
        str(pkl),
        "--z",
        str(tmp_path / "z.npy"),
        "--trunc",
        "0.5",
        "--trunc-cutoff",
        "2",
    ]
    assert main([*args, "--format", "npz", "--float", "--out", str(out)]) == 0
    got = np.load(out)
    assert np.array_equal(got["z"], ref["z"]) and got["x"].dtype == np.float32
    np.testing.assert_allclose(got["x"] * 2 - 1, ref["trunc_psi5_cut2"], atol=1e-5, rtol=0)
    assert main(["export", "--ckpt", str(pkl), "--trunc", "0.7", "--out", str(tmp_path / "e")]) == 0
    program = torch.export.load(tmp_path / "e" / "generator.pt2").module()
    with torch.no_grad():
        img = program(z, y) if y is not None else program(z)
    torch.testing.assert_close(img * 2 - 1, torch.from_numpy(ref["trunc_psi7_cut0"]), atol=1e-5, rtol=0)
    spec = __import__("json").loads((tmp_path / "e" / "generator.json").read_text())
    assert "tracked w_avg" in spec["truncation"]["w_avg"] and "unclamped" in spec["output"]
    D = build_discriminator(config_from_dict(state["config"]).model)
    D.load_state_dict(state["objects"]["trainer"]["D"])
    c8 = torch.from_numpy(ref["c8"])
    with torch.no_grad():
        d = D(torch.from_numpy(ref["x8"]), c8.argmax(1) if c8.shape[1] else None)
    torch.testing.assert_close(d, torch.from_numpy(ref["d_logits8"]), atol=1e-5, rtol=1e-5)


def test_sample_noise_modes_and_given_latents(tmp_path: Path, capsys) -> None:
    """--noise const|random|none as the reference's noise_mode; --z FILE.npy checked against G's noise_dim."""
    from distgan.cli import main

    pkl, outs = FIX / f"{PICKLES[1]}.pkl", {}
    for mode in ("const", "random", "none"):
        out = tmp_path / f"{mode}.npz"
        assert (
            main(
                [
                    "sample",
                    "--ckpt",
                    str(pkl),
                    "--n",
                    "2",
                    "--noise",
                    mode,
                    "--format",
                    "npz",
                    "--float",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        outs[mode] = np.load(out)["x"]
    assert not np.allclose(outs["const"], outs["random"]) and not np.allclose(outs["const"], outs["none"])
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.float32))
    assert main(["sample", "--ckpt", str(pkl), "--z", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "b.png")]) == 2
    assert "an array of shape (2, 3) (float32); this G takes (N, 16) numbers" in capsys.readouterr().err
