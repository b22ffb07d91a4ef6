"""Real-model defaults on the tiny models (issue 12, item 2; item 6's refusal): the weights dtype,
gradient checkpointing in both towers, the family from config.json, no silent tiny model on real data,
the memory estimate, and `scale.strategy=fsdp` refused at config validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from reasonbed import cli
from reasonbed.config import ConfigError, load
from reasonbed.models import (
    FAMILIES,
    LoraConfig,
    ModelConfig,
    apply_lora,
    build_tiny_model,
    load_model_and_processor,
)
from reasonbed.models.configs import check_real_model
from reasonbed.models.loading import resolve_model, set_gradient_checkpointing, weights_dtype
from reasonbed.models.memory import estimate_training_memory
from reasonbed.train.config import ScaleConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
ALL_FAMILIES = sorted(FAMILIES.names())  # every registered family


def _tiny(family: str) -> str:
    return str(build_tiny_model(family, "tiny", pretrained=family == "qwen2_vl"))  # others: architecture facts


# ------------------------------------------------------------------------------------------- dtype


def test_dtype_auto_is_float32_on_cpu_and_bfloat16_on_a_bf16_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert ModelConfig().dtype == "auto"
    assert weights_dtype("auto") == ("bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                                     else "float32")
    assert weights_dtype("float16") == "float16"  # an explicit dtype is kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert weights_dtype("auto") == "bfloat16"
    from reasonbed.inference.base import EngineConfig
    from reasonbed.inference.vllm_engine import engine_arguments

    assert engine_arguments(EngineConfig(model=ModelConfig()), "/models/x")["dtype"] == "bfloat16"  # the teacher too
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 / T4
    assert weights_dtype("auto") == "float32"


def test_tiny_model_loads_in_the_resolved_dtype() -> None:
    import torch

    path = _tiny("qwen2_vl")
    model, _ = load_model_and_processor(ModelConfig(path=path))
    assert {p.dtype for p in model.parameters()} == {getattr(torch, weights_dtype("auto"))}
    model, _ = load_model_and_processor(ModelConfig(path=path, dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# ------------------------------------------------------------------------------- gradient checkpointing


def _batch(processor):
    from reasonbed.models.encoding import collate, encode_pathway

    image = Image.new("RGB", (56, 56), (200, 40, 30))
    items = [encode_pathway(processor, image, "What is it?", answer) for answer in ("a red square", "red")]
    return collate(items, processor.tokenizer.pad_token_id)


def _lora_grads(family: str, setting: str) -> tuple[dict[str, object], dict[str, int], bool]:
    """LoRA gradients of one forward/backward, and how often a vision block and a decoder layer ran."""
    import torch

    from reasonbed.models.families import get_family
    from reasonbed.train.losses import token_nll

    torch.manual_seed(0)
    model, processor = load_model_and_processor(ModelConfig(path=_tiny(family)))
    enabled = set_gradient_checkpointing(model, setting)
    model = apply_lora(model, LoraConfig(dropout=0.0), family)
    model.train()
    fam = get_family(family)
    calls = {"vision": 0, "language": 0}
    modules = dict(model.named_modules())
    # the first checkpointed layer of each tower (pre-hooks: the recomputation may stop early, before a post-hook)
    layers = [name for name, module in modules.items() if type(module).__mro__[1].__name__ == "GradientCheckpointingLayer"]
    vision = next(name for name in layers if fam.is_vision_module(name + ".x"))
    language = next(name for name in layers if fam.is_language_module(name + ".x"))
    modules[vision].register_forward_pre_hook(lambda *_: calls.__setitem__("vision", calls["vision"] + 1))
    modules[language].register_forward_pre_hook(lambda *_: calls.__setitem__("language", calls["language"] + 1))
    batch = _batch(processor)
    labels = batch.pop("labels")
    nll, counts = token_nll(model(**batch).logits, labels)
    (nll.sum() / counts.sum()).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return grads, calls, enabled


@pytest.mark.parametrize("family", ["qwen2_vl", "internvl3"])
def test_gradient_checkpointing_recomputes_both_towers_with_the_same_gradients(family: str) -> None:
    import torch

    plain, plain_calls, plain_on = _lora_grads(family, "off")
    checkpointed, calls, on = _lora_grads(family, "on")
    assert not plain_on and on
    assert plain_calls == {"vision": 1, "language": 1}
    assert calls == {"vision": 2, "language": 2}, "each tower's layer ran again in the backward pass"
    assert plain.keys() == checkpointed.keys() and any(g.abs().sum() > 0 for g in plain.values())
    vision_grads = [name for name in plain if ".visual." in name or ".vision_tower." in name]
    assert vision_grads and any(checkpointed[name].abs().sum() > 0 for name in vision_grads)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_checkpointing_auto_follows_the_parameter_count() -> None:
    from reasonbed.models import loading

    model, _ = load_model_and_processor(ModelConfig(path=_tiny("qwen2_vl")))
    assert not set_gradient_checkpointing(model, "auto")  # < 1M parameters
    assert not model.is_gradient_checkpointing
    original = loading.GRADIENT_CHECKPOINTING_MIN_PARAMETERS
    try:
        loading.GRADIENT_CHECKPOINTING_MIN_PARAMETERS = 1000
        assert set_gradient_checkpointing(model, "auto") and model.is_gradient_checkpointing
    finally:
        loading.GRADIENT_CHECKPOINTING_MIN_PARAMETERS = original
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        load(TrainConfig, overrides=["model.gradient_checkpointing=sometimes"])
    for text, value in (("on", "on"), ("off", "off"), ("true", "on"), ('"off"', "off"), ("auto", "auto")):
        assert load(TrainConfig, overrides=[f"model.gradient_checkpointing={text}"]).model.gradient_checkpointing \
            == value


# ------------------------------------------------------------------------------------------- family


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_family_is_detected_from_config_json(family: str) -> None:
    from reasonbed.models.families import get_family

    path = _tiny(family)
    assert ModelConfig(path=path).family == family
    assert resolve_model(ModelConfig(path=path)).family == family
    assert ModelConfig(path=path, family=family).family == family
    assert get_family(family).model_type == get_family(family).config_class.model_type


def test_family_contradicting_the_checkpoint_is_an_error_naming_both() -> None:
    path = _tiny("internvl3")
    with pytest.raises(ConfigError, match=r"model.family: value 'qwen2_vl' contradicts .*model_type 'internvl' "
                                          r"\(family 'internvl3'\)"):
        ModelConfig(path=path, family="qwen2_vl")
    code = cli.main(["train", "--smoke-test", "--model", path, "--family", "qwen2_5_vl", "--dry-run"])
    assert code == 2


def test_unknown_model_type_and_the_tiny_default(tmp_path: Path) -> None:
    assert ModelConfig().family == "qwen2_vl" and ModelConfig(family="internvl3").family == "internvl3"
    foreign = tmp_path / "llava"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ConfigError, match=r"model_type 'llava', which no model family handles.*internvl3 "
                                          r"\(internvl\)"):
        ModelConfig(path=str(foreign))


def test_hub_id_in_the_hugging_face_cache_is_detected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A hub id whose config.json is in HF_HOME's cache (huggingface_hub's layout) needs no network."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--OpenGVLab--InternVL3-8B-hf" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(Path(_tiny("internvl3")) / "config.json", snapshot / "config.json")
    (cache / "models--OpenGVLab--InternVL3-8B-hf" / "refs").mkdir()
    (cache / "models--OpenGVLab--InternVL3-8B-hf" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert ModelConfig(path="OpenGVLab/InternVL3-8B-hf").family == "internvl3"
    with pytest.raises(ConfigError, match="contradicts"):
        ModelConfig(path="OpenGVLab/InternVL3-8B-hf", family="qwen2_5_vl")
    assert ModelConfig(path="Qwen/Not-Cached").family == ""  # detected at load time


# ------------------------------------------------------------------------------- tiny model on real data


REAL_WITHOUT_MODEL = [
    ["train", "--method", "direct", "--dataset", "pacs", "--data-root", "/data/PACS"],
    ["rl", "--dataset", "office_home", "--data-root", "s3://bucket/OfficeHome"],
    ["generate", "--dataset", "vlcs", "--data-root", "/data/VLCS", "--output", "/tmp/chains"],
    ["tune", "--dataset", "terra_incognita", "--data-root", "/data/TI", "--methods", "direct"],
    ["evaluate", "--dataset", "pacs", "--data-root", "/data/PACS", "--output", "/tmp/ood"],
    ["train", "--method", "direct", "data.dataset=folder", "data.root=/data/any"],
]


@pytest.mark.parametrize("argv", REAL_WITHOUT_MODEL, ids=lambda argv: " ".join(argv[:3]))
def test_real_dataset_without_a_model_path_fails_the_dry_run(argv: list[str],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "model.path: dataset" in err and "is real data" in err, err


def test_real_dataset_without_a_model_path_fails_in_the_api_too(tmp_path: Path) -> None:
    from reasonbed.train.driver import resolve

    for domain in ("a", "b"):
        for label in ("cat", "dog"):
            (tmp_path / "data" / domain / label).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "data" / domain / label / "x.png")
    cfg = load(TrainConfig, overrides=["data.dataset=folder", f"data.root={tmp_path / 'data'}",
                                       f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"model.path: dataset 'folder' is real data"):
        resolve(cfg)
    assert not (tmp_path / "run").exists()
    check_real_model(ModelConfig(), "synthetic_shapes", offline=True)  # the offline benchmarks keep the tiny model


# ----------------------------------------------------------------------------------------- memory


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_memory_estimate_counts_exactly_what_training_loads(family: str) -> None:
    cfg = ModelConfig(path=_tiny(family))
    estimate = estimate_training_memory(cfg, LoraConfig(), micro_batch=2)
    model, _ = load_model_and_processor(cfg)
    parameters = sum(p.numel() for p in model.parameters())
    peft_model = apply_lora(model, LoraConfig(), family)
    lora = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert (estimate.parameters, estimate.lora_parameters) == (parameters, lora)
    assert estimate.weights == parameters * 4 and estimate.dtype == "float32"  # auto on CPU
    assert estimate.optimizer == 8 * lora and estimate.lora == 8 * lora
    bf16 = estimate_training_memory(cfg, LoraConfig(), micro_batch=2, dtype="bfloat16")
    assert bf16.weights == parameters * 2
    double = estimate_training_memory(cfg, LoraConfig(), micro_batch=4)
    checkpointed = estimate_training_memory(cfg, LoraConfig(), micro_batch=2, gradient_checkpointing=True)
    assert double.activations > estimate.activations > checkpointed.activations > 0
    assert "weights" in estimate.summary() and "activations" in estimate.summary()


def test_memory_estimate_in_the_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    path = _tiny("qwen2_5_vl")
    argv = ["train", "--method", "direct", "--dataset", "pacs", "--data-root", "/data/PACS", "--model", path,
            "--dry-run"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "memory estimate per training worker" in captured.err and "qwen2_5_vl" in captured.err
    assert "memory estimate" not in captured.out  # stdout is the resolved config alone (YAML)
    assert "float32" in captured.err  # dtype auto on CPU workers
    assert cli.main([*argv, "--gpu"]) == 0
    assert "bfloat16" in capsys.readouterr().err  # what auto loads on the GPU workers, whatever the driver has
    assert estimate_training_memory(ModelConfig(path="Qwen/Not-Cached", family="qwen2_5_vl"), LoraConfig(), 1) is None


# ------------------------------------------------------------------------------------------- FSDP


def test_fsdp_is_refused_at_config_validation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"scale.strategy: fsdp is not supported yet .* use scale.strategy=ddp"):
        ScaleConfig(strategy="fsdp")
    assert cli.main(["train", "--smoke-test", "scale.strategy=fsdp", "--dry-run"]) == 2
    assert "scale.strategy: fsdp" in capsys.readouterr().err
