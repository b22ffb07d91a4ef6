"""Config trees made safe to print or log: secret-looking values masked, URL passwords removed.

Used by `--dry-run` (reasonbed.cli.resolved), the report's storage line and experiment tracking
(reasonbed.tracking), so every place that shows a config hides the same things. Free-form option
mappings (`storage_options`, `engine_kwargs`, ...) go through `reasonbed.storage.redact` (any key
holding secret, token, password, key or credential); elsewhere a key is secret when one of its words
is such a word (`api_key`, `aws_secret_access_key`, `hf_token`; not `max_tokens` or `api_key_env`,
which names a variable, not its value); and URLs lose their password (`postgresql://user:***@host/db`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from reasonbed import storage

MASK = "***"
SECRET_WORDS = frozenset({"secret", "password", "passwd", "token", "credential", "credentials", "apikey"})
KEY_WORDS = frozenset({"api", "access", "secret", "private", "account", "auth"})  # ..._key after one of these
NAME_SUFFIXES = ("env", "file", "path", "name", "id")  # names where a secret lives, not the secret
OPTION_MAPPINGS = ("storage_options", "output_storage_options", "engine_kwargs", "client_kwargs")


def secret_key(key: str) -> bool:
    """Whether a config key names a secret value (by its words)."""
    words = [word for word in re.split(r"[^a-z0-9]+", key.lower()) if word]
    if not words or words[-1] in NAME_SUFFIXES:
        return False
    if any(word in SECRET_WORDS for word in words):
        return True
    return words[-1] == "key" and len(words) > 1 and words[-2] in KEY_WORDS


def redact_url(url: str) -> str:
    """A database URL safe to print: the password of `scheme://user:password@host` masked."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def plain(value: Any) -> Any:
    """A YAML-safe tree of a config: dataclasses, mappings, sequences, paths and scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(item) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def redact(tree: Any) -> Any:
    """A copy of a plain config tree that is safe to print."""
    if isinstance(tree, Mapping):
        safe: dict[str, Any] = {}
        for key, value in tree.items():
            if key in OPTION_MAPPINGS and isinstance(value, Mapping):
                safe[key] = redact(storage.redact(value))
            elif secret_key(str(key)) and value not in ("", None):
                safe[key] = MASK
            else:
                safe[key] = redact(value)
        return safe
    if isinstance(tree, list):
        return [redact(item) for item in tree]
    if isinstance(tree, str) and "://" in tree and "@" in tree:
        return redact_url(tree)
    return tree
