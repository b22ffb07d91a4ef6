"""`zero_shot`: no training - one evaluation of the base model (or `init_adapter`) at step 0.

The reference row of every DG-with-MLLMs table: the same rows, prompts, parser and metrics as a
trained run's evaluations, so a sweep's zero-shot row and its trained rows are comparable cell by cell.
"""

from __future__ import annotations

from typing import Any

from reasonbed.methods.base import Method


class ZeroShotMethod(Method):
    name = "zero_shot"

    def total_steps(self, cfg: Any, examples: int) -> int:
        return 0
