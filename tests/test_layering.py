"""The package's layering, read from its source: every import of a reasonbed module (at the top of a file
or inside a function) goes down the layers, and no module imports another that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "reasonbed"
# Lowest first. A subpackage (or top-level module) may import its own layer's and lower layers' modules only.
LAYERS = [
    {"__init__", "compat", "config", "registry", "storage", "provenance", "prompts", "ray_runtime", "redaction",
     "tracking"},
    {"data", "models", "rewards"},
    {"methods", "inference"},
    {"generation"},
    {"train"},
    {"rl", "tune"},
    {"report", "evaluation"},  # the OOD evaluation writes its report with report's document and tables
    {"share"},  # export reads sweeps' selection and checks adapters; predict answers with training's parser
    {"cli", "__main__"},
]


def _layer(part: str) -> int:
    for index, names in enumerate(LAYERS):
        if part in names:
            return index
    raise AssertionError(f"reasonbed.{part} is in no layer of tests/test_layering.py: place it")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the reasonbed modules it imports (anywhere in the file; `from a import b` counts a.b if a
    module, else a)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    found: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name.startswith("reasonbed"))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("reasonbed"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
        found[name] = {target for target in targets if target in modules and target != name}
    return found


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for module, targets in _imports().items():
        here = _layer(module.split(".")[1] if "." in module else "__init__")
        for target in targets:
            there = _layer(target.split(".")[1] if "." in target else "__init__")
            if there > here:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that go up the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle_between_modules() -> None:
    graph = _imports()
    cycles = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        for target in sorted(graph.get(node, ())):
            # a package imports its own submodules (its __init__ re-exports): not a cycle of meaning
            if target.startswith(node + ".") or node.startswith(target + "."):
                continue
            if target in stack:
                cycles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in done:
                visit(target, [*stack, target], done)
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module], done)
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_every_subpackage_is_placed() -> None:
    for path in PACKAGE.iterdir():
        if path.name.startswith((".", "_")) and path.name not in ("__init__.py", "__main__.py"):
            continue
        if path.is_dir() or path.suffix == ".py":
            _layer(path.name.removesuffix(".py"))
