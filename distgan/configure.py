"""What a run's config is checked against once the launch is known: everything that would otherwise fail while
the run is built or in its first step is refused here, before a run directory exists, naming the key.

It sits above models/ (it asks the families and counts their networks on the meta device) and below every
entry point that starts a run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from distgan.config import Config, ConfigError, ModelConfig
from distgan.models import parameter_counts

TRAINING_BYTES_PER_PARAMETER = 16
"""float32 weights, gradients and Adam's two moments: what training holds per parameter before activations."""


def check_run(cfg: Config, world: int, memory_bytes: int) -> None:
    """Call on all ranks before anything is built: the checks that need the launch (processes, memory)."""
    check_size(cfg.model, memory_bytes)


def check_size(model: ModelConfig, memory_bytes: int) -> None:
    """Networks that cannot fit are refused by their size, with the widths that made them, before a byte of
    them is allocated (a typo'd model.g_channels=100000000 is 10^17 parameters)."""
    g, d = parameter_counts(model)
    need = (g + d) * TRAINING_BYTES_PER_PARAMETER
    if need <= memory_bytes:
        return
    keys = ", ".join(f"{k}={v}" for k, v in _grown(model)) or "the model.* widths"
    raise ConfigError(
        f"{keys}: G would hold {g:.3g} and D {d:.3g} parameters, {need / 2**30:,.0f} GiB with their gradients and "
        f"Adam's state in float32, more than the {memory_bytes / 2**30:,.0f} GiB this device has; choose smaller "
        "widths"
    )


def _grown(model: ModelConfig, top: int = 3) -> list[tuple[str, Any]]:
    """The model's whole-number keys furthest above their defaults (the likely culprits of a size), largest
    ratio first."""
    now, base = _model_dict(model), _model_dict(ModelConfig())
    base.update(
        _flat({name: dataclasses.asdict(type(section)()) for name, section in model.sections.items()}, "model.")
    )
    ratios = []
    for key, value in now.items():
        numbers, olds = _numbers(value), _numbers(base.get(key))
        if numbers and olds and max(numbers) > max(olds) > 0:
            ratios.append((max(numbers) / max(olds), key, value))
    return [(k, v) for _, k, v in sorted(ratios, reverse=True)[:top]]


def _model_dict(model: ModelConfig) -> dict[str, Any]:
    d = dataclasses.asdict(model)
    d.update(d.pop("sections"))
    return _flat(d, "model.")


def _numbers(value: Any) -> list[int]:
    """The whole numbers of a value (a width, a list of widths); sizes are counts, not rates."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _flat(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
