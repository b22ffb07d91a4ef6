"""The `hf` engine: batched transformers `generate`, for machines where vLLM does not run.

Also the fallback rollout engine for SARR and GRPO: `load_adapter()` swaps a LoRA adapter in.
"""

from __future__ import annotations

import os
from typing import Any

from reasonbed.inference.base import Completion, EngineConfig, Request, SamplingConfig
from reasonbed.models.loading import build_chat_prompt, load_model_and_processor


class HFEngine:
    """transformers generation over (image, prompt) requests, left-padded batches."""

    def __init__(self, cfg: EngineConfig, model: Any = None, processor: Any = None, **_: Any) -> None:
        import torch

        self.cfg = cfg
        if model is None:
            model, processor = load_model_and_processor(cfg.model)
        self.model, self.processor = model, processor
        self.model_id = os.path.basename(cfg.model.path.rstrip("/")) or "tiny-" + cfg.model.family
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"
        if cfg.lora_path:
            self.load_adapter(cfg.lora_path)

    def load_adapter(self, path: str) -> None:
        from peft import PeftModel

        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.model = PeftModel.from_pretrained(base, path).to(self.device).eval()

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        import torch

        texts = [build_chat_prompt(self.processor, request.prompt) for request in requests]
        images = [request.image for request in requests]
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True).to(self.device)
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        torch.manual_seed(sampling.seed)
        do_sample = sampling.temperature > 0
        with torch.no_grad():
            output = self.model.generate(
                **inputs, max_new_tokens=sampling.max_tokens, do_sample=do_sample,
                temperature=sampling.temperature if do_sample else None,
                top_p=sampling.top_p if do_sample else None, num_return_sequences=sampling.n,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        eos = self.processor.tokenizer.eos_token_id
        results: list[list[Completion]] = []
        for index, _ in enumerate(requests):
            candidates = []
            for row in new_tokens[index * sampling.n:(index + 1) * sampling.n]:
                ids = row.tolist()
                length = next((i + 1 for i, token in enumerate(ids) if token == eos), len(ids))
                text = self.processor.tokenizer.decode(ids[:length], skip_special_tokens=True)
                candidates.append(Completion(text, int(prompt_tokens[index]), length, ids[:length]))
            results.append(candidates)
        return results
