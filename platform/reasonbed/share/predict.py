"""Batch predictions over any folder of images on Ray Data, through the generation engines.

`run_predict(cfg)` lists the images (reasonbed.share.images), reads them in Ray Data tasks
(reasonbed.data.reader's loader), and answers them in a pool of engine actors - vLLM with the LoRA
adapter by default, or `hf`, or an `openai` endpoint (e.g. vLLM's server, docs/serving.md) - greedily,
with the prompt and parser training evaluates with (reasonbed.prompts.prompt_for /
answer_class). It writes one row per image to a parquet file (prompt, answer, parsed class, the chain
for the reasoning prompt) and, when the folder is labelled (DomainBed layout), per-domain accuracy to
`<output>.accuracy.json`. Class names and the prompt come from the config, else from an export's
reasonbed.json (reasonbed export), else from the named dataset.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from reasonbed import storage
from reasonbed.config import ConfigError
from reasonbed.inference.base import (
    EngineConfig,
    Request,
    SamplingConfig,
    check_standalone,
    engine_weights,
    warn_served_image_bounds,
)
from reasonbed.prompts import PROMPT_KINDS

log = logging.getLogger(__name__)
COLUMNS = ("image_id", "path", "domain", "label", "class_name", "prompt_kind", "prompt", "answer",
           "predicted_label", "predicted_class", "unparseable", "truncated", "correct", "chain", "model",
           "adapter", "engine", "error")


@dataclass
class PredictConfig:
    """Batch predictions of one model (and adapter) over a folder of images (docs/serving.md)."""

    data: str = ""  # folder of images, local or s3:// (empty with an offline dataset: that benchmark)
    dataset: str = ""  # a registered dataset: its class names, and labels when the folder has its layout
    classes: list[str] = field(default_factory=list)  # options in the prompt (default: export's, else dataset's)
    labels: Literal["auto", "none"] = "auto"  # auto: score a folder in DomainBed layout (domain/class/image)
    adapter: str = ""  # LoRA adapter dir, training run dir or `reasonbed export` dir ("" = none)
    # The engine (vllm, hf or openai) and its model: engine.model.path is --model (or an export's base model).
    engine: EngineConfig = field(default_factory=EngineConfig)
    prompt: Literal["auto", "direct", "reasoning"] = "auto"  # auto: the export's selection prompt, else direct
    max_tokens: int = 0  # completion limit (0: training evaluation's, 12 direct / 320 reasoning)
    output: str = ""  # the predictions parquet file (local or s3://); accuracy in <output>.accuracy.json
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options of data (no secrets: use env)
    ray_address: str = ""  # join this Ray cluster (empty: RAY_ADDRESS or a local Ray)

    def __post_init__(self) -> None:
        check_standalone(self.engine.name)
        if not self.output:
            raise ConfigError("output (--out): the predictions parquet file to write is required")
        if not self.data and not self.dataset:
            raise ConfigError("data (--data): a folder of images (local or s3://) is required")
        if self.max_tokens < 0:
            raise ConfigError(f"max_tokens: value {self.max_tokens!r} must be >= 0")
        if engine_weights(self.engine.name) == "none":
            raise ConfigError(f"engine.name: the {self.engine.name} engine has no model (it writes teacher chains), "
                              "it cannot predict; use vllm, hf or openai")


def _export_info(*paths: str) -> dict[str, Any]:
    """reasonbed.json of the first export among `paths` (adapter or merged model dirs), else {}."""
    for path in paths:
        if path and not storage.is_remote(path) and (Path(path).expanduser() / "reasonbed.json").is_file():
            return json.loads((Path(path).expanduser() / "reasonbed.json").read_text())
    return {}


@dataclass
class Resolved:
    """A predict run, resolved: data root, classes, prompt, engine config and the name of the model."""

    root: str
    classes: list[str]
    folders: list[str]  # the dataset's class folder names (empty: none named)
    prompt: str
    max_tokens: int
    engine: EngineConfig
    model_name: str


def resolve(cfg: PredictConfig) -> Resolved:
    """Classes, prompt, data root and the engine with its model and adapter (errors name the key)."""
    from reasonbed.data import catalog
    from reasonbed.data.specs import get_spec
    from reasonbed.evaluation.adapters import check_adapter, resolve_adapter, with_trained_image_bounds
    from reasonbed.models.loading import resolve_model
    from reasonbed.train.config import EvalConfig

    adapter = resolve_adapter(cfg.adapter) if cfg.adapter else ""
    info = _export_info(adapter, cfg.engine.model.path)
    model = cfg.engine.model
    if not model.path and info.get("base_model") and not info.get("merged"):
        model = replace(model, path=info["base_model"], family=info.get("family", model.family))
    elif info.get("family") and info["family"] != model.family:
        model = replace(model, family=info["family"])
    model = with_trained_image_bounds(model, adapter)  # the sizes training saw, unless engine.model sets its own
    spec = get_spec(cfg.dataset) if cfg.dataset else None
    classes = list(cfg.classes) or list(info.get("classes") or []) or (spec.display_names if spec else [])
    if len(classes) < 2:
        raise ConfigError("classes: the options to offer are unknown: set classes=[a,b,...], --dataset NAME, or "
                          "predict with an export (reasonbed export) whose reasonbed.json names them")
    prompt = cfg.prompt if cfg.prompt != "auto" else str(info.get("prompt") or "direct")
    if prompt not in PROMPT_KINDS:  # an export's reasonbed.json edited by hand
        raise ConfigError(f"prompt: {prompt!r} (from the export's reasonbed.json) is not one of "
                          f"{', '.join(PROMPT_KINDS)}")
    limits = EvalConfig()
    max_tokens = cfg.max_tokens or (limits.reasoning_max_tokens if prompt == "reasoning" else limits.direct_max_tokens)
    root = cfg.data or catalog.resolve(catalog.DataConfig(dataset=cfg.dataset))[1]
    if engine_weights(cfg.engine.name) == "served":
        name = cfg.engine.served_model or model.path
        warn_served_image_bounds(cfg.engine.name, model)
    else:
        model = resolve_model(model)  # the tiny model built, the family detected
        if adapter:
            check_adapter(adapter, model, model.path)
        name = Path(model.path.rstrip("/")).name + (f"+{Path(adapter).name}" if adapter else "")
    engine = replace(cfg.engine, model=model, lora_path=adapter, images_per_prompt=1)
    return Resolved(root, classes, list(spec.classes) if spec else [], prompt, max_tokens, engine, name)


class PredictActor:
    """A Ray Data actor: one engine; turns image rows into answered rows."""

    def __init__(self, engine_cfg: EngineConfig, classes: list[str], prompt: str, max_tokens: int, model_name: str,
                 secrets: dict[str, str] | None = None) -> None:
        import os

        import reasonbed  # noqa: F401 - installs the torchvision fix in this actor too
        from reasonbed.inference.base import build_engine
        from reasonbed.prompts import prompt_for

        os.environ.update(secrets or {})  # the endpoint key lives only in this actor's environment
        self.engine = build_engine(engine_cfg)
        self.engine_name, self.adapter, self.model_name = engine_cfg.name, engine_cfg.lora_path, model_name
        self.classes, self.kind, self.text = classes, prompt, prompt_for(prompt, classes)
        self.sampling = SamplingConfig(n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from PIL import Image

        from reasonbed.prompts import answer_class

        rows = [dict(zip(batch.keys(), values, strict=True)) for values in zip(*batch.values(), strict=True)]
        base = {"prompt_kind": self.kind, "prompt": self.text, "model": self.model_name, "adapter": self.adapter,
                "engine": self.engine_name}
        usable = [row for row in rows if not row["error"]]
        requests = [Request(Image.open(io.BytesIO(row["image"])).convert("RGB"), self.text,
                            {"id": str(row["id"]), "path": str(row["path"])}) for row in usable]
        answers = iter(self.engine.generate(requests, self.sampling) if requests else [])
        out = []
        for row in rows:
            entry = {**base, "image_id": str(row["id"]), "path": str(row["path"]), "domain": str(row["domain"]),
                     "label": int(row["label"]), "class_name": str(row["class_name"]), "error": str(row["error"])}
            if row["error"]:
                out.append({**entry, "answer": "", "predicted_label": -1, "predicted_class": "", "unparseable": True,
                            "truncated": False, "correct": None, "chain": ""})
                continue
            (completion, *_) = next(answers)
            predicted = answer_class(completion.text, self.kind, self.classes)
            out.append({**entry, "answer": completion.text, "predicted_label": -1 if predicted is None else predicted,
                        "predicted_class": "" if predicted is None else self.classes[predicted],
                        "unparseable": predicted is None, "truncated": completion.truncated,
                        "correct": None if entry["label"] < 0 else predicted == entry["label"],
                        "chain": completion.text if self.kind == "reasoning" else ""})
        return {name: [row[name] for row in out] for name in COLUMNS}


def accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-domain accuracy, unparseable and truncated fractions of labelled rows, and the mean over domains."""
    domains: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        domains.setdefault(row["domain"], []).append(row)
    table = {domain: {"images": len(group), "correct": sum(bool(row["correct"]) for row in group),
                      "acc": sum(bool(row["correct"]) for row in group) / len(group),
                      "unparseable": sum(bool(row["unparseable"]) for row in group) / len(group),
                      "truncated": sum(bool(row["truncated"]) for row in group) / len(group)}
             for domain, group in sorted(domains.items())}
    return {"domains": table, "mean_acc": sum(entry["acc"] for entry in table.values()) / len(table),
            "images": len(rows)}


