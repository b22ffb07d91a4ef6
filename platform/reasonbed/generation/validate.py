"""Validation and rejection sampling of reasoning chains (RD-MLDG).

A candidate is *valid* when all five stages are present, closed and in order, and its conclusion
parses to exactly one class; it is *kept* when it is valid and the conclusion names the label.
`judge()` returns the parsed stages, the predicted label and the reason a candidate failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasonbed.prompts import STAGES, parse_chain, parse_class


def judge(text: str, class_names: Sequence[str], label: int) -> dict[str, Any]:
    """Flags and parsed fields of one candidate chain."""
    parsed = parse_chain(text)
    conclusion = parsed.conclusion
    predicted = parse_class(conclusion, class_names) if conclusion is not None else None
    if parsed.missing:
        reason = "missing:" + ",".join(stage.lower() for stage in parsed.missing)
    elif not parsed.in_order:
        reason = "out_of_order"
    elif predicted is None:
        reason = "unparseable_conclusion"
    elif predicted != label:
        reason = "wrong_conclusion"
    else:
        reason = ""
    valid = parsed.complete and predicted is not None
    result = {stage.lower(): parsed.stages.get(stage) for stage in STAGES}
    result.update({"predicted_label": -1 if predicted is None else predicted, "valid": valid,
                   "kept": valid and predicted == label, "reject_reason": reason})
    return result
