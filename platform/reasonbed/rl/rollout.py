"""Rollout engines for GRPO: who samples the G completions per image, and how they see the adapter.

`vllm` (default): a Ray actor holding a `VLLMEngine` with LoRA enabled. Every step the rank-0
trainer saves the current adapter, ships its files through Ray's object store (no shared file system
needed), and the actor writes them to a fresh local directory and calls `load_adapter` (a new LoRA id,
so vLLM reloads the weights). A separate actor rather than vLLM inside the training process: its
placement and resources are explicit (a GPU of its own on a cluster, `method_config.rollout_gpus`,
instead of competing with the trainer's memory on the trainer's GPU), its vLLM state dies with it, and
the trainer process stays a plain torch process. The actor is owned by the rank-0 worker, so it is
torn down with that worker (a restarted worker group starts a new one).

`hf`: transformers `generate` on the live policy model in the rank-0 process (the policy is the current
adapter, so there is nothing to sync); the fallback where vLLM does not run, and the CI default.
Both return `Completion`s with the sampled token ids, which the loss scores exactly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from reasonbed.inference.base import Completion, EngineConfig, Request, SamplingConfig
from reasonbed.train import checkpointing


class Rollout(Protocol):
    def sync(self, model: Any) -> None:
        """Make the engine sample from `model`'s current adapter."""
        ...

    def generate(self, images: Sequence[Any], keys: Sequence[str], prompt: str,
                 sampling: SamplingConfig) -> list[list[Completion]]:
        """`sampling.n` completions per (image, prompt); `keys` seed each request reproducibly."""
        ...

    def close(self) -> None: ...


class HFRollout:
    """transformers generation with the training process's own (peft) model."""

    def __init__(self, model: Any, processor: Any, model_cfg: Any, batch_size: int = 16) -> None:
        from reasonbed.inference.hf_engine import HFEngine

        inner = checkpointing.unwrap(model)
        side = processor.tokenizer.padding_side
        self.engine = HFEngine(EngineConfig(name="hf", model=model_cfg), model=inner, processor=processor)
        self.batch_size = batch_size
        processor.tokenizer.padding_side = side  # the engine sets "left"; training batches pad right
        inner.train()

    def sync(self, model: Any) -> None:  # the engine holds the live policy
        return None

    def generate(self, images: Sequence[Any], keys: Sequence[str], prompt: str,
                 sampling: SamplingConfig) -> list[list[Completion]]:
        model, tokenizer = self.engine.model, self.engine.processor.tokenizer
        side = tokenizer.padding_side
        model.eval()
        tokenizer.padding_side = "left"
        try:
            results: list[list[Completion]] = []
            for start in range(0, len(images), self.batch_size):
                requests = [Request(image, prompt, {"id": key}) for image, key in
                            zip(images[start:start + self.batch_size], keys[start:start + self.batch_size],
                                strict=True)]
                results.extend(self.engine.generate(requests, sampling))
            return results
        finally:
            tokenizer.padding_side = side
            model.train()

    def close(self) -> None:
        return None


class _VLLMActor:
    """Runs inside a Ray actor: a VLLMEngine whose LoRA adapter is replaced by `load_adapter_files`."""

    def __init__(self, engine_cfg: EngineConfig, files: dict[str, bytes]) -> None:
        import reasonbed  # noqa: F401 - torchvision fix in this actor
        from reasonbed.inference.vllm_engine import VLLMEngine

        self.root = Path(tempfile.mkdtemp(prefix="reasonbed-rollout-"))
        self.version = 0
        path = self._write(files)
        engine_cfg.lora_path = path  # enables LoRA (and the vision-tower modules) in vLLM
        self.engine = VLLMEngine(engine_cfg)

    def _write(self, files: dict[str, bytes]) -> str:
        self.version += 1
        directory = self.root / f"v{self.version}"
        directory.mkdir()
        for name, data in files.items():
            (directory / name).write_bytes(data)
        stale = self.root / f"v{self.version - 2}"  # vLLM has finished with the version before last
        shutil.rmtree(stale, ignore_errors=True)
        return str(directory)

    def ping(self) -> int:
        return self.version

    def load_adapter_files(self, files: dict[str, bytes]) -> int:
        self.engine.load_adapter(self._write(files))
        return self.version

    def generate(self, images: list[Any], keys: list[str], prompt: str,
                 sampling: SamplingConfig) -> list[list[Completion]]:
        requests = [Request(image, prompt, {"id": key}) for image, key in zip(images, keys, strict=True)]
        return self.engine.generate(requests, sampling)

    def close(self) -> None:
        self.engine.close()
        shutil.rmtree(self.root, ignore_errors=True)


def adapter_files(model: Any) -> dict[str, bytes]:
    """The current adapter as peft writes it (adapter_config.json, adapter_model.safetensors)."""
    with tempfile.TemporaryDirectory() as directory:
        checkpointing.unwrap(model).save_pretrained(directory, safe_serialization=True)
        return {name: (Path(directory) / name).read_bytes() for name in os.listdir(directory)
                if (Path(directory) / name).is_file()}


class VLLMRollout:
    """A vLLM rollout actor; `sync` ships the adapter to it every step."""

    def __init__(self, model: Any, model_cfg: Any, options: Any) -> None:
        import ray

        engine_cfg = EngineConfig(name="vllm", model=model_cfg, max_model_len=options.rollout_max_model_len,
                                  num_gpus=options.rollout_gpus, engine_kwargs=dict(options.rollout_engine_kwargs))
        actor_class = ray.remote(_VLLMActor).options(
            num_cpus=options.rollout_cpus, num_gpus=options.rollout_gpus,
            resources=dict(options.rollout_resources) or None)
        self.actor = actor_class.remote(engine_cfg, adapter_files(model))
        self._ray = ray
        try:
            self.synced = ray.get(self.actor.ping.remote(), timeout=options.rollout_start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.kill(self.actor)
            raise RuntimeError(
                f"the vLLM rollout actor did not start within {options.rollout_start_timeout_s:.0f} s: it needs "
                f"{options.rollout_cpus} CPU, {options.rollout_gpus} GPU and {dict(options.rollout_resources)} "
                "besides the training workers (lower method_config.rollout_cpus, add nodes, or use "
                "method_config.engine=hf)") from None

    def sync(self, model: Any) -> None:
        self.synced = self._ray.get(self.actor.load_adapter_files.remote(adapter_files(model)))

    def generate(self, images: Sequence[Any], keys: Sequence[str], prompt: str,
                 sampling: SamplingConfig) -> list[list[Completion]]:
        return self._ray.get(self.actor.generate.remote(list(images), list(keys), prompt, sampling))

    def close(self) -> None:
        try:
            self._ray.get(self.actor.close.remote())
        finally:
            self._ray.kill(self.actor)


def build_rollout(engine: str, model: Any, processor: Any, model_cfg: Any, options: Any) -> Rollout:
    """The rollout engine `engine` ("vllm" or "hf") for `model`; `model_cfg.path` must be resolved."""
    if engine == "vllm":
        return VLLMRollout(model, model_cfg, options)
    if engine == "hf":
        return HFRollout(model, processor, model_cfg)
    raise ValueError(f"unknown rollout engine {engine!r}; known: hf, vllm")
