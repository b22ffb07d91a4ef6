"""The `vllm_actor` engine: a vLLM engine in a Ray actor of its own that follows a training process's adapter.

GRPO's default rollout engine. Every step the trainer calls `sync(model)`: the current adapter's files
travel through Ray's object store (no shared file system needed) to the actor, which writes them to a
fresh local directory and loads them under a new LoRA id (so vLLM reloads the weights). A separate actor
rather than vLLM inside the training process: its placement and resources are explicit (a GPU of its own
on a cluster instead of competing with the trainer's memory), its vLLM state dies with it, and the
trainer stays a plain torch process. The actor is owned by the process that built the engine, so it is
torn down with it (a restarted worker group starts a new one). Inside it is the same `VLLMEngine` as in
the generation pipeline: vLLM's async engine unless `engine.vllm_async=false`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from reasonbed.inference.base import Completion, EngineConfig, Request, SamplingConfig
from reasonbed.models.lora import adapter_files


class _Actor:
    """Runs inside the Ray actor: a VLLMEngine whose LoRA adapter is replaced by `load_adapter_files`.

    An async actor (its `generate` awaits the engine's async face, the generation pipeline's engine
    code): the other methods run between rollouts on the actor's event loop.
    """

    def __init__(self, engine_cfg: EngineConfig, files: dict[str, bytes]) -> None:
        import reasonbed  # noqa: F401 - torchvision fix in this actor
        from reasonbed.inference.vllm_engine import VLLMEngine

        self.root = Path(tempfile.mkdtemp(prefix="reasonbed-rollout-"))
        self.version = 0
        engine_cfg.name, engine_cfg.lora_path = "vllm", self._write(files)  # enables LoRA (both towers)
        self.engine = VLLMEngine(engine_cfg)

    def _write(self, files: dict[str, bytes]) -> str:
        self.version += 1
        directory = self.root / f"v{self.version}"
        directory.mkdir()
        for name, data in files.items():
            (directory / name).write_bytes(data)
        shutil.rmtree(self.root / f"v{self.version - 2}", ignore_errors=True)  # vLLM is done with it
        return str(directory)

    def ping(self) -> int:
        return self.version

    def load_adapter_files(self, files: dict[str, bytes]) -> int:
        self.engine.load_adapter(self._write(files))
        return self.version

    async def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        return await self.engine.agenerate(requests, sampling)

    def close(self) -> None:
        self.engine.close()
        shutil.rmtree(self.root, ignore_errors=True)


class VLLMActorEngine:
    """A vLLM engine in a Ray actor, started with `model`'s adapter; `sync` ships the current adapter."""

    multi_image: ClassVar[bool] = True  # vLLM's prompts: up to engine.images_per_prompt images
    weights: ClassVar[str] = "local"  # loads engine.model (the policy's base) in its actor
    follows_policy: ClassVar[bool] = True  # built from the training process's model (`model=`), synced each step

    def __init__(self, cfg: EngineConfig, model: Any, start_timeout_s: float = 900.0,
                 resources: dict[str, float] | None = None, **_: Any) -> None:
        import ray

        self.model_id = cfg.model.path
        placed = replace(cfg, resources={**cfg.resources, **(resources or {})})
        actor_class = ray.remote(_Actor).options(**placed.actor_options())
        self.actor = actor_class.remote(cfg, adapter_files(model))
        self._ray = ray
        try:
            self.synced = ray.get(self.actor.ping.remote(), timeout=start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.kill(self.actor)
            raise RuntimeError(
                f"the vLLM rollout actor did not start within {start_timeout_s:.0f} s: it needs {cfg.num_cpus} CPU, "
                f"{cfg.num_gpus} GPU and {placed.resources} besides the training workers (lower "
                "method_config.rollout_cpus, add nodes, or use method_config.engine=hf)") from None

    def sync(self, model: Any) -> None:
        self.synced = self._ray.get(self.actor.load_adapter_files.remote(adapter_files(model)))

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        return self._ray.get(self.actor.generate.remote(list(requests), sampling))

    def close(self) -> None:
        try:
            self._ray.get(self.actor.close.remote())
        finally:
            self._ray.kill(self.actor)
