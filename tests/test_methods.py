"""Every registered method learns on the pretrained tiny model: one test per algorithm, parametrised over the
METHODS registry (DomainBed's habit), each with the assertion that learning happened.

All runs are in process (scale.backend=local: the same worker loop as on Ray Train), test domain painting,
12 images per (domain, class), the base model evaluated at step 0 (`eval.at_start`) on the same rows as
every later evaluation. A method passes when its selected checkpoint's validation accuracy (the source
domains' out parts; the test domain never selects) beats the base model's by its `MIN_GAIN`; besides, SARR's
round 1 must keep self-chains and train an adapter that differs from round 0's, GRPO's reward must rise (and,
in its own test, its format reward on the reasoning prompt), and zero-shot must be the step-0 model every
method starts from. A method added to the registry without a check in `LEARNING` fails here, by name.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
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
# Measured (docs/training.md, "The tiny world"), validation accuracy base -> selected: direct 0.52 -> 0.81,
# reasoning 0.50 -> 0.60, mtct 0.52 -> 0.83, grpo 0.52 -> 0.71; the thresholds leave room for a changed recipe,
# none for no learning.
MIN_GAIN = {"direct": 0.15, "reasoning": 0.05, "mtct": 0.15, "sarr": 0.15, "grpo": 0.1}


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


def _learned(run_dir: Path, method: str) -> tuple[dict, dict]:
    """The step-0 (base model) evaluation and the run's selected one, asserted MIN_GAIN apart."""
    evaluations = _evaluations(run_dir)
    selected = json.loads((run_dir / "selected.json").read_text())
    curve = [(row["step"], round(row["val_acc"], 3)) for row in evaluations]
    print(method, "validation accuracy by step:", curve)
    assert evaluations[0]["step"] == 0, curve
    assert selected["val_acc"] >= evaluations[0]["val_acc"] + MIN_GAIN[method], curve
    return evaluations[0], selected


def _supervised_method_beats_the_base_model(method: str, tmp_path: Path, tiny_model_dir: Path, chains: str) -> None:
    from reasonbed.train.run import run

    result = run(_cfg(tmp_path / "run", f"method={method}", f"model.path={tiny_model_dir}",
                      *([f"chains={chains}"] if method != "direct" else [])))
    evaluations = _evaluations(result.run_dir)
    _, selected = _learned(result.run_dir, method)
    assert evaluations[-1]["step"] == result.final["step"] > 0
    prompt = "reasoning" if method == "reasoning" else "direct"  # a method's numbers come from its own prompt
    chosen = next(row for row in evaluations if row["step"] == selected["step"])
    assert selected["select_on"] == prompt and selected["val_acc"] == chosen["val_acc"] == chosen[f"val_acc_{prompt}"]
    assert f"truncated/{prompt}" in evaluations[-1]


def _sarr_round_keeps_self_chains_and_trains_as_a_sweep_trial(method: str, tmp_path: Path, tiny_model_dir: Path,
                                                               chains: str) -> None:
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
    base, _ = _learned(result.run_dir, method)  # its best report of any round beats the base
    assert base["round"] == 0  # the base: round 0's step 0
    assert result.final["val_acc"] >= base["val_acc"] + MIN_GAIN[method]  # round 1's last report too
    # the run directory is finished like every run's: its inputs' image check recorded, and its own choice across
    # the rounds (selected.json) is what `reasonbed export <run dir>` exports, the chosen round's checkpoint
    from reasonbed.share.source import choose

    provenance = json.loads((result.run_dir / "provenance.json").read_text())
    assert provenance["skipped_inputs"] == {"on_corrupt": "error", "skipped": 0, "first": []}
    chosen = choose(str(result.run_dir))
    best = max(row["val_acc"] for row in _evaluations(result.run_dir))
    assert chosen.report["val_acc"] == best and f"round {chosen.report['round']} step" in chosen.label
    assert f"trial-7-round{chosen.report['round']}/checkpoint_" in chosen.checkpoint


def _mean(rows: list[dict], key: str) -> float:
    return sum(row[key] for row in rows) / len(rows)


