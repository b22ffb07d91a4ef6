"""The LODO sweep driver: one Tune experiment and Optuna study per (method, test domain, seed).

The objective is `val_acc` (training-domain validation: the source domains' held-out parts), never
the test domain. Each study runs an Optuna sampler - TPE (default) or random search (`search=random`)
- seeded per trial seed and persistent in an RDB (SQLite by default), through Ray Tune, with ASHA
stopping weak trials early on training examples seen (or no early stopping: `asha.enabled=false`;
with `search=random` that is DomainBed's protocol); every trial launches its own Ray Train run. Then
the base model is evaluated once per (test domain, trial seed) for the zero-shot row
(reasonbed.tune.zero_shot). The sweep folder is named by a hash of its config, each finished study
writes a `done` marker, and an interrupted sweep resumes with `Tuner.restore` when the same command
is run again.

One driver per sweep: the driver holds the sweep's lease (reasonbed.tune.lease) from start to end.
Ctrl+C or SIGTERM stops the whole sweep (reasonbed.tune.control): the running studies save their state,
no new study starts, and `SweepInterrupted` says where the state is. Everything a report needs lands in
the sweep storage while the sweep runs (reasonbed.tune.persist), and `after_study` (the CLI's report
refresh) runs after every finished study.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from reasonbed import storage
from reasonbed.config import ConfigError, to_dict
from reasonbed.data import catalog
from reasonbed.redaction import redact, redact_url
from reasonbed.tune.config import ASHA_TIME_ATTR, NOT_HASHED, SweepConfig, protocol
from reasonbed.tune.control import (
    SweepControl,
    SweepInterrupted,
    stop_flag,
    tune_interrupted,
    watch_stop_flag,
)
from reasonbed.tune.lease import Lease
from reasonbed.tune.persist import backup_study_db, restore_study_db, study_backup_callback, write_json
from reasonbed.tune.spaces import load_space
from reasonbed.tune.trial import seeds_of

log = logging.getLogger(__name__)


def sweep_name(cfg: SweepConfig, dataset: str) -> str:
    """`name`, or the dataset and a hash of the config (not of NOT_HASHED keys - `tracking`, `lease_expiry_s`:
    where results are logged or how the driver runs changes nothing the sweep computes, so an interrupted
    sweep resumes with them changed)."""
    if cfg.name:
        return cfg.name
    hashed = {key: value for key, value in to_dict(cfg).items() if key not in NOT_HASHED}
    digest = hashlib.sha1(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{dataset}-{digest}"


def study_name(method: str, test_domain: str, seed: int) -> str:
    return f"{method}-{test_domain.replace(' ', '_')}-s{seed}"


def check_resources(cfg: SweepConfig, per_trial_cpus: float, per_trial_gpus: float) -> None:
    """Refuse a sweep whose concurrent trials cannot all get their workers (it would hang)."""
    import ray

    if cfg.allow_autoscaling:
        return
    total = ray.cluster_resources()
    concurrent = cfg.max_concurrent_trials * cfg.studies_in_parallel
    for name, need in (("CPU", per_trial_cpus), ("GPU", per_trial_gpus)):
        have = float(total.get(name, 0.0))
        if need and concurrent * need > have:
            raise ConfigError(
                f"max_concurrent_trials {cfg.max_concurrent_trials} x studies_in_parallel {cfg.studies_in_parallel}"
                f" x {need:g} {name} per trial = {concurrent * need:g} {name}, but the cluster has {have:g} {name};"
                f" lower the concurrency or set allow_autoscaling=true on an autoscaling cluster")


# What the driver function of a trial on Ray Train reserves: no CPU, and one byte of memory because Tune refuses
# a bundle without resources. Any CPU fraction would break the whole-CPU bundles of the Ray Train workers: with
# 0.01 CPU per trial, two parallel studies on 2 CPUs left 0.98 CPU free, so the second study's worker group waited
# for the first study's trial to end (and failed Ray Train's 60 s worker-group start timeout, then retried).
WAITING_TRIAL = {"CPU": 0, "memory": 1}


def trial_resources(cfg: SweepConfig, method: str, test_domain: str, seed: int) -> dict[str, float]:
    """What a trial's driver function reserves: no CPU when it waits on its Ray Train run (`WAITING_TRIAL`),
    the training CPUs when it trains in its own process (train.scale.backend=local)."""
    scale = _trial_scale(cfg, method, test_domain, seed)
    return {"CPU": scale.cpus_per_worker} if scale.backend == "local" else dict(WAITING_TRIAL)


def reuse_trial_actors(cfg: SweepConfig, method: str, test_domain: str, seed: int) -> bool:
    """Whether a study's next trial runs in the finished trial's process (Tune's reuse_actors): yes when trials
    train in their own process (train.scale.backend=local), which then skips a process start and the model
    stack's imports per trial; no when a trial drives a Ray Train run, whose trial function outlives Tune's
    reset window (Ray 2.60 then fails the next trial: "Trainable runner reuse requires reset_config()")."""
    return _trial_scale(cfg, method, test_domain, seed).backend == "local"


def _trial_scale(cfg: SweepConfig, method: str, test_domain: str, seed: int) -> Any:
    from reasonbed.tune.trial import trial_train_config

    return trial_train_config({}, cfg, method, test_domain, seed, "").scale


def _exists(uri: str) -> bool:
    fs, path = storage.filesystem(uri)
    return fs.exists(path)


def prepare_chains(cfg: SweepConfig, sweep_uri: str) -> str:
    """Teacher chains for the methods that need them: given, or generated once into the sweep."""
    from reasonbed.methods.base import method_class

    needed = [m for m in cfg.methods if method_class(m).needs_chains]
    if not needed or cfg.chains:
        return cfg.chains
    if not cfg.generate_chains:
        raise ConfigError(f"methods {needed} need teacher chains: set chains=PATH (a generation output) "
                          f"or generate_chains=true")
    from reasonbed.config import load
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.generation.pipeline import run_generation

    output = storage.join(sweep_uri, "chains")
    gen = load(GenerationConfig, base={"data": to_dict(cfg.data), "output": output,
                                       "ray_address": cfg.ray_address, **cfg.generation})
    summary = run_generation(gen)
    log.info("teacher chains: %s", summary)
    return output


def _run_study(cfg: SweepConfig, method: str, test_domain: str, seed: int, chains: str, sweep_uri: str,
               study_url: str, stop: Any = None) -> dict[str, Any]:
    """One study to its end, or until interrupted (`stop`: an Event set once the sweep stops); returns its
    summary, with `interrupted: true` when it did not finish (its Tune state is saved for a restore)."""
    from ray import tune

    from reasonbed.tracking import tune_callbacks
    from reasonbed.tune.optuna_search import close_abandoned, make_searcher, study_summary

    name = study_name(method, test_domain, seed)
    study_uri = storage.join(sweep_uri, name)
    if _exists(storage.join(study_uri, "done")):
        log.info("study %s is done: skipped", name)
        return study_summary(study_url, name)
    space = load_space(cfg.search_spaces, method, cfg.data.dataset)
    trainable = tune.with_resources(
        study_trainable(name, sweep=cfg, method=method, test_domain=test_domain, seed=seed, chains=chains,
                        sweep_uri=sweep_uri), trial_resources(cfg, method, test_domain, seed))
    filesystem, storage_path = storage.pyarrow_filesystem(sweep_uri)
    experiment = f"{storage_path}/{name}"
    if tune.Tuner.can_restore(experiment, storage_filesystem=filesystem):
        log.info("study %s: restoring the interrupted experiment", name)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True,
                                   param_space=space.tune_space(), storage_filesystem=filesystem)
    else:
        if _exists(study_uri):  # interrupted before Tune saved any state: keep it aside, start afresh
            import time

            fs, path = storage.filesystem(study_uri)
            aside = storage.filesystem(storage.join(sweep_uri, ".interrupted", f"{name}-{int(time.time())}"))[1]
            fs.makedirs(aside.rsplit("/", 1)[0], exist_ok=True)
            fs.mv(path, aside, recursive=True)
            log.warning("study %s: unrestorable partial experiment moved to %s", name, aside)
            if _study_exists(study_url, name):
                close_abandoned(study_url, name)
        searcher = make_searcher(cfg.search, seeds_of(cfg, seed).sampler_seed, name, _storage(study_url),
                                 space.defaults())
        tuner = tune.Tuner(
            trainable, param_space=space.tune_space(),
            tune_config=tune.TuneConfig(metric="val_acc", mode="max", search_alg=searcher, scheduler=scheduler(cfg),
                                        num_samples=cfg.num_samples, max_concurrent_trials=cfg.max_concurrent_trials,
                                        trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
                                        reuse_actors=reuse_trial_actors(cfg, method, test_domain, seed)),
            run_config=tune.RunConfig(name=name, storage_path=storage_path, storage_filesystem=filesystem,
                                      sync_config=tune.SyncConfig(sync_artifacts=True), verbose=1,
                                      # a lost trial driver restarts; its Ray Train run resumes from its checkpoint
                                      failure_config=tune.FailureConfig(max_failures=cfg.trial_max_failures),
                                      callbacks=[*tune_callbacks(cfg.tracking, sweep_uri.rstrip("/").rsplit("/", 1)[-1]),
                                                 *[c for c in [study_backup_callback(study_url, sweep_uri)] if c]]
                                      or None),
        )
    if stop is not None and stop.is_set():
        return {"study": name, "interrupted": True}
    results = tuner.fit()
    if tune_interrupted(results, cfg.num_samples) or (stop is not None and stop.is_set()):
        log.warning("study %s interrupted: its state is saved in %s", name, study_uri)
        return {"study": name, "interrupted": True}
    abandoned = close_abandoned(study_url, name)
    errors = [str(result.error) for result in results if result.error]
    summary = {**study_summary(study_url, name), "abandoned": abandoned, "errors": len(errors)}
    if errors:
        raise RuntimeError(f"study {name}: {len(errors)} trial(s) failed; first: {errors[0][:2000]}")
    backup_study_db(study_url, sweep_uri)
    write_json(storage.join(study_uri, "done"), summary)
    return summary


def _study_task(flag: Any, *args: Any) -> dict[str, Any]:
    """_run_study as a Ray task of parallel studies: it stops when the driver sets the StopFlag actor `flag`."""
    with watch_stop_flag(flag) as seen:
        return _run_study(*args, stop=seen)


LODO_MAX_T = 10**15  # examples: out of reach of any run


def scheduler(cfg: SweepConfig) -> Any:
    """ASHA on val_acc with time = training examples seen, or FIFO (no early stopping) when asha.enabled=false."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if not cfg.asha.enabled:
        return FIFOScheduler()
    return ASHAScheduler(time_attr=ASHA_TIME_ATTR, max_t=asha_max_t(cfg), grace_period=cfg.asha.grace_period,
                         reduction_factor=cfg.asha.reduction_factor)


def asha_max_t(cfg: SweepConfig) -> int:
    """ASHA's max_t; with lodo_selection raised out of reach, since ASHA stops a trial whose examples seen
    reach max_t - also at its last evaluation, which would kill its held-out runs. Rungs below are unchanged."""
    if cfg.lodo_selection and cfg.asha.max_t < LODO_MAX_T:
        log.info("lodo_selection: ASHA max_t %d -> %d so that finished trials keep their held-out runs",
                 cfg.asha.max_t, LODO_MAX_T)
        return LODO_MAX_T
    return cfg.asha.max_t


def study_trainable(study: str, **params: Any) -> Any:
    """The trial function of one study, under a name of its own.

    Tune registers trainables by name in the cluster; studies running at once with one shared name
    (as `tune.with_parameters(run_trial, ...)` gives) would overwrite each other's parameters.
    """
    from reasonbed.tune.trial import run_trial

    def trainable(config: dict[str, Any]) -> None:
        run_trial(config, study=study, **params)

    trainable.__name__ = trainable.__qualname__ = f"reasonbed_{study.replace('-', '_')}"
    return trainable


def _study_exists(url: str, name: str) -> bool:
    import optuna

    return name in {summary.study_name for summary in optuna.get_all_study_summaries(_storage(url))}


def _storage(url: str) -> Any:
    from reasonbed.tune.optuna_search import rdb_storage

    return rdb_storage(url)


def run_sweep(cfg: SweepConfig, local_root: str = "runs", force: bool = False,
              after_study: Callable[[str], None] | None = None, control: SweepControl | None = None) -> dict[str, Any]:
    """Tune every (method, test domain, seed); returns where results are and per-study summaries.

    Holds the sweep's lease throughout (`force`: take it over from a live driver); raises LeaseHeldError
    when another driver runs the sweep and SweepInterrupted when stopped (Ctrl+C, SIGTERM, lost lease).
    `after_study(sweep_uri)` runs after every finished study (errors in it are logged, not raised).
    """
    from reasonbed.data.reader import check_images, scan
    from reasonbed.methods.base import method_class
    from reasonbed.models.loading import resolve_model_path
    from reasonbed.ray_runtime import init_ray, release_orphaned_placement_groups, release_placement_groups
    from reasonbed.train.run import TrainConfig  # noqa: F401 - fail early on import problems
    from reasonbed.tune.trial import trial_train_config
    from reasonbed.tune.zero_shot import METHOD as ZERO_SHOT

    spec, root = catalog.resolve(cfg.data)
    cfg = replace(cfg, data=replace(cfg.data, root=root))
    domains = list(cfg.test_domains) or list(spec.domains)
    for domain in domains:
        spec.check_domain(domain)
    for method in cfg.methods:
        method_class(method)  # unknown method: clear error now
        load_space(cfg.search_spaces, method, cfg.data.dataset)  # malformed space: clear error now
    if cfg.zero_shot:
        method_class(ZERO_SHOT)  # the zero-shot row's method must exist
    probe = trial_train_config({}, cfg, cfg.methods[0], domains[0], cfg.seeds[0], "")
    if storage.is_remote(cfg.storage):  # trials train into the sweep's object storage (tune.trial): check it now
        replace(probe, storage_path=storage.join(cfg.storage, "train"))
    # data.on_corrupt before any study: a corrupt image stops the sweep here (error) or is counted (skip); the
    # verdict is cached, so the trials do not decode again
    check_images(spec, root, scan(spec, root, storage_options=cfg.data.storage_options), cfg.data.storage_options,
                 cfg.data.on_corrupt)
    name = sweep_name(cfg, spec.name)
    sweep_uri = storage.join(cfg.storage, name) if storage.is_remote(cfg.storage) else str(
        Path(cfg.storage).resolve() / name)
    local = Path(local_root).resolve() / name if storage.is_remote(cfg.storage) else Path(sweep_uri)
    local.mkdir(parents=True, exist_ok=True)
    study_url = cfg.study_storage or f"sqlite:///{local / 'optuna.db'}"
    control = control or SweepControl()
    with Lease(sweep_uri, cfg.lease_expiry_s, force=force, on_lost=control.stop):
        resolve_model_path(probe.model)  # build the tiny model once, before trials race for it
        restore_study_db(study_url, sweep_uri)  # a new head or working dir: the study copy comes back first
        _storage(study_url)  # create the schema once, before parallel studies race to create it
        init_ray(address=cfg.ray_address or None)
        release_orphaned_placement_groups()  # a killed driver's held workers would starve every trial
        check_sweep_storage(cfg)
        with control:  # after init_ray, which sets its own SIGTERM handler
            try:
                return _sweep(cfg, spec, domains, probe, name, sweep_uri, local, study_url, control, after_study)
            except SweepInterrupted as stopped:
                backup_study_db(study_url, sweep_uri)
                raise SweepInterrupted(f"sweep {name} stopped ({stopped}); finished trials and the state of the "
                                       f"interrupted studies are saved in {sweep_uri}") from None
            finally:  # no trial of this sweep runs any more: what it still holds would starve the next job
                release_placement_groups()


def check_sweep_storage(cfg: SweepConfig) -> None:
    """On a multi-node cluster the sweep's storage must be object storage: trials on other nodes write their
    checkpoints and records there (an error naming the fix, before any trial starts)."""
    from reasonbed.train.driver import check_shared_storage

    check_shared_storage(cfg.storage, "storage", cfg.storage,
                         "trials on other nodes cannot write there; use --storage s3://BUCKET/PREFIX or "
                         "gs://BUCKET/PREFIX")


def _sweep(cfg: SweepConfig, spec: Any, domains: list[str], probe: Any, name: str, sweep_uri: str, local: Path,
           study_url: str, control: SweepControl, after_study: Callable[[str], None] | None) -> dict[str, Any]:
    """The body of run_sweep, with the lease held and the stop signals handled."""
    import ray

    from reasonbed.tune.zero_shot import run_zero_shot

    check_resources(cfg, probe.scale.num_workers * probe.scale.cpus_per_worker,
                    probe.scale.num_workers if probe.scale.use_gpu else 0)
    chains = prepare_chains(cfg, sweep_uri)
    write_json(storage.join(sweep_uri, "sweep.json"),
               {"name": name, "config": redact(to_dict(cfg)), "protocol": protocol(to_dict(cfg)),
                "study_storage": redact_url(study_url),  # shared with the sweep: no database password
                "chains": chains, "classes": list(spec.display_names),
                "seeds": {s: seeds_of(cfg, s).to_dict() for s in cfg.seeds},
                "studies": [study_name(m, d, s) for m in cfg.methods for d in domains for s in cfg.seeds]})
    jobs = [(m, d, s) for m in cfg.methods for d in domains for s in cfg.seeds]
    log.info("sweep %s: %d studies x %d samples -> %s", name, len(jobs), cfg.num_samples, sweep_uri)

    def finished(summary: dict[str, Any]) -> None:
        if summary.get("interrupted"):
            control.stop(f"study {summary['study']} was interrupted")
            return
        if after_study is not None:
            try:
                after_study(sweep_uri)
            except Exception as error:  # noqa: BLE001 - a report refresh never stops the sweep
                log.warning("after study %s: %s", summary.get("study", "?"), error)

    summaries: list[dict[str, Any]] = []
    if cfg.studies_in_parallel > 1:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's node: a SQLite study is a file of this node
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        remote = ray.remote(num_cpus=0, scheduling_strategy=here)(_study_task)
        flag = stop_flag()
        pending: dict[Any, tuple] = {}
        queue = list(jobs)
        with control.phase("parallel", flag):
            while queue or pending:
                while queue and len(pending) < cfg.studies_in_parallel and not control.stopped:
                    job = queue.pop(0)
                    pending[remote.remote(flag, cfg, *job, chains, sweep_uri, study_url)] = job
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    pending.pop(ref)
                    summaries.append(ray.get(ref))
                    finished(summaries[-1])
    else:
        for job in jobs:
            with control.phase("tune"):
                summaries.append(_run_study(cfg, *job, chains, sweep_uri, study_url))
            finished(summaries[-1])
    control.check()
    if cfg.zero_shot:
        run_zero_shot(cfg, domains, sweep_uri, local, control.check)
        control.check()
    write_json(storage.join(sweep_uri, "done"), {"studies": summaries})
    backup_study_db(study_url, sweep_uri)
    return {"sweep": sweep_uri, "local": str(local), "study_storage": study_url, "studies": summaries}
