"""What config checks names against but does not own: the model families' sections and the losses.

A family declares its `model.<family>` section (a frozen dataclass), its checks and the flat keys it had before
2026-12-06 in its own module (distgan/models/<family>.py); distgan/models/__init__.py lists the families and
registers them here, as training/losses.py registers its losses. Config sits below both (every network and every
phase takes a Config), so it reaches them by module name the first time a config needs them, the way a plugin
entry point is reached: the only references that point up the layers, and only by name (tests/unit/test_layout.py
checks the imports; docs/architecture.md draws it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distgan.config.errors import ConfigError


@dataclass(frozen=True)
class FamilySpec:
    """A family as config sees it."""

    section: type | None
    """The frozen dataclass under model.<family> (its __post_init__ checks its own fields); None: no keys of its
    own."""
    check: Callable[[Any], None]
    """check(ModelConfig): what the family decides about the whole model config when it is model.arch."""
    old_keys: dict[str, str] = field(default_factory=dict)
    """Flat model.* keys of before the sections (sg_channel_base) -> the section's field (channel_base)."""


_FAMILIES: dict[str, FamilySpec] = {}
_LOSSES: list[str] = []


def register_family(name: str, spec: FamilySpec) -> None:
    _FAMILIES[name] = spec


def register_losses(names: list[str]) -> None:
    _LOSSES[:] = names


def families() -> dict[str, FamilySpec]:
    """Every family by name (model.arch)."""
    if not _FAMILIES:
        importlib.import_module("distgan.models")
    if not _FAMILIES:
        raise ConfigError("no model families registered: distgan.models did not import")  # a broken install
    return _FAMILIES


def sections() -> dict[str, type]:
    """The families that have a model.<family> section, and its dataclass."""
    return {name: f.section for name, f in families().items() if f.section is not None}


def losses() -> list[str]:
    if not _LOSSES:
        importlib.import_module("distgan.training.losses")
    return _LOSSES


def old_keys() -> dict[str, tuple[str, str]]:
    """Every family's old flat key -> (family, field)."""
    return {old: (name, new) for name, f in families().items() for old, new in f.old_keys.items()}
