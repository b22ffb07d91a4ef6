"""`--dry-run` output: a resolved config as plain YAML, with anything secret-looking redacted
(reasonbed.redaction says what is masked)."""

from __future__ import annotations

from typing import Any

import yaml

from reasonbed.redaction import MASK, plain, redact, secret_key

__all__ = ["MASK", "plain", "redact", "secret_key", "to_yaml"]


class _Dumper(yaml.SafeDumper):
    """Block-style mappings; lists of scalars on one line."""


def _list(dumper: yaml.SafeDumper, items: list[Any]) -> Any:
    flat = all(not isinstance(item, (list, dict)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_Dumper.add_representer(list, _list)


def to_yaml(resolved: Any, title: str) -> str:
    """The resolved config as YAML under a comment line naming what it is."""
    body = yaml.dump(redact(plain(resolved)), Dumper=_Dumper, sort_keys=False, width=110, default_flow_style=False)
    return f"# {title}\n{body}".rstrip("\n")
