"""SARR rounds (RD-MLDG): MTCT, then R rounds of self-written chains filtered by the label.

Stage 0 trains MTCT on the teacher's chains. Each round r then lets the current model (the latest
LoRA adapter, served by the generation engine: vLLM with the adapter, or transformers) write
chains for the training images with the reasoning prompt; chains that are valid and conclude with
the label are kept (the generation pipeline's `kept` flag) and MTCT continues from the adapter on
them. Per-round statistics (kept %, accuracy) go to `sarr_rounds.jsonl` in the run directory.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from reasonbed.config import from_dict
from reasonbed.methods.sarr import SARRConfig
from reasonbed.train.config import TrainConfig
from reasonbed.train.driver import TrainResult, chains_by_image, open_run_dir, resolve, run_training

log = logging.getLogger(__name__)


def self_chains(cfg: TrainConfig, options: SARRConfig, adapter: Path, round_index: int, train_ids: set[str],
                output: Path) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Chains the current model writes for the training images, and the generation summary."""
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.generation.pipeline import run_generation
    from reasonbed.inference.base import EngineConfig, SamplingConfig
    from reasonbed.models.loading import resolve_model_path

    engine = EngineConfig(name=options.engine, model=replace(cfg.model, path=resolve_model_path(cfg.model)),
                          lora_path=str(adapter), batch_size=16, max_model_len=2048,
                          num_gpus=1.0 if cfg.scale.use_gpu else 0.0)
    sampling = SamplingConfig(n=options.candidates, temperature=options.temperature, max_tokens=options.max_tokens,
                              seed=cfg.seed + round_index)
    summary = run_generation(GenerationConfig(data=cfg.data, engine=engine, sampling=sampling, output=str(output),
                                              shard_size=256, ray_address=cfg.ray_address), image_ids=train_ids)
    return chains_by_image(str(output)), summary


def run_sarr(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> TrainResult:
    """MTCT then `rounds` SARR rounds; the run directory holds every stage and the final adapter."""
    from reasonbed.data.splits import lodo_split
    from reasonbed.provenance import provenance

    cfg, spec, _, index = resolve(cfg)
    options = from_dict(SARRConfig, cfg.method_config, prefix="method_config.")
    run_dir = open_run_dir(cfg)
    mtct = {"reasoning_weight": options.reasoning_weight}
    teacher = chains_by_image(cfg.chains)
    split = lodo_split(spec, index, cfg.test_domain, cfg.data.holdout_fraction, cfg.data.split_seed)
    # the images training uses: a held-out source domain (val_domain) gets no self-chains
    train_ids = {image_id for domain, ids in split.train.items() if domain != cfg.val_domain for image_id in ids}
    stage = replace(cfg, method="mtct", method_config=mtct, run_dir=str(run_dir / "round0"))
    result = run_training(stage, callbacks, chains_override=teacher)
    metrics = [{**row, "round": 0, "global_step": row["step"]} for row in result.metrics]
    rounds: list[dict[str, Any]] = [{"round": 0, "source": "teacher", **_accuracy(result)}]
    offset = metrics[-1]["step"] if metrics else 0
    for round_index in range(1, options.rounds + 1):
        round_dir = run_dir / f"round{round_index}"
        chains, summary = self_chains(cfg, options, result.adapter, round_index, train_ids, round_dir / "chains")
        if options.keep_teacher_chains:
            chains = {key: teacher.get(key, []) + chains.get(key, []) for key in set(teacher) | set(chains)}
        stage = replace(cfg, method="mtct", method_config=mtct, init_adapter=str(result.adapter),
                        optim=replace(cfg.optim, epochs=options.epochs_per_round, max_steps=0),
                        run_dir=str(round_dir))
        result = run_training(stage, callbacks, chains_override=chains)
        metrics += [{**row, "round": round_index, "global_step": offset + row["step"]} for row in result.metrics]
        offset = metrics[-1]["global_step"]
        rounds.append({"round": round_index, "source": "self", "kept_pct": summary["kept_pct"],
                       "valid_pct": summary["valid_pct"], "images_with_kept_chain": summary["images_with_kept_chain"],
                       "train_images": len(train_ids), **_accuracy(result)})
        log.info("SARR round %d: kept %.1f%% of self-chains, val_acc %.3f", round_index, summary["kept_pct"],
                 rounds[-1]["val_acc"])
    shutil.rmtree(run_dir / "adapter", ignore_errors=True)
    shutil.copytree(result.adapter, run_dir / "adapter")
    with open(run_dir / "metrics.jsonl", "w") as handle:
        handle.writelines(json.dumps(row, default=float) + "\n" for row in metrics)
    with open(run_dir / "sarr_rounds.jsonl", "w") as handle:
        handle.writelines(json.dumps(row, default=float) + "\n" for row in rounds)
    (run_dir / "provenance.json").write_text(json.dumps(provenance(cfg, index), indent=2))
    (run_dir / "done").write_text(json.dumps(metrics[-1] if metrics else {}, default=float))
    return TrainResult(run_dir, metrics, run_dir / "adapter")


def _accuracy(result: TrainResult) -> dict[str, float]:
    final = result.final
    return {"val_acc": float(final.get("val_acc", 0.0)), "test_acc": float(final.get("test_acc", 0.0))}
