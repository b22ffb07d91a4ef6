"""Typed configuration: dataclasses filled from YAML files and `key=value` overrides.

`load(cls, files, overrides)` merges YAML mappings in order, then dotted overrides such as
`lora.r=16` or `data.root=s3://bucket/pacs`, and builds `cls` recursively. Every field is checked
against its type hint; an unknown key or a value of the wrong type raises `ConfigError` naming the
key, the value and what is allowed. Dataclasses may validate further in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value, key or file that is not allowed."""


def parse_override(text: str) -> tuple[str, Any]:
    """Split `a.b=value` into its dotted key and a YAML-parsed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. lora.r=16)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value {raw!r} is not valid YAML ({error})") from error
    return key.strip(), value


def format_override(key: str, value: Any) -> str:
    """`key=value` with the value written as JSON (valid YAML), so types survive the round trip."""
    import json

    return f"{key}={json.dumps(value)}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from a file, with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, not {type(data).__name__}")
    return data


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check (and gently coerce) `value` against the type hint `hint`; `key` names it in errors."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (arg for arg in args if arg is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{key}: value {value!r} is not {_type_name(hint)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: value {value!r} is not allowed; allowed: {', '.join(map(repr, args))}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for section {hint.__name__}, got {value!r}")
        return from_dict(hint, value, prefix=key + ".")
    if origin in (list, tuple, Iterable) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: value {value!r} is not a list ({_type_name(hint)})")
        item_hint = args[0] if args else Any
        items = [_coerce(item, item_hint, f"{key}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if origin is tuple or hint is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: value {value!r} is not a mapping")
        value_hint = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, value_hint, f"{key}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads 5e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: value {value!r} is not a boolean (true/false)")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key}: value {value!r} is not an integer")
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{key}: value {value!r} is not {_type_name(hint)}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking keys and types recursively."""
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"unknown config key {prefix + key!r} (value {data[key]!r}); "
            f"allowed keys in {prefix.rstrip('.') or cls.__name__}: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from error


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (for saving the resolved config)."""
    return dataclasses.asdict(obj)


def load(cls: type[T], files: Iterable[str | Path] = (), overrides: Iterable[str] = (),
         base: Mapping[str, Any] | None = None) -> T:
    """Build `cls` from `base`, then each YAML file in order, then `key=value` overrides."""
    import copy

    tree: dict[str, Any] = copy.deepcopy(dict(base or {}))  # never change the caller's mapping
    for path in files:
        tree = _merge(tree, read_yaml(path))
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return from_dict(cls, tree)


def dump_yaml(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


def flatten(tree: Mapping[str, Any], prefix: str = "", leaves: Iterable[str] = ()) -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; mappings under a key in `leaves` stay whole values."""
    keep = set(leaves)
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value and key not in keep:
            flat.update(flatten(value, f"{prefix}{key}.", keep))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(saved: Mapping[str, Any], current: Any, ignore: Iterable[str] = ()) -> list[str]:
    """The dotted keys where a saved config (a YAML tree) and a config dataclass differ, as `key: saved -> now`."""
    now = yaml.safe_load(yaml.safe_dump(to_dict(current), sort_keys=False))
    before, after, skipped = flatten(saved), flatten(now), set(ignore)
    return [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in sorted(set(before) | set(after))
            if key not in skipped and before.get(key) != after.get(key)]
