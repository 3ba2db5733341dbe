"""The whole Config, and reading it: YAML preset + dotted overrides, checked key by key before anything is built.

The model families' own sections (model.<family>) are read with the schema the caller hands down (`Families`):
config imports nothing above it. distgan/configure.py's load_config and config_from_dict hand down distgan.models'
families; a script calls those.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from distgan.config.errors import ConfigError
from distgan.config.model import DataConfig, ModelConfig
from distgan.config.outputs import (
    CkptConfig,
    EvalConfig,
    TrackConfig,
)
from distgan.config.training import (
    OptimConfig,
    TrainConfig,
)


@dataclass(frozen=True)
class Config:
    name: str = "distgan"
    """Preset name, used in run directory names."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        t, o = self.train, self.optim
        follows = [
            k
            for k, on in (
                ("optim.beta2_final", o.beta2_final != -1),
                ("train.gamma_min_ratio", t.gamma_min_ratio != 1),
                ("train.ema_grow", t.ema_grow),
            )
            if on
        ]
        if follows and o.lr_decay == "none":
            raise ConfigError(
                f"{', '.join(follows)} follow the decay curve, and optim.lr_decay=none draws none; set "
                "optim.lr_decay=cosine (with optim.lr_min_ratio=1 to keep the learning rates)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Nested plain values, the families' sections written where users write them (model.<family>)."""
        out = dataclasses.asdict(self)
        out["model"].update(out["model"].pop("sections"))
        return out


def cache_root(configured: str = "") -> Path:
    """distgan's download, classifier and statistics cache: the given folder, $DISTGAN_CACHE or ~/.cache/distgan."""
    return Path(configured or os.environ.get("DISTGAN_CACHE") or Path.home() / ".cache" / "distgan")


@dataclass(frozen=True)
class Families:
    """What config reads of the model families, handed down by its caller: every model.arch, the dataclass of
    each family's model.<family> section, and the flat keys of before the sections (model.sg_channel_base ->
    ("stylegan2", "channel_base")). Empty: no family sections can be read (model.<family> keys are unknown)."""

    names: tuple[str, ...] = ()
    sections: Mapping[str, type] = field(default_factory=dict)
    old_keys: Mapping[str, tuple[str, str]] = field(default_factory=dict)


SAVED = "the saved config"
_warned: set[str] = set()


def read_config(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
    families: Families = Families(),
) -> Config:
    """YAML file (or defaults, or a saved config as `base`) + `section.key=value` overrides -> validated Config,
    every family's section as its dataclass."""
    return _Reader(families).load(path, overrides, base)


def read_saved_config(
    saved: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), families: Families = Families()
) -> Config:
    """A checkpoint's saved config (keys added since it was written take their defaults) + overrides."""
    return _Reader(families).from_dict(saved, overrides)


