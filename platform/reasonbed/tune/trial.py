"""One Tune trial: a driver function that builds its own Ray Train run (the Ray Train V2 pattern).

The trial turns its sampled hyperparameters into TrainConfig overrides on top of the sweep's fixed
values and its trial seed's split and training seeds (reasonbed.tune.seeds), writes `trial.json`
(what it is, its seeds) and `provenance.json` (config, code and package versions,
data manifest hash) into its trial directory first, then trains: on Ray Train with a TuneReportCallback so every
`ray.train.report` reaches Tune (ASHA) and the Optuna study; in the trial's own process (`scale.backend=local`) its
reports go to Tune directly.

With `lodo_selection`, a trial that trains to its end (ASHA did not stop it) then trains once more per
source domain V with V also held out (`val_domain=V`, same hyperparameters, nothing reported to Tune)
and writes `lodo.json` (held-out accuracy per V, seconds) to its folder in the sweep storage: what
leave-one-domain-out selection reads. Rerunning a restored trial resumes those runs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from reasonbed import storage
from reasonbed.config import flatten, format_override, load, to_dict
from reasonbed.tune.persist import write_json
from reasonbed.tune.seeds import TrialSeeds, trial_seeds

DRAW_KEY = "_draw"  # set by optuna_search.StudySearch: the Optuna trial number (0 = the defaults), the draw order
RESERVED = {"_note", DRAW_KEY}  # config keys that are no TrainConfig values


WHOLE_VALUES = ("method_config", "storage_options", "engine_kwargs")  # dict-valued config fields, set whole


def seeds_of(sweep: Any, seed: int) -> TrialSeeds:
    """The split, sampler and training seeds trial seed `seed` of the sweep sets (reasonbed.tune.seeds)."""
    return trial_seeds(seed, split_seed=sweep.data.split_seed, sampler_seed=sweep.sampler_seed)


def trial_train_config(config: dict[str, Any], sweep: Any, method: str, test_domain: str, seed: int,
                       chains: str) -> Any:
    """The TrainConfig of a trial: sweep data + fixed values + sampled hyperparameters, with the split and
    training seeds of trial seed `seed` (they override any data.split_seed / seed in the sweep's train values)."""
    from reasonbed.train.config import TrainConfig

    seeds = seeds_of(sweep, seed)
    base = {"method": method, "test_domain": test_domain, "chains": chains,
            "data": to_dict(sweep.data), "ray_address": sweep.ray_address}
    overrides = [format_override(key, value) for key, value in flatten(sweep.train, leaves=WHOLE_VALUES).items()]
    overrides += [format_override(key, value) for key, value in config.items() if key not in RESERVED]
    overrides += [f"data.split_seed={seeds.split_seed}", f"seed={seeds.train_seed}"]
    return load(TrainConfig, overrides=overrides, base=base)


def run_provenance(cfg: Any, spec: Any, root: str) -> dict[str, Any]:
    """The provenance record of a trial or zero-shot run: reasonbed.provenance plus the inputs skipped
    (data.on_corrupt=skip) - the same image check the run itself makes, cached, so it costs no decoding - and
    the training images left out for want of a usable kept chain (as the run itself will leave them out)."""
    from reasonbed.data.reader import check_images, scan
    from reasonbed.methods.base import method_class
    from reasonbed.provenance import provenance
    from reasonbed.train.driver import chains_by_image, dropped_examples, prepare_examples

    checked = check_images(spec, root, scan(spec, root, storage_options=cfg.data.storage_options),
                           cfg.data.storage_options, cfg.data.on_corrupt)
    skipped = checked.record()
    if cfg.chains and method_class(cfg.method).needs_chains:  # training images without a usable kept chain
        chains = chains_by_image(cfg.chains, allow_label_conditioned=cfg.allow_label_conditioned)
        examples, rows = prepare_examples(cfg, spec, checked.rows, chains)
        skipped["dropped_examples"] = dropped_examples(rows, examples)
    return {**provenance(cfg, checked.rows), "skipped_inputs": skipped}


def run_trial(config: dict[str, Any], sweep: Any, method: str, test_domain: str, seed: int, chains: str,
              study: str, sweep_uri: str) -> None:
    """Tune function trainable (bound with tune.with_parameters)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    import reasonbed  # noqa: F401 - torchvision fix in the trial process
    from reasonbed.data import catalog
    from reasonbed.train.run import run

    context = tune.get_context()
    trial_dir = Path(context.get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = trial_train_config(config, sweep, method, test_domain, seed, chains)
    train_storage = (storage.join(sweep_uri, "train", context.get_trial_id()) if storage.is_remote(sweep_uri)
                     else str(trial_dir / "run" / "ray"))
    cfg = replace(cfg, run_dir=str(trial_dir / "run"), name=context.get_trial_id(), storage_path=train_storage)
    spec, root = catalog.resolve(cfg.data)
    trial_uri = storage.join(sweep_uri, study, trial_dir.name)  # this trial's folder in the sweep storage
    files = {
        "trial.json": {
            "study": study, "method": method, "test_domain": test_domain, "seed": seed,
            "seeds": seeds_of(sweep, seed).to_dict(), "draw": config.get(DRAW_KEY),
            "trial_id": context.get_trial_id(), "hparams": {k: v for k, v in config.items() if k not in RESERVED},
            "cpus": cfg.scale.num_workers * cfg.scale.cpus_per_worker,
            "gpus": cfg.scale.num_workers if cfg.scale.use_gpu else 0, "chains": chains},
        "provenance.json": run_provenance(cfg, spec, root),
    }
    for file_name, content in files.items():  # in the sweep storage now, not at Tune's next artifact sync
        (trial_dir / file_name).write_text(json.dumps(content, indent=2, default=str))
        write_json(storage.join(trial_uri, file_name), content)
    # Ray Train's reports reach Tune through the callback's queue, an actor of its own that the trial polls every
    # 0.2 s: a trial that trains in its own process (`scale.backend=local`) reports to Tune itself and needs neither.
    callbacks = (TuneReportCallback(),) if cfg.scale.backend == "ray" else ()
    result = run(cfg, callbacks=callbacks)
    if not result.trained and result.final:  # a restored trial whose run had finished: Tune still needs its result
        tune.report(result.final)
    if sweep.lodo_selection:
        lodo_runs(cfg, spec, result.final, trial_dir, trial_uri, sweep_uri, context.get_trial_id())


def lodo_runs(cfg: Any, spec: Any, final: dict[str, Any], trial_dir: Path, trial_uri: str, sweep_uri: str,
              trial_id: str) -> dict[str, Any]:
    """One run per source domain held out as well; writes and returns lodo.json's content."""
    import time

    from reasonbed.train.run import run

    sources = [domain for domain in spec.domains if domain != cfg.test_domain]
    record: dict[str, Any] = {"sources": sources, "heldout_acc": {}, "seconds": 0.0,
                              "main_step": final.get("step"), "main_test_acc": final.get("test_acc")}
    for domain in sources:
        started = time.perf_counter()
        name = f"{trial_id}-v{domain}"
        run_dir = trial_dir / "lodo" / domain
        train_storage = (storage.join(sweep_uri, "train", name) if storage.is_remote(sweep_uri)
                         else str(run_dir / "ray"))
        held = run(replace(cfg, val_domain=domain, run_dir=str(run_dir), name=name, storage_path=train_storage))
        if "heldout_acc" not in held.final:
            raise RuntimeError(f"LODO run {name}: no heldout_acc in its final report ({sorted(held.final)})")
        record["heldout_acc"][domain] = float(held.final["heldout_acc"])
        record["seconds"] += time.perf_counter() - started
    write_json(storage.join(trial_uri, "lodo.json"), record)
    return record
