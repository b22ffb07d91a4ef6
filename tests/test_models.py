"""Tests of reasonbed.models: the tiny-model factory, loading in transformers and vLLM, LoRA, configs."""

from __future__ import annotations

import gc
import hashlib
import time
from pathlib import Path

import pytest
from PIL import Image

from reasonbed.config import ConfigError, from_dict
from reasonbed.models import (
    FAMILIES,
    LoraConfig,
    ModelConfig,
    apply_lora,
    build_chat_prompt,
    build_tiny_model,
    count_parameters,
    get_family,
    load_model_and_processor,
    resolve_model_path,
    trainable_parameter_counts,
)
from reasonbed.models.tiny import MARKER, build_tokenizer, instantiate_tiny_model
from reasonbed.registry import RegistryError

ALL_FAMILIES = sorted(FAMILIES.names())  # every registered family: a new one is tested without a change here
QUESTION = "What type of object is in this photo? Choose from the following options: dog, horse, house."


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _image(size: tuple[int, int] = (56, 56)) -> Image.Image:
    image = Image.new("RGB", size, (200, 40, 30))
    image.paste((20, 90, 200), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image


def _hf_greedy(model, processor, image: Image.Image, new_tokens: int = 6) -> tuple[list[int], list[int]]:
    """Prompt ids and greedy new token ids from transformers."""
    import torch

    prompt = build_chat_prompt(processor, QUESTION)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    prompt_ids = inputs["input_ids"][0].tolist()
    return prompt_ids, output[0, len(prompt_ids):].tolist()


def test_families_registered():
    assert {"qwen2_vl", "qwen2_5_vl", "internvl3"} <= set(ALL_FAMILIES)
    for name in ALL_FAMILIES:
        assert get_family(name).name == name


def test_tiny_model_dir_is_complete(tiny_model_dir: Path):
    import json

    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "processor_config.json", "chat_template.jinja", "generation_config.json", MARKER):
        assert (tiny_model_dir / name).is_file(), name
    marker = json.loads((tiny_model_dir / MARKER).read_text())
    assert marker["parameters"] < 1_000_000
    assert marker["spec"]["pretrain"]["version"] >= 1 and marker["pretraining"]["text_loss"] > 0  # pretrained
    config = json.loads((tiny_model_dir / "config.json").read_text())
    tokenizer = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    added = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    assert config["image_token_id"] == added["<|image_pad|>"]
    assert config["video_token_id"] == added["<|video_pad|>"]
    assert config["vision_start_token_id"] == added["<|vision_start|>"]
    assert config["vision_end_token_id"] == added["<|vision_end|>"]
    assert config["text_config"]["eos_token_id"] == added["<|im_end|>"]
    assert sum(config["text_config"]["rope_parameters"]["mrope_section"]) * 2 == (
        config["text_config"]["hidden_size"] // config["text_config"]["num_attention_heads"]
    )
    assert tiny_model_dir.name.startswith("qwen2_vl-tiny-")  # <family>-<size>-<hash> in the cache


def test_chat_prompt_has_one_image_placeholder(tiny_model_dir: Path):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    prompt = build_chat_prompt(processor, QUESTION)
    assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert QUESTION in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert build_chat_prompt(processor, "hi", with_image=False).count("<|image_pad|>") == 0


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_transformers_loads_and_generates(family: str, tiny_model_dir: Path):
    path = tiny_model_dir if family == "qwen2_vl" else build_tiny_model(family, "tiny", pretrained=False)
    model, processor = load_model_and_processor(ModelConfig(family=family, path=str(path)))
    assert type(model).__name__ == get_family(family).model_class_name
    prompt_ids, new_ids = _hf_greedy(model, processor, _image())
    assert len(new_ids) == 6
    assert len(prompt_ids) > 20
    text = processor.decode(new_ids, skip_special_tokens=True)
    assert isinstance(text, str)


def test_empty_path_resolves_to_cached_tiny_model(tiny_model_dir: Path):
    started = time.perf_counter()
    assert Path(resolve_model_path(ModelConfig())) == tiny_model_dir
    assert time.perf_counter() - started < 2.0  # a cache hit, not a rebuild


def test_processor_pixel_bounds(tiny_model_dir: Path):
    from reasonbed.models import load_processor

    processor = load_processor(ModelConfig(path=str(tiny_model_dir), max_image_pixels=112 * 112))
    prompt = build_chat_prompt(processor, "hi")
    grid = processor(images=[_image((224, 224))], text=[prompt], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 8, 8]]  # 112 / 14 patches per side instead of 224 / 14
    default = load_processor(ModelConfig(path=str(tiny_model_dir)))
    grid = default(images=[_image((224, 224))], text=[prompt], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 16, 16]]