class _Reader:
    """Reading a config against the schema: Config's dataclasses and the families' sections."""

    def __init__(self, families: Families) -> None:
        self.families = families

    def load(
        self, path: str | Path | None, overrides: list[str] | tuple[str, ...], base: dict[str, Any] | None
    ) -> Config:
        # the schema with every family's section as its dataclass: OmegaConf then types and converts their values
        # as it does every other section's (model.stylegan2.mapping_lr_mul=nan is a float NaN, =abc refused)
        sections = {name: cls() for name, cls in self.families.sections.items()}
        layers: list[Any] = [OmegaConf.structured(Config(model=ModelConfig(sections=sections)))]
        if base is not None:
            layers.append(OmegaConf.create(self.sectioned(base, SAVED)))
        if path is not None:
            layers.append(OmegaConf.create(self.read_file(Path(path))))
        dotted: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: write it as section.key=value, e.g. train.batch_size=256")
            key, _, raw = item.partition("=")
            key = key.strip()
            # a text field keeps the text typed: run_name=0123 is "0123", not YAML's octal 83
            dotted[key] = raw if self.field_type(key) in ("str", str) else (_parse_value(raw) if raw else "")
        if dotted:
            nested = self.sectioned(_nest(dotted), "command line")
            self.check_keys(nested, Config, "", "command line")
            layers.append(OmegaConf.create(nested))
        try:
            merged = OmegaConf.merge(*layers)
            cfg = OmegaConf.to_object(merged)
            assert isinstance(cfg, Config)
            return self.typed_sections(cfg)
        except ConfigError:
            raise
        except OmegaConfBaseException as exc:
            key = (getattr(exc, "full_key", "") or "").replace("model.sections.", "model.")
            raise ConfigError(f"bad config value for {key or 'a key'!r}: {str(exc.msg).splitlines()[0]}") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(exc)) from exc

    def read_file(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found; presets live in configs/")
        try:
            file_cfg = OmegaConf.load(path)
        except Exception as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(file_cfg, DictConfig):
            raise ConfigError(
                f"config file {str(path)!r}: the top level must be a mapping of sections (data:, model:, train:, "
                f"...), not a {type(OmegaConf.to_container(file_cfg)).__name__}"
            )
        given = self.sectioned(OmegaConf.to_container(file_cfg), str(path))  # type: ignore[arg-type]
        self.check_keys(given, Config, "", str(path))
        return given

    def typed_sections(self, cfg: Config) -> Config:
        """model.arch one of the families, and every family's section as its dataclass (defaults where not
        given), each checking its own fields as it is made."""
        f = self.families
        if f.names and cfg.model.arch not in f.names:
            raise ConfigError(f"model.arch={cfg.model.arch!r}: use one of {', '.join(sorted(f.names))}")
        given = cfg.model.sections
        unknown = sorted(set(given) - set(f.sections))
        if unknown:
            raise ConfigError(
                f"model.{unknown[0]}: no model family of that name has settings (families with their own section: "
                f"{', '.join(sorted(f.sections)) or 'none'})"
            )
        typed = {}
        for name, cls in f.sections.items():
            value = given.get(name)
            typed[name] = cls() if value is None else value if isinstance(value, cls) else cls(**value)
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, sections=typed))

    def from_dict(self, saved: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> Config:
        if not isinstance(saved, dict):
            raise ConfigError(f"the saved config is a {type(saved).__name__}, not a mapping of sections")
        base, dropped = self.known_only(self.sectioned(saved, SAVED), Config)
        if dropped:
            logging.getLogger("distgan").warning(
                "the saved config has keys this version of distgan does not know (ignored): %s", ", ".join(dropped)
            )
        return self.load(None, overrides, base)

    def check_keys(self, given: Any, schema: type, prefix: str, origin: str) -> None:
        """Unknown keys fail with the closest valid one, before OmegaConf's generic message; so do sections that
        are not mappings and YAML booleans given to text fields."""
        if not isinstance(given, dict):
            where = f"section {prefix[:-1]!r}" if prefix else "the top level"
            raise ConfigError(
                f"{origin}: {where} must be a mapping of keys (like `train:` followed by indented `batch_size: 100`), "
                f"not {type(given).__name__} {given!r}"
            )
        fields = {f.name: f for f in dataclasses.fields(schema)}
        for key, value in given.items():
            dotted = f"{prefix}{key}"
            if key in fields and fields[key].type in ("str", str) and isinstance(value, bool):
                raise ConfigError(
                    f"{origin}: {dotted} is the boolean {value} (YAML reads unquoted no/yes/on/off/true/false as "
                    f'booleans); quote the text: {key}: "{"no" if value is False else "yes"}"'
                )
            if key not in fields:
                candidates = [f"{prefix}{k}" for k in fields]
                close = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.5)
                if not close:
                    close = difflib.get_close_matches(key, self.all_keys(Config), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys here: {', '.join(candidates)}"
                raise ConfigError(f"unknown config key {dotted!r} (from {origin}){hint}")
            sub = _dataclass_of(fields[key].type)
            if sub is not None:
                self.check_keys(value, sub, f"{dotted}.", origin)

    def sectioned(self, layer: dict[str, Any], origin: str) -> dict[str, Any]:
        """A layer (file, command line or saved config) with each family's keys where the schema keeps them:
        model.<family> in model.sections.<family>, and each flat key of before the sections (model.sg_channel_base)
        moved to its place with a one-line warning naming it. A key given both ways in one file or command line is
        refused (a sweep over both would train identical points); in a saved config the new one wins."""
        model = layer.get("model")
        if not isinstance(model, dict):
            return layer
        families, old = self.families.sections, self.families.old_keys
        model = dict(model)
        if "sections" in model and origin != SAVED:  # where the schema keeps the families' sections: not a user key
            raise ConfigError(
                f"{origin}: model.sections is not a setting; write a family's settings as model.<family>.<key> "
                f"(families with settings: {', '.join(sorted(families)) or 'none'}; e.g. "
                "model.stylegan2.channel_base=8192)"
            )
        sections = {k: dict(v) for k, v in (model.pop("sections", None) or {}).items()}
        for key in [k for k in model if k in families]:
            value = model.pop(key)
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{origin}: model.{key} must be a mapping of that family's keys (like `{key}:` followed by "
                    f"indented keys), not {type(value).__name__} {value!r}"
                )
            self.check_keys(value, families[key], f"model.{key}.", origin)
            sections[key] = {**sections.get(key, {}), **value}
        moved = []
        for key in [k for k in model if k in old]:
            family, field_name = old[key]
            if field_name in sections.get(family, {}) and origin != SAVED:
                raise ConfigError(
                    f"{origin}: model.{key} and model.{family}.{field_name} name one setting (the first is its old "
                    "name); give it once"
                )
            sections.setdefault(family, {}).setdefault(field_name, model.pop(key))
            moved.append(f"model.{key} is now model.{family}.{field_name}")
        _warn_moved(moved, origin)
        if sections:
            model["sections"] = sections
        return {**layer, "model": model}

    def field_type(self, dotted: str) -> Any:
        """The declared type of a dotted config key (None for an unknown key: check_keys names it)."""
        parts = dotted.split(".")
        if parts[0] == "model" and len(parts) > 1:
            family, field_name = self.families.old_keys.get(parts[1], (parts[1], ".".join(parts[2:])))
            cls = self.families.sections.get(family)
            if cls is not None:
                fields = {f.name: f for f in dataclasses.fields(cls)}
                return fields[field_name].type if field_name in fields else None
        schema: type | None = Config
        ftype: Any = None
        for part in parts:
            fields = {f.name: f for f in dataclasses.fields(schema)} if schema else {}
            if part not in fields:
                return None
            ftype = fields[part].type
            schema = _dataclass_of(ftype)
        return ftype

    def known_only(self, given: dict[str, Any], schema: type, prefix: str = "") -> tuple[dict[str, Any], list[str]]:
        fields = {f.name: f for f in dataclasses.fields(schema)}
        kept: dict[str, Any] = {}
        dropped: list[str] = []
        for key, value in given.items():
            if key not in fields:
                dropped.append(f"{prefix}{key}")
                continue
            sub = _dataclass_of(fields[key].type)
            if sub is not None and isinstance(value, dict):
                value, more = self.known_only(value, sub, f"{prefix}{key}.")
                dropped.extend(more)
            if schema is ModelConfig and key == "sections" and isinstance(value, dict):
                value, more = self.known_sections(value)
                dropped.extend(more)
            kept[key] = value
        return kept, dropped

    def known_sections(self, given: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        families, kept, dropped = self.families.sections, {}, []
        for family, value in given.items():
            if family not in families or not isinstance(value, dict):
                dropped.append(f"model.{family}")
                continue
            kept[family], more = self.known_only(value, families[family], f"model.{family}.")
            dropped.extend(more)
        return kept, dropped

    def all_keys(self, schema: type, prefix: str = "") -> list[str]:
        out: list[str] = []
        for f in dataclasses.fields(schema):
            if schema is ModelConfig and f.name == "sections":
                for family, cls in self.families.sections.items():
                    out.extend(f"{prefix}{family}.{g.name}" for g in dataclasses.fields(cls))
                continue
            sub = _dataclass_of(f.type)
            out.extend(self.all_keys(sub, f"{prefix}{f.name}.") if sub else [f"{prefix}{f.name}"])
        return out


def _warn_moved(moved: list[str], origin: str) -> None:
    """A file or command line: one line per old key; a saved config (a checkpoint of before the sections holds
    every family's keys) one line for all, each key with its new place."""
    if origin != SAVED:
        lines = [f"{origin}: {m} (the old key still works)" for m in moved]
    else:
        lines = [f"{SAVED} predates the families' sections; read: {'; '.join(moved)}"] if moved else []
    for line in lines:
        if line not in _warned:
            _warned.add(line)
            logging.getLogger("distgan").warning(line)


def changed_keys(saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for each dotted key whose value differs between two config dicts."""
    out = []
    for key in keys:
        a, b = _lookup(saved, key), _lookup(current, key)
        if a != b:
            out.append((key, a, b))
    return out


def _lookup(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _dataclass_of(ftype: Any) -> type | None:
    names = {
        c.__name__: c for c in (DataConfig, ModelConfig, OptimConfig, TrainConfig, TrackConfig, CkptConfig, EvalConfig)
    }
    return names.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _parse_value(raw: str) -> Any:
    """YAML scalars and lists on the command line: `model.g_hidden=[512,512]`, `train.precision=bf16`."""
    if raw.strip().lower() in ("no", "yes", "on", "off", "y", "n"):
        return raw.strip()  # YAML 1.1 would make train.precision=no a boolean; bool fields still accept these
    try:
        parsed = OmegaConf.to_container(OmegaConf.create(f"v: {raw}"))
        return parsed["v"] if isinstance(parsed, dict) else raw
    except Exception:
        return raw


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(cfg.to_dict()))


def save_config(cfg: Config, path: Path) -> None:
    from distgan.utils.files import write_text

    write_text(path, to_yaml(cfg))


def resolve_num_classes(cfg: Config, classes: tuple[str, ...]) -> Config:
    """model.num_classes=-1 becomes the manifest's class count; a count the manifest contradicts is refused."""
    n = cfg.model.num_classes
    if n == -1:
        if not classes:
            raise ConfigError(
                f"model.num_classes=-1 takes the class count from the data's manifest, but data.path="
                f"{cfg.data.path!r} lists no classes; set model.num_classes=N (or 0 for unconditional)"
            )
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=len(classes)))
    if n > 0 and classes and len(classes) != n:
        raise ConfigError(
            f"model.num_classes={n} but data.path={cfg.data.path!r} has {len(classes)} classes "
            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); set model.num_classes={len(classes)} "
            "or -1"
        )
    return cfg
