"""Evaluate MLLMs out of distribution: zero-shot, in-context learning under shift, domain knowledge in
the prompt and the linear-probe diagnosis, for several models side by side (docs/evaluation.md).

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

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from reasonbed.config import ConfigError
from reasonbed.evaluation.config import EvalConfig

log = logging.getLogger(__name__)

FLAGS = {
    "dataset": "data.dataset", "data_root": "data.root", "output": "output", "engine": "engine.name",
    "actors": "engine.actors", "num_gpus": "engine.num_gpus", "batch_size": "engine.batch_size",
    "queries": "queries_per_domain", "seed": "seed",
}
SMOKE = {
    "data": {"dataset": "synthetic_shapes", "images_per_class": 4},
    "engine": {"name": "vllm", "batch_size": 16, "max_model_len": 2048},
    "shots": [0, 2], "queries_per_domain": 6, "max_tokens_direct": 8, "max_tokens_reasoning": 48,
}


def run_evaluation(cfg: EvalConfig) -> Path:
    """Plan, answer (resumable), probe and report; returns the path of report.md."""
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
    if not cfg.output or storage.is_remote(cfg.output):
        raise ConfigError(f"output: value {cfg.output!r} must be a local directory (report, shards, probe results)")
    spec, root = catalog.resolve(cfg.data)
    domains = [spec.check_domain(domain) for domain in cfg.domains] or list(spec.domains)
    models = resolve_models(cfg)
    items, nuisance, index = load_items(spec, root, cfg.data.storage_options)
    sampler = Sampler(items, spec.display_names, cfg.seed, spec.name, nuisance)
    rows, skipped = plan_rows(cfg, spec, sampler)  # too few images for k fails here, before anything runs
    out = Path(cfg.output)
    store = ShardStore(str(out / "predictions"))
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
    return write_report(inputs, out)


def _model_overrides(args: argparse.Namespace) -> list[str]:
    """--model/--family/--adapter as one `models=[...]` override: the base model, then one entry per adapter."""
    if not (args.model or args.family or args.adapter):
        return []
    base = {"model": {"path": args.model or "", "family": args.family or "qwen2_vl"}}
    entries = [base, *({**base, "adapter": adapter} for adapter in args.adapter or [])]
    return [f"models={json.dumps(entries)}"]


def main(argv: Sequence[str] | None = None) -> int:
    from reasonbed.config import load, to_dict
    from reasonbed.jobcli import flag_parser

    parser = flag_parser(__doc__, FLAGS)
    parser.add_argument("--model", default=None, help="base model: hub id or local dir (sets models)")
    parser.add_argument("--family", default=None, help="model family of --model (default qwen2_vl)")
    parser.add_argument("--adapter", action="append", default=[],
                        help="LoRA adapter dir or training run dir, compared with the base model (repeatable)")
    parser.add_argument("--shots", default=None, help="comma-separated k values, e.g. 0,2,4,8 (sets shots)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and start nothing")
    args = parser.parse_args(argv)
    from_flags = [f"{key}={getattr(args, dest)}" for dest, key in FLAGS.items() if getattr(args, dest) is not None]
    if args.shots:
        from_flags.append(f"shots=[{args.shots}]")
    cfg = load(EvalConfig, args.config, [*from_flags, *_model_overrides(args), *args.overrides],
               base=SMOKE if args.smoke_test else None)
    if args.smoke_test and not cfg.output:
        cfg = replace(cfg, output=tempfile.mkdtemp(prefix="reasonbed-ood-"))
    if args.dry_run:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    report = run_evaluation(cfg)
    print(json.dumps({"report": str(report), "html": str(report.with_name("report.html"))}))
    return 0
