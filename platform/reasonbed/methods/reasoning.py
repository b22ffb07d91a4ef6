"""`reasoning`: the reasoning prompt -> a kept teacher chain (length-normalised NLL)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from reasonbed.methods.base import Method, Pathway
from reasonbed.prompts import reasoning_prompt


class ReasoningMethod(Method):
    name = "reasoning"
    needs_chains = True
    eval_prompt = "reasoning"

    def pathways(self, example: Mapping[str, Any], rng: random.Random) -> list[Pathway]:
        chain = rng.choice(list(example["chains"]))
        return [Pathway("reasoning", reasoning_prompt(self.class_names), chain, normalise=True)]
