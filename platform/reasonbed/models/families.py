"""Model families: what the platform needs to know about each multimodal LLM architecture.

A family (registered in `FAMILIES` with `@FAMILIES.register(name)`) names its transformers model,
config and processor classes, the module scopes of its vision encoder and language model that LoRA
may adapt, its special tokens and chat template, and how to build a tiny config and processor of its
real architecture for the offline model factory (`reasonbed.models.tiny`).

`get_family(name)` returns one. Loading a model (paths, transformers, the chat prompt) lives in
`reasonbed.models.loading`; this module holds facts only and imports no other part of `models`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from reasonbed.config import ConfigError
from reasonbed.registry import Registry

FAMILIES: Registry[type[ModelFamily]] = Registry("model family")

# Qwen2-VL-Instruct's chat template (Qwen2.5-VL-Instruct uses the same one).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2-VL's added tokens, in the order of their ids in the real tokenizer (151643...).
QWEN2_VL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
QWEN2_5_VL_EXTRA_TOKENS = (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)


def _transformers_attr(name: str) -> Any:
    import transformers

    return getattr(transformers, name)


class ModelFamily:
    """One architecture: class names, LoRA scopes, tokens, chat template and tiny-model recipe."""

    name: ClassVar[str] = ""
    model_class_name: ClassVar[str] = ""  # transformers class for image+text -> text
    config_class_name: ClassVar[str] = ""
    # `model_type` in a checkpoint's config.json (the config class's own model_type): how a family is detected.
    model_type: ClassVar[str] = ""
    processor_class_name: ClassVar[str] = ""
    tokenizer_class_name: ClassVar[str] = "Qwen2Tokenizer"
    # Whether model.min/max_image_pixels apply (`configure_processor`, `vllm_mm_processor_kwargs`).
    image_bounds: ClassVar[bool] = False
    # Regexes of the module-name prefixes inside which LoRA targets are looked for.
    vision_scope: ClassVar[str] = r"model\.visual\.blocks\.\d+"
    language_scope: ClassVar[str] = r"model\.language_model\.layers\.\d+"
    special_tokens: ClassVar[tuple[str, ...]] = ()
    # Special tokens the tokenizer (and processor) know by name, e.g. context_image_token.
    named_tokens: ClassVar[dict[str, str]] = {}
    chat_template: ClassVar[str] = ""
    eos_token: ClassVar[str] = "<|im_end|>"
    pad_token: ClassVar[str] = "<|endoftext|>"

    @property
    def model_class(self) -> type:
        return _transformers_attr(self.model_class_name)

    @property
    def config_class(self) -> type:
        return _transformers_attr(self.config_class_name)

    @property
    def processor_class(self) -> type:
        return _transformers_attr(self.processor_class_name)

    def lora_target_regex(self, vision_targets: list[str], language_targets: list[str],
                          apply_to_vision: bool = True) -> str:
        """One regex (peft full-matches it against module names) over both towers' leaf modules."""
        parts = []
        if apply_to_vision and vision_targets:
            leaves = "|".join(re.escape(name) for name in vision_targets)
            parts.append(rf"{self.vision_scope}\.(?:.*\.)?(?:{leaves})")
        if language_targets:
            leaves = "|".join(re.escape(name) for name in language_targets)
            parts.append(rf"{self.language_scope}\.(?:.*\.)?(?:{leaves})")
        if not parts:
            raise ConfigError("lora: no target modules (language_targets is empty and vision is off)")
        return rf"(?:.*\.)?(?:{'|'.join(parts)})"

    def is_vision_module(self, name: str) -> bool:
        return re.search(rf"(?:^|\.){self.vision_scope}\.", name) is not None

    def is_language_module(self, name: str) -> bool:
        return re.search(rf"(?:^|\.){self.language_scope}\.", name) is not None

    def configure_processor(self, processor: Any, cfg: Any) -> Any:
        """Apply `cfg`'s image settings to a loaded processor (nothing by default)."""
        return processor

    def vllm_mm_processor_kwargs(self, cfg: Any) -> dict[str, Any]:
        """`mm_processor_kwargs` for `vllm.LLM` that apply `cfg`'s image settings (none by default)."""
        return {}

    def tiny_spec(self, size: str) -> dict[str, Any]:
        """The architecture sizes of the tiny/small model (plain data, hashed by the factory)."""
        raise NotImplementedError

    def tiny_config(self, size: str, vocab_size: int, token_ids: dict[str, int]) -> Any:
        """A transformers config of the family's architecture at `size` with the given token ids."""
        raise NotImplementedError

    def tiny_processor(self, tokenizer: Any, min_pixels: int, max_pixels: int) -> Any:
        """The family's processor around `tokenizer`, for small images."""
        raise NotImplementedError


