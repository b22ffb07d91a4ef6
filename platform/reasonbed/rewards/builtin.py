"""The built-in rewards: domain knowledge as training signal (Cao et al., 2026), not prompt text.

- `format`: reasoning prompt - the five stages present and in order (1.0; else 0.1 per stage found);
  direct prompt - a plain answer, i.e. the completion is exactly one option (1.0, else 0.0).
- `accuracy`: 1.0 when the parsed answer is the label, else 0.0.
- `hierarchy`: 1.0 for the label, `hierarchy_partial` (0.5) for a wrong answer in the label's
  super-class, 0.0 for another class, and `-outside_penalty` (-1.0) for an answer outside the label
  set (naming no option, or several).
- `consistency`: the fraction of the completions for a label-preserving transform of the same image
  whose answer equals this completion's answer (0.0 when this answer is unparseable).
- `length`: 0.0 within `length_budget` tokens, then -(excess / budget), down to -1.0.

The answer of a completion is its <CONCLUSION> for the reasoning prompt and the whole text for the
direct prompt, parsed to one class by `reasonbed.prompts.parse_class`. Malformed completions (None,
empty, unclosed tags) are scored, never raised on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reasonbed.prompts import STAGES, answer_class, check_prompt_kind, parse_chain, parse_class


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower().replace("_", " ")).split())


def is_plain_option(text: str | None, class_names: Sequence[str]) -> bool:
    """Whether `text` is exactly one option (case, punctuation, spacing and a plural tolerated)."""
    if not text or parse_class(text, class_names) is None:
        return False
    said = _words(text)
    return any(said in (name, name + "s", name + "es") for name in map(_words, class_names))


def format_reward(completions: Sequence[str | None], labels: Sequence[int], *, class_names: Sequence[str] = (),
                  prompt_kind: str = "reasoning", **_: Any) -> list[float]:
    """Reasoning: 1.0 for all five stages in order, else 0.1 per stage present; direct: 1.0 for a plain option."""
    if check_prompt_kind(prompt_kind) == "direct":
        return [1.0 if is_plain_option(text, class_names) else 0.0 for text in completions]
    scores = []
    for text in completions:
        chain = parse_chain(text or "")
        scores.append(1.0 if chain.complete else 0.1 * (len(STAGES) - len(chain.missing)))
    return scores


def accuracy_reward(completions: Sequence[str | None], labels: Sequence[int], *, class_names: Sequence[str],
                    prompt_kind: str = "reasoning", **_: Any) -> list[float]:
    """1.0 when the parsed answer is the label."""
    return [float(answer_class(text, prompt_kind, class_names) == int(label))
            for text, label in zip(completions, labels, strict=True)]


def hierarchy_reward(completions: Sequence[str | None], labels: Sequence[int], *, class_names: Sequence[str],
                     prompt_kind: str = "reasoning", super_classes: Sequence[str | None] | None = None,
                     hierarchy_partial: float = 0.5, outside_penalty: float = 1.0, **_: Any) -> list[float]:
    """Graded by the class hierarchy: label 1, same super-class `hierarchy_partial`, other 0, outside -penalty."""
    if super_classes is not None and len(super_classes) != len(class_names):
        raise ValueError(f"super_classes has {len(super_classes)} entries for {len(class_names)} classes")
    scores = []
    for text, label in zip(completions, labels, strict=True):
        answer = answer_class(text, prompt_kind, class_names)
        if answer is None:
            scores.append(-float(outside_penalty))
        elif answer == int(label):
            scores.append(1.0)
        elif super_classes is not None and super_classes[answer] is not None \
                and super_classes[answer] == super_classes[int(label)]:
            scores.append(float(hierarchy_partial))
        else:
            scores.append(0.0)
    return scores


def consistency_reward(completions: Sequence[str | None], labels: Sequence[int], *, class_names: Sequence[str],
                       prompt_kind: str = "reasoning",
                       view_completions: Sequence[Sequence[str | None]] | None = None, **_: Any) -> list[float]:
    """Agreement with the answers given for a label-preserving transform of the same image."""
    if view_completions is None or len(view_completions) != len(completions):
        raise ValueError("reward 'consistency' needs context view_completions: one list of completions for the "
                         "transformed image per completion")
    scores = []
    for text, views in zip(completions, view_completions, strict=True):
        answer = answer_class(text, prompt_kind, class_names)
        if answer is None or not views:
            scores.append(0.0)
            continue
        agree = sum(answer_class(view, prompt_kind, class_names) == answer for view in views)
        scores.append(agree / len(views))
    return scores


def length_reward(completions: Sequence[str | None], labels: Sequence[int], *, length_budget: int = 0,
                  completion_tokens: Sequence[int] | None = None, **_: Any) -> list[float]:
    """0 within the budget, then minus the excess as a fraction of the budget, at most -1."""
    if length_budget < 1:
        raise ValueError(f"reward 'length' needs length_budget >= 1, got {length_budget!r}")
    if completion_tokens is None:  # without token counts, count words
        completion_tokens = [len((text or "").split()) for text in completions]
    if len(completion_tokens) != len(completions):
        raise ValueError(f"{len(completion_tokens)} token counts for {len(completions)} completions")
    return [-min(1.0, max(0, int(n) - length_budget) / length_budget) for n in completion_tokens]
