"""The one exception a user fixes by editing the config."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config key or value a user must fix; the message names it and says how."""
