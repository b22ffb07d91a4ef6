"""Static checks of a job's config: everything knowable without Ray, a model, the data or the network.

Run by `--dry-run` and before a job starts anything, so a bad config fails in a second rather than
after Ray and a model came up: the dataset's spec (built-in, or a folder's local `spec_file`) and
the domains the config names, methods and their options, teacher chains for methods that need
them, a sweep's search spaces and per-trial training config, and a real model for real data (the
offline tiny model serves only the offline benchmarks and smoke tests). A `folder` dataset without
`spec_file` is discovered from its data, so its domains are checked when the job reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reasonbed import storage
from reasonbed.config import ConfigError, load, to_dict
from reasonbed.data import catalog
from reasonbed.data.specs import DATASETS, DatasetError, DatasetSpec, load_spec_yaml
from reasonbed.inference.base import engine_weights
from reasonbed.registry import RegistryError


def data_spec(cfg: catalog.DataConfig) -> DatasetSpec | None:
    """The dataset's spec if known without reading data (None: a folder whose spec is discovered)."""
    if cfg.dataset == "folder":
        if not cfg.root:
            raise DatasetError("data.root is required for dataset 'folder'")
        if cfg.spec_file and not storage.is_remote(cfg.spec_file):
            return load_spec_yaml(cfg.spec_file)
        return None
    if not cfg.root and cfg.dataset not in catalog.OFFLINE_GENERATORS:
        raise DatasetError(f"data.root is required for dataset {cfg.dataset!r} (a local path or s3:// URL)")
    return DATASETS.get(cfg.dataset)


def check_domains(spec: DatasetSpec | None, key: str, domains: str | list[str]) -> None:
    """Every domain named under config key `key` is one of the spec's."""
    for domain in [domains] if isinstance(domains, str) else domains:
        if spec is not None and domain:
            try:
                spec.check_domain(domain)
            except DatasetError as error:
                raise ConfigError(f"{key}: {error}") from None


def method_class(name: str, key: str = "method") -> Any:
    """The registered method class (unknown name: an error naming `key` and the known methods)."""
    from reasonbed.methods.base import method_class as registered

    try:
        return registered(name)
    except RegistryError as error:
        raise ConfigError(f"{key}: {error}") from None


def check_method(name: str, options: Mapping[str, Any], key: str = "method") -> Any:
    """The method class, with `options` validated against its config (errors name method_config.<field>)."""
    import dataclasses

    method = method_class(name, key)
    if options and not dataclasses.fields(method.config_class):
        raise ConfigError(f"method_config: method {name!r} takes no options (got {', '.join(map(str, options))})")
    method.parse_options(options)
    return method


def check_model(data: catalog.DataConfig, model: Any, key: str) -> None:
    """A real dataset needs a real model (`{key}.path`); the tiny model serves the offline benchmarks only."""
    from reasonbed.models.configs import check_real_model

    check_real_model(model, data.dataset, data.dataset in catalog.OFFLINE_GENERATORS, key)


def chains_message(methods: list[str]) -> str:
    return (f"method(s) {', '.join(methods)} need teacher chains: set chains=PATH to a generation output "
            f"(jobs/generate_reasoning.py), or generate_chains=true in a sweep")


def check_train(cfg: Any, chains_coming: bool = False) -> None:
    """A TrainConfig: data spec and domains, method and options, chains (unless they are generated first)."""
    spec = data_spec(cfg.data)
    check_domains(spec, "test_domain", cfg.test_domain)
    check_domains(spec, "val_domain", cfg.val_domain)
    if cfg.val_domain and cfg.val_domain == cfg.test_domain:
        raise ConfigError(f"val_domain {cfg.val_domain!r} is the test domain: hold out another source domain")
    method = check_method(cfg.method, cfg.method_config)
    if method.needs_chains and not cfg.chains and not chains_coming:
        raise ConfigError(chains_message([cfg.method]))
    check_model(cfg.data, cfg.model, "model")


def check_generation(cfg: Any, prefix: str = "") -> None:
    """A GenerationConfig: data spec and domains, an output to write, a teacher model for real data."""
    check_domains(data_spec(cfg.data), "domains", cfg.domains)
    if not cfg.output:
        raise ConfigError("output is required (a local directory or s3://bucket/prefix)")
    if engine_weights(cfg.engine.name) == "local":
        check_model(cfg.data, cfg.engine.model, f"{prefix}engine.model")


def check_sweep(cfg: Any) -> None:
    """A SweepConfig: data and test domains; per method its search space, a trial's TrainConfig and
    options; teacher chains for the methods that need them (given, or generated with a valid config)."""
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.tune.spaces import load_space
    from reasonbed.tune.trial import trial_train_config

    spec = data_spec(cfg.data)
    check_domains(spec, "test_domains", cfg.test_domains)
    test_domain = (cfg.test_domains or (spec.domains if spec else [""]))[0]
    needing, trials = [], []
    for name in cfg.methods:
        method = method_class(name, "methods")
        space = load_space(cfg.search_spaces, name, cfg.data.dataset)
        trial = trial_train_config(space.defaults(), cfg, name, test_domain, cfg.seeds[0], cfg.chains)
        check_method(name, trial.method_config)
        trials.append(trial)
        if method.needs_chains:
            needing.append(name)
    if needing and not cfg.chains:
        if not cfg.generate_chains:
            raise ConfigError(chains_message(needing))
        gen = load(GenerationConfig, base={"data": to_dict(cfg.data), "output": storage.join(cfg.storage, "chains"),
                                           "ray_address": cfg.ray_address, **cfg.generation})
        check_generation(gen, prefix="generation.")
    for trial in trials:
        check_model(trial.data, trial.model, "train.model")