def test_vllm_gets_the_image_bounds_of_the_families_that_have_them(tiny_model_dir: Path):
    """engine.model's pixel bounds reach vLLM as the processor kwargs the Qwen families read (the slow test below
    checks vLLM's prompts against transformers'); a family that does not resize images refuses them."""
    from reasonbed.inference.base import EngineConfig
    from reasonbed.inference.vllm_engine import engine_arguments

    path = str(tiny_model_dir)
    assert "mm_processor_kwargs" not in engine_arguments(EngineConfig(model=ModelConfig(path=path)), path)
    bounded = ModelConfig(path=path, min_image_pixels=56 * 56, max_image_pixels=112 * 112)
    assert engine_arguments(EngineConfig(model=bounded), path)["mm_processor_kwargs"] == {
        "min_pixels": 56 * 56, "max_pixels": 112 * 112}
    with pytest.raises(ConfigError, match="model.max_image_pixels: the internvl3 family does not resize"):
        ModelConfig(family="internvl3", max_image_pixels=112 * 112)


def test_tokenizer_spells_reasoning_tags(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "<SUMMARY> x </SUMMARY> <CAPTION> giraffe </CAPTION> <REASONING> <REFLECTION> <CONCLUSION> dog"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(tokenizer(" giraffe")["input_ids"]) == 1  # a word of the corpus is one token
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer("<|im_start|>user")["input_ids"][0] == im_start


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_parameter_counts(family: str):
    assert count_parameters(family, "tiny") < 1_000_000
    assert 20_000_000 <= count_parameters(family, "small") <= 60_000_000


def test_build_is_deterministic_and_cached(tmp_path: Path, tiny_model_dir: Path):
    """The random model (pretrained=False; the pretrained build's determinism is in tests/test_pretrain.py)."""
    first = build_tiny_model("qwen2_vl", "tiny", out=tmp_path / "a", seed=0, pretrained=False)
    second = build_tiny_model("qwen2_vl", "tiny", out=tmp_path / "b", seed=0, pretrained=False)
    other = build_tiny_model("qwen2_vl", "tiny", out=tmp_path / "c", seed=1, pretrained=False)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "processor_config.json"):
        assert _sha256(first / name) == _sha256(second / name), name
    cached = build_tiny_model("qwen2_vl", "tiny", pretrained=False)
    assert _sha256(first / "model.safetensors") == _sha256(cached / "model.safetensors")
    assert _sha256(first / "model.safetensors") != _sha256(other / "model.safetensors")
    assert _sha256(first / "tokenizer.json") == _sha256(other / "tokenizer.json")
    assert _sha256(first / "tokenizer.json") == _sha256(tiny_model_dir / "tokenizer.json")

    # Cache hits return at once and leave the files untouched.
    weights = tiny_model_dir / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    started = time.perf_counter()
    assert build_tiny_model("qwen2_vl", "tiny") == tiny_model_dir
    assert build_tiny_model("qwen2_vl", "tiny", pretrained=False) == cached
    assert build_tiny_model("qwen2_vl", "tiny", out=first, pretrained=False) == first
    assert time.perf_counter() - started < 1.0
    assert weights.stat().st_mtime_ns == mtime
    assert build_tiny_model("qwen2_vl", "tiny", seed=1, pretrained=False) != cached  # the seed is in the hash
    assert not list(tmp_path.glob(".*tmp-*"))  # no staging directories left behind


