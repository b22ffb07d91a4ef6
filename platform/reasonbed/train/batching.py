"""Tensors for training and evaluation: chat-templated prompts with one image, loss only on targets.

`encode_pathway` builds input ids as [templated prompt with image tokens] + [target tokens + end
token] and labels that are -100 on every prompt and image position, so the loss covers only the
target. `collate` right-pads a list of encodings into one batch; the vision tensors of the family's
processor are concatenated along their first dimension.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from reasonbed.models.loading import build_chat_prompt

TEXT_KEYS = ("input_ids", "attention_mask", "labels")


def decode_image(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def encode_pathway(processor: Any, image: Any, prompt: str, target: str) -> dict[str, Any]:
    """One (image, prompt, target) as unbatched tensors with prompt-masked labels."""
    import torch

    chat = build_chat_prompt(processor, prompt)
    encoded = processor(text=[chat], images=[image], return_tensors="pt")
    tokenizer = processor.tokenizer
    target_ids = tokenizer(target + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    prompt_ids = encoded["input_ids"][0]
    input_ids = torch.cat([prompt_ids, torch.tensor(target_ids, dtype=prompt_ids.dtype)])
    labels = torch.cat([torch.full_like(prompt_ids, -100), torch.tensor(target_ids, dtype=prompt_ids.dtype)])
    item = {"input_ids": input_ids, "labels": labels, "attention_mask": torch.ones_like(input_ids)}
    for key, value in encoded.items():
        if key in TEXT_KEYS:
            continue
        if value.dim() == 2 and value.shape == encoded["input_ids"].shape:  # per-token (e.g. mm_token_type_ids)
            item[key] = torch.cat([value[0], torch.zeros(len(target_ids), dtype=value.dtype)])
        else:  # vision tensors (pixel_values, image_grid_thw, ...)
            item[key] = value
    return item


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
