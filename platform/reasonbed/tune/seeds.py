"""What a trial seed changes, derived the way DomainBed derives it.

DomainBed's `trial_seed` changes the in/out split of every domain
(`misc.split_dataset(..., misc.seed_hash(trial_seed, env_i))` in `domainbed/scripts/train.py`), the
hyperparameter draws (`random_hparams(..., misc.seed_hash(hparams_seed, trial_seed))`) and the
training seed (`misc.seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed)` in
`domainbed/scripts/sweep.py`). Here a trial seed s of a sweep gives, through the same `seed_hash`
(`domainbed/lib/misc.py`: md5 of the arguments' repr, modulo 2**31):

- `split_seed = seed_hash("split", data.split_seed, s)`: the seeded in/out holdout of every domain,
  the test domain included; the same for every method and test domain of that trial seed, as in
  DomainBed, so methods are compared on the same images;
- `sampler_seed = seed_hash("sampler", sampler_seed, s)`: the Optuna sampler (TPE or random) of each
  study of that trial seed, so two trial seeds draw two different hyperparameter sequences (draw 0
  is the defaults in both);
- `train_seed = seed_hash("train", s)`: TrainConfig.seed (LoRA init, data order, the seeded
  evaluation subset). Unlike DomainBed it is shared by every draw, method and test domain of the
  trial seed (a Tune trial has no stable draw index before it starts): draws then differ by their
  hyperparameters only, and evaluation subsets (`eval.max_per_domain`) are the same for all methods.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any


def seed_hash(*args: Any) -> int:
    """DomainBed's misc.seed_hash: an integer in [0, 2**31) from the repr of the arguments."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


@dataclass(frozen=True)
class TrialSeeds:
    """The seeds one trial seed sets (recorded in trial.json and the zero-shot record)."""

    trial_seed: int  # the sweep's trial seed (an entry of SweepConfig.seeds)
    split_seed: int  # data.split_seed: the in/out holdout of every domain
    sampler_seed: int  # the Optuna sampler's seed of the study
    train_seed: int  # TrainConfig.seed: LoRA init, data order, evaluation subset

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def trial_seeds(trial_seed: int, split_seed: int = 0, sampler_seed: int = 0) -> TrialSeeds:
    """The seeds of trial seed `trial_seed` in a sweep whose base data.split_seed and sampler_seed are given."""
    return TrialSeeds(trial_seed=int(trial_seed), split_seed=seed_hash("split", int(split_seed), int(trial_seed)),
                      sampler_seed=seed_hash("sampler", int(sampler_seed), int(trial_seed)),
                      train_seed=seed_hash("train", int(trial_seed)))
