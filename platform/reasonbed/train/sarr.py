"""SARR rounds (RD-MLDG): MTCT, then R rounds of self-written chains filtered by the label.

Stage 0 trains MTCT on the teacher's chains. Each round r then lets the current model (the latest
LoRA adapter, served by the generation engine: vLLM with the adapter, or transformers) write chains
for the training images with the reasoning prompt; chains that are valid and conclude with the label
are kept (the generation pipeline's `kept` flag) and MTCT continues from the adapter on them.

Every stage is a training run of its own: its own run directory (`round<r>/`) and its own Ray Train
name (`<run name>-round<r>`), so no stage can restore another stage's checkpoints. A stage's adapter
travels through the run's storage: the next stage's workers (`init_adapter`) and the self-chain engine
actors read it from the previous stage's final checkpoint (`s3://`/`gs://` on a cluster), never from
the driver's disk. Per-round
statistics (kept %, accuracy) go to `sarr_rounds.jsonl`; `metrics.jsonl` holds every stage's reports
with `round` and `global_step`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from reasonbed import storage
from reasonbed.methods.sarr import SARRConfig, SARRMethod
from reasonbed.train.checkpointing import ADAPTER_DIR
from reasonbed.train.config import TrainConfig
from reasonbed.train.driver import chains_by_image, resolve_checked, run_training
from reasonbed.train.rundir import RunDir, TrainResult

log = logging.getLogger(__name__)


def stage_adapter(result: TrainResult) -> str:
    """Where the next stage reads a finished stage's adapter: its final checkpoint in the run's storage (a URI
    on a cluster, readable from every node), else the driver's copy (a run without reports)."""
    checkpoint = result.final.get("checkpoint")
    return storage.join(str(checkpoint), ADAPTER_DIR) if checkpoint else str(result.adapter)


def self_chain_engine(cfg: TrainConfig, options: SARRConfig, adapter: str) -> Any:
    """The engine that writes a round's self-chains with `adapter`.

    On scale.backend=local the engine and its image loaders run on the run's own CPU (ScaleConfig.engine_cpus).
    On Ray Train the worker group has ended when the engine starts, and the engine and one of its image loaders
    share the CPU the workers held (the engine asks for 1 - LOADER_CPUS): with a whole CPU per engine, two SARR
    trials of parallel studies on 2 CPUs generating at once held both, and their loaders waited forever
    (reproduced).
    """
    from reasonbed.generation.pipeline import LOADER_CPUS
    from reasonbed.inference.base import EngineConfig
    from reasonbed.models.loading import resolve_model

    return EngineConfig(name=options.engine, model=resolve_model(cfg.model), lora_path=adapter, batch_size=16,
                        max_model_len=2048, num_cpus=cfg.scale.engine_cpus(1.0 - LOADER_CPUS),
                        num_gpus=1.0 if cfg.scale.use_gpu else 0.0, resources=dict(cfg.scale.engine_resources))


def self_chains(cfg: TrainConfig, options: SARRConfig, adapter: str, round_index: int, train_ids: set[str],
                output: Path) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Chains the current model (`adapter`: a URI in the run's storage or a directory) writes for the training
    images, and the generation summary."""
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.generation.pipeline import run_generation
    from reasonbed.inference.base import SamplingConfig

    engine = self_chain_engine(cfg, options, adapter)
    sampling = SamplingConfig(n=options.candidates, temperature=options.temperature, max_tokens=options.max_tokens,
                              seed=cfg.seed + round_index)
    summary = run_generation(GenerationConfig(data=cfg.data, engine=engine, sampling=sampling, output=str(output),
                                              shard_size=256, ray_address=cfg.ray_address), image_ids=train_ids)
    return chains_by_image(str(output)), summary


def stage_config(cfg: TrainConfig, options: SARRConfig, round_index: int, **changes: Any) -> TrainConfig:
    """The MTCT training run of one SARR stage: its own run directory and Ray Train name."""
    return replace(cfg, method="mtct", method_config={"reasoning_weight": options.reasoning_weight},
                   run_dir=str(Path(cfg.run_dir).resolve() / f"round{round_index}"),
                   name=f"{cfg.run_name}-round{round_index}", **changes)


def run_sarr(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> TrainResult:
    """MTCT then `rounds` SARR rounds; the run directory holds every stage and the final adapter."""
    from reasonbed.data.splits import lodo_split

    cfg, spec, _, checked = resolve_checked(cfg)
    index = checked.rows
    options = SARRMethod.parse_options(cfg.method_config)
    run = RunDir.open(cfg)
    if run.done:
        return run.result()
    teacher = chains_by_image(cfg.chains, allow_label_conditioned=cfg.allow_label_conditioned)
    split = lodo_split(spec, index, cfg.test_domain, cfg.data.holdout_fraction, cfg.data.split_seed)
    # the images training uses: a held-out source domain (val_domain) gets no self-chains
    train_ids = {image_id for domain, ids in split.train.items() if domain != cfg.val_domain for image_id in ids}
    result = run_training(stage_config(cfg, options, 0), callbacks, chains_override=teacher)
    metrics = [{**row, "round": 0, "global_step": row["step"]} for row in result.metrics]
    rounds: list[dict[str, Any]] = [{"round": 0, "source": "teacher", **_accuracy(result)}]
    for round_index in range(1, options.rounds + 1):
        offset = metrics[-1]["global_step"] if metrics else 0
        chains, summary = self_chains(cfg, options, stage_adapter(result), round_index, train_ids,
                                      run.path / f"round{round_index}-chains")
        if options.keep_teacher_chains:
            chains = {key: teacher.get(key, []) + chains.get(key, []) for key in set(teacher) | set(chains)}
        stage = stage_config(cfg, options, round_index, init_adapter=stage_adapter(result), min_chain_coverage=0.0,
                             optim=replace(cfg.optim, epochs=options.epochs_per_round, max_steps=0))
        result = run_training(stage, callbacks, chains_override=chains)
        metrics += [{**row, "round": round_index, "global_step": offset + row["step"]} for row in result.metrics]
        rounds.append({"round": round_index, "source": "self", "kept_pct": summary["kept_pct"],
                       "valid_pct": summary["valid_pct"], "images_with_kept_chain": summary["images_with_kept_chain"],
                       "train_images": len(train_ids), "steps": result.final.get("step", 0), **_accuracy(result)})
        log.info("SARR round %d: kept %.1f%% of self-chains (%d images), val_acc %.3f", round_index,
                 summary["kept_pct"], summary["images_with_kept_chain"], rounds[-1]["val_acc"])
    with open(run.path / "sarr_rounds.jsonl", "w") as handle:
        handle.writelines(json.dumps(row, default=float) + "\n" for row in rounds)
    return run.write_final(metrics, result.adapter, index, checked.record())


def _accuracy(result: TrainResult) -> dict[str, float]:
    final = result.final
    return {"val_acc": float(final.get("val_acc", 0.0)), "test_acc": float(final.get("test_acc", 0.0))}
