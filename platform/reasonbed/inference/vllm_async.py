"""vLLM's async engine (`AsyncLLM`) on an event loop of its own: the default backend of the `vllm` engine.

Every request of every caller goes into one running engine, so vLLM's continuous batching spans
callers: the generation actor's batches in flight share the engine, where vLLM's offline `LLM` runs
one call to completion before the next starts (each call's tail with few sequences, and no prefill
of the next batch overlapping its decode).

The engine lives on a private event loop in a daemon thread, created here, so it does not depend on
who calls: `agenerate` from any event loop (Ray Data's async actor, an async Ray actor) and
`generate` from any thread block on that loop. `AsyncLLM` always runs its engine core in a child
process (whatever VLLM_ENABLE_V1_MULTIPROCESSING says); on CPU vLLM spawns it, so a script that builds
this engine in its own process needs the `if __name__ == "__main__":` guard (Ray workers have it).
Only `reasonbed.inference.vllm_engine` uses this module.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import threading
from collections.abc import Coroutine
from typing import Any


class AsyncBackend:
    """An `AsyncLLM` built from vLLM engine arguments; generate with `agenerate` (awaitable) or `generate`."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="reasonbed-vllm-async", daemon=True)
        self._thread.start()
        self._ids = itertools.count()
        self.in_flight = self.peak_in_flight = 0  # requests in the engine now, and the most at once so far
        args = AsyncEngineArgs(**{"disable_log_stats": True, **kwargs})

        async def start() -> Any:
            # LLM_CLASS: the offline engine's scheduler defaults (tokens and sequences per step), not the
            # smaller ones vLLM picks for a server; built on the loop, where its output handler then runs.
            return AsyncLLM.from_engine_args(args, usage_context=UsageContext.LLM_CLASS)

        try:
            self.llm = self._wait(start())
        except BaseException:
            self._stop_loop()
            raise
        # A process that exits without close() (a Ray Data actor at the end of a dataset) shuts the engine
        # down while vLLM's modules are still whole, not in AsyncLLM.__del__ during interpreter teardown.
        atexit.register(self.close)

    def _wait(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        if threading.current_thread() is self._thread:
            raise RuntimeError("AsyncBackend.generate called from the engine's own event loop: await agenerate")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _one(self, prompt: Any, params: Any, lora: Any) -> Any:
        final = None
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            async for output in self.llm.generate(prompt, params, f"reasonbed-{next(self._ids)}", lora_request=lora):
                final = output  # FINAL_ONLY: one output, with every one of the n completions
        finally:
            self.in_flight -= 1
        return final

    async def _all(self, prompts: list[Any], params: list[Any], lora: Any) -> list[Any]:
        tasks = [asyncio.ensure_future(self._one(prompt, param, lora))
                 for prompt, param in zip(prompts, params, strict=True)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:  # one request failed: abort the others (generate() aborts on cancel)
                task.cancel()
            raise

    def generate(self, prompts: list[Any], params: list[Any], lora: Any) -> list[Any]:
        """vLLM's request outputs in prompt order; blocks the calling thread (not the engine's loop)."""
        return self._wait(self._all(prompts, params, lora))

    async def agenerate(self, prompts: list[Any], params: list[Any], lora: Any) -> list[Any]:
        """`generate` for callers on any event loop: the requests join the engine's running batch."""
        future = asyncio.run_coroutine_threadsafe(self._all(prompts, params, lora), self._loop)
        return await asyncio.wrap_future(future)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)

    def close(self) -> None:
        """Shut the engine core down (its child process exits) and stop the loop; a second call does nothing."""
        if self.llm is None:
            return
        atexit.unregister(self.close)

        async def shutdown() -> None:
            handler = getattr(self.llm, "output_handler", None)
            if handler is not None:  # stopped first: it would log the engine core's exit as a failure
                handler.cancel()
                await asyncio.gather(handler, return_exceptions=True)
            self.llm.shutdown()
            self.llm = None  # collected now (VLLMEngine.close runs gc), not at interpreter exit when
            # AsyncLLM.__del__ would call shutdown again with vLLM's module globals already gone

        try:
            self._wait(shutdown())
        finally:
            self._stop_loop()
