"""The method protocol: what a training example contributes to the loss.

A method turns a training example (image, label, teacher chains) into *pathways*: a prompt, the
target text the model must produce, a weight and whether the target's negative log-likelihood is
normalised by its length. The shared loss (reasonbed.train.losses) is, per example, the weighted
sum over its pathways, averaged over the batch; so direct supervision, reasoning supervision and
MTCT differ only in their pathways.
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
    """Base class: subclasses set `name`, `config_class` and implement `pathways`."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = NoConfig
    needs_chains: ClassVar[bool] = False  # training needs kept teacher chains (cfg.chains)
    eval_prompt: ClassVar[str] = "direct"  # the prompt whose accuracy is val_acc / test_acc

    def __init__(self, options: Mapping[str, Any], class_names: Sequence[str]) -> None:
        self.options = from_dict(self.config_class, dict(options), prefix="method_config.")
        self.class_names = list(class_names)

    def usable(self, example: Mapping[str, Any]) -> bool:
        """Whether the example can be trained on (e.g. it has a kept chain when one is needed)."""
        return not self.needs_chains or bool(example.get("chains"))

    def pathways(self, example: Mapping[str, Any], rng: random.Random) -> list[Pathway]:
        raise NotImplementedError


METHODS: Registry[type[Method]] = Registry("method")


def build_method(name: str, options: Mapping[str, Any], class_names: Sequence[str]) -> Method:
    import reasonbed.methods  # noqa: F401 - registers the built-in methods

    return METHODS.get(name)(options, class_names)
