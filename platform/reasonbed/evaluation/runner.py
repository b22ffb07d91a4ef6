"""Evaluate MLLMs out of distribution: zero-shot, in-context learning under shift, domain knowledge in
the prompt and the linear-probe diagnosis, for several models side by side (docs/evaluation.md).
`run_evaluation(cfg)` is the body of the `evaluate` command (reasonbed.cli.evaluate).

One machine (tiny model, synthetic benchmark, local Ray, CPU, vLLM):
    python jobs/evaluate_ood.py --smoke-test --output runs/ood-smoke
A base model against fine-tuned adapters (adapter dirs or training run dirs), on PACS, on a cluster:
    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/evaluate_ood.py --dataset pacs --data-root /data/PACS \
        --model OpenGVLab/InternVL3-8B-hf --family internvl3 --adapter /mnt/runs/mtct-sketch \
        --actors 4 --num-gpus 1 --output /mnt/runs/ood-pacs engine.max_model_len=8192
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

from reasonbed.config import ConfigError
from reasonbed.evaluation.config import EvalConfig

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
    items, nuisance, index = load_items(spec, root, cfg.data.storage_options)
    sampler = Sampler(items, spec.display_names, cfg.seed, spec.name, nuisance)
    rows, skipped = plan_rows(cfg, spec, sampler)  # too few images for k fails here, before anything runs
    remote = storage.is_remote(cfg.output)
    out = Path(tempfile.mkdtemp(prefix="reasonbed-ood-report-")) if remote else Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    store = ShardStore(storage.join(cfg.output, "predictions"))
    store.check_writable()
    record = provenance(cfg, index)  # storage options redacted
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
    if cfg.probe.enabled and cfg.engine.name != "openai" and len(spec.domains) > 1:
        pool = {domain: sampler.queries(domain, cfg.probe.max_images_per_domain) for domain in spec.domains}
        for model in models:
            features, feature_seconds[model.name] = domain_features(
                model, spec.name, pool, classification_prompt(spec.display_names), root,
                dict(cfg.data.storage_options), cfg.probe.batch_size)
            probe_rows += [{"model": model.name, **row} for row in fit_probes(
                features, domains, cfg.probe.features, len(spec.classes), cfg.probe.c, cfg.probe.max_iter, cfg.seed)]
    inputs = ReportInputs(cfg, spec, models, domains, predictions, probe_rows, feature_seconds, skipped, nuisance,
                          record, time.perf_counter() - started)
    report = write_report(inputs, out)
    if not remote:
        return str(report)
    fs, path = storage.filesystem(cfg.output)
    fs.put(f"{out}/", path, recursive=True)
    shutil.rmtree(out, ignore_errors=True)
    return storage.join(cfg.output, report.name)
