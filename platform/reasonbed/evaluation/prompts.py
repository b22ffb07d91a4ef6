"""The evaluation's prompt texts: the in-context example turn, the query turn and the domain knowledge.

Each in-context example is an earlier user turn (its image and RD-MLDG's direct classification
question) answered by the shown class name; the query turn carries the direct or the reasoning
prompt. Under the `knowledge` condition the query turn starts with a textual description of the
classes taken from the dataset spec (descriptions, super-classes, and which options share one), and
is otherwise the same prompt as zero-shot, so the two differ only by the knowledge.
"""

from __future__ import annotations

from collections.abc import Sequence

from reasonbed.data.specs import DatasetSpec
from reasonbed.prompts import classification_prompt, prompt_for


def example_prompt(class_names: Sequence[str]) -> str:
    """The user text of every in-context example's turn (its answer is the shown class name)."""
    return classification_prompt(class_names)


def knowledge_text(spec: DatasetSpec) -> str:
    """What the spec knows about the classes, as a short paragraph for the prompt."""
    lines = ["Domain knowledge about the options:"]
    for name in spec.classes:
        parts = [spec.display_name(name)]
        group = spec.super_class(name)
        if group:
            parts.append(f"(a kind of {group.replace('_', ' ')})")
        description = spec.descriptions.get(name)
        line = " ".join(parts) + (f": {description}" if description else "")
        lines.append(f"- {line}.")
    shared = [members for members in spec.hierarchy.values() if len(members) > 1]
    if shared:
        groups = "; ".join(", ".join(spec.display_name(m) for m in members) for members in shared)
        lines.append(f"Options in one group look alike, tell them apart by the details above: {groups}.")
    return "\n".join(lines)


def query_prompt(kind: str, class_names: Sequence[str], knowledge: str = "") -> str:
    """The query turn's text: the direct or reasoning prompt, after the knowledge paragraph if given."""
    prompt = prompt_for(kind, class_names)
    return f"{knowledge}\n{prompt}" if knowledge else prompt
