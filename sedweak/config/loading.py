"""Recipes in, resolved configs out: strict YAML loading, dotted overrides, presets, saving.

``load_config`` rejects unknown keys and wrong types and applies ``section.key=value``
overrides; ``save_config`` writes the fully resolved config next to a run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from sedweak.config.presets import get_preset
from sedweak.config.schema import Config, ConfigError, ModelConfig


def from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested mapping, strictly (unknown keys are errors)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    base = None
    if cls is ModelConfig and "preset" in data:
        base = get_preset(str(data["preset"]))
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value or {}, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, Mapping) and args and args[-1] is Ellipsis and typing.get_origin(args[0]) is tuple:
            value = list(value.items())  # {Speech: 0.3} -> (("Speech", 0.3),)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} matches none of {hint}")
    if hint is object:  # free-form YAML value, validated by whoever consumes it
        return tuple(value) if isinstance(value, list) else value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["train.epochs=3", "model.conv_filters=[8,8]"]`` -> nested dict (values parsed as YAML)."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key part")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        _check_section_override(item, parts, value)
        node[parts[-1]] = value
    return nested


def _check_section_override(item: str, parts: Sequence[str], value: Any) -> None:
    """Refuse ``train=3``: a section given a plain value (it would otherwise be reported
    against whichever later override descends into it)."""
    cls: Any = Config
    for part in parts:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            return  # unknown keys are reported by from_dict, with the known ones
        cls = hints[part]
    if dataclasses.is_dataclass(cls) and not isinstance(value, Mapping):
        key = ".".join(parts)
        example = dataclasses.fields(cls)[0].name
        raise ConfigError(f"override {item!r}: {key} is a section, not a value; set one of its keys "
                          f"(e.g. {key}.{example}=...)")


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a recipe YAML (or the defaults when ``path`` is None) and apply overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    raw = _merge(raw, parse_overrides(overrides))
    try:
        return from_dict(Config, raw)
    except ConfigError as err:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{err}") from None


def to_dict(config: Any) -> dict:
    """Plain nested dict (tuples become lists) suitable for YAML/JSON."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
                return {k: convert(v) for k, v in value}
            return [convert(v) for v in value]
        return value

    return convert(config)


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    from sedweak.io_utils import atomic_write_text

    return atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))
