"""Build hook: the wheel's `reasonbed/search_spaces/*.yaml` are copied from the checkout's `search_spaces/`.

`search_spaces/` at the repository root stays the one source of truth (and the documented place to
edit); an installed wheel finds the same files inside the package (reasonbed.tune.spaces.resolve_directory).
Everything else about the build is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "search_spaces"


class BuildPyWithSearchSpaces(build_py):
    """build_py, then the search spaces into the built package (not for editable installs: those read
    the checkout's own folder)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "reasonbed" / "search_spaces"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(SOURCE.glob("*.yaml")):
            (target / path.name).write_bytes(path.read_bytes())


setup(cmdclass={"build_py": BuildPyWithSearchSpaces})
