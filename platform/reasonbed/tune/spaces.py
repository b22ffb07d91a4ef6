"""Declarative search spaces (search_spaces/*.yaml): loading, validation and conversion to Ray Tune.

A file holds `params`, a mapping from a dotted TrainConfig key to one distribution:
`{loguniform: [low, high]}`, `{uniform: [low, high]}`, `{int: [low, high]}`, `{choice: [a, b, ...]}`
or `{fixed: value}`, each with an optional `default` (the values of the defaults trial, DomainBed's
"seed 0 means the defaults"). `default.yaml` applies to every method; `<method>.yaml` adds or
overrides; a method file's `datasets: {<dataset>: {params: ...}}` overrides per dataset. Every
error names the file, the key and the problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reasonbed.config import ConfigError, format_override

KINDS = ("loguniform", "uniform", "int", "choice", "fixed")


class SearchSpaceError(ConfigError):
    """A malformed search space file."""


@dataclass(frozen=True)
class Param:
    key: str
    kind: str
    args: Any
    default: Any = None
    source: str = ""

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(*self.args)
        if self.kind == "uniform":
            return tune.uniform(*self.args)
        if self.kind == "int":
            return tune.randint(self.args[0], self.args[1] + 1)
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return self.args


@dataclass
class SearchSpace:
    params: dict[str, Param] = field(default_factory=dict)

    def tune_space(self) -> dict[str, Any]:
        return {key: param.to_tune() for key, param in self.params.items()}

    def searched(self) -> dict[str, Param]:
        return {key: param for key, param in self.params.items() if param.kind != "fixed"}

    def defaults(self) -> dict[str, Any]:
        """The defaults trial: each searched key at its default (keys without one are left out)."""
        return {key: param.default for key, param in self.searched().items() if param.default is not None}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SearchSpaceError(f"{where}: {value!r} is not a number")
    try:
        return float(value)
    except ValueError:
        raise SearchSpaceError(f"{where}: {value!r} is not a number") from None


def parse_param(key: str, spec: Any, source: str) -> Param:
    where = f"{source}: params.{key}"
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(f"{where}: expected a mapping such as {{loguniform: [1e-5, 1e-3]}}, got {spec!r}")
    kinds = [name for name in spec if name in KINDS]
    extra = sorted(set(spec) - set(KINDS) - {"default"})
    if extra:
        raise SearchSpaceError(f"{where}: unknown entry {extra[0]!r}; allowed: {', '.join(KINDS)}, default")
    if len(kinds) != 1:
        raise SearchSpaceError(f"{where}: needs exactly one of {', '.join(KINDS)}, got {kinds or 'none'}")
    kind, args = kinds[0], spec[kinds[0]]
    default = spec.get("default")
    if kind in ("loguniform", "uniform", "int"):
        if not isinstance(args, list) or len(args) != 2:
            raise SearchSpaceError(f"{where}: {kind} needs [low, high], got {args!r}")
        low, high = (_number(value, where) for value in args)
        if not low < high or (kind == "loguniform" and low <= 0):
            raise SearchSpaceError(f"{where}: {kind} needs low < high{' and low > 0' if kind == 'loguniform' else ''}"
                                   f", got [{args[0]}, {args[1]}]")
        if kind == "int":
            if low != int(low) or high != int(high):
                raise SearchSpaceError(f"{where}: int bounds must be integers, got {args!r}")
            args = [int(low), int(high)]
        else:
            args = [low, high]
        if default is not None:
            value = _number(default, where + ".default")
            if not args[0] <= value <= args[1]:
                raise SearchSpaceError(f"{where}: default {default!r} is outside [{args[0]}, {args[1]}]")
            default = int(value) if kind == "int" else value
    elif kind == "choice":
        if not isinstance(args, list) or not args:
            raise SearchSpaceError(f"{where}: choice needs a non-empty list, got {args!r}")
        if default is not None and default not in args:
            raise SearchSpaceError(f"{where}: default {default!r} is not one of {args!r}")
    return Param(key, kind, args, default, source)


def read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SearchSpaceError(f"search space file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SearchSpaceError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, Mapping):
        raise SearchSpaceError(f"{path}: must hold a mapping with 'params'")
    unknown = sorted(set(data) - {"params", "datasets", "description"})
    if unknown:
        raise SearchSpaceError(f"{path}: unknown top-level key {unknown[0]!r}; allowed: params, datasets, description")
    return dict(data)


def _params(section: Any, source: str) -> dict[str, Param]:
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise SearchSpaceError(f"{source}: 'params' must map keys to distributions")
    return {str(key): parse_param(str(key), spec, source) for key, spec in section.items()}


def resolve_directory(directory: str | Path) -> Path:
    """A relative directory missing from the working directory falls back to the checkout's own, then to
    the copy an installed wheel carries inside the package (built from the checkout's, see setup.py)."""
    path = Path(directory)
    if path.is_dir() or path.is_absolute():
        return path
    here = Path(__file__).resolve()
    for bundled in (here.parents[3] / path, here.parents[1] / path):  # <checkout>/search_spaces, reasonbed/...
        if bundled.is_dir():
            return bundled
    return path


def load_space(directory: str | Path, method: str, dataset: str) -> SearchSpace:
    """default.yaml, then <method>.yaml, then its `datasets.<dataset>` section (each optional but one)."""
    directory = resolve_directory(directory)
    params: dict[str, Param] = {}
    found = False
    for name in ("default.yaml", f"{method}.yaml"):
        path = directory / name
        if not path.is_file():
            continue
        found = True
        data = read_file(path)
        params.update(_params(data.get("params"), str(path)))
        datasets = data.get("datasets") or {}
        if not isinstance(datasets, Mapping):
            raise SearchSpaceError(f"{path}: 'datasets' must map dataset names to sections")
        section = datasets.get(dataset) or {}
        params.update(_params(section.get("params") if isinstance(section, Mapping) else section,
                              f"{path} (datasets.{dataset})"))
    if not found:
        raise SearchSpaceError(f"no search space for method {method!r} in {str(directory)!r} "
                               f"(expected default.yaml or {method}.yaml)")
    space = SearchSpace(params)
    validate_keys(space, method)
    return space


def validate_keys(space: SearchSpace, method: str) -> None:
    """Every key must be a TrainConfig (or the method's config) key that accepts its values."""
    from reasonbed.config import load
    from reasonbed.methods.base import method_class
    from reasonbed.train.config import TrainConfig

    for key, param in space.params.items():
        if key.startswith("method_config."):
            name = key.split(".", 1)[1]
            values = param.args if param.kind == "choice" else [param.args] if param.kind == "fixed" else param.args
            for value in values:
                try:
                    method_class(method).parse_options({name: int(value) if param.kind == "int" else value})
                except ConfigError as error:
                    raise SearchSpaceError(f"{param.source}: params.{key}: {error}") from None
            continue
        samples = param.args if param.kind == "choice" else [param.args] if param.kind == "fixed" else param.args
        for value in samples:
            value = int(value) if param.kind == "int" else value
            if isinstance(value, float) and math.isnan(value):
                continue
            try:
                load(TrainConfig, overrides=[format_override(key, value)])
            except ConfigError as error:
                raise SearchSpaceError(f"{param.source}: params.{key}: {error}") from None
