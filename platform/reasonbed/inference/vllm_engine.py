"""The `vllm` engine: vLLM's offline `LLM` with image+text prompts, optional LoRA adapter.

This is the only module that imports vLLM. It runs inside a Ray Data actor (see
`reasonbed.generation.pipeline`) or in-process (benchmarks, SARR/GRPO rollouts). On CPU it uses
eager mode; inside Ray the engine runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set by
`reasonbed.ray_runtime`).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, ClassVar

from reasonbed.inference.base import Completion, EngineConfig, Request, SamplingConfig
from reasonbed.models.loading import build_chat_prompt, load_processor, resolve_model_path, weights_dtype
from reasonbed.models.lora import local_adapter


def _on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def request_seed(seed: int, key: str) -> int:
    """A per-request sampling seed that does not depend on batching."""
    return int(hashlib.sha1(f"{seed}/{key}".encode()).hexdigest()[:8], 16)


class VLLMEngine:
    """vLLM offline inference over (image, prompt) requests, with in-context example images."""

    multi_image: ClassVar[bool] = True  # up to engine.images_per_prompt images per prompt

    def __init__(self, cfg: EngineConfig, **_: Any) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        self.cfg = cfg
        self.path = resolve_model_path(cfg.model)
        self.model_id = os.path.basename(self.path.rstrip("/")) if os.path.isdir(self.path) else self.path
        self.processor = load_processor(cfg.model, self.path)
        kwargs: dict[str, Any] = {
            # auto: bfloat16 on a GPU that supports it, float32 on CPU (not the checkpoint's own dtype)
            "model": self.path, "dtype": weights_dtype(cfg.model.dtype),
            "max_model_len": cfg.max_model_len, "limit_mm_per_prompt": {"image": cfg.images_per_prompt},
            "tensor_parallel_size": cfg.tensor_parallel_size, "trust_remote_code": cfg.model.trust_remote_code,
            "seed": 0,
        }
        if not _on_gpu():
            kwargs["enforce_eager"] = True
            # vLLM 0.32 on CPU fails ("CPU Generator does not use offset") when a seeded request's
            # prefill is split into chunks; batches above ~12 prompts hit it with chunked prefill on.
            kwargs["enable_chunked_prefill"] = False
        if cfg.lora_path:
            # enable_tower_connector_lora: apply the adapter's vision-encoder modules too (else ignored)
            kwargs.update({"enable_lora": True, "max_lora_rank": 64, "max_loras": 1,
                           "enable_tower_connector_lora": True})
        kwargs.update(cfg.engine_kwargs)
        self.llm = LLM(**kwargs)
        self._lora: Any = None
        self._lora_version = 0
        if cfg.lora_path:
            self.load_adapter(cfg.lora_path)

    def load_adapter(self, path: str) -> None:
        """Use the LoRA adapter at `path` (a directory, or a URI in the run's storage) from now on (a new id,
        so vLLM reloads the weights)."""
        from vllm.lora.request import LoRARequest

        self._lora_version += 1
        self._lora = LoRARequest(f"adapter-{self._lora_version}", self._lora_version, local_adapter(path))

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        from vllm import SamplingParams

        prompts, params = [], []
        for request in requests:
            if len(request.images) > self.cfg.images_per_prompt:
                raise ValueError(f"vllm engine: a request has {len(request.images)} images but "
                                 f"engine.images_per_prompt is {self.cfg.images_per_prompt}")
            images = request.images if request.examples else request.image
            prompts.append({"prompt": build_chat_prompt(self.processor, request.prompt, examples=request.turns),
                            "multi_modal_data": {"image": images}})
            key = f"{request.meta.get('id', '')}/{request.meta.get('candidate_offset', 0)}"
            params.append(SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                         max_tokens=sampling.max_tokens, seed=request_seed(sampling.seed, key)))
        outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora)
        return [[Completion(choice.text, len(output.prompt_token_ids or []), len(choice.token_ids),
                            list(choice.token_ids), truncated=choice.finish_reason == "length")
                 for choice in output.outputs] for output in outputs]

    def sync(self, model: Any) -> None:
        """Nothing to do: this engine follows adapters given to `load_adapter` (see vllm_actor for GRPO)."""

    def close(self) -> None:
        """Free the engine (tests and benchmarks that start several in one process)."""
        import gc

        del self.llm
        gc.collect()
