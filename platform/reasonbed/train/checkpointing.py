"""Checkpoints of a LoRA run: adapter (safetensors), optimizer, scheduler and the data position.

Layout of a checkpoint directory: `adapter/` (peft's adapter_config.json and
adapter_model.safetensors: loadable by transformers+peft and by vLLM), `optimizer.pt` and
`scheduler.pt` (loaded with weights_only=True), `state.json` (step, every step's metrics and every report so far,
which survive restarts: the run's steps.jsonl and metrics.jsonl are written from the final checkpoint's state).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ADAPTER_DIR = "adapter"


def unwrap(model: Any) -> Any:
    """The peft model inside DDP/FSDP wrappers."""
    return model.module if hasattr(model, "module") else model


def save(directory: str | Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> None:
    import torch

    directory = Path(directory)
    unwrap(model).save_pretrained(directory / ADAPTER_DIR, safe_serialization=True)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    (directory / "state.json").write_text(json.dumps(state, indent=2, default=float))


def read_adapter_weights(adapter: str | Path) -> dict[str, Any]:
    """The tensors of an adapter's adapter_model.safetensors, from a local directory or a URI (s3://, gs://)
    in the run's storage, read through fsspec: no node-local path has to exist on the reading node."""
    from safetensors.torch import load

    from reasonbed import storage

    fs, path = storage.filesystem(str(adapter))
    weights = f"{path}/adapter_model.safetensors"
    if not fs.isfile(weights):
        raise FileNotFoundError(f"adapter {str(adapter)!r} has no adapter_model.safetensors")
    with fs.open(weights, "rb") as handle:
        return load(handle.read())


def load_adapter_weights(model: Any, adapter_dir: str | Path) -> None:
    """Load adapter weights (safetensors; a local directory or a URI) into a peft model of the same LoRA layout."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(unwrap(model), read_adapter_weights(adapter_dir))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"adapter {str(adapter_dir)!r} does not fit the model: unexpected {unexpected[:3]}")


def restore(directory: str | Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Load a checkpoint into model/optimizer/scheduler; returns its state (step, ...)."""
    import torch

    directory = Path(directory)
    load_adapter_weights(model, directory / ADAPTER_DIR)
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
    return json.loads((directory / "state.json").read_text())


def exists(directory: str | Path) -> bool:
    return os.path.isfile(os.path.join(directory, "state.json"))