_QWEN_TEXT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "mrope_section": [4, 6, 6]},
    "small": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 2, "mrope_section": [8, 12, 12]},
}


@FAMILIES.register("qwen2_vl")
class Qwen2VLFamily(ModelFamily):
    """Qwen2-VL: ViT with 2D RoPE + patch merger, Qwen2 language model with M-RoPE."""

    name = "qwen2_vl"
    model_type = "qwen2_vl"
    model_class_name = "Qwen2VLForConditionalGeneration"
    config_class_name = "Qwen2VLConfig"
    processor_class_name = "Qwen2VLProcessor"
    special_tokens = QWEN2_VL_SPECIAL_TOKENS
    chat_template = QWEN2_VL_CHAT_TEMPLATE
    image_bounds = True  # Qwen resizes each image to within [min, max] pixels
    vision_sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"depth": 2, "embed_dim": 64, "num_heads": 4, "mlp_ratio": 2},
        "small": {"depth": 4, "embed_dim": 256, "num_heads": 4, "mlp_ratio": 4},
    }

    def configure_processor(self, processor: Any, cfg: Any) -> Any:
        """Bound the pixels per image (Qwen resizes each image to within [min, max] pixels)."""
        if not cfg.pixel_bounds():
            return processor
        from transformers.image_utils import SizeDict

        for part in (processor.image_processor, getattr(processor, "video_processor", None)):
            if part is None:
                continue
            size = part.size
            part.size = SizeDict(
                shortest_edge=cfg.min_image_pixels or size.shortest_edge,
                longest_edge=cfg.max_image_pixels or size.longest_edge,
            )
        return processor

    def vllm_mm_processor_kwargs(self, cfg: Any) -> dict[str, Any]:
        kwargs = {"min_pixels": cfg.min_image_pixels, "max_pixels": cfg.max_image_pixels}
        return {key: value for key, value in kwargs.items() if value}

    def tiny_spec(self, size: str) -> dict[str, Any]:
        if size not in _QWEN_TEXT_SIZES:
            raise ConfigError(f"size: value {size!r} is not allowed; allowed: {', '.join(_QWEN_TEXT_SIZES)}")
        return {"text": dict(_QWEN_TEXT_SIZES[size]), "vision": dict(self.vision_sizes[size])}

    def _text_config(self, spec: dict[str, Any], vocab_size: int, token_ids: dict[str, int]) -> dict:
        text = dict(spec["text"])
        mrope_section = text.pop("mrope_section")
        head_dim = text["hidden_size"] // text["num_attention_heads"]
        if sum(mrope_section) * 2 != head_dim:
            raise ValueError(f"mrope_section {mrope_section} must sum to head_dim/2 = {head_dim // 2}")
        return {
            **text, "vocab_size": vocab_size, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
            "max_window_layers": text["num_hidden_layers"],
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
            "bos_token_id": token_ids["<|endoftext|>"], "eos_token_id": token_ids["<|im_end|>"],
            "pad_token_id": token_ids["<|endoftext|>"],
        }

    def _vision_config(self, spec: dict[str, Any], text_hidden: int) -> dict:
        return {**spec["vision"], "hidden_size": text_hidden, "patch_size": 14, "spatial_merge_size": 2,
                "temporal_patch_size": 2}

    def tiny_config(self, size: str, vocab_size: int, token_ids: dict[str, int]) -> Any:
        spec = self.tiny_spec(size)
        text = self._text_config(spec, vocab_size, token_ids)
        return self.config_class(
            text_config=text,
            vision_config=self._vision_config(spec, text["hidden_size"]),
            image_token_id=token_ids["<|image_pad|>"],
            video_token_id=token_ids["<|video_pad|>"],
            vision_start_token_id=token_ids["<|vision_start|>"],
            vision_end_token_id=token_ids["<|vision_end|>"],
            tie_word_embeddings=False,
        )

    def tiny_processor(self, tokenizer: Any, min_pixels: int, max_pixels: int) -> Any:
        import transformers

        pixels = {"min_pixels": min_pixels, "max_pixels": max_pixels, "patch_size": 14,
                  "temporal_patch_size": 2, "merge_size": 2}
        return self.processor_class(
            image_processor=transformers.Qwen2VLImageProcessor(**pixels),
            video_processor=transformers.Qwen2VLVideoProcessor(**pixels),
            tokenizer=tokenizer,
            chat_template=self.chat_template,
        )