def test_build_refuses_foreign_directory(tmp_path: Path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not empty"):
        build_tiny_model("qwen2_vl", "tiny", out=tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_apply_lora_adapts_both_towers(family: str):
    fam = get_family(family)
    model = instantiate_tiny_model(fam, "tiny", build_tokenizer(fam), seed=0)
    peft_model = apply_lora(model, LoraConfig(), family)
    counts = trainable_parameter_counts(peft_model, family)
    assert counts["vision"] > 0 and counts["language"] > 0
    assert counts["other"] == 0
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert counts["total"] < counts["all"] / 2


def test_apply_lora_language_only():
    fam = get_family("qwen2_vl")
    model = instantiate_tiny_model(fam, "tiny", build_tokenizer(fam), seed=0)
    counts = trainable_parameter_counts(apply_lora(model, LoraConfig(apply_to_vision=False, r=4), fam), fam)
    assert counts["vision"] == 0 and counts["language"] > 0


def test_apply_lora_rejects_targets_matching_nothing():
    fam = get_family("qwen2_vl")
    model = instantiate_tiny_model(fam, "tiny", build_tokenizer(fam), seed=0)
    with pytest.raises(ConfigError, match="vision_targets"):
        apply_lora(model, LoraConfig(vision_targets=["no_such_module"]), fam)


def test_unknown_family_lists_known_ones():
    with pytest.raises(RegistryError) as registry_error:
        get_family("llava9")
    with pytest.raises(ConfigError) as config_error:
        ModelConfig(family="llava9")
    with pytest.raises(RegistryError):
        build_tiny_model("llava9")
    for error in (registry_error, config_error):
        message = str(error.value)
        assert "llava9" in message
        assert all(name in message for name in ALL_FAMILIES)


def test_missing_model_path_names_it(tmp_path: Path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="no-such-model"):
        resolve_model_path(ModelConfig(path=missing))
    with pytest.raises(ConfigError, match="no-such-model"):
        load_model_and_processor(ModelConfig(path=missing))
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model_path(ModelConfig(path=str(tmp_path)))


@pytest.mark.parametrize(
    ("cls", "values", "field"),
    [
        (ModelConfig, {"dtype": "float64"}, "dtype"),
        (ModelConfig, {"tiny_size": "huge"}, "tiny_size"),
        (ModelConfig, {"min_image_pixels": 9000, "max_image_pixels": 100}, "min_image_pixels"),
        (LoraConfig, {"r": 0}, "r"),
        (LoraConfig, {"dropout": 1.5}, "dropout"),
        (LoraConfig, {"alpha": -1}, "alpha"),
        (LoraConfig, {"language_targets": [], "apply_to_vision": False}, "language_targets"),
    ],
)
def test_config_validation(cls, values, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(cls, values)


def test_configs_from_dict_defaults():
    cfg = from_dict(ModelConfig, {"family": "qwen2_5_vl", "dtype": "bfloat16"})
    assert cfg.family == "qwen2_5_vl" and cfg.path == "" and cfg.trust_remote_code is False
    lora = from_dict(LoraConfig, {"r": 16})
    assert lora.r == 16 and lora.alpha == 16 and "q_proj" in lora.language_targets


# ----------------------------------------------------------------------------------------- vLLM


BOUNDED = 112 * 112  # model.max_image_pixels for the vLLM comparison: a 150 x 100 image must shrink on both sides


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir: Path):
    """One in-process vLLM engine over the tiny model for this module, from reasonbed's engine arguments with
    `model.max_image_pixels` set; freed afterwards."""
    vllm = pytest.importorskip("vllm")
    from reasonbed.inference.base import EngineConfig
    from reasonbed.inference.vllm_engine import engine_arguments

    # vLLM inspects model classes in a fresh `python -m ...` subprocess that never imports reasonbed:
    # the torchvision fix reaches it through the environment's startup file (make setup writes it).
    started = time.perf_counter()
    cfg = EngineConfig(name="vllm", model=ModelConfig(path=str(tiny_model_dir), max_image_pixels=BOUNDED),
                       max_model_len=1024, engine_kwargs={"max_num_seqs": 4})
    llm = vllm.LLM(**engine_arguments(cfg, str(tiny_model_dir)))
    print(f"vLLM engine started in {time.perf_counter() - started:.1f} s")
    yield llm
    del llm
    gc.collect()


@pytest.mark.slow
def test_vllm_loads_and_generates_like_transformers(vllm_engine, tiny_model_dir: Path):
    """Same prompt ids (image placeholders included) and same greedy tokens as transformers, with the image
    pixel bound applied by both: an image under it keeps its size, a larger one shrinks alike."""
    import vllm

    from reasonbed.models import load_processor

    model, processor = load_model_and_processor(ModelConfig(path=str(tiny_model_dir), max_image_pixels=BOUNDED))
    unbounded = load_processor(ModelConfig(path=str(tiny_model_dir)))
    prompt = build_chat_prompt(processor, QUESTION)
    params = vllm.SamplingParams(max_tokens=6, min_tokens=6, temperature=0.0)
    for size, shrinks in (((56, 56), False), ((150, 100), True)):
        image = _image(size)
        (output,) = vllm_engine.generate([{"prompt": prompt, "multi_modal_data": {"image": image}}], params)
        assert len(output.outputs[0].token_ids) == 6
        hf_prompt_ids, hf_new_ids = _hf_greedy(model, processor, image)
        default_ids = unbounded(images=[image], text=[prompt])["input_ids"][0]
        assert (len(hf_prompt_ids) < len(default_ids)) == shrinks, size  # the bound is in force (or not needed)
        assert list(output.prompt_token_ids) == hf_prompt_ids  # same image placeholder expansion
        assert list(output.outputs[0].token_ids) == hf_new_ids  # same architecture and weights
