"""The `openai` engine: any OpenAI-compatible chat endpoint (a hosted teacher, or vLLM's server).

The base URL comes from config, the API key only from the environment variable named by
`engine.api_key_env`. Requests run with bounded concurrency; the official `openai` client retries
429, 5xx and timeouts with exponential backoff (`engine.max_retries`), and any other 4xx stops the
run with an error naming the endpoint and the status. Completion token counts per candidate are
the server's total divided evenly over the `n` choices (the API reports only the total).
"""

from __future__ import annotations

import base64
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from reasonbed.inference.base import Completion, EngineConfig, Request, SamplingConfig
from reasonbed.inference.vllm_engine import request_seed

log = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """The endpoint refused a request (4xx other than 429) or failed after all retries."""


def image_data_url(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class OpenAIEngine:
    """Chat completions with one image per request (plus in-context example turns), `n` choices each."""

    multi_image: ClassVar[bool] = True  # examples go as earlier user (image + text) / assistant turns
    weights: ClassVar[str] = "served"  # the endpoint at engine.base_url holds the model
    follows_policy: ClassVar[bool] = False  # runs from its config alone

    def __init__(self, cfg: EngineConfig, **_: Any) -> None:
        import openai

        self.cfg = cfg
        self.model_id = cfg.served_model or cfg.model.path
        if not self.model_id:
            raise EndpointError("engine.served_model (or model.path) must name the model on the endpoint")
        api_key = os.environ.get(cfg.api_key_env)
        if not api_key:
            log.warning("%s is not set: sending requests without an API key", cfg.api_key_env)
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=api_key or "EMPTY",
                                    timeout=cfg.timeout_s, max_retries=cfg.max_retries)
        self._openai = openai

    def _one(self, request: Request, sampling: SamplingConfig) -> list[Completion]:
        messages: list[dict[str, Any]] = []
        for example in request.examples:
            messages.append({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(example.image)}},
                {"type": "text", "text": example.prompt}]})
            messages.append({"role": "assistant", "content": example.answer})
        content = [{"type": "image_url", "image_url": {"url": image_data_url(request.image)}},
                   {"type": "text", "text": request.prompt}]
        messages.append({"role": "user", "content": content})
        key = f"{request.meta.get('id', '')}/{request.meta.get('candidate_offset', 0)}"
        try:
            response = self.client.chat.completions.create(
                model=self.model_id, messages=messages, n=sampling.n,
                temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                seed=request_seed(sampling.seed, key) % (2**31),
            )
        except self._openai.APIStatusError as error:
            raise EndpointError(
                f"openai engine: {self.cfg.base_url} answered {error.status_code} for model {self.model_id!r}"
                f" ({error.message}); check the endpoint, the model name and ${self.cfg.api_key_env}"
            ) from None
        except (self._openai.APITimeoutError, self._openai.APIConnectionError) as error:
            raise EndpointError(f"openai engine: {self.cfg.base_url} unreachable after "
                                f"{self.cfg.max_retries} retries: {error}") from None
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        per_choice = (usage.completion_tokens // max(1, len(response.choices))) if usage else 0
        choices = sorted(response.choices, key=lambda choice: choice.index)
        return [Completion(choice.message.content or "", prompt_tokens, per_choice) for choice in choices]

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.max_concurrency)) as pool:
            return list(pool.map(lambda request: self._one(request, sampling), requests))
