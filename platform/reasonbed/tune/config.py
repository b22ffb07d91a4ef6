"""The sweep's config: which methods, splits and seeds to tune, how, where results go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from reasonbed.config import ConfigError
from reasonbed.data.catalog import DataConfig
from reasonbed.tracking import TrackingConfig

ASHA_TIME_ATTR = "examples_seen"  # ASHA's time unit: training examples seen (step x optim.batch_size)
# Where results are logged and how the driver runs: not in the sweep name's hash.
NOT_HASHED = ("tracking", "lease_expiry_s", "trial_max_failures")


@dataclass
class AshaConfig:
    """ASHA early stopping on val_acc; time is counted in training examples seen (`examples_seen`), so
    trials with different batch sizes meet at a rung after the same amount of data."""

    enabled: bool = True  # false: no early stopping (FIFO), every trial trains to its end (DomainBed's protocol)
    grace_period: int = 2048  # examples every trial sees before it may be stopped (the first rung)
    reduction_factor: int = 2  # keep 1/reduction_factor of trials at each rung (rungs at grace x factor^k)
    max_t: int = 1_000_000  # examples after which ASHA ends a trial (keep above every trial's total)

    def __post_init__(self) -> None:
        if self.grace_period < 1 or self.reduction_factor < 2 or self.max_t < self.grace_period:
            raise ConfigError(f"asha: grace_period ({self.grace_period}) >= 1, reduction_factor "
                              f"({self.reduction_factor}) >= 2 and max_t ({self.max_t}) >= grace_period required "
                              f"(grace_period and max_t count training examples seen)")


@dataclass
class SweepConfig:
    """A LODO hyperparameter sweep: one Optuna study per (method, test domain, seed)."""

    name: str = ""  # sweep folder name (default: dataset + a hash of this config)
    data: DataConfig = field(default_factory=DataConfig)  # dataset; its split_seed is combined with each trial seed
    methods: list[str] = field(default_factory=lambda: ["direct", "mtct"])  # methods to tune
    test_domains: list[str] = field(default_factory=list)  # default: every domain of the dataset
    # Trial seeds: each changes the in/out split, the hyperparameter draws and the training seed (tune/seeds.py)
    seeds: list[int] = field(default_factory=lambda: [0])
    # Hyperparameter search: Optuna's TPE (adaptive), or Optuna's RandomSampler (DomainBed's random search);
    # both seeded per trial seed, both through the same OptunaSearch, draw 0 = the search space's defaults
    search: Literal["tpe", "random"] = "tpe"
    num_samples: int = 20  # hyperparameter draws per study (the first is the defaults trial)
    max_concurrent_trials: int = 1  # trials running at once per study
    studies_in_parallel: int = 1  # studies run concurrently (each as a Ray task)
    train: dict[str, Any] = field(default_factory=dict)  # fixed TrainConfig values for every trial
    search_spaces: str = "search_spaces"  # directory of default.yaml and <method>.yaml
    storage: str = "runs"  # sweep results root: local directory or s3://bucket/prefix
    study_storage: str = ""  # Optuna SQLAlchemy URL (default: sqlite file in the local sweep folder)
    chains: str = ""  # teacher chains for methods that need them (a generation output)
    generate_chains: bool = False  # generate chains first (generation config below) if chains is empty
    generation: dict[str, Any] = field(default_factory=dict)  # GenerationConfig values for that
    asha: AshaConfig = field(default_factory=AshaConfig)  # early stopping (asha.enabled=false: none)
    sampler_seed: int = 0  # base seed of the Optuna sampler, combined with each trial seed
    allow_autoscaling: bool = False  # skip the resource check (an autoscaler will add nodes)
    ray_address: str = ""  # join this Ray cluster (empty: RAY_ADDRESS or a local Ray)
    # Leave-one-domain-out selection runs: every trial that trains to its end also trains once per source
    # domain V with V held out as well (same hyperparameters, train.val_domain=V); selection
    # `leave_one_domain_out` then needs no other runs. Costs (sources) extra runs per finished trial.
    lodo_selection: bool = False
    # Evaluate the base model (method zero_shot, 0 steps) once per (test domain, trial seed) with the trials'
    # data, split and prompts: the report's "zero-shot (base model)" row. Stored under <sweep>/zero_shot/.
    zero_shot: bool = True
    # MLflow / W&B: one run per trial, live (Ray Tune's logger callbacks), and the report as an artifact.
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # Seconds without a heartbeat after which the driver's lease on the sweep (reasonbed.tune.lease) expires
    # and another driver may take the sweep over; the heartbeat comes every min(30, this / 4) seconds
    lease_expiry_s: float = 300.0
    # Restarts of a trial whose driver was lost (e.g. its node died): Tune's trial-level FailureConfig. The
    # restarted trial reruns its Ray Train run under the same name and storage, which resumes from the run's
    # last checkpoint (object storage on a cluster), not from step 0.
    trial_max_failures: int = 2

    def __post_init__(self) -> None:
        if self.trial_max_failures < 0:
            raise ConfigError(f"trial_max_failures: value {self.trial_max_failures!r} must be >= 0")
        if self.num_samples < 1 or self.max_concurrent_trials < 1 or self.studies_in_parallel < 1:
            raise ConfigError(f"num_samples ({self.num_samples}), max_concurrent_trials "
                              f"({self.max_concurrent_trials}) and studies_in_parallel must be >= 1")
        if not self.methods:
            raise ConfigError("methods: at least one method to tune")
        if not self.seeds:
            raise ConfigError("seeds: at least one trial seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: trial seeds must be distinct, got {self.seeds}")
        if self.lease_expiry_s < 10:
            raise ConfigError(f"lease_expiry_s must be >= 10 seconds (heartbeats come every expiry / 4), got "
                              f"{self.lease_expiry_s}")


def protocol(config: Mapping[str, Any]) -> dict[str, Any]:
    """What produced a sweep's numbers, from its config as saved in sweep.json: search, early stopping,
    draws per study and trial seeds (said by every table and trials.csv). Sweeps saved before `search`
    and `asha.enabled` existed ran TPE with ASHA counted in evaluations."""
    asha = config.get("asha") or {}
    if asha.get("enabled", True):
        unit = "examples" if "enabled" in asha else "evaluations"
        stopping = (f"ASHA on val_acc (grace {int(asha.get('grace_period', 1)):,} {unit}, reduction factor "
                    f"{asha.get('reduction_factor', 2)}, max_t {int(asha.get('max_t', 100)):,} {unit})")
    else:
        stopping = "none (every trial trains to its end)"
    search = str(config.get("search") or "tpe")
    return {"search": {"tpe": "Optuna TPE", "random": "random search"}.get(search, search),
            "early_stopping": stopping, "num_samples": int(config.get("num_samples") or 0),
            "seeds": [int(seed) for seed in config.get("seeds") or []]}
