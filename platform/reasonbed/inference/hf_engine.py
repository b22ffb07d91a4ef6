"""The `hf` engine: batched transformers `generate`, for machines where vLLM does not run.

It samples through `reasonbed.inference.sampling.generate` (the one sampling path). Built around a
live model (`model=`, `processor=`), it is GRPO's hf rollout engine: it samples from the training
process's current policy, so `sync` has nothing to do. `load_adapter()` swaps a LoRA adapter in.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from reasonbed.inference.base import Completion, EngineConfig, Request, SamplingConfig
from reasonbed.inference.sampling import generate
from reasonbed.models.loading import load_model_and_processor


class HFEngine:
    """transformers generation over (image, prompt) requests, left-padded batches."""

    multi_image: ClassVar[bool] = True  # in-context example images go to the processor as one list per prompt
    weights: ClassVar[str] = "local"  # loads engine.model in its own process
    follows_policy: ClassVar[bool] = False  # runs from its config alone

    def __init__(self, cfg: EngineConfig, model: Any = None, processor: Any = None, **_: Any) -> None:
        self.cfg = cfg
        self.live = model is not None  # a training process's own model: leave its device and mode alone
        if model is None:
            import torch

            model, processor = load_model_and_processor(cfg.model)
            model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()
        self.model, self.processor = model, processor
        self.model_id = os.path.basename(cfg.model.path.rstrip("/")) or "tiny-" + cfg.model.family
        if cfg.lora_path:
            self.load_adapter(cfg.lora_path)

    def load_adapter(self, path: str) -> None:
        """Swap in the LoRA adapter at `path` (a directory, or a URI in the run's storage)."""
        from peft import PeftModel

        from reasonbed.models.lora import local_adapter

        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.model = PeftModel.from_pretrained(base, local_adapter(path)).to(next(base.parameters()).device).eval()

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        return generate(self.model, self.processor, requests, sampling, batch_size=self.cfg.batch_size)

    def sync(self, model: Any) -> None:
        """Nothing to do: a live engine samples from the policy itself; a loaded one follows `load_adapter`."""

    def close(self) -> None:
        """Nothing to free beyond the model, which the caller owns when live."""
