"""An installed wheel runs every job without the checkout (issue 15, item 6).

The wheel is built from a copy of the files a build needs (`pip wheel --no-deps --no-build-isolation`),
then installed with --no-deps into a fresh venv. That venv sees the project's installed dependencies
through a .pth line naming this interpreter's site-packages, added after the install: a path line
in a .pth is appended to sys.path without processing the .pth files inside it, so the editable
checkout and its startup hook stay out. Every command then runs from a temporary working directory,
with no PYTHONPATH: `--dry-run` of every subcommand (cheap), and `reasonbed train --smoke-test`
(slow: a real Ray Train run of the tiny model).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import RANDOM_MODEL

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "platform", "search_spaces")


@pytest.fixture(scope="session")  # its tests run apart: before and after the model build
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                             if (REPO / name).is_dir() else {}))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(dist), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = dist.glob("reasonbed-*.whl")
    return path


@pytest.fixture(scope="session")  # its tests run apart: before and after the model build
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                             str(wheel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _run(venv: Path, argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_wheel_carries_the_package_its_search_spaces_and_the_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged = {Path(name).name: archive.read(name) for name in names
                    if name.startswith("reasonbed/search_spaces/")}
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    sources = {path.name: path.read_bytes() for path in (REPO / "search_spaces").glob("*.yaml")}
    assert packaged == sources and len(sources) >= 6  # the same files, byte for byte
    assert {"reasonbed/cli/__init__.py", "reasonbed/cli/train.py", "reasonbed/cli/tune.py"} <= names
    assert not [name for name in names if name.startswith(("jobs/", "tests/", "configs/"))]
    assert "reasonbed = reasonbed.cli:main" in entry_points


def test_installed_package_is_used_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    code = ("import reasonbed, json; from reasonbed.tune.spaces import resolve_directory; "
            "print(json.dumps([reasonbed.__file__, str(resolve_directory('search_spaces'))]))")
    result = _run(venv, ["python", "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    package, spaces = json.loads(result.stdout)
    assert package.startswith(str(venv)) and spaces.startswith(str(venv)), (package, spaces)
    assert Path(spaces, "default.yaml").is_file()


DRY_RUNS = {
    "generate": ["--smoke-test"], "train": ["--smoke-test"], "rl": ["--smoke-test"],
    "tune": ["--smoke-test", "--methods", "direct,mtct,sarr,grpo"], "report": ["runs/x"], "dashboard": ["runs/x"],
    "tiny-model": [], "make-data": ["--out", "data"], "splits": ["dataset=pacs", "root=/data/PACS"],
    "install-startup-hook": [], "cluster-check": ["--smoke-test"], "evaluate": ["--smoke-test"],
    "export": ["runs/x", "--out", "exported"], "predict": ["--smoke-test"],
}


# Every subcommand's dry run and --help-config in one process of the venv (one import of the installed package,
# not 28); the console script itself runs once.
DRY_RUN_ALL = """
import contextlib, io, json, sys
from reasonbed.cli import main
outputs = {}
for name, args in json.loads(sys.argv[1]).items():
    for argv in ([name, *args, "--dry-run"], [name, "--help-config"]):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            try:
                code = main(argv)
            except SystemExit as stop:
                code = stop.code
        outputs[" ".join(argv)] = [code, buffer.getvalue()]
print(json.dumps(outputs))
"""


def test_every_subcommand_dry_runs_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    from reasonbed.cli import COMMANDS

    assert set(DRY_RUNS) == set(COMMANDS.names())
    result = _run(venv, ["python", "-c", DRY_RUN_ALL, json.dumps(DRY_RUNS)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    for name, args in DRY_RUNS.items():
        code, out = outputs[" ".join([name, *args, "--dry-run"])]
        assert code == 0 and isinstance(yaml.safe_load(out), dict), f"reasonbed {name}: {out[-2000:]}"
        code, listing = outputs[f"{name} --help-config"]
        assert code == 0 and listing.count("\n") >= 2, f"reasonbed {name} --help-config: {listing[-2000:]}"
    script = _run(venv, ["reasonbed", "tune", *DRY_RUNS["tune"], "--dry-run"], tmp_path)  # the console script
    assert script.returncode == 0 and isinstance(yaml.safe_load(script.stdout), dict), script.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # dry runs write nothing


@pytest.mark.slow
def test_train_smoke_test_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    """issue 15's must-show: `reasonbed train --smoke-test` from a fresh venv with no checkout. (On the random tiny
    model: what is shown is the installed package running, not learning, so it runs while the pretrained model
    builds.)"""
    result = _run(venv, ["reasonbed", "train", "--smoke-test", "--run-dir", "run", "optim.max_steps=4",
                         "eval.every=4", "eval.max_per_domain=2", RANDOM_MODEL], tmp_path, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["step"] == 4 and 0.0 <= printed["test_acc"] <= 1.0
    assert "memory estimate per training worker" in result.stdout + result.stderr  # from the Ray Train worker
    run_dir = tmp_path / "run"
    assert (run_dir / "done").is_file() and (run_dir / "adapter" / "adapter_config.json").is_file()
    assert Path(printed["run_dir"]) == run_dir.resolve()
