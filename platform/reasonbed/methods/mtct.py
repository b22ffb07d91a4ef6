"""`mtct`: multi-task chain training (RD-MLDG) - both pathways jointly.

Per example: -log p(y | x, q_cls) + weight * (1/T) sum_t -log p(r_t | r_<t, x, q_reason); images
with no kept chain contribute the direct pathway only.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reasonbed.config import ConfigError
from reasonbed.methods.base import Method, Pathway
from reasonbed.prompts import classification_prompt, reasoning_prompt


@dataclass
class MTCTConfig:
    reasoning_weight: float = 1.0  # weight of the length-normalised reasoning pathway

    def __post_init__(self) -> None:
        if self.reasoning_weight < 0:
            raise ConfigError(f"method_config.reasoning_weight: value {self.reasoning_weight!r} must be >= 0")


class MTCTMethod(Method):
    name = "mtct"
    config_class = MTCTConfig
    needs_chains = True

    def usable(self, example: Mapping[str, Any]) -> bool:
        return True

    def pathways(self, example: Mapping[str, Any], rng: random.Random) -> list[Pathway]:
        answer = self.class_names[int(example["label"])]
        paths = [Pathway("direct", classification_prompt(self.class_names), answer)]
        if example.get("chains"):
            paths.append(Pathway("reasoning", reasoning_prompt(self.class_names), rng.choice(list(example["chains"])),
                                 weight=self.options.reasoning_weight, normalise=True))
        return paths