@FAMILIES.register("qwen2_5_vl")
class Qwen2_5VLFamily(Qwen2VLFamily):
    """Qwen2.5-VL: windowed-attention ViT with RMSNorm and SwiGLU, Qwen2.5 language model."""

    name = "qwen2_5_vl"
    model_type = "qwen2_5_vl"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    config_class_name = "Qwen2_5_VLConfig"
    processor_class_name = "Qwen2_5_VLProcessor"
    special_tokens = QWEN2_VL_SPECIAL_TOKENS + QWEN2_5_VL_EXTRA_TOKENS
    vision_sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
                 "fullatt_block_indexes": [1]},
        "small": {"depth": 4, "hidden_size": 256, "intermediate_size": 768, "num_heads": 4,
                  "fullatt_block_indexes": [1, 3]},
    }

    def _vision_config(self, spec: dict[str, Any], text_hidden: int) -> dict:
        return {**spec["vision"], "out_hidden_size": text_hidden, "patch_size": 14, "spatial_merge_size": 2,
                "temporal_patch_size": 2, "window_size": 112, "tokens_per_second": 2}


INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}"
)
INTERNVL_EXTRA_TOKENS = (
    "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", "<video>",
)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@FAMILIES.register("internvl3")
class InternVL3Family(ModelFamily):
    """InternVL3 (Hugging Face format): InternViT + pixel-shuffle MLP projector + Qwen2.5 LM."""

    name = "internvl3"
    model_type = "internvl"
    model_class_name = "InternVLForConditionalGeneration"
    config_class_name = "InternVLConfig"
    processor_class_name = "InternVLProcessor"
    vision_scope = r"model\.vision_tower\.encoder\.layer\.\d+"
    special_tokens = QWEN2_VL_SPECIAL_TOKENS + QWEN2_5_VL_EXTRA_TOKENS + INTERNVL_EXTRA_TOKENS
    named_tokens: ClassVar[dict[str, str]] = {
        "start_image_token": "<img>", "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>",
    }
    chat_template = INTERNVL_CHAT_TEMPLATE
    vision_sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
        "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
    }
    image_size: ClassVar[int] = 56  # tile side; (56 / 14)^2 * 0.5^2 = 4 image tokens per tile
    max_tiles: ClassVar[int] = 4

    def tiny_spec(self, size: str) -> dict[str, Any]:
        if size not in _QWEN_TEXT_SIZES:
            raise ConfigError(f"size: value {size!r} is not allowed; allowed: {', '.join(_QWEN_TEXT_SIZES)}")
        text = {k: v for k, v in _QWEN_TEXT_SIZES[size].items() if k != "mrope_section"}
        return {"text": text, "vision": dict(self.vision_sizes[size]), "image_size": self.image_size,
                "max_tiles": self.max_tiles}

    def image_seq_length(self) -> int:
        return (self.image_size // 14) ** 2 // 4

    def tiny_config(self, size: str, vocab_size: int, token_ids: dict[str, int]) -> Any:
        spec = self.tiny_spec(size)
        text = {
            **spec["text"], "model_type": "qwen2", "vocab_size": vocab_size, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "bos_token_id": token_ids["<|endoftext|>"], "eos_token_id": token_ids["<|im_end|>"],
            "pad_token_id": token_ids["<|endoftext|>"], "tie_word_embeddings": False,
        }
        vision = {**spec["vision"], "image_size": [self.image_size] * 2, "patch_size": [14, 14]}
        return self.config_class(
            text_config=text, vision_config=vision, image_token_id=token_ids["<IMG_CONTEXT>"],
            image_seq_length=self.image_seq_length(), downsample_ratio=0.5, tie_word_embeddings=False,
        )

    def tiny_processor(self, tokenizer: Any, min_pixels: int, max_pixels: int) -> Any:
        import transformers

        side = {"height": self.image_size, "width": self.image_size}
        common = {"size": side, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}
        return self.processor_class(
            image_processor=transformers.GotOcr2ImageProcessor(
                **common, crop_to_patches=True, min_patches=1, max_patches=self.max_tiles),
            video_processor=transformers.InternVLVideoProcessor(**common),
            tokenizer=tokenizer,
            image_seq_length=self.image_seq_length(),
            chat_template=self.chat_template,
        )


def family_for_model_type(model_type: str, where: str) -> str:
    """The family whose checkpoints carry `model_type` in config.json; `where` names the checkpoint in errors."""
    for name in FAMILIES.names():
        if FAMILIES.get(name).model_type == model_type:
            return name
    known = ", ".join(f"{name} ({FAMILIES.get(name).model_type})" for name in FAMILIES.names())
    raise ConfigError(f"model.path: {where} has model_type {model_type!r}, which no model family handles; "
                      f"known families (model_type): {known}")


def get_family(name: str) -> ModelFamily:
    """The family registered as `name`; unknown names raise listing the known families."""
    return FAMILIES.get(name)()
