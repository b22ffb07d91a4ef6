"""The sweep's config: which methods, splits and seeds to tune, how, where results go."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reasonbed.config import ConfigError
from reasonbed.data.catalog import DataConfig


@dataclass
class AshaConfig:
    """ASHA early stopping on val_acc; time is counted in evaluations (training_iteration)."""

    grace_period: int = 1  # evaluations every trial gets before it may be stopped
    reduction_factor: int = 2  # keep 1/reduction_factor of trials at each rung
    max_t: int = 100  # evaluations after which a trial is not considered further

    def __post_init__(self) -> None:
        if self.grace_period < 1 or self.reduction_factor < 2 or self.max_t < self.grace_period:
            raise ConfigError(f"asha: grace_period ({self.grace_period}) >= 1, reduction_factor "
                              f"({self.reduction_factor}) >= 2 and max_t ({self.max_t}) >= grace_period required")


@dataclass
class SweepConfig:
    """A LODO hyperparameter sweep: one Optuna study per (method, test domain, seed)."""

    name: str = ""  # sweep folder name (default: dataset + a hash of this config)
    data: DataConfig = field(default_factory=DataConfig)  # the dataset; every trial trains on its LODO splits
    methods: list[str] = field(default_factory=lambda: ["direct", "mtct"])  # methods to tune
    test_domains: list[str] = field(default_factory=list)  # default: every domain of the dataset
    seeds: list[int] = field(default_factory=lambda: [0])  # trial seeds (data order, LoRA init)
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
    asha: AshaConfig = field(default_factory=AshaConfig)  # early stopping of weak trials
    sampler_seed: int = 0  # TPE seed
    allow_autoscaling: bool = False  # skip the resource check (an autoscaler will add nodes)
    ray_address: str = ""  # join this Ray cluster (empty: RAY_ADDRESS or a local Ray)
    # Leave-one-domain-out selection runs: every trial that trains to its end also trains once per source
    # domain V with V held out as well (same hyperparameters, train.val_domain=V); selection
    # `leave_one_domain_out` then needs no other runs. Costs (sources) extra runs per finished trial.
    lodo_selection: bool = False

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.max_concurrent_trials < 1 or self.studies_in_parallel < 1:
            raise ConfigError(f"num_samples ({self.num_samples}), max_concurrent_trials "
                              f"({self.max_concurrent_trials}) and studies_in_parallel must be >= 1")
        if not self.methods:
            raise ConfigError("methods: at least one method to tune")
        if not self.seeds:
            raise ConfigError("seeds: at least one trial seed")
