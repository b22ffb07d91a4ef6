"""Evaluate MLLMs out of distribution: zero-shot, in-context learning under shift, domain knowledge in
the prompt and the linear-probe diagnosis, for several models side by side (docs/evaluation.md).
`run_evaluation(cfg)` is the body of the `evaluate` command (reasonbed.cli.evaluate).

The commands (one machine; a base model against fine-tuned adapters on a cluster) are in docs/evaluation.md.
`--dry-run` prints the resolved config and starts nothing. Anything else is a key=value override of
reasonbed.evaluation.config.EvalConfig, e.g. `shots=[0,2,4,8] conditions=[target,label_shift]
prompts=[direct] queries_per_domain=100 probe.enabled=false`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from reasonbed.config import ConfigError
from reasonbed.evaluation.config import EvalConfig
from reasonbed.inference.base import engine_weights

log = logging.getLogger(__name__)

def run_evaluation(cfg: EvalConfig) -> str:
    """Plan, answer (resumable), probe and report; returns where report.md is (a path or an s3:// URL).

    The prediction shards are written to `<output>/predictions` as they complete (local or object
    storage); the report is written locally, then uploaded when `output` is object storage.
    """
    import pyarrow as pa
    import yaml

    from reasonbed import storage
    from reasonbed.data import catalog
    from reasonbed.evaluation.features import domain_features
    from reasonbed.evaluation.plan import load_items, plan_model_shards, plan_rows, resolve_models
    from reasonbed.evaluation.probe import fit_probes
    from reasonbed.evaluation.prompts import knowledge_text
    from reasonbed.evaluation.report import ReportInputs, write_report
    from reasonbed.evaluation.run import SCHEMA, read_shard, run_model
    from reasonbed.evaluation.sampling import Sampler
    from reasonbed.generation.shards import ShardStore
    from reasonbed.prompts import classification_prompt
    from reasonbed.provenance import provenance
    from reasonbed.ray_runtime import init_ray

    started = time.perf_counter()
    if not cfg.output:
        raise ConfigError("output: a directory or s3:// URL for the report, the shards and the probe results")
    spec, root = catalog.resolve(cfg.data)
    domains = [spec.check_domain(domain) for domain in cfg.domains] or list(spec.domains)
    models = resolve_models(cfg)
    items, nuisance, checked = load_items(spec, root, cfg.data.storage_options, cfg.data.on_corrupt)  # before any run
    sampler = Sampler(items, spec.display_names, cfg.seed, spec.name, nuisance)
    rows, skipped = plan_rows(cfg, spec, sampler)  # too few images for k fails here, before anything runs
    remote = storage.is_remote(cfg.output)
    out = Path(tempfile.mkdtemp(prefix="reasonbed-ood-report-")) if remote else Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    store = ShardStore(storage.join(cfg.output, "predictions"))
    store.check_writable()
    record = provenance(cfg, checked.rows)  # storage options redacted
    if checked.skipped:  # data.on_corrupt=skip: said in the report and in provenance.json
        record["skipped_inputs"] = checked.record()
    (out / "config.yaml").write_text(yaml.safe_dump(record["config"], sort_keys=False))
    init_ray(address=cfg.ray_address or None)
    max_tokens = {"direct": cfg.max_tokens_direct, "reasoning": cfg.max_tokens_reasoning}
    tables = []
    for model in models:
        shards = plan_model_shards(rows, model.key, cfg.shard_size)
        todo = [shard for shard in shards if not store.is_complete(shard)]
        log.info("%s: %d queries in %d shards, %d already complete", model.name, len(rows), len(shards),
                 len(shards) - len(todo))
        run_model(model, todo, store, spec.display_names, knowledge_text(spec), max_tokens, cfg.seed, root,
                  dict(cfg.data.storage_options))
        tables += [read_shard(store, shard) for shard in shards]  # the planned ones only, never stale files
    predictions = pa.concat_tables(tables).select(SCHEMA.names).to_pandas()
    probe_rows, feature_seconds = [], {}
    if cfg.probe.enabled and engine_weights(cfg.engine.name) == "local" and len(spec.domains) > 1:
        pool = {domain: sampler.queries(domain, cfg.probe.max_images_per_domain) for domain in spec.domains}
        for model in models:
            features, feature_seconds[model.name] = domain_features(
                model, spec.name, pool, classification_prompt(spec.display_names), root,
                dict(cfg.data.storage_options), cfg.probe.batch_size)
            probe_rows += [{"model": model.name, **row} for row in fit_probes(
                features, domains, cfg.probe.features, len(spec.classes), cfg.probe.c, cfg.probe.max_iter)]
    inputs = ReportInputs(cfg, spec, models, domains, predictions, probe_rows, feature_seconds, skipped, nuisance,
                          record, time.perf_counter() - started)
    report = write_report(inputs, out)
    if cfg.tracking.enabled:
        _track(cfg, spec.name, predictions, out, record["config"],
               Path(tempfile.gettempdir()) if remote else out)
    if not remote:
        return str(report)
    fs, path = storage.filesystem(cfg.output)
    fs.put(f"{out}/", path, recursive=True)
    shutil.rmtree(out, ignore_errors=True)
    return storage.join(cfg.output, report.name)


def _track(cfg: EvalConfig, dataset: str, predictions: Any, out: Path, config: dict[str, Any],
           directory: Path) -> None:
    """Log the evaluation to MLflow / W&B: its config, accuracy per (model, prompt, condition, k), the report."""
    from reasonbed.tracking import log_run

    accuracy = predictions.groupby(["model", "prompt", "condition", "k"])["correct"].mean()
    metrics = {f"acc/{model}/{prompt}/{condition}/k{k}": float(value)
               for (model, prompt, condition, k), value in accuracy.items()}
    log_run(cfg.tracking, f"evaluate-{dataset}", config, [{"step": 0, **metrics}],
            [out / name for name in ("report.md", "report.html", "config.yaml")], kind="evaluation",
            directory=directory, default_experiment=f"{dataset}-ood")
