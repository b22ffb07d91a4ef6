"""The command line: one registry of commands, --help-config from the dataclasses, --dry-run, bad input.

In-process through `reasonbed.cli.main` (fast); one subprocess shows that a dry run imports neither
Ray nor torch, vLLM or transformers and writes nothing. The documented command lines are in
tests/test_documented_commands.py, the installed wheel in tests/test_wheel.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from reasonbed import cli
from reasonbed.cli.confighelp import describe, field_comments, field_help, method_keys
from reasonbed.cli.resolved import redact, secret_key

REPO = Path(__file__).resolve().parents[1]
CONFIG_COMMANDS = ("generate", "train", "rl", "tune", "splits", "predict", "evaluate")


@dataclass
class _Section:
    """A section's docstring is the help of a section field without a comment."""

    depth: int = 2  # beside


@dataclass
class _Example:
    plain: int = 1  # beside the field
    # above the field,
    # on two lines
    above: str = "x"
    multi: list[str] = field(
        default_factory=lambda: ["a"],
    )  # beside the last line of a long field
    section: _Section = field(default_factory=_Section)
    bare: float = 0.5
    # a comment with a blank line below belongs to nothing

    after_blank: bool = False


@dataclass
class _Child(_Example):
    extra: int = 3  # the subclass's own field


def test_field_help_reads_comments_beside_and_above() -> None:
    assert field_help(_Child) == {
        "plain": "beside the field", "above": "above the field, on two lines",
        "multi": "beside the last line of a long field",
        "section": "A section's docstring is the help of a section field without a comment.",
        "extra": "the subclass's own field"}
    rows = {row.key: row for row in describe(_Example, "x.")}
    assert rows["x.section.depth"].help == "beside" and rows["x.section"].type == "section"
    assert (rows["x.multi"].type, rows["x.multi"].default) == ("list[str]", "[a]")
    assert rows["x.bare"].help == "" and rows["x.after_blank"].help == ""


def _all_rows() -> dict[str, list]:
    return {name: cli.COMMANDS.get(name).config_keys() for name in CONFIG_COMMANDS}


def test_every_config_field_reachable_from_a_job_has_help() -> None:
    rows = _all_rows()
    missing = sorted({row.key for rows_ in rows.values() for row in rows_ if not row.help})
    assert not missing, f"config fields without a help comment: {missing}"
    train = {row.key for row in rows["train"]}
    assert {"model.path", "optim.lr", "method_config.reasoning_weight", "method_config.rounds",
            "method_config.group_size", "data.on_corrupt"} <= train
    tune = {row.key for row in rows["tune"]}
    assert {"train.model.path", "train.method_config.rounds", "generation.engine.model.path",
            "asha.max_t", "search_spaces"} <= tune
    assert "engine.model.path" in {row.key for row in rows["generate"]}
    assert {"tracking.mlflow", "tracking.wandb"} <= train and {"tracking.mlflow", "train.tracking.wandb"} <= tune
    assert {"adapter", "engine.model.path", "output"} <= {row.key for row in rows["predict"]}
    rl = {row.key: row for row in rows["rl"]}
    assert rl["method"].default == "grpo" and "method_config.rounds" not in rl


def test_every_field_of_every_reachable_config_class_carries_a_comment() -> None:
    """The project's rule, checked on the classes themselves (sections included, not only their docstring)."""
    import typing

    from reasonbed.data.catalog import DataConfig
    from reasonbed.evaluation.config import EvalConfig
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.methods.base import METHODS
    from reasonbed.share.export import ExportConfig
    from reasonbed.share.predict import PredictConfig
    from reasonbed.train.config import TrainConfig
    from reasonbed.tune.config import SweepConfig

    todo = [DataConfig, EvalConfig, GenerationConfig, TrainConfig, SweepConfig, PredictConfig, ExportConfig,
            *(METHODS.get(name).config_class for name in METHODS.names())]
    seen: set[type] = set()
    missing = []
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        comments = field_comments(cls)
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            if not comments.get(item.name):
                missing.append(f"{cls.__module__}.{cls.__qualname__}.{item.name}")
            if dataclasses.is_dataclass(hints[item.name]):
                todo.append(hints[item.name])
    assert len(seen) >= 12 and not missing, missing


def test_method_keys_name_their_methods() -> None:
    rows = {row.key: row for row in method_keys("method_config.")}
    assert rows["method_config.reasoning_weight"].help.startswith("[method mtct, sarr]")
    assert rows["method_config.kl_weight"].help.startswith("[method grpo]")


