"""GRPO: advantages and loss against hand-computed numbers, a learnable reward that rises on CPU, vLLM
rollouts that follow the adapter, the Ray Train run (run directory, SFT start, resume), and bad input."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import save_random_adapter
from reasonbed.config import ConfigError, load
from reasonbed.methods.base import method_class
from reasonbed.methods.grpo import GRPOConfig
from reasonbed.models.configs import ModelConfig
from reasonbed.rl.grpo import group_advantages, grpo_loss
from reasonbed.train.config import TrainConfig
from reasonbed.train.losses import token_logps

EASY = {"data": {"dataset": "synthetic_shapes", "palette": "by_class", "images_per_class": 12}, "test_domain": "photo",
        "method": "grpo", "optim": {"batch_size": 8, "lr": 2e-3, "warmup_ratio": 0.0, "schedule": "constant"},
        "method_config": {"engine": "hf", "prompt": "direct", "max_tokens": 8, "group_size": 4,
                          "rewards": ["format", "accuracy"], "reward_weights": [0.5, 1.0]}}


def _cfg(tmp_path: Path, *overrides: str, base: dict | None = None) -> TrainConfig:
    # deepcopy: config.load updates nested sections of `base` in place
    return load(TrainConfig, overrides=[f"run_dir={tmp_path / 'run'}", *overrides], base=copy.deepcopy(base or EASY))


# --- the arithmetic, by hand ------------------------------------------------------------------------

def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735; group 2: constant -> 0
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert group_advantages(rewards, 4).tolist() == pytest.approx([expected, -expected, -expected, expected, 0, 0, 0, 0])
    assert group_advantages(rewards, 4, scale=False).tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    assert group_advantages([3.0, 1.0], 2).tolist() == pytest.approx([1 / (math.sqrt(2) + 1e-4), -1 / (math.sqrt(2) + 1e-4)])


def test_grpo_loss_and_gradient_by_hand():
    log = math.log
    # sequence 1: A = +1, two tokens; sequence 2: A = -0.5, one token (the second is padding)
    logps = torch.tensor([[log(0.5), log(0.5)], [log(0.3), 0.0]], requires_grad=True)
    old = torch.tensor([[log(0.4), log(0.5)], [log(0.5), 0.0]])
    ref = torch.tensor([[log(0.5), log(0.25)], [log(0.3), 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    advantages = torch.tensor([1.0, -0.5])
    loss, stats = grpo_loss(logps, old, ref, advantages, mask, clip_epsilon=0.2, kl_weight=0.1)
    # seq 1, token 1: ratio 1.25 -> clipped 1.2, objective 1.2, kl 0            -> -1.2
    # seq 1, token 2: ratio 1, objective 1, kl = 0.5 - log 0.5 - 1 = 0.193147  -> -(1 - 0.0193147)
    # seq 2, token 1: ratio 0.6 -> clipped 0.8, objective min(-0.3, -0.4) = -0.4, kl 0 -> 0.4
    kl_token = 0.5 - log(0.5) - 1
    seq1 = (-1.2 - (1 - 0.1 * kl_token)) / 2
    assert loss.item() == pytest.approx((seq1 + 0.4) / 2, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(2 / 3)  # seq 1 token 1 (high, A > 0), seq 2 token 1 (low, A < 0)
    assert stats["kl"] == pytest.approx((kl_token / 2 + 0) / 2, abs=1e-6)
    loss.backward()
    # only seq 1 token 2 is unclipped: d/dlogp of -(ratio*A - beta*k3) = -(1 - 0.1 * (1 - 0.5)), / 2 tokens / 2 seqs
    assert logps.grad.flatten().tolist() == pytest.approx([0.0, -0.95 / 4, 0.0, 0.0], abs=1e-6)


def test_grpo_loss_on_policy_is_minus_mean_advantage():
    logps = torch.log(torch.tensor([[0.2, 0.7, 0.9]]))
    loss, stats = grpo_loss(logps, logps, logps, torch.tensor([0.75]), torch.ones(1, 3), 0.2, 0.04)
    assert float(loss) == pytest.approx(-0.75) and stats["kl"] == 0 and stats["clip_fraction"] == 0
    loss_no_ref, _ = grpo_loss(logps, logps, None, torch.tensor([0.75]), torch.ones(1, 3), 0.2, 0.0)
    assert float(loss_no_ref) == pytest.approx(-0.75)


def test_token_logps_match_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[-100, -100, 3, 1], [-100, 2, 4, -100]])
    logps, mask = token_logps(logits, labels)
    full = logits.log_softmax(-1)
    assert mask.tolist() == [[False, True, True], [True, True, False]]
    assert float(logps[0, 1]) == pytest.approx(float(full[0, 1, 3]))
    assert float(logps[0, 2]) == pytest.approx(float(full[0, 2, 1]))
    assert float(logps[1, 0]) == pytest.approx(float(full[1, 0, 2])) and float(logps[0, 0]) == 0.0


def test_completion_ids_are_the_sampled_ones_cut_before_vision_tokens(tiny_model_dir):
    from reasonbed.inference.base import Completion
    from reasonbed.models.loading import load_processor
    from reasonbed.rl.step import completion_ids, vision_token_ids

    tokenizer = load_processor(ModelConfig(path=str(tiny_model_dir))).tokenizer
    stop = vision_token_ids(tokenizer)
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert image_pad in stop and tokenizer.eos_token_id not in stop
    assert completion_ids(Completion("?", 0, 3, [100, 200, tokenizer.eos_token_id]), tokenizer, 8, stop) == \
        [100, 200, tokenizer.eos_token_id]
    assert completion_ids(Completion("?", 0, 3, [100, image_pad, 200]), tokenizer, 8, stop) == [100]
    assert completion_ids(Completion("?", 0, 1, [image_pad]), tokenizer, 8, stop) == [tokenizer.eos_token_id]
    ended = completion_ids(Completion("circle", 0, 3), tokenizer, 8, stop)  # no ids reported: re-tokenised
    assert ended[-1] == tokenizer.eos_token_id and tokenizer.decode(ended[:-1]) == "circle"
    assert completion_ids(Completion("circle", 0, 8), tokenizer, 8, stop)[-1] != tokenizer.eos_token_id


# --- vLLM rollouts follow the adapter ---------------------------------------------------------------

@pytest.mark.slow
def test_vllm_rollouts_change_after_adapter_update(ray_session, tiny_model_dir):
    from PIL import Image

    from reasonbed.inference.base import EngineConfig, Request, SamplingConfig, build_engine
    from reasonbed.models.configs import LoraConfig
    from reasonbed.models.loading import load_model_and_processor
    from reasonbed.models.lora import apply_lora
    from reasonbed.prompts import classification_prompt

    model_cfg = ModelConfig(path=str(tiny_model_dir))
    model, _ = load_model_and_processor(model_cfg)
    model = apply_lora(model, LoraConfig(), "qwen2_vl")
    # vLLM's offline engine in the actor: the async one (the default; the job smoke below) adds an engine-core process
    rollout = build_engine(EngineConfig(name="vllm_actor", model=model_cfg, vllm_async=False), model=model)
    image, prompt = Image.new("RGB", (56, 56), (30, 160, 60)), classification_prompt(["circle", "square", "star"])
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=8)

    def answer() -> list[int]:
        return rollout.generate([Request(image, prompt, {"id": "probe"})], greedy)[0][0].token_ids

    def set_lora_b(scale: float) -> None:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)

    try:
        before = answer()
        set_lora_b(0.5)
        rollout.sync(model)
        after = answer()
        set_lora_b(0.0)
        rollout.sync(model)
        restored = answer()
    finally:
        rollout.close()
    assert before and after != before, "rollouts must change once the updated adapter is loaded"
    assert restored == before, "the zero adapter again: each sync loads the adapter it was given"
    assert rollout.synced == 3, "versions: 1 at start, then one per sync (two syncs)"


# --- the Ray Train run ------------------------------------------------------------------------------

@pytest.mark.slow
def test_grpo_run_on_ray_from_sft_adapter_resumes_after_worker_death(tmp_path, ray_session, tiny_model_dir):
    """Two DDP workers (rank 0 samples, both train on their share; they end with identical adapters), all five
    rewards, two updates per rollout batch, a start from an SFT adapter, and a worker process killed at step 3:
    the one training core restarts the whole group from the step-2 checkpoint (not from 0), every report once,
    in order. (The suite's one DDP-and-worker-death run: supervised methods share this worker loop.)"""
    from reasonbed.train.run import run

    sft = ModelConfig(path=str(tiny_model_dir))
    adapter = str(save_random_adapter(tmp_path / "sft", sft, seed=1, std=0.05))  # a policy other than the base model
    cfg = _cfg(tmp_path, f"model.path={tiny_model_dir}", f"init_adapter={adapter}", "optim.batch_size=4",
               "scale.num_workers=2",
               "optim.max_steps=4", "eval.every=2", "eval.max_per_domain=2", "fail_at_step=3",
               "method_config.rewards=[format,accuracy,hierarchy,consistency,length]",
               "method_config.reward_weights=[0.2,1.0,0.5,0.3,0.1]", "method_config.length_budget=4",
               "method_config.iterations=2")
    result = run(cfg)
    run_dir = result.run_dir
    for name in ("config.yaml", "metrics.jsonl", "provenance.json", "done", "steps.jsonl",
                 "adapter/adapter_model.safetensors"):
        assert (run_dir / name).exists(), name
    assert [row["step"] for row in result.metrics] == [2, 4]
    final = result.final
    assert {"val_acc", "test_acc", "reward/total", "kl", "clip_fraction"} <= set(final)
    assert any(key.startswith("acc/direct/") for key in final)
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert [row["step"] for row in steps] == [1, 2, 3, 4], "history survives the restart; step 3 is redone"
    assert all(row["workers"] == 2 for row in steps)
    hashes = [path.read_text() for path in sorted((run_dir / "replicas").glob("rank*.sha256"))]
    assert len(hashes) == 2 and hashes[0] == hashes[1], "the two DDP replicas end with the same adapter"
    resumed = sorted(path.name for path in (run_dir / "replicas").glob("*.resumed"))
    assert resumed == ["rank0.resumed", "rank1.resumed"], "one restart of the whole group"
    assert {(run_dir / "replicas" / name).read_text() for name in resumed} == {"2"}, "resumed from step 2"
    for term in ("format", "accuracy", "hierarchy", "consistency", "length", "total"):
        assert all(f"reward/{term}" in row for row in steps), term
    assert steps[0]["kl"] > 0, "the policy starts from the SFT adapter, away from the base model"
    assert all(0.0 <= row["clip_fraction"] <= 1.0 for row in steps)


@pytest.mark.slow
def test_rl_finetune_job_smoke_with_vllm(tmp_path, ray_session, tiny_model_dir, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("rl_finetune", Path(__file__).parents[1] / "jobs" / "rl_finetune.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    code = job.main(["--smoke-test", "--run-dir", str(tmp_path / "run"), "--model", str(tiny_model_dir),
                     "--steps", "2", "eval.every=2"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 2 and "reward/total" in printed
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert [row["adapter_version"] for row in steps] == [2.0, 3.0], "vLLM got the adapter every step"


# --- bad input --------------------------------------------------------------------------------------

def test_group_size_one_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"method_config.group_size: value 1 must be an integer >= 2"):
        GRPOConfig(group_size=1)
    with pytest.raises(ConfigError, match="method_config.group_size: value 1"):
        method_class("grpo").parse_options({"group_size": 1})
    with pytest.raises(ValueError, match="group_size 1 < 2"):
        group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match=r"\(6,\) rewards do not form groups of 4"):
        group_advantages(torch.ones(6), 4)


def test_unknown_reward_name_in_config(tmp_path):
    from reasonbed.train.run import run

    with pytest.raises(ConfigError, match="method_config.rewards: .*unknown reward 'politeness'; known rewards: "
                                          "accuracy, consistency, format, hierarchy, length"):
        GRPOConfig(rewards=["format", "politeness"], reward_weights=[1.0, 1.0])
    with pytest.raises(ConfigError, match="unknown reward 'politeness'"):
        run(_cfg(tmp_path, "method_config.rewards=[politeness]", "method_config.reward_weights=[1.0]"))


def test_weights_that_do_not_match_the_rewards(tmp_path):
    from reasonbed.train.run import run

    with pytest.raises(ConfigError, match=r"method_config.reward_weights: value \[1.0\] has 1 weights for 2 rewards"):
        GRPOConfig(rewards=["format", "accuracy"], reward_weights=[1.0])
    with pytest.raises(ConfigError, match="method_config.reward_weights"):
        run(_cfg(tmp_path, "method_config.reward_weights=[1.0,2.0,3.0]"))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("temperature", 0.0, "must be > 0"), ("clip_epsilon", 1.5, r"must be in \(0, 1\)"),
    ("kl_weight", -0.1, "must be >= 0"), ("iterations", 0, "must be >= 1"),
    ("consistency_transform", "rotate", "unknown image transform 'rotate'"), ("engine", "sglang", "not allowed"),
])
def test_other_bad_options_name_field_and_value(field, value, message):
    from reasonbed.config import from_dict

    with pytest.raises(ConfigError, match=f"method_config.{field}: value {value!r}.*{message}"):
        from_dict(GRPOConfig, {field: value}, prefix="method_config.")
