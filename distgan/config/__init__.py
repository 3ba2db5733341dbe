"""Typed run configuration: frozen dataclasses, one module per group of sections, and the loader that checks a
YAML preset plus dotted overrides before anything is built. The names below are the public API."""

from __future__ import annotations

from distgan.config.errors import ConfigError, UserError, check_finite
from distgan.config.load import (
    Config,
    Families,
    cache_root,
    changed_keys,
    read_config,
    read_saved_config,
    resolve_num_classes,
    save_config,
    to_yaml,
)
from distgan.config.model import DataConfig, ModelConfig
from distgan.config.outputs import (
    INCEPTION_METRICS,
    INCEPTION_SHA256,
    LOWER_IS_BETTER,
    METRIC_GROUPS,
    CkptConfig,
    EvalConfig,
    TrackConfig,
)
from distgan.config.training import (
    AUGMENT_OPS,
    COLOUR,
    COMPILE_MODES,
    CUDAGRAPH_MODES,
    GEOMETRIC,
    OptimConfig,
    TrainConfig,
    parse_ada_ops,
    parse_augment,
)

__all__ = [
    "AUGMENT_OPS",
    "COLOUR",
    "GEOMETRIC",
    "COMPILE_MODES",
    "CUDAGRAPH_MODES",
    "CkptConfig",
    "Config",
    "ConfigError",
    "Families",
    "DataConfig",
    "EvalConfig",
    "INCEPTION_METRICS",
    "INCEPTION_SHA256",
    "LOWER_IS_BETTER",
    "METRIC_GROUPS",
    "ModelConfig",
    "OptimConfig",
    "TrackConfig",
    "TrainConfig",
    "UserError",
    "check_finite",
    "cache_root",
    "changed_keys",
    "read_config",
    "read_saved_config",
    "parse_ada_ops",
    "parse_augment",
    "resolve_num_classes",
    "save_config",
    "to_yaml",
]