@pytest.mark.parametrize("name", cli.COMMANDS.names())
def test_every_command_has_help_config_and_dry_run(name: str, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert cli.main([name, "--help-config"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("\n") >= 2 and "--dry-run" not in listing
    needs = {"report": ["runs/x"], "dashboard": ["runs/x"], "make-data": ["--out", "/nonexistent/data"],
             "generate": ["--smoke-test"], "train": ["--smoke-test"], "rl": ["--smoke-test"],
             "tune": ["--smoke-test"], "predict": ["--smoke-test"],
             "export": ["runs/x", "--out", "/nonexistent/export"]}.get(name, [])
    assert cli.main([name, *needs, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# reasonbed {name}: resolved config (dry run: nothing started)")
    assert isinstance(yaml.safe_load(out), dict)
    assert not Path("/nonexistent/data").exists()


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in cli.COMMANDS.names())
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate-everything"])
    assert exit_.value.code == 2


def test_dry_run_starts_nothing(tmp_path: Path) -> None:
    """A subprocess: the dry run of the main job imports no Ray, torch, vLLM or transformers, and
    neither generates the offline benchmark nor creates the sweep folder."""
    cache, storage = tmp_path / "cache", tmp_path / "sweep"
    code = ("import sys; from reasonbed.cli import main; rc = main(sys.argv[1:]); "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch', 'vllm', 'transformers', 'optuna'}); "
            "print('HEAVY', heavy); raise SystemExit(rc)")
    env = {**os.environ, "REASONBED_CACHE": str(cache), "PYTHONPATH": str(REPO / "platform")}
    for argv in (["tune", "--smoke-test", f"--storage={storage}"], ["train", "--method", "mtct", "--smoke-test"],
                 ["generate", "--smoke-test"], ["rl", "--smoke-test"]):
        result = subprocess.run([sys.executable, "-c", code, *argv, "--dry-run"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "HEAVY []" in result.stdout, result.stdout[-500:]
    assert not cache.exists() and not storage.exists() and list(tmp_path.iterdir()) == []


def test_dry_run_redacts_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tune", "--smoke-test", "--dry-run", "study_storage=postgresql://bob:hunter2@db:5432/optuna",
                     "data.storage_options={key: AKIAEXAMPLE, secret: s3cr3t, client_kwargs: {region_name: x}}",
                     "train.data.storage_options={token: t0k3n}", "generation.engine.api_key_env=MY_KEY"]) == 0
    out = capsys.readouterr().out
    for secret in ("hunter2", "AKIAEXAMPLE", "s3cr3t", "t0k3n"):
        assert secret not in out
    resolved = yaml.safe_load(out)
    assert resolved["study_storage"] == "postgresql://bob:***@db:5432/optuna"
    assert resolved["data"]["storage_options"] == {"key": "***", "secret": "***", "client_kwargs": {"region_name": "x"}}
    assert resolved["generation"]["engine"]["api_key_env"] == "MY_KEY"  # names a variable, not a secret
    assert resolved["data"]["images_per_class"] == 12  # ... and ordinary values stay


@pytest.mark.parametrize(("key", "secret"), [("api_key", True), ("hf_token", True), ("aws_secret_access_key", True),
                                             ("password", True), ("max_tokens", False), ("api_key_env", False),
                                             ("reasoning_max_tokens", False), ("key_file", False), ("monkey", False)])
def test_secret_keys(key: str, secret: bool) -> None:
    assert secret_key(key) is secret
    assert (redact({key: "v"})[key] == "***") is secret


BAD = [
    (["train", "optim.lr=fast"], "optim.lr"),
    (["train", "--test-domain", "moon", "--smoke-test"], "test_domain"),
    (["train", "--method", "mtct", "method_config.reasoning_wieght=1", "--smoke-test"], "method_config.reasoning_wieght"),
    (["train", "--method", "direct", "method_config.rounds=2", "--smoke-test"], "method_config"),
    (["train", "--method", "mtct", "--dataset", "pacs", "--data-root", "/data/PACS"], "chains"),
    (["train", "--dataset", "pacs"], "data.root"),
    (["rl", "--smoke-test", "method_config.group_size=1"], "method_config.group_size"),
    (["tune", "--smoke-test", "--methods", "direct,telepathy"], "methods"),
    (["tune", "--smoke-test", "--test-domains", "moon"], "test_domains"),
    (["tune", "--smoke-test", "train.optim.grad_accum=0"], "optim"),
    (["tune", "--smoke-test", "search_spaces=/nonexistent"], "/nonexistent"),
    (["tune", "--smoke-test", "generation.engine.name=telepathy"], "engine.name"),
    (["generate", "--dataset", "pacs", "--data-root", "/data/PACS"], "output"),
    (["generate", "--smoke-test", "domains=[moon]"], "domains"),
    (["splits", "dataset=nope"], "data.dataset"),
    (["make-data", "--dataset", "imagenet", "--out", "/tmp/x"], "--dataset"),
    (["dashboard", "runs/x", "--optuna-port", "99999"], "--optuna-port"),
    (["tiny-model", "--family", "gpt5"], "--family"),
    (["export", "runs/x"], "--out"),
    (["export", "runs/x", "--out", "/tmp/x", "--selection", "best_test"], "selection"),
    (["predict", "--data", "/data/new-images"], "output"),
    (["predict", "--smoke-test", "--engine", "template"], "engine.name"),
    (["train", "--smoke-test", "tracking.mlflow=[1]"], "tracking.mlflow"),
]


@pytest.mark.parametrize(("argv", "key"), BAD, ids=[" ".join(argv) for argv, _ in BAD])
def test_bad_config_exits_2_with_one_line_naming_the_key(argv: list[str], key: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--dry-run"]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and key in lines[0], captured.err
    assert captured.out == ""


def test_jobs_are_thin_entry_points() -> None:
    """jobs/*.py other than the benchmarks only put the checkout first on sys.path and call a command."""
    for path in sorted((REPO / "jobs").glob("*.py")):
        if path.name.startswith("bench_"):
            continue
        import ast

        tree = ast.parse(path.read_text())
        code = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        assert len(code) <= 6, f"{path.name}: {len(code)} statements"
        assert "job(" in path.read_text() or "preset(" in path.read_text(), path.name
        assert ast.get_docstring(tree).count("python jobs/") >= 2, f"{path.name}: commands for one machine and a cluster"


def test_flags_and_overrides_precedence(capsys: pytest.CaptureFixture[str]) -> None:
    """Smoke defaults < files < flags < key=value overrides; --gpu sets the job's GPU key."""
    assert cli.main(["tune", "--smoke-test", "--config", str(REPO / "configs/tune_pacs_internvl3_8b.yaml"),
                     "--num-samples", "7", "max_concurrent_trials=3", "--methods", "direct", "--gpu",
                     "--dry-run"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["data"]["dataset"] == "pacs"  # the file over the smoke preset
    assert (resolved["num_samples"], resolved["max_concurrent_trials"], resolved["methods"]) == (7, 3, ["direct"])
    assert resolved["train"]["scale"]["use_gpu"] is True and resolved["train"]["model"]["dtype"] == "bfloat16"
    assert cli.main(["train", "--smoke-test", "--lr", "0.1", "optim.lr=0.2", "--dry-run"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["optim"]["lr"] == 0.2


def test_command_registry_is_the_only_dispatch() -> None:
    text = (REPO / "platform/reasonbed/cli/__init__.py").read_text()
    assert "elif" not in text and "COMMANDS.add(" in text
    assert dataclasses.is_dataclass(cli.Command)
    assert json.loads(json.dumps(cli.COMMANDS.names())) == sorted(cli.COMMANDS.names())


def test_cluster_check_configs_validates_the_cluster_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`reasonbed cluster-check --configs cluster`: every file with Ray's validators, no Ray started."""
    assert cli.main(["cluster-check", "--configs", str(REPO / "cluster")]) == 0
    summary = json.loads(capsys.readouterr().out.split("cluster_check:", 1)[1])
    assert summary == {"ok": True, "configs": str(REPO / "cluster"), "errors": []}
    broken = tmp_path / "cluster"
    shutil.copytree(REPO / "cluster", broken, ignore=shutil.ignore_patterns("runtime_env.yaml"))  # its paths: the repo's
    (broken / "aws.yaml").write_text((REPO / "cluster" / "aws.yaml").read_text().replace("idle_timeout_minutes", "idle_timeout"))
    job = broken / "kuberay" / "rayjob-tune-pacs.yaml"
    job.write_text(job.read_text().replace("  entrypoint:", "  entry_point:", 1))
    assert cli.main(["cluster-check", "--configs", str(broken)]) == 1
    errors = json.loads(capsys.readouterr().out.split("cluster_check:", 1)[1])["errors"]
    assert len(errors) == 2 and "aws.yaml" in errors[0] and "spec.entrypoint" in errors[1], errors
