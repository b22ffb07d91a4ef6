"""Documented commands are tested commands (issue 12, item 1).

Every `python jobs/...` command line in README.md, docs/*.md, cluster/ (YAML comments and RayJob
`entrypoint`s, `\\` continuations joined), configs/*.yaml comments and the jobs' docstrings, and
every `python -m reasonbed ...` / `reasonbed <command> ...` line there and in the CLI modules'
docstrings (and inline code spans `reasonbed <command> ARGS`, not synopses), runs with `--dry-run` appended, in this process through the job's own `main` (or the
CLI's), and must exit 0. A command that runs on real data must also name what a real run needs,
read from the resolved config it prints: the model (path, family and a dtype other than float32),
GPUs, and for a cluster (`ray job submit`, cluster/, configs/) object storage for its results.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from reasonbed import cli
from reasonbed.config import flatten
from reasonbed.data.catalog import OFFLINE_GENERATORS

REPO = Path(__file__).resolve().parents[1]
JOB = re.compile(r"\bpython3? (jobs/[\w./-]+\.py)\b")
MODULE = re.compile(r"\bpython3? -m reasonbed\b")
# The console script counts at the start of a line (a code line), or of an inline code span when arguments follow
# it; not as a name in prose (`reasonbed tune`, `reasonbed generate | train | ...`).
_SUBCOMMAND = "reasonbed (?:" + "|".join(map(re.escape, cli.COMMANDS.names())) + ")"
SCRIPT = re.compile(r"^\s*(?:\$\s+)?(" + _SUBCOMMAND + r")\b|(?<=`)(" + _SUBCOMMAND + r") (?=[^`\s|])")
SYNOPSIS = ("[-", "|", "...")  # what marks an inline code span as a command's shape rather than a command
CLOUD = ("s3://", "gs://")
FLOAT32 = ("float32", "")


@dataclass(frozen=True)
class Documented:
    """One command line found in the documentation."""

    source: str  # file (and line) it was found in
    argv: tuple[str, ...]  # ("jobs/train.py", args...) or ("reasonbed", command, args...)
    cluster: bool  # submitted to a cluster (ray job submit, cluster/, configs/)

    @property
    def id(self) -> str:
        return f"{self.source}: {' '.join(self.argv)[:90]}"


def _logical_lines(text: str, comments: bool = False) -> Iterator[tuple[int, str]]:
    """Lines with `\\` continuations joined (comment markers stripped first when `comments`)."""
    lines = text.splitlines()
    number, buffer = 0, ""
    for index, line in enumerate(lines, 1):
        if comments:  # comment lines only, their marker stripped (code lines are read as YAML)
            line = re.sub(r"^\s*#\s?", "", line) if line.lstrip().startswith("#") else ""
        if not buffer:
            number = index
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            buffer += stripped[:-1].rstrip() + " "
            continue
        yield number, buffer + line.strip()
        buffer = ""
    if buffer:
        yield number, buffer


def _command_at(line: str, start: int) -> str:
    """The command text from `start`: to the closing backtick when it sits in an inline code span."""
    rest = line[start:]
    if line[:start].count("`") % 2:
        rest = rest.split("`", 1)[0]
    return rest


def _split(text: str) -> list[str]:
    return shlex.split(text, comments=True)


def commands_in(text: str, source: str, cluster_file: bool = False, comments: bool = False) -> list[Documented]:
    found = []
    for number, line in _logical_lines(text, comments):
        submitted = cluster_file or "ray job submit" in line
        for match in JOB.finditer(line):
            words = _split(_command_at(line, match.start(1)))
            found.append(Documented(f"{source}:{number}", tuple(words), submitted))
        for match in MODULE.finditer(line):
            words = _split(_command_at(line, match.end()))
            if not words:  # the module named in prose, no command
                continue
            found.append(Documented(f"{source}:{number}", ("reasonbed", *words), submitted))
        for match in SCRIPT.finditer(line):
            text = _command_at(line, match.start(1) if match.group(1) else match.start(2))
            if match.group(2) and any(mark in text for mark in SYNOPSIS):
                continue  # an inline synopsis (`reasonbed predict --model M [--adapter A] ...`), not a command
            found.append(Documented(f"{source}:{number}", tuple(_split(text)), submitted))
    return found


def documented_commands() -> list[Documented]:
    found: list[Documented] = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        found += commands_in(path.read_text(), str(path.relative_to(REPO)))
    for path in sorted((REPO / "cluster").rglob("*.yaml")) + sorted((REPO / "configs").glob("*.yaml")):
        text, name = path.read_text(), str(path.relative_to(REPO))
        found += commands_in(text, name, cluster_file=True, comments=True)
        for doc in yaml.safe_load_all(text):
            entrypoint = (doc or {}).get("spec", {}).get("entrypoint") if isinstance(doc, dict) else None
            if entrypoint:
                found += commands_in(entrypoint, f"{name} (entrypoint)", cluster_file=True)
    for path in sorted((REPO / "jobs").glob("*.py")) + sorted((REPO / "platform/reasonbed/cli").glob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        found += commands_in(docstring, str(path.relative_to(REPO)))
    return found


COMMANDS = documented_commands()


def _load_job(script: str) -> Any:
    path = REPO / script
    sys.path.insert(0, str(path.parent))  # as for `python jobs/X.py`: the script's folder comes first
    spec = importlib.util.spec_from_file_location(f"documented_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(argv: tuple[str, ...] | list[str]) -> tuple[int, str, str]:
    """Run a documented command in this process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved_path = list(sys.path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if argv[0] == "reasonbed":
                    code = cli.main(list(argv[1:]))
                else:
                    code = _load_job(argv[0]).main(list(argv[1:]))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.path[:] = saved_path
    return int(code or 0), out.getvalue(), err.getvalue()


def test_the_documentation_holds_the_commands_we_expect() -> None:
    sources = {command.source.split(":")[0].split(" ")[0] for command in COMMANDS}
    assert {"README.md", "docs/cluster.md", "docs/tuning.md", "cluster/kuberay/rayjob-tune-pacs.yaml",
            "cluster/aws.yaml", "jobs/train.py", "jobs/tune_pacs.py", "configs/tune_pacs_internvl3_8b.yaml"} <= sources
    scripts = {command.argv[0] for command in COMMANDS}
    jobs = {f"jobs/{path.name}" for path in (REPO / "jobs").glob("*.py") if path.name != "bench_common.py"}
    assert jobs <= scripts, f"jobs without a documented command: {sorted(jobs - scripts)}"
    entrypoints = [c for c in COMMANDS if "(entrypoint)" in c.source]
    assert len(entrypoints) == 2 and all(c.cluster for c in entrypoints)
    assert len(COMMANDS) >= 40


def test_extraction_joins_continuations_and_cuts_inline_spans() -> None:
    text = ("Run `python jobs/train.py --smoke-test` then `reasonbed report runs/x --out r`, not `reasonbed report`\n"
            "nor `reasonbed report RUN [--out DIR]`.\n"
            "```\nray job submit --address http://h:8265 \\\n    -- python jobs/tune_pacs.py --storage s3://b \\\n"
            "    --gpu   # a comment\n```\n")
    found = commands_in(text, "x.md")
    assert [c.argv for c in found] == [("jobs/train.py", "--smoke-test"), ("reasonbed", "report", "runs/x", "--out", "r"),
                                       ("jobs/tune_pacs.py", "--storage", "s3://b", "--gpu")]
    assert [c.cluster for c in found] == [False, False, True]


def test_the_old_rayjob_entrypoint_fails() -> None:
    """The negative control: the RayJob entrypoint this test was written against (issue 12)."""
    old = "python jobs/tune_pacs.py --dataset pacs --data-root s3://your-bucket/data/PACS --storage s3://your-bucket/reasonbed/runs"
    (command,) = commands_in(old, "old", cluster_file=True)
    code, _, err = run((*command.argv, "--dry-run"))
    assert code == 2 and "unrecognized arguments: --dataset" in err
    code, _, err = run((*(a for a in command.argv if a not in ("--dataset", "pacs")), "--dry-run"))
    assert code == 2 and "need teacher chains" in err, err


def _real_run_problems(command: Documented, resolved: dict[str, Any]) -> list[str]:
    """What a real-data command leaves out, from its resolved config (empty for offline benchmarks)."""
    data = resolved.get("data")
    if not isinstance(data, dict) or data.get("dataset") in OFFLINE_GENERATORS:
        return []
    problems = []
    if "models" in resolved:  # OOD evaluation: the first model is the base one
        model, gpus, store = resolved["models"][0]["model"], resolved["engine"]["num_gpus"] > 0, resolved["output"]
        placement = resolved["engine"]["resources"]
    elif "engine" in resolved:  # generation
        model, gpus, store = resolved["engine"]["model"], resolved["engine"]["num_gpus"] > 0, resolved["output"]
        placement = resolved["engine"]["resources"]
    elif "methods" in resolved:  # sweep: the per-trial training config, and the teacher if chains are generated
        train = flatten(resolved["train"])
        model = {key[len("model."):]: value for key, value in train.items() if key.startswith("model.")}
        gpus, store = bool(train.get("scale.use_gpu")), resolved["storage"]
        placement = {key: value for key, value in train.items() if key.startswith("scale.resources.")}
        if resolved["generate_chains"] and not resolved["chains"]:
            engine = flatten(resolved["generation"])
            if not engine.get("engine.model.path") or not engine.get("engine.num_gpus"):
                problems.append("generate_chains without a teacher model and GPUs (generation.engine.*)")
    else:  # train / rl
        model, gpus, store = resolved["model"], resolved["scale"]["use_gpu"], resolved["storage_path"]
        placement = resolved["scale"]["resources"]
    if not model.get("path") or not model.get("family"):
        problems.append("no model path and family")
    if model.get("dtype", "") in FLOAT32:
        problems.append("no dtype (bfloat16 for a real model)")
    if not gpus:
        problems.append("no GPUs")
    if command.cluster and not str(store).startswith(CLOUD):
        problems.append(f"results on {store!r}, not object storage")
    if command.cluster and gpus and not placement:  # docs/cluster.md: each job asks for its node group
        problems.append("no node group asked for (scale.resources={train_node: 1} / engine.resources="
                        "{generation_node: 1})")
    return problems


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_documented_command_passes_dry_run(command: Documented, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # documented commands run from the repository root
    code, out, err = run((*command.argv, "--dry-run"))
    assert code == 0, f"{command.source}: `{' '.join(command.argv)} --dry-run` exited {code}:\n{err[-2000:]}"
    if "--help-config" in command.argv:
        assert out.count("\n") > 10
        return
    assert "dry run: nothing started" in out
    resolved = yaml.safe_load(out)
    if isinstance(resolved, dict):
        problems = _real_run_problems(command, resolved)
        assert not problems, f"{command.source}: `{' '.join(command.argv)}` runs on real data but: {problems}"


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_passes_dry_run_and_is_documented(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    job = {"tune": "jobs/tune.py", "train": "jobs/train.py", "generate": "jobs/generate_reasoning.py"}[
        config.name.split("_", 1)[0]]
    relative = str(config.relative_to(REPO))
    code, out, err = run((job, "--config", relative, "--dry-run"))
    assert code == 0, err
    problems = _real_run_problems(Documented(relative, (job,), cluster=True), yaml.safe_load(out))
    assert not problems, problems
    assert any(relative in command.argv for command in COMMANDS if command.source.split(":")[0] != relative), \
        f"{relative} is used by no documented command outside itself"
