"""The evaluation run on Ray Data: plan rows -> engine actor pool -> answered rows in parquet shards.

Per model, the rows of its incomplete shards become a Ray dataset; a pool of `engine.actors` actors
(`map_batches` with a callable class), each holding one engine with the model (and adapter), builds
each query's prompt - its in-context examples as earlier turns, then the query - and answers it
greedily; the driver writes each shard the moment all its queries are in (whole files, see
`reasonbed.generation.shards`). A rerun skips complete shards, so an interrupted run resumes. Images
are read in the actors, with a per-actor cache: in-context examples recur across queries.
"""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import pyarrow as pa

from reasonbed import storage
from reasonbed.evaluation.plan import ResolvedModel
from reasonbed.evaluation.prompts import example_prompt, query_prompt
from reasonbed.generation.shards import Shard, ShardStore
from reasonbed.inference.base import EngineConfig, Example, Request, SamplingConfig, build_engine
from reasonbed.prompts import answer_class

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("model", pa.string()), ("model_key", pa.string()), ("image_id", pa.string()), ("path", pa.string()),
    ("domain", pa.string()), ("label", pa.int64()), ("class_name", pa.string()), ("nuisance", pa.string()),
    ("prompt", pa.string()), ("condition", pa.string()), ("k", pa.int64()), ("cue_label", pa.int64()),
    ("examples", pa.string()), ("completion", pa.string()), ("predicted_label", pa.int64()),
    ("correct", pa.bool_()), ("unparseable", pa.bool_()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("seconds", pa.float64()), ("engine", pa.string()),
])


class EvalActor:
    """A Ray Data actor: one engine; turns plan rows into answered rows."""

    def __init__(self, engine_cfg: EngineConfig, model_name: str, model_key: str, class_names: list[str],
                 knowledge: str, max_tokens: dict[str, int], seed: int, data_root: str,
                 storage_options: dict[str, Any], secrets: dict[str, str] | None = None) -> None:
        import os

        import reasonbed  # noqa: F401 - installs the torchvision fix in this actor too

        os.environ.update(secrets or {})  # the endpoint key lives only in this actor's environment
        self.engine = build_engine(engine_cfg, data_root=data_root, storage_options=storage_options)
        self.engine_name, self.model_name, self.model_key = engine_cfg.name, model_name, model_key
        self.class_names, self.knowledge, self.max_tokens, self.seed = class_names, knowledge, max_tokens, seed
        self.fs, self.base = storage.filesystem(data_root, storage_options)
        self.images: dict[str, Any] = {}

    def _image(self, path: str) -> Any:
        from PIL import Image

        if path not in self.images:
            if len(self.images) > 4096:
                self.images.clear()
            self.images[path] = Image.open(io.BytesIO(self.fs.cat_file(f"{self.base}/{path}"))).convert("RGB")
        return self.images[path]

    def _request(self, row: dict[str, Any]) -> Request:
        examples = [Example(self._image(example["path"]), example_prompt(self.class_names),
                            self.class_names[example["shown"]]) for example in json.loads(row["examples"])]
        knowledge = self.knowledge if row["condition"] == "knowledge" else ""
        return Request(self._image(row["path"]), query_prompt(row["prompt"], self.class_names, knowledge),
                       {"id": row["image_id"], "path": row["path"], "class_names": self.class_names}, examples)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = [dict(zip(batch.keys(), values, strict=True)) for values in zip(*batch.values(), strict=True)]
        out: list[dict[str, Any]] = []
        for kind in sorted({str(row["prompt"]) for row in rows}):
            chunk = [row for row in rows if row["prompt"] == kind]
            sampling = SamplingConfig(n=1, temperature=0.0, top_p=1.0, max_tokens=self.max_tokens[kind],
                                      seed=self.seed)
            started = time.perf_counter()
            completions = self.engine.generate([self._request(row) for row in chunk], sampling)
            seconds = (time.perf_counter() - started) / max(1, len(chunk))
            for row, (completion, *_) in zip(chunk, completions, strict=True):
                predicted = answer_class(completion.text, kind, self.class_names)
                out.append({
                    **{name: row[name] for name in (*SCHEMA.names, "shard") if name in row}, "model": self.model_name,
                    "model_key": self.model_key, "completion": completion.text,
                    "predicted_label": -1 if predicted is None else predicted,
                    "correct": predicted == int(row["label"]), "unparseable": predicted is None,
                    "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                    "seconds": seconds, "engine": self.engine_name})
        return {name: [row.get(name) for row in out] for name in (*SCHEMA.names, "shard")}


def _secrets(engine: EngineConfig) -> dict[str, str]:
    """The openai engine's API key from the driver's environment, for the engine actors."""
    from reasonbed.inference.base import engine_secrets

    return engine_secrets(engine)


def run_model(model: ResolvedModel, shards: list[Shard], store: ShardStore, class_names: list[str],
              knowledge: str, max_tokens: dict[str, int], seed: int, data_root: str,
              storage_options: dict[str, Any]) -> int:
    """Answer the given shards' rows with `model`; returns the number of shards written."""
    import ray.data

    if not shards:
        return 0
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards fill in order: an interruption loses little
    rows = [{**row, "shard": shard.name} for shard in shards for row in shard.rows]
    expected = {shard.name: shard.image_ids for shard in shards}
    batch_size = model.engine.batch_size
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 200)))
    dataset = dataset.map_batches(
        EvalActor,
        fn_constructor_kwargs={"engine_cfg": model.engine, "model_name": model.name, "model_key": model.key,
                               "class_names": class_names, "knowledge": knowledge, "max_tokens": max_tokens,
                               "seed": seed, "data_root": data_root, "storage_options": storage_options,
                               "secrets": _secrets(model.engine)},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=model.engine.actors),
        batch_format="numpy", **model.engine.actor_options(),
    )
    pending: dict[str, list[dict[str, Any]]] = {name: [] for name in expected}
    written, started = 0, time.perf_counter()
    for batch in dataset.iter_batches(batch_size=None, batch_format="pandas"):
        for row in batch.to_dict(orient="records"):
            name = row.pop("shard")
            pending[name].append(row)
            if len(pending[name]) == len(expected[name]):
                store.write_shard(name, pa.Table.from_pylist(pending.pop(name), schema=SCHEMA))
                written += 1
                elapsed = time.perf_counter() - started
                log.info("%s: shard %d/%d written: %s (%.0f s elapsed)", model.name, written, len(shards), name,
                         elapsed)
    if pending:
        raise RuntimeError(f"evaluation of {model.name} ended with incomplete shards: {sorted(pending)[:5]}")
    return written


def read_shard(store: ShardStore, shard: Shard) -> pa.Table:
    """One written shard's answered rows."""
    import pyarrow.parquet as pq

    with store.fs.open(store.path(shard.name), "rb") as handle:
        return pq.read_table(handle)
