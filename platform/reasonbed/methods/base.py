"""The method contract: what a training method is, as the METHODS registry gives it out.

A method is a config dataclass (its options, `method_config.*`, validated on construction) plus what
it trains on. Pathway methods turn a training example (image, label, teacher chains) into *pathways*:
a prompt, the target text the model must produce, a weight and whether the target's NLL is normalised
by its length; the shared loss (reasonbed.train.losses) is, per example, the weighted sum over its
pathways, averaged over the batch, so direct supervision, reasoning supervision and MTCT differ only
in their pathways. A method that trains differently names its own worker step (`worker_step`, a
"module:Class" path, e.g. GRPO's) and a multi-stage method its own driver (`driver`, e.g. SARR's
rounds); both are imported only when that method runs, so this layer imports no training code.

Class-level facts (`needs_chains`, `options(...)` validation) are readable without building a method.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from reasonbed.config import from_dict
from reasonbed.registry import Registry


@dataclass(frozen=True)
class Pathway:
    """One supervised prompt -> target pair of an example."""

    name: str  # "direct" or "reasoning" (used in logs)
    prompt: str
    target: str
    weight: float = 1.0
    normalise: bool = False  # divide the target's summed NLL by its token count


@dataclass
class NoConfig:
    """Methods without options."""


class Method:
    """Base class: subclasses set `name`, `config_class` and implement `pathways` (or name a worker step)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = NoConfig
    needs_chains: ClassVar[bool] = False  # training needs kept teacher chains (cfg.chains)
    eval_prompt: ClassVar[str] = "direct"  # the prompt val_acc / test_acc use unless eval.select_on says otherwise
    worker_step: ClassVar[str] = ""  # "module:Class" of the worker step; "" = reasonbed.train.step.SupervisedStep
    driver: ClassVar[str] = ""  # "module:function(cfg, callbacks)" running the method; "" = one training run

    def __init__(self, options: Mapping[str, Any], class_names: Sequence[str]) -> None:
        self.options = self.parse_options(options)
        self.class_names = list(class_names)

    @classmethod
    def parse_options(cls, options: Mapping[str, Any]) -> Any:
        """The method's options as its config dataclass (ConfigError naming `method_config.<key>`)."""
        return from_dict(cls.config_class, dict(options), prefix="method_config.")

    def usable(self, example: Mapping[str, Any]) -> bool:
        """Whether the example can be trained on (e.g. it has a kept chain when one is needed)."""
        return not self.needs_chains or bool(example.get("chains"))

    def pathways(self, example: Mapping[str, Any], rng: random.Random) -> list[Pathway]:
        raise NotImplementedError(f"method {self.name!r} has no pathways (it names worker_step {self.worker_step!r})")

    @classmethod
    def scored_prompt(cls, options: Any) -> str:
        """The prompt the method's model is asked with at evaluation by default, given its parsed options (a class
        fact: readable without building the method)."""
        return cls.eval_prompt

    def prompt_kind(self) -> str:
        """The prompt this method's model is asked with at evaluation by default."""
        return self.scored_prompt(self.options)

    def select_on(self, cfg: Any) -> str:
        """The prompt whose accuracy is val_acc / test_acc: eval.select_on, or the method's own."""
        return self.prompt_kind() if cfg.eval.select_on == "auto" else cfg.eval.select_on

    def total_steps(self, cfg: Any, examples: int) -> int:
        """Global optimizer steps of a run over `examples` training examples."""
        from math import ceil

        if cfg.optim.max_steps:
            return cfg.optim.max_steps
        return max(1, ceil(cfg.optim.epochs * examples / cfg.optim.batch_size))

    def updates_per_step(self, cfg: Any) -> int:
        """Optimizer updates per global step (what the learning-rate schedule counts)."""
        return 1


METHODS: Registry[type[Method]] = Registry("method")


def method_class(name: str) -> type[Method]:
    """The registered method class `name` (RegistryError listing the known methods)."""
    import reasonbed.methods  # noqa: F401 - registers the built-in methods

    return METHODS.get(name)


def build_method(name: str, options: Mapping[str, Any], class_names: Sequence[str]) -> Method:
    return method_class(name)(options, class_names)
