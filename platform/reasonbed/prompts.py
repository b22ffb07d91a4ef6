"""Prompts of RD-MLDG and the parsers from completions to classes and reasoning stages.

The classification prompt is RD-MLDG's ("What type of object is in this photo? Choose from the
following options:" plus the classes); the reasoning prompt asks for five tagged stages
<SUMMARY>, <CAPTION>, <REASONING>, <REFLECTION>, <CONCLUSION>. `parse_class` maps a completion to
one class, tolerating case, punctuation, plurals and extra words; an answer naming no class or
two classes is unparseable (None) and counts as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

PROMPT_VERSION = "rd-mldg-v1"
STAGES = ("SUMMARY", "CAPTION", "REASONING", "REFLECTION", "CONCLUSION")
QUESTION = "What type of object is in this photo? Choose from the following options:"


def options_text(class_names: Sequence[str]) -> str:
    return ", ".join(class_names)


def classification_prompt(class_names: Sequence[str]) -> str:
    """RD-MLDG's direct classification prompt."""
    return f"{QUESTION} {options_text(class_names)}. Answer with the option only."


def reasoning_prompt(class_names: Sequence[str]) -> str:
    """The prompt that asks for a five-stage tagged reasoning chain ending in one option."""
    return (
        f"{QUESTION} {options_text(class_names)}. Reason in five stages, each inside its tags, in this order: "
        "<SUMMARY>how you will solve the task</SUMMARY> <CAPTION>what the image shows</CAPTION> "
        "<REASONING>step-by-step reasoning from the visual evidence to the options</REASONING> "
        "<REFLECTION>a check of the reasoning</REFLECTION> <CONCLUSION>exactly one option</CONCLUSION>"
    )


def _normalise(text: str) -> str:
    text = text.lower().replace("_", " ")
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return f" {' '.join(text.split())} "


def _class_pattern(name: str) -> re.Pattern[str]:
    words = _normalise(name).split()
    body = r"\s".join(re.escape(word) for word in words)
    return re.compile(rf"(?<=\s){body}(?:s|es)?(?=\s)")


def class_spans(text: str, class_names: Sequence[str]) -> dict[int, list[tuple[int, int]]]:
    """Where each class is named in `text` (normalised), by class index."""
    normalised = _normalise(text)
    found: dict[int, list[tuple[int, int]]] = {}
    for index, name in enumerate(class_names):
        spans = [match.span() for match in _class_pattern(name).finditer(normalised)]
        if spans:
            found[index] = spans
    return found


def parse_class(text: str | None, class_names: Sequence[str]) -> int | None:
    """The one class `text` names (index into class_names), or None if it names none or several."""
    if not text:
        return None
    found = class_spans(text, class_names)
    # a class named only inside a longer class name ("lamp" in "desk lamp") does not count
    kept = {}
    for index, spans in found.items():
        outside = [span for span in spans if not any(
            other != index and o_start <= span[0] and span[1] <= o_end and (o_end - o_start) > (span[1] - span[0])
            for other, other_spans in found.items() for o_start, o_end in other_spans)]
        if outside:
            kept[index] = outside
    return next(iter(kept)) if len(kept) == 1 else None


@dataclass
class ParsedChain:
    """The stages found in a completion and whether they form a valid five-stage chain."""

    stages: dict[str, str] = field(default_factory=dict)
    in_order: bool = False
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and self.in_order

    @property
    def conclusion(self) -> str | None:
        return self.stages.get("CONCLUSION")


def parse_chain(text: str) -> ParsedChain:
    """Find each <STAGE>...</STAGE> block (first occurrence) and check the five are present in order."""
    stages: dict[str, str] = {}
    positions: list[int] = []
    for stage in STAGES:
        match = re.search(rf"<{stage}>(.*?)</{stage}>", text, flags=re.DOTALL | re.IGNORECASE)
        if match:
            stages[stage] = match.group(1).strip()
            positions.append(match.start())
    missing = [stage for stage in STAGES if stage not in stages]
    in_order = positions == sorted(positions)
    return ParsedChain(stages=stages, in_order=in_order, missing=missing)


def format_chain(stages: dict[str, str]) -> str:
    """Join stage texts into the tagged chain format (the inverse of parse_chain for valid chains)."""
    return "\n".join(f"<{stage}>{stages[stage]}</{stage}>" for stage in STAGES)
