"""`direct`: the classification prompt -> the class name (label supervision only)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from reasonbed.methods.base import Method, Pathway
from reasonbed.prompts import classification_prompt


class DirectMethod(Method):
    name = "direct"

    def pathways(self, example: Mapping[str, Any], rng: random.Random) -> list[Pathway]:
        answer = self.class_names[int(example["label"])]
        return [Pathway("direct", classification_prompt(self.class_names), answer)]
