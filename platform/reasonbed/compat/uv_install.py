"""Install into this Python's environment with uv, from the sources pip is configured to use.

`make setup` runs this file by path (`.venv/bin/python platform/reasonbed/compat/uv_install.py -c
constraints.txt -e '.[cpu,dev]'`) before the package is installed, so it uses the standard library
only. uv resolves, downloads, unpacks and byte-compiles in parallel: the same packages as `pip
install` in less than half the time on 2 cores (1:42 against 3:56; docs/benchmarks.md, "Setting up").
uv does not read pip's configuration, and a machine's pip configuration may be what makes the install right
(the CPU build of torch from a local wheel folder, a mirror, a company index, a global constraints
file), so this reads pip's effective configuration (`pip config list`: its files and PIP_*
variables) and passes the keys that choose packages on to uv:

    find-links, index-url, extra-index-url, constraint, no-index, trusted-host -> uv's flags of the
    same meaning; cert -> SSL_CERT_FILE.

Other keys (timeouts, the version check) do not change what is installed and are not passed on.
Like pip, uv gets `--index-strategy unsafe-best-match` (every index's versions compared, pip's
behaviour) and `--compile-bytecode` (pip byte-compiles what it installs; without it, where
PYTHONDONTWRITEBYTECODE is set, every process would compile torch, transformers and vLLM anew).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

# pip's sections, lowest precedence first: an install-command section overrides `global`, PIP_* variables both.
SECTIONS = ("global", "install", ":env:")
LIST_FLAGS = {"find-links": "--find-links", "extra-index-url": "--extra-index-url", "constraint": "--constraint",
              "trusted-host": "--allow-insecure-host"}
TRUE = {"1", "true", "yes", "on"}


def pip_settings(config_list: str) -> dict[str, str]:
    """`pip config list` output (`section.key='value'` per line) -> key: value, the highest precedence winning."""
    ranked: dict[str, tuple[int, str]] = {}
    for line in config_list.splitlines():
        name, sep, quoted = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not sep or not dot or section not in SECTIONS:
            continue
        rank = SECTIONS.index(section)
        if key not in ranked or rank >= ranked[key][0]:
            ranked[key] = (rank, str(ast.literal_eval(quoted)))
    return {key: value for key, (_, value) in ranked.items()}


def uv_options(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """pip's settings -> uv's command-line flags and environment variables with the same meaning."""
    flags: list[str] = []
    for key, flag in LIST_FLAGS.items():
        for value in settings.get(key, "").split():
            flags += [flag, value]
    if settings.get("index-url"):
        flags += ["--index-url", settings["index-url"]]
    if settings.get("no-index", "").lower() in TRUE:
        flags.append("--no-index")
    env = {"SSL_CERT_FILE": settings["cert"]} if settings.get("cert") else {}
    return flags, env


def main(argv: list[str]) -> int:
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=True).stdout
    flags, env = uv_options(pip_settings(listed))
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        raise SystemExit(f"{uv} not found: install uv into this environment first (`{sys.executable} -m pip "
                         f"install uv`)")
    command = [str(uv), "pip", "install", "--python", sys.executable, "--index-strategy", "unsafe-best-match",
               "--compile-bytecode", *flags, *argv]
    print(" ".join(command), flush=True)
    return subprocess.run(command, env={**os.environ, **env}, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
