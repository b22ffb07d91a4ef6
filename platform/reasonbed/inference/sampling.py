"""Sampling from a transformers model: the one path used by the `hf` engine, evaluation and GRPO's hf rollouts.

`generate(model, processor, requests, sampling)` sends (image, prompt) requests in batches of
`batch_size` through the family's chat template, left-padded, and returns `sampling.n` completions
per request with their token ids, token counts and whether the token budget cut them. Greedy when
`sampling.temperature` is 0. The model is put in eval mode and the tokenizer's padding side set to
left only for the call; both are restored afterwards, so a training process can sample from its
live policy between optimizer steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasonbed.inference.base import Completion, Request, SamplingConfig
from reasonbed.models.encoding import build_chat_prompt


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def _batch(model: Any, processor: Any, requests: Sequence[Request], sampling: SamplingConfig
           ) -> list[list[Completion]]:
    import torch

    tokenizer = processor.tokenizer
    texts = [build_chat_prompt(processor, request.prompt, examples=request.turns) for request in requests]
    multi = any(request.examples for request in requests)  # in-context examples: one image list per prompt
    images = [request.images if multi else request.image for request in requests]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True).to(_device(model))
    prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
    do_sample = sampling.temperature > 0
    if do_sample:
        torch.manual_seed(sampling.seed)
    with torch.no_grad():
        output = model.generate(
            **inputs, max_new_tokens=sampling.max_tokens, do_sample=do_sample,
            temperature=sampling.temperature if do_sample else None,
            top_p=sampling.top_p if do_sample else None,
            num_return_sequences=sampling.n, pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    ends = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}
    results: list[list[Completion]] = []
    for index in range(len(requests)):
        candidates = []
        for ids in new_tokens[index * sampling.n:(index + 1) * sampling.n]:
            # a row that never ended ran to the budget: every token of it is real (later rows are padded)
            length = next((i + 1 for i, token in enumerate(ids) if token in ends), None)
            ids = ids[:length] if length else ids
            text = tokenizer.decode(ids, skip_special_tokens=True)
            candidates.append(Completion(text, int(prompt_tokens[index]), len(ids), ids, truncated=length is None))
        results.append(candidates)
    return results


def generate(model: Any, processor: Any, requests: Sequence[Request], sampling: SamplingConfig,
             batch_size: int = 16) -> list[list[Completion]]:
    """`sampling.n` completions per request from a transformers (or peft) model, in request order."""
    tokenizer = processor.tokenizer
    side, training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"
    model.eval()
    try:
        results: list[list[Completion]] = []
        for start in range(0, len(requests), batch_size):
            results.extend(_batch(model, processor, requests[start:start + batch_size], sampling))
        return results
    finally:
        tokenizer.padding_side = side
        model.train(training)
