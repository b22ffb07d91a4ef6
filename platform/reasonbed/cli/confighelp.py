"""`--help-config`: every config key of a command, with type, default and help text, from the dataclasses.

A field's help text is the comment beside it (`lr: float = 5e-4  # peak learning rate`) or the
comment lines directly above it, read from the class's source with `ast` and `tokenize` (sources
ship in the wheel, so this works installed too). A section field (a nested config dataclass) with
no comment of its own takes the first line of its class's docstring. Help therefore lives in one
place, the config classes; `describe` walks them into dotted keys as a job takes them, and
`expand` adds the keys of free-form dict fields whose contents have a schema of their own
(`method_config.*` per method, a sweep's `train.*` and `generation.*`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PRAGMAS = ("noqa", "type:", "pragma", "fmt:")


@dataclass(frozen=True)
class KeyHelp:
    """One config key as --help-config shows it."""

    key: str  # dotted key as the command takes it, e.g. optim.lr or train.model.path
    type: str  # the type, e.g. float, list[str], a|b|c
    default: str  # the default, as YAML would write it ("" for a required value)
    help: str  # the field's help text (its comment in the config class)


def _comment_text(token: str) -> str:
    text = token.lstrip("#").strip()
    return "" if any(text.startswith(pragma) for pragma in PRAGMAS) else text


@functools.cache
def _own_field_help(cls: type) -> dict[str, str]:
    """Help text of the fields written in `cls`'s own class body (not inherited ones)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = _comment_text(token.string)
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                tokenize.ENDMARKER):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    (node,) = ast.parse(source).body
    found: dict[str, str] = {}
    for statement in getattr(node, "body", []):
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        end = statement.end_lineno or statement.lineno
        beside = [comments[line] for line in range(statement.lineno, end + 1) if comments.get(line)]
        above: list[str] = []
        line = statement.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        text = " ".join(beside) or " ".join(part for part in above if part)
        found[statement.target.id] = text
    return found


def field_comments(cls: type) -> dict[str, str]:
    """The comment of every commented field of dataclass `cls` (inherited ones from the class that writes them)."""
    merged: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            merged.update({name: text for name, text in _own_field_help(klass).items() if text})
    return merged


def field_help(cls: type) -> dict[str, str]:
    """Help text of every field of dataclass `cls`: its comment, or for a section its class's docstring."""
    merged = field_comments(cls)
    sections = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = sections.get(field.name)
        if not merged.get(field.name) and dataclasses.is_dataclass(hint):
            merged[field.name] = (inspect.getdoc(hint) or "").split("\n", 1)[0]
    return merged


def type_name(hint: Any) -> str:
    """A short, readable name of a type hint: float, list[str], a|b|c, str|None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "|".join(str(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return "|".join(type_name(arg) for arg in args)
    if hint is type(None):
        return "None"
    if origin is not None:
        inner = ", ".join(type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else origin.__name__
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def default_text(value: Any) -> str:
    """A default as one line of YAML flow style."""
    import yaml

    from reasonbed.cli.resolved import plain

    if value is dataclasses.MISSING:
        return ""
    return yaml.safe_dump(plain(value), default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


Expand = Mapping[str, Callable[[str], list[KeyHelp]]]


def describe(cls: type, prefix: str = "", expand: Expand | None = None) -> list[KeyHelp]:
    """Every key of config dataclass `cls` under `prefix`; `expand[name]` adds keys under a dict field."""
    helps = field_help(cls)
    hints = typing.get_type_hints(cls)
    rows: list[KeyHelp] = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        key, hint = prefix + field.name, hints[field.name]
        if dataclasses.is_dataclass(hint):
            rows.append(KeyHelp(key, "section", "", helps.get(field.name, "")))
            rows += describe(hint, key + ".", _sub(expand, field.name))
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        rows.append(KeyHelp(key, type_name(hint), default_text(default), helps.get(field.name, "")))
        if expand and field.name in expand:
            rows += expand[field.name](key + ".")
    return rows


def _sub(expand: Expand | None, name: str) -> dict[str, Callable[[str], list[KeyHelp]]]:
    """The expansions below section `name` (keys `name.x` become `x`)."""
    return {key.split(".", 1)[1]: make for key, make in (expand or {}).items() if key.startswith(name + ".")}


def method_keys(prefix: str, methods: Iterable[str] | None = None) -> list[KeyHelp]:
    """`method_config.*` keys: the fields of each registered method's config, marked with its methods."""
    import reasonbed.methods  # noqa: F401 - registers the built-in methods
    from reasonbed.methods.base import METHODS

    owners: dict[tuple[str, str, str], list[str]] = {}  # (key, type, default) -> methods
    first: dict[tuple[str, str, str], KeyHelp] = {}
    for name in methods if methods is not None else METHODS.names():
        config = METHODS.get(name).config_class
        for row in describe(config, prefix):
            owners.setdefault((row.key, row.type, row.default), []).append(name)
            first.setdefault((row.key, row.type, row.default), row)
    return [KeyHelp(row.key, row.type, row.default, f"[method {', '.join(owners[ident])}] {row.help}".strip())
            for ident, row in first.items()]


def option_keys(parser: Any) -> list[KeyHelp]:
    """The options of a flag-only command (its --help-config): flag, type, default and help."""
    import argparse

    rows = []
    for action in parser._actions:  # argparse keeps no public list of its actions
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        name = max(action.option_strings, key=len) if action.option_strings else action.dest
        if name in ("--dry-run", "--help-config"):
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            kind = "flag"
        else:
            kind = getattr(action.type, "__name__", "str") if action.type else "str"
        default = action.default if action.default is not None else ""
        rows.append(KeyHelp(name, kind, default_text(default) if default != "" else "", action.help or ""))
    return rows


def format_keys(rows: Iterable[KeyHelp]) -> str:
    """Two lines per key: `key: type = default` and the indented help text."""
    lines = []
    for row in rows:
        default = f" = {row.default}" if row.default else ""
        lines.append(f"{row.key}: {row.type}{default}")
        if row.help:
            lines.append(f"    {row.help}")
    return "\n".join(lines)
