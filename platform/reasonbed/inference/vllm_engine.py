"""The `vllm` engine: one wrapper over vLLM with a sync face and an async face; image+text prompts, LoRA.

Underneath is vLLM's async engine (`AsyncLLM`, see `reasonbed.inference.vllm_async`) by default:
`agenerate` lets several callers share one engine - the generation actor's batches in flight
(`reasonbed.generation.pipeline`), so vLLM's continuous batching spans them - and `generate` is the
same engine's blocking face (benchmarks, tests, the OOD evaluation). With `engine.vllm_async=false` it
is vLLM's offline `LLM` in this process, one call at a time (inside Ray VLLM_ENABLE_V1_MULTIPROCESSING=0,
set by `reasonbed.ray_runtime`). Prompts, per-request seeds, the LoRA adapter and completions are built
here, once for both. The GRPO rollout actor (`vllm_actor`) holds this same wrapper. On CPU: eager mode,
no chunked prefill (below).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import threading
from typing import Any, ClassVar

from reasonbed.inference.base import Completion, EngineConfig, Request, SamplingConfig
from reasonbed.models.encoding import build_chat_prompt
from reasonbed.models.families import get_family
from reasonbed.models.loading import load_processor, resolve_model, resolve_model_path, weights_dtype
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


def engine_arguments(cfg: EngineConfig, path: str) -> dict[str, Any]:
    """vLLM's engine arguments (the same for `LLM` and `AsyncLLM`) for `cfg` and the model at `path`."""
    kwargs: dict[str, Any] = {
        # auto: bfloat16 on a GPU that supports it, float32 on CPU (not the checkpoint's own dtype)
        "model": path, "dtype": weights_dtype(cfg.model.dtype),
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
    if cfg.model.pixel_bounds():
        # the image bounds the training processor applies (`ModelFamily.configure_processor`), so vLLM's prompts
        # hold the same image tokens as training's
        family = cfg.model.family or resolve_model(cfg.model).family
        kwargs["mm_processor_kwargs"] = get_family(family).vllm_mm_processor_kwargs(cfg.model) or None
    kwargs.update(cfg.engine_kwargs)
    return kwargs


class OfflineBackend:
    """vLLM's offline `LLM` in this process: one `generate` call at a time (a lock serialises callers)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        from vllm import LLM

        self.llm = LLM(**kwargs)
        self._lock = threading.Lock()

    def generate(self, prompts: list[Any], params: list[Any], lora: Any) -> list[Any]:
        with self._lock:
            return self.llm.generate(prompts, params, use_tqdm=False, lora_request=lora)

    async def agenerate(self, prompts: list[Any], params: list[Any], lora: Any) -> list[Any]:
        return await asyncio.to_thread(self.generate, prompts, params, lora)

    def close(self) -> None:
        self.llm = None  # freed by the caller's gc.collect()


class VLLMEngine:
    """vLLM inference over (image, prompt) requests, with in-context example images; sync and async faces."""

    multi_image: ClassVar[bool] = True  # up to engine.images_per_prompt images per prompt
    weights: ClassVar[str] = "local"  # loads engine.model in its own process
    follows_policy: ClassVar[bool] = False  # runs from its config alone

    def __init__(self, cfg: EngineConfig, **_: Any) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        self.cfg = cfg
        self.path = resolve_model_path(cfg.model)
        self.model_id = os.path.basename(self.path.rstrip("/")) if os.path.isdir(self.path) else self.path
        self.processor = load_processor(cfg.model, self.path)
        kwargs = engine_arguments(cfg, self.path)
        if cfg.vllm_async:
            from reasonbed.inference.vllm_async import AsyncBackend

            self.backend: Any = AsyncBackend(kwargs)
        else:
            self.backend = OfflineBackend(kwargs)
        self._lora: Any = None
        self._lora_version = 0
        if cfg.lora_path:
            self.load_adapter(cfg.lora_path)

    @staticmethod
    def runs_async(cfg: EngineConfig) -> bool:
        """Whether several batches can be in this engine at once (the generation pipeline's async actor)."""
        return cfg.vllm_async

    def load_adapter(self, path: str) -> None:
        """Use the LoRA adapter at `path` (a directory, or a URI in the run's storage) from now on (a new id,
        so vLLM reloads the weights)."""
        from vllm.lora.request import LoRARequest

        self._lora_version += 1
        self._lora = LoRARequest(f"adapter-{self._lora_version}", self._lora_version, local_adapter(path))

    def _inputs(self, requests: list[Request], sampling: SamplingConfig) -> tuple[list[Any], list[Any]]:
        """vLLM prompts (chat text + images) and sampling parameters with per-request seeds."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

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
                                         max_tokens=sampling.max_tokens, seed=request_seed(sampling.seed, key),
                                         output_kind=RequestOutputKind.FINAL_ONLY))
        return prompts, params

    @staticmethod
    def _completions(outputs: list[Any]) -> list[list[Completion]]:
        return [[Completion(choice.text, len(output.prompt_token_ids or []), len(choice.token_ids),
                            list(choice.token_ids), truncated=choice.finish_reason == "length")
                 for choice in output.outputs] for output in outputs]

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        """`sampling.n` completions per request, in request order (blocks until all are done)."""
        if not requests:
            return []
        prompts, params = self._inputs(requests, sampling)
        return self._completions(self.backend.generate(prompts, params, self._lora))

    async def agenerate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        """The same as `generate`, awaitable: concurrent callers share the engine's running batch."""
        if not requests:
            return []
        prompts, params = self._inputs(requests, sampling)
        return self._completions(await self.backend.agenerate(prompts, params, self._lora))

    def sync(self, model: Any) -> None:
        """Nothing to do: this engine follows adapters given to `load_adapter` (see vllm_actor for GRPO)."""

    def close(self) -> None:
        """Free the engine (tests and benchmarks that start several in one process)."""
        self.backend.close()
        gc.collect()
