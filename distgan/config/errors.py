"""The errors a user fixes: `UserError`, and `ConfigError` for what is fixed by editing the config."""

from __future__ import annotations


class UserError(ValueError):
    """Something a user fixes (a config value, a file, a checkpoint, a busy run directory): the message names it
    and says how; the commands print it as one line and exit with status 2."""


class ConfigError(UserError):
    """A config key or value a user must fix; the message names it and says how."""


def check_finite(section: object, name: str) -> None:
    """Every float of a section (and of its float lists) is finite: a NaN compares false with every bound, so
    without this `train.r1_gamma=nan` passes `>= 0` and silently switches the penalty off."""
    import dataclasses
    import math

    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        items = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):
            raise ConfigError(f"{name}.{f.name}={value}: must be a finite number (not NaN or infinity)")
