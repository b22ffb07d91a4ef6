"""The generation pipeline's Ray Data actors: image rows in, judged candidate rows out.

`GenerationActor` calls its engine's `generate` on one batch at a time. `AsyncGenerationActor` is
Ray Data's async callable class for engines with an async face (`runs_async`, vLLM's async engine by
default): Ray Data runs several of its calls at once on the actor's event loop, and up to
`engine.batches_in_flight` batches are in the engine together, so vLLM's continuous batching spans
Ray Data batches and the engine never waits for the slowest sequence of a batch. The pipeline
(`reasonbed.generation.pipeline`) picks the class.

A row's `seconds` is the engine time charged to it: with batches in flight, `EngineClock` shares each
interval among the batches in the engine then, so the rows' seconds add up to the time the engine was
busy (and `engine_tokens_per_s` in the summary stays the tokens per second of one engine).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from reasonbed.generation.validate import judge
from reasonbed.inference.base import EngineConfig, Request, SamplingConfig, build_engine
from reasonbed.prompts import PROMPT_VERSION, reasoning_prompt


def rationalization_prompt(class_names: Sequence[str], answer: str) -> str:
    """Label-conditioned prompt for the second pass (rows are marked prompt_kind=rationalization)."""
    return (f"{reasoning_prompt(class_names)} The correct option is {answer}: explain, from what the image "
            f"shows, why it is {answer}, in the same five stages, and conclude with {answer}.")


class EngineClock:
    """Engine time charged to the batches in an engine, shared fairly when several are in it at once.

    Every interval between two events (a batch enters or leaves) is charged to the batches in the
    engine then, in proportion to their weights (requests); so the charges add up to the time the
    engine held any batch, not k times it with k batches in flight.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._active: dict[int, list[float]] = {}  # token -> [weight, seconds charged so far]
        self._last = 0.0
        self._tokens = itertools.count()

    def _advance(self) -> None:
        now = self._clock()
        total = sum(weight for weight, _ in self._active.values())
        if total > 0:
            for entry in self._active.values():
                entry[1] += (now - self._last) * entry[0] / total
        self._last = now

    def start(self, weight: float) -> int:
        """A batch of `weight` (> 0) enters the engine; returns its token for `stop`."""
        if weight <= 0:
            raise ValueError(f"EngineClock.start: weight {weight!r} must be > 0")
        self._advance()
        token = next(self._tokens)
        self._active[token] = [float(weight), 0.0]
        return token

    def stop(self, token: int) -> float:
        """The batch leaves the engine; returns the seconds charged to it."""
        self._advance()
        return self._active.pop(token)[1]


class _RowBuilder:
    """Holds one engine; turns image rows into requests and completions into judged candidate rows."""

    def __init__(self, engine_cfg: EngineConfig, sampling: SamplingConfig, class_names: list[str],
                 data_root: str, storage_options: dict[str, Any], prompt_kind: str, pass_index: int,
                 candidate_offset: int, secrets: dict[str, str] | None = None) -> None:
        import os

        import reasonbed  # noqa: F401 - installs the torchvision fix in this actor too

        # The endpoint key travels as a constructor argument (never in runtime_env, which the
        # dashboard shows) and lives only in this actor's environment.
        os.environ.update(secrets or {})
        self.engine = build_engine(engine_cfg, data_root=data_root, storage_options=storage_options)
        self.engine_name, self.sampling, self.class_names = engine_cfg.name, sampling, class_names
        self.prompt_kind, self.pass_index, self.offset = prompt_kind, pass_index, candidate_offset

    def __del__(self) -> None:
        # Ray Data drops the instance when the actor exits gracefully: free the engine then (the async
        # vLLM engine's child process), not at interpreter exit with vLLM's modules half torn down.
        close = getattr(getattr(self, "engine", None), "close", None)
        if close is not None:
            close()

    def _prompt(self, label: int) -> str:
        if self.prompt_kind == "rationalization":
            return rationalization_prompt(self.class_names, self.class_names[label])
        return reasoning_prompt(self.class_names)

    def _base(self) -> dict[str, Any]:
        return {"teacher": self.engine.model_id, "engine": self.engine_name, "prompt_version": PROMPT_VERSION,
                "temperature": self.sampling.temperature, "top_p": self.sampling.top_p,
                "max_tokens": self.sampling.max_tokens, "seed": self.sampling.seed,
                "pass_index": self.pass_index, "prompt_kind": self.prompt_kind}

    def requests(self, batch: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Request], list[dict[str, Any]]]:
        """(rows of unreadable images, requests for the readable ones, the identity of each request's image)."""
        from PIL import Image

        rows = [dict(zip(batch.keys(), values, strict=True)) for values in zip(*batch.values(), strict=True)]
        out: list[dict[str, Any]] = []
        requests, usable = [], []
        for row in rows:
            identity = {"image_id": str(row["id"]), "path": str(row["path"]), "domain": str(row["domain"]),
                        "class_name": str(row["class_name"]), "label": int(row["label"]), "shard": str(row["shard"])}
            if row["error"]:
                out.append({**self._base(), **identity, "candidate": -1, "valid": False, "kept": False,
                            "predicted_label": -1, "reject_reason": "unreadable_image", "error": str(row["error"]),
                            "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0})
                continue
            image = Image.open(io.BytesIO(row["image"])).convert("RGB")
            requests.append(Request(image, self._prompt(identity["label"]),
                                    {"id": identity["image_id"], "path": identity["path"],
                                     "class_names": self.class_names, "candidate_offset": self.offset}))
            usable.append(identity)
        return out, requests, usable

    def rows(self, out: list[dict[str, Any]], usable: list[dict[str, Any]], completions: list[list[Any]],
             seconds: float) -> dict[str, list[Any]]:
        """The batch's output columns: `out` plus one judged row per completion (`seconds` shared evenly)."""
        base = self._base()
        per_candidate = seconds / max(1, sum(len(candidates) for candidates in completions))
        for identity, candidates in zip(usable, completions, strict=True):
            for index, completion in enumerate(candidates):
                out.append({**base, **identity, "candidate": self.offset + index, "chain": completion.text,
                            **judge(completion.text, self.class_names, identity["label"]),
                            "prompt_tokens": completion.prompt_tokens,
                            "completion_tokens": completion.completion_tokens, "seconds": per_candidate,
                            "error": ""})
        columns = sorted({key for row in out for key in row})
        return {column: [row.get(column) for row in out] for column in columns}


class GenerationActor(_RowBuilder):
    """A Ray Data actor that calls its engine's `generate` on one batch at a time."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out, requests, usable = self.requests(batch)
        completions: list[list[Any]] = []
        seconds = 0.0
        if requests:
            started = time.perf_counter()
            completions = self.engine.generate(requests, self.sampling)
            seconds = time.perf_counter() - started
        return self.rows(out, usable, completions, seconds)


class AsyncGenerationActor(_RowBuilder):
    """A Ray Data async actor: up to `batches_in_flight` batches in its engine at once (`agenerate`)."""

    def __init__(self, *args: Any, batches_in_flight: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = asyncio.Semaphore(batches_in_flight)  # bound to Ray Data's actor loop on first use
        self._clock = EngineClock()

    async def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out, requests, usable = self.requests(batch)
        completions: list[list[Any]] = []
        seconds = 0.0
        if requests:
            async with self._slots:
                token = self._clock.start(len(requests))
                try:
                    completions = await self.engine.agenerate(requests, self.sampling)
                finally:
                    seconds = self._clock.stop(token)
        return self.rows(out, usable, completions, seconds)
