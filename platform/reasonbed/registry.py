"""Named registries for pluggable parts (datasets, model families, methods, engines, rewards).

Each kind has one `Registry`; entries are added with the `@registry.register("name")` decorator or,
for heavy optional imports, as a dotted path ("package.module:attribute") that is imported only when
the entry is chosen. Unknown and duplicate names fail loudly with the list of known names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate registry name."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A mapping from names to entries of one kind, with lazy dotted-path entries."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name`."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, entry: T | str) -> None:
        """Register an object, or a lazy "module:attribute" path imported on first use."""
        if name in self._entries:
            raise RegistryError(f"duplicate {self.kind} name {name!r}: already registered")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry for `name`, importing it if it was registered lazily."""
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attribute)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
