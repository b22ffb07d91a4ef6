"""Every registered method learns on the pretrained tiny model (DomainBed's habit of one test per algorithm,
plus the assertion that learning happened).

All runs are in process (scale.backend=local: the same worker loop as on Ray Train), test domain painting,
12 images per (domain, class), the base model evaluated at step 0 (`eval.at_start`) on the same rows as
every later evaluation. A supervised method passes when its selected checkpoint's validation accuracy (the
source domains' out parts; the test domain never selects) beats the base model's; SARR's round 1 must keep
self-chains and train an adapter that differs from round 0's; GRPO's reward must rise. A method added to
the registry without a check here fails `test_every_method_has_a_learning_check`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from reasonbed.config import load
from reasonbed.methods import METHODS
from reasonbed.train.config import TrainConfig

pytestmark = pytest.mark.slow

WORLD = {"data": {"dataset": "synthetic_shapes", "images_per_class": 12}, "test_domain": "painting",
         "scale": {"backend": "local"},
         "optim": {"batch_size": 8, "epochs": 3.0, "lr": 2e-3, "warmup_ratio": 0.0},
         "eval": {"at_start": True, "every": 22, "reasoning_max_tokens": 128}}
SUPERVISED = ("direct", "reasoning", "mtct")
# Measured (docs/training.md, "The tiny world"), validation accuracy base -> selected: direct 0.52 -> 0.81,
# reasoning 0.50 -> 0.60, mtct 0.52 -> 0.83; the thresholds leave room for a changed recipe, none for no learning.
MIN_GAIN = {"direct": 0.15, "reasoning": 0.05, "mtct": 0.15, "sarr": 0.15}


def _cfg(run_dir: Path, *overrides: str) -> TrainConfig:
    return load(TrainConfig, overrides=[f"run_dir={run_dir}", *overrides], base=copy.deepcopy(WORLD))


def _evaluations(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "val_acc" in row]


@pytest.fixture(scope="module")
def chains(tmp_path_factory, ray_session, tiny_model_dir) -> str:  # noqa: ARG001 - Ray Data runs the teacher
    """Template-teacher chains (two per image) for the world above."""
    from reasonbed.train.run import smoke_chains

    return smoke_chains(_cfg(tmp_path_factory.mktemp("chains")))


def test_every_method_has_a_learning_check():
    assert set(METHODS.names()) == {*SUPERVISED, "sarr", "grpo", "zero_shot"}, "add a learning check for it"


@pytest.mark.parametrize("method", SUPERVISED)
def test_supervised_method_beats_the_base_model(method, tmp_path, tiny_model_dir, chains):
    from reasonbed.train.run import run

    result = run(_cfg(tmp_path / "run", f"method={method}", f"model.path={tiny_model_dir}",
                      *([f"chains={chains}"] if method != "direct" else [])))
    evaluations = _evaluations(result.run_dir)
    base = evaluations[0]
    selected = json.loads((result.run_dir / "selected.json").read_text())
    curve = [(row["step"], round(row["val_acc"], 3)) for row in evaluations]
    print(method, "validation accuracy by step:", curve)
    assert base["step"] == 0 and evaluations[-1]["step"] == result.final["step"] > 0
    assert selected["val_acc"] >= base["val_acc"] + MIN_GAIN[method], curve
    prompt = "reasoning" if method == "reasoning" else "direct"  # a method's numbers come from its own prompt
    chosen = next(row for row in evaluations if row["step"] == selected["step"])
    assert selected["select_on"] == prompt and selected["val_acc"] == chosen["val_acc"] == chosen[f"val_acc_{prompt}"]
    assert f"truncated/{prompt}" in evaluations[-1]


def test_sarr_round_keeps_self_chains_and_trains_as_a_sweep_trial(tmp_path, tiny_model_dir, chains):
    """SARR as a sweep trial runs it (storage_path and name set): round 1 samples chains from round 0's model,
    keeps the right ones, and trains from round 0's adapter under its own name; the result beats the base."""
    from reasonbed.train.run import run

    result = run(_cfg(tmp_path / "run", "method=sarr", f"chains={chains}", f"model.path={tiny_model_dir}",
                      f"storage_path={tmp_path / 'storage'}", "name=trial-7", "method_config.rounds=1",
                      "method_config.engine=hf", "method_config.epochs_per_round=1", "method_config.max_tokens=128"))
    rounds = [json.loads(line) for line in (result.run_dir / "sarr_rounds.jsonl").read_text().splitlines()]
    print("SARR rounds:", rounds)
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["steps"] > 0
    assert rounds[1]["images_with_kept_chain"] > 0 and rounds[1]["kept_pct"] > 0, rounds[1]
    assert sorted(path.name for path in (tmp_path / "storage").iterdir()) == ["trial-7", "trial-7-round0",
                                                                               "trial-7-round1"]
    assert {row.get("round") for row in _evaluations(result.run_dir)} == {0, 1}  # every stage's reports
    adapters = [(result.run_dir / f"round{r}" / "adapter" / "adapter_model.safetensors").read_bytes() for r in (0, 1)]
    assert adapters[0] != adapters[1], "round 1 trained: its adapter is not round 0's"
    base = _evaluations(result.run_dir / "round0")[0]
    assert base["step"] == 0 and result.final["val_acc"] >= base["val_acc"] + MIN_GAIN["sarr"]
    # the run directory is finished like every run's: its inputs' image check recorded, and its own choice across
    # the rounds (selected.json) is what `reasonbed export <run dir>` exports, the chosen round's checkpoint
    from reasonbed.share.source import choose

    provenance = json.loads((result.run_dir / "provenance.json").read_text())
    assert provenance["skipped_inputs"] == {"on_corrupt": "error", "skipped": 0, "first": []}
    chosen = choose(str(result.run_dir))
    best = max(row["val_acc"] for row in _evaluations(result.run_dir))
    assert chosen.report["val_acc"] == best and f"round {chosen.report['round']} step" in chosen.label
    assert f"trial-7-round{chosen.report['round']}/checkpoint_" in chosen.checkpoint


