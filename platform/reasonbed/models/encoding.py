"""Tensors for training: a chat-templated prompt with one image, then a target, the loss only on the target.

`build_chat_prompt` renders one user turn (and optional in-context turns) with the family's chat template.

`encode_prompt` runs the family's processor on one (image, prompt) pair; `append_target` adds target
token ids after it with labels that are -100 on every prompt and image position, so a loss covers only
the target. Supervised pathways (`encode_pathway`: target text + end token) and GRPO completions (the
sampled ids) are both encoded this way. `collate` right-pads a list of encodings into one batch; the
vision tensors of the family's processor are concatenated along their first dimension. `CorpusEncoder` holds
a pretraining corpus encoded this way once (`reasonbed.models.pretrain`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

TEXT_KEYS = ("input_ids", "attention_mask", "labels")



def build_chat_prompt(processor: Any, text: str, system: str | None = None, with_image: bool = True,
                      examples: Sequence[tuple[str, str]] = ()) -> str:
    """The templated prompt string for one user turn (one image placeholder, then `text`).

    It ends with the assistant header, ready for generation; the same string works for
    transformers (pass it with the image to the processor) and vLLM (with multi_modal_data).

    `examples` are in-context examples as (user text, answer) pairs: each becomes an earlier user turn
    (its own image placeholder, then the text) answered by an assistant turn, so the images go in
    order: the examples' first, the query's last. Earlier turns, not images interleaved in one turn:
    the Qwen2-VL/Qwen2.5-VL and InternVL3 chat templates all render multi-turn image conversations
    (the form their instruction data has), and the model then answers the query in exactly the turn
    format the examples showed. With no examples the string is the single-turn one, unchanged.
    """
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    for example_text, answer in examples:
        messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example_text}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    content: list[dict[str, str]] = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": text})
    messages.append({"role": "user", "content": content})
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def decode_image(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def encode_prompt(processor: Any, image: Any, prompt: str) -> dict[str, Any]:
    """The templated prompt with its image, as the processor returns it (batch of one)."""
    return dict(processor(text=[build_chat_prompt(processor, prompt)], images=[image], return_tensors="pt"))


def append_target(encoded: dict[str, Any], target_ids: Sequence[int]) -> dict[str, Any]:
    """Prompt + target tokens as unbatched tensors, labels only on the target."""
    import torch

    prompt_ids = encoded["input_ids"][0]
    target = torch.tensor(list(target_ids), dtype=prompt_ids.dtype)
    item = {"input_ids": torch.cat([prompt_ids, target]), "labels": torch.cat([torch.full_like(prompt_ids, -100), target])}
    item["attention_mask"] = torch.ones_like(item["input_ids"])
    for key, value in encoded.items():
        if key in TEXT_KEYS:
            continue
        if value.dim() == 2 and value.shape == encoded["input_ids"].shape:  # per-token (e.g. mm_token_type_ids)
            item[key] = torch.cat([value[0], torch.zeros(len(target), dtype=value.dtype)])
        else:  # vision tensors (pixel_values, image_grid_thw, ...)
            item[key] = value
    return item


def text_target_ids(tokenizer: Any, target: str) -> list[int]:
    """The ids of a target text followed by the end token."""
    return list(tokenizer(target + tokenizer.eos_token, add_special_tokens=False)["input_ids"])


def encode_pathway(processor: Any, image: Any, prompt: str, target: str) -> dict[str, Any]:
    """One (image, prompt, target text) as unbatched tensors with prompt-masked labels."""
    return append_target(encode_prompt(processor, image, prompt), text_target_ids(processor.tokenizer, target))


def collate(items: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad per-token tensors (1-D); concatenate vision tensors (pixel_values, image_grid_thw, ...)."""
    import torch

    length = max(int(item["input_ids"].shape[0]) for item in items)
    batch: dict[str, Any] = {}
    fills = {"input_ids": pad_token_id, "labels": -100}
    token_keys = [key for key, value in items[0].items() if value.dim() == 1]
    for key in token_keys:
        fill = fills.get(key, 0)
        rows = []
        for item in items:
            tensor = item[key]
            pad = torch.full((length - tensor.shape[0],), fill, dtype=tensor.dtype)
            rows.append(torch.cat([tensor, pad]))
        batch[key] = torch.stack(rows)
    for key in items[0]:
        if key not in token_keys:
            batch[key] = torch.cat([item[key] for item in items], dim=0)
    return batch


def encode_images(processor: Any, images: Sequence[Any], chunk: int = 64) -> list[dict[str, Any]]:
    """Each image's vision tensors (what the processor returns beside the tokens), `chunk` images per call.

    The images share one size, so each one owns an equal share of every vision tensor's first dimension.
    """
    chat = build_chat_prompt(processor, "")
    encoded: list[dict[str, Any]] = []
    for start in range(0, len(images), chunk):
        part = list(images[start:start + chunk])
        output = processor(text=[chat] * len(part), images=part, return_tensors="pt")
        shape = output["input_ids"].shape
        vision = {key: value for key, value in output.items()
                  if key not in TEXT_KEYS and not (value.dim() == 2 and value.shape == shape)}
        for key, value in vision.items():
            if value.shape[0] % len(part):
                raise ValueError(f"pretraining corpus: {key} of {len(part)} images does not split evenly")
        encoded.extend({key: value.chunk(len(part))[index] for key, value in vision.items()}
                       for index in range(len(part)))
    return encoded


class CorpusEncoder:
    """The corpus pre-encoded once: each image's vision tensors, each distinct prompt and target's tokens.

    A prompt's encoding depends on its image only through the image's size, the same for every corpus
    image, so each distinct prompt goes through the processor once and is reused; `item()` equals
    `reasonbed.models.encoding.encode_pathway` on that example (tests/test_pretrain.py checks it).
    """

    def __init__(self, processor: Any, images: Sequence[Any]) -> None:
        sizes = {image.size for image in images}
        if len(sizes) != 1:
            raise ValueError(f"pretraining corpus: images must share one size, got {sorted(sizes)}")
        self.processor = processor
        self.reference = images[0]
        self.vision = encode_images(processor, images)
        self.prompts: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, list[int]] = {}

    def prompt(self, prompt: str) -> dict[str, Any]:
        """The processor's encoding of the templated `prompt` with a corpus-sized image (cached)."""
        if prompt not in self.prompts:
            self.prompts[prompt] = encode_prompt(self.processor, self.reference, prompt)
        return self.prompts[prompt]

    def target(self, target: str) -> list[int]:
        """The ids of `target` and the end token (cached)."""
        if target not in self.targets:
            self.targets[target] = text_target_ids(self.processor.tokenizer, target)
        return self.targets[target]

    def item(self, image_index: int, prompt: str, target: str) -> dict[str, Any]:
        """Unbatched tensors of one example: prompt (labels -100) + target + end token, and its image."""
        return append_target({**self.prompt(prompt), **self.vision[image_index]}, self.target(target))