def _grpo_beats_the_base_model_and_its_reward_rises(method: str, tmp_path: Path, tiny_model_dir: Path,
                                                    chains: str) -> None:  # noqa: ARG001 - no chains
    """Direct prompt (the option only), the accuracy reward: the policy learns to name the right option more often,
    in its rollouts (the reward) and in greedy answers to the validation images (val_acc)."""
    from reasonbed.train.run import run

    result = run(_cfg(tmp_path / "run", "method=grpo", f"model.path={tiny_model_dir}", "eval.every=20",
                      "optim.max_steps=60", "optim.lr=1e-3", "optim.schedule=constant", "method_config.engine=hf",
                      "method_config.group_size=4", "method_config.prompt=direct", "method_config.max_tokens=8",
                      "method_config.rewards=[accuracy]", "method_config.reward_weights=[1.0]"))
    _learned(result.run_dir, method)
    rows = [json.loads(line) for line in (result.run_dir / "steps.jsonl").read_text().splitlines()]
    first, last = _mean(rows[:8], "reward/total"), _mean(rows[-8:], "reward/total")
    print(f"GRPO direct reward first8 {first:.3f} last8 {last:.3f}")
    assert len(rows) == 60 and last >= first + 0.1, [round(row["reward/total"], 3) for row in rows]
    assert {"kl", "clip_fraction", "reward/accuracy", "rollout_acc", "loss"} <= set(rows[-1])


def _zero_shot_is_the_base_model_every_method_starts_from(method: str, tmp_path: Path, tiny_model_dir: Path,
                                                           chains: str) -> None:  # noqa: ARG001 - no chains
    """The zero-shot row is the step-0 evaluation of a trained run: same rows, prompts and metrics."""
    from reasonbed.train.run import run

    zero = run(_cfg(tmp_path / "zero", f"method={method}", f"model.path={tiny_model_dir}"))
    direct = run(_cfg(tmp_path / "direct", "method=direct", f"model.path={tiny_model_dir}", "optim.max_steps=1"))
    base = _evaluations(direct.run_dir)[0]
    assert zero.final["step"] == 0 and base["step"] == 0
    for key in ("val_acc", "test_acc", "test_out_acc"):
        assert zero.final[key] == base[key], key
    assert 0.25 < zero.final["val_acc"] < 0.9  # above chance (1/6), below ceiling: room to learn


LEARNING: dict[str, Callable[[str, Path, Path, str], None]] = {
    "direct": _supervised_method_beats_the_base_model,
    "reasoning": _supervised_method_beats_the_base_model,
    "mtct": _supervised_method_beats_the_base_model,
    "sarr": _sarr_round_keeps_self_chains_and_trains_as_a_sweep_trial,
    "grpo": _grpo_beats_the_base_model_and_its_reward_rises,
    "zero_shot": _zero_shot_is_the_base_model_every_method_starts_from,  # the base itself, the rows' reference
}


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_registered_method_learns(method, tmp_path, tiny_model_dir, chains):
    if method not in LEARNING:
        pytest.fail(f"method {method!r} is registered but has no learning check: add one to LEARNING")
    LEARNING[method](method, tmp_path, tiny_model_dir, chains)


def test_grpo_format_reward_rises_on_the_reasoning_prompt(tmp_path, tiny_model_dir):
    """Reasoning prompt with a 74-token budget: the base model's chains run about 80 tokens, so most are cut
    before their conclusion; the policy learns to finish a five-tag chain within the budget."""
    from reasonbed.train.run import run

    result = run(_cfg(tmp_path, "method=grpo", f"model.path={tiny_model_dir}", "eval.at_start=false",
                      "eval.every=0", "eval.max_per_domain=2", "optim.max_steps=30", "optim.schedule=constant",
                      "method_config.engine=hf", "method_config.group_size=4", "method_config.prompt=reasoning",
                      "method_config.max_tokens=74", "method_config.rewards=[format,accuracy]",
                      "method_config.reward_weights=[0.5,1.0]"))
    rows = [json.loads(line) for line in (result.run_dir / "steps.jsonl").read_text().splitlines()]
    first, last = _mean(rows[:8], "reward/format"), _mean(rows[-8:], "reward/format")
    print(f"GRPO reasoning format reward first8 {first:.3f} last8 {last:.3f}")
    assert last >= first + 0.2, [round(row["reward/format"], 3) for row in rows]
    assert _mean(rows[-8:], "reward/total") > _mean(rows[:8], "reward/total")