def _grpo(tmp_path: Path, tiny_model_dir: Path, *overrides: str) -> list[dict]:
    from reasonbed.train.run import run

    result = run(_cfg(tmp_path, "method=grpo", f"model.path={tiny_model_dir}", "eval.at_start=false",
                      "eval.every=0", "eval.max_per_domain=2", "optim.max_steps=30", "optim.schedule=constant",
                      "method_config.engine=hf", "method_config.group_size=4",
                      "method_config.rewards=[format,accuracy]", "method_config.reward_weights=[0.5,1.0]",
                      *overrides))
    return [json.loads(line) for line in (result.run_dir / "steps.jsonl").read_text().splitlines()]


def _mean(rows: list[dict], key: str) -> float:
    return sum(row[key] for row in rows) / len(rows)


def test_grpo_reward_rises_from_the_base_model(tmp_path, tiny_model_dir):
    """Direct prompt (the option only): the policy learns to name the right option more often."""
    rows = _grpo(tmp_path / "direct", tiny_model_dir, "method_config.prompt=direct", "method_config.max_tokens=8")
    first, last = _mean(rows[:8], "reward/total"), _mean(rows[-8:], "reward/total")
    print(f"GRPO direct reward first8 {first:.3f} last8 {last:.3f}")
    assert len(rows) == 30 and last >= first + 0.1, [round(row["reward/total"], 3) for row in rows]
    assert {"kl", "clip_fraction", "reward/accuracy", "rollout_acc", "loss"} <= set(rows[-1])


def test_grpo_format_reward_rises_on_the_reasoning_prompt(tmp_path, tiny_model_dir):
    """Reasoning prompt with a 74-token budget: the base model's chains run about 80 tokens, so most are cut
    before their conclusion; the policy learns to finish a five-tag chain within the budget."""
    rows = _grpo(tmp_path / "reasoning", tiny_model_dir, "method_config.prompt=reasoning",
                 "method_config.max_tokens=74")
    first, last = _mean(rows[:8], "reward/format"), _mean(rows[-8:], "reward/format")
    print(f"GRPO reasoning format reward first8 {first:.3f} last8 {last:.3f}")
    assert last >= first + 0.2, [round(row["reward/format"], 3) for row in rows]
    assert _mean(rows[-8:], "reward/total") > _mean(rows[:8], "reward/total")


def test_zero_shot_is_the_base_model_every_method_starts_from(tmp_path, tiny_model_dir):
    """The zero-shot row is the step-0 evaluation of a trained run: same rows, prompts and metrics."""
    from reasonbed.train.run import run

    zero = run(_cfg(tmp_path / "zero", "method=zero_shot", f"model.path={tiny_model_dir}"))
    direct = run(_cfg(tmp_path / "direct", "method=direct", f"model.path={tiny_model_dir}", "optim.max_steps=1"))
    base = _evaluations(direct.run_dir)[0]
    assert zero.final["step"] == 0 and base["step"] == 0
    for key in ("val_acc", "test_acc", "test_out_acc"):
        assert zero.final[key] == base[key], key
    assert 0.25 < zero.final["val_acc"] < 0.9  # above chance (1/6), below ceiling: room to learn
