"""Random streams by purpose (distgan/utils/draws.py): every stream of a run has a seed of its own."""

from __future__ import annotations

import ast

import pytest

from distgan.utils.draws import STREAMS, stream_seed
from tests.conftest import ROOT


def test_no_two_streams_share_a_seed() -> None:
    """Issue 53: DiffAugment's offset equalled the w_avg stream's, so both drew the same numbers at G step 0. Every
    purpose, rank (0-63) and index (0-999) of three run seeds gives a seed of its own."""
    seeds = [
        stream_seed(seed, purpose, rank, index)
        for seed in (0, 1, 2**31 - 1)
        for purpose in STREAMS
        for rank in range(64)
        for index in range(1000 if purpose == "w_avg" else 1)
    ]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    assert stream_seed(0, "augment") == stream_seed(0, "augment")  # a function of its arguments alone
    with pytest.raises(ValueError, match="name it in distgan.utils.draws.STREAMS"):
        stream_seed(0, "dropout")


def test_every_stream_distgan_seeds_is_named() -> None:
    """No stream of a run is seeded by hand: every manual_seed in training/ and dist.py takes a stream_seed, and
    every purpose named in a stream_seed call is one of STREAMS (the check above covers the streams in use). The
    commands' own --seed (sample, eval) are the user's seeds, as given."""
    by_hand, purposes = [], set()
    for path in [ROOT / "distgan" / "dist.py", *sorted((ROOT / "distgan" / "training").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "manual_seed":
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Call) and getattr(arg.func, "id", "") == "stream_seed"):
                    by_hand.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            named = isinstance(node, ast.Call) and getattr(node.func, "id", "") == "stream_seed"
            if named and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                purposes.add(node.args[1].value)
    assert purposes <= set(STREAMS) and {"init", "noise", "fixed", "augment", "ada", "stylegan", "w_avg"} <= purposes
    assert by_hand == [], by_hand