def run_predict(cfg: PredictConfig) -> dict[str, Any]:
    """Answer every image; write the parquet (and the accuracy when labelled); returns a summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    from reasonbed.data.reader import load_images
    from reasonbed.inference.base import engine_secrets
    from reasonbed.ray_runtime import init_ray
    from reasonbed.share.images import list_images

    fs, path = storage.filesystem(cfg.output)
    if fs.exists(path):
        raise ConfigError(f"output: {cfg.output!r} exists; choose a new file (nothing is overwritten)")
    resolved = resolve(cfg)
    rows, labelled = list_images(resolved.root, resolved.classes, resolved.folders, cfg.storage_options, cfg.labels)
    log.info("predict: %d images under %s (%s), %s prompt, engine %s, model %s", len(rows), resolved.root,
             "labelled" if labelled else "unlabelled", resolved.prompt, resolved.engine.name, resolved.model_name)
    init_ray(address=cfg.ray_address or None)
    started = time.perf_counter()
    batch = resolved.engine.batch_size
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch, 200)))
    dataset = dataset.map_batches(load_images, fn_kwargs={"root": resolved.root, "storage_options": dict(
        cfg.storage_options), "verify": True}, batch_size=batch, num_cpus=0.25)
    dataset = dataset.map_batches(
        PredictActor, fn_constructor_kwargs={"engine_cfg": resolved.engine, "classes": resolved.classes,
                                             "prompt": resolved.prompt, "max_tokens": resolved.max_tokens,
                                             "model_name": resolved.model_name,
                                             "secrets": engine_secrets(resolved.engine)},
        batch_size=batch, compute=ray.data.ActorPoolStrategy(size=resolved.engine.actors),
        num_cpus=resolved.engine.num_cpus, num_gpus=resolved.engine.num_gpus or None, batch_format="numpy")
    answered = sorted((row for part in dataset.iter_batches(batch_size=None, batch_format="pandas")
                       for row in part.to_dict(orient="records")), key=lambda row: row["path"])
    table = pa.Table.from_pylist([{name: row[name] for name in COLUMNS} for row in answered])
    if "/" in path:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle)
    summary: dict[str, Any] = {"output": cfg.output, "images": len(answered), "labelled": labelled,
                               "unreadable": sum(1 for row in answered if row["error"]),
                               "seconds": round(time.perf_counter() - started, 1)}
    if labelled:
        scores = accuracy([row for row in answered if not row["error"]])
        with fs.open(path + ".accuracy.json", "w") as handle:
            handle.write(json.dumps({**scores, "prompt": resolved.prompt, "model": resolved.model_name,
                                     "adapter": resolved.engine.lora_path, "data": resolved.root}, indent=2))
        summary.update(accuracy=cfg.output + ".accuracy.json", mean_acc=scores["mean_acc"])
    return summary
