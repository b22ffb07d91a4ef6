"""Prompts of RD-MLDG and the parsers from completions to classes and reasoning stages.

The classification prompt is RD-MLDG's ("What type of object is in this photo? Choose from the
following options:" plus the classes); the reasoning prompt asks for five tagged stages
<SUMMARY>, <CAPTION>, <REASONING>, <REFLECTION>, <CONCLUSION>. `parse_class` maps a completion to
one class, tolerating case, punctuation, singular/plural, separators inside names, compound nouns and
extra words; an answer naming no class or two classes is unparseable (None) and counts as wrong.
`prompt_for` and `answer_class` are the one prompt and the one reading of an answer per prompt kind (direct,
reasoning) that evaluation, predictions and GRPO's rewards share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

PROMPT_VERSION = "rd-mldg-v1"
STAGES = ("SUMMARY", "CAPTION", "REASONING", "REFLECTION", "CONCLUSION")
PROMPT_KINDS = ("direct", "reasoning")  # the classification prompt, the reasoning prompt
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


# Irregular plurals (singular -> plural); every other word follows the regular rules below.
IRREGULAR_PLURALS = {
    "knife": "knives", "mouse": "mice", "shelf": "shelves", "leaf": "leaves", "wolf": "wolves", "half": "halves",
    "wife": "wives", "life": "lives", "calf": "calves", "loaf": "loaves", "scarf": "scarves", "thief": "thieves",
    "goose": "geese", "tooth": "teeth", "foot": "feet", "man": "men", "woman": "women", "child": "children",
    "ox": "oxen", "person": "people",
}
IRREGULAR_SINGULARS = {plural: singular for singular, plural in IRREGULAR_PLURALS.items()}
_WORD = re.compile(r"[a-z0-9]+")
_JOINER = re.compile(r"[\s_\-]*")  # what may stand between the words of one name or compound noun
_MAX_SPAN = 6  # words one class mention may span ("post it notes" is 3)


def singular(word: str) -> str:
    """English singular of a lower-case word (irregulars from a small table, then regular rules)."""
    if word in IRREGULAR_SINGULARS:
        return IRREGULAR_SINGULARS[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def plural(word: str, irregular: bool = True) -> str:
    """English plural of a lower-case singular word (`irregular=False`: the regular rules only, "persons")."""
    if irregular and word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def _words(name: str) -> list[str]:
    return _WORD.findall(name.lower())


@lru_cache(maxsize=64)
def _forms(class_names: tuple[str, ...]) -> dict[str, frozenset[int]]:
    """Every written form of every class -> the classes it names.

    A form is the name's words run together (separators between them are free: "post-it", "post it" and
    "postit" are one form) with the last word as given, in the singular or in the plural. A form two
    classes share names both (and so never parses to one of them).
    """
    forms: dict[str, set[int]] = {}
    for index, name in enumerate(class_names):
        words = _words(name)
        if not words:
            continue
        head, last = "".join(words[:-1]), words[-1]
        for variant in {last, singular(last), plural(last), plural(singular(last)), plural(singular(last), False)}:
            forms.setdefault(head + variant, set()).add(index)
    return {form: frozenset(indices) for form, indices in forms.items()}


@dataclass(frozen=True)
class Mention:
    """Words [first, last) of a text (character span start:end) that name `classes`."""

    first: int
    last: int
    start: int
    end: int
    classes: frozenset[int]


def class_mentions(text: str, class_names: Sequence[str]) -> list[Mention]:
    """The class names found in `text`, longest first where they overlap, in reading order.

    Words are compared whole (never "dog" inside "hotdog"), case-insensitively; the words of one mention
    may be separated only by spaces, hyphens or underscores. Where mentions overlap the longest wins
    ("desk lamp" over "lamp").
    """
    forms = _forms(tuple(class_names))
    lowered = text.lower()
    words = [(match.start(), match.end(), match.group()) for match in _WORD.finditer(lowered)]
    found = []
    for first in range(len(words)):
        compact = ""
        for last in range(first, min(len(words), first + _MAX_SPAN)):
            if last > first and not _JOINER.fullmatch(lowered[words[last - 1][1]:words[last][0]]):
                break
            compact += words[last][2]
            if compact in forms:
                found.append(Mention(first, last + 1, words[first][0], words[last][1], forms[compact]))
    kept: list[Mention] = []
    for mention in sorted(found, key=lambda m: (-(m.end - m.start), m.start)):
        if all(mention.last <= other.first or other.last <= mention.first for other in kept):
            kept.append(mention)
    return sorted(kept, key=lambda m: m.start)


def parse_class(text: str | None, class_names: Sequence[str]) -> int | None:
    """The one class `text` names (index into class_names), or None if it names none or several.

    Tolerates case, punctuation, singular/plural both ways ("knife"/"knives", "battery"/"batteries"),
    underscores, hyphens and spaces inside names ("Post_it_Notes", "post-it notes", "postit notes") and
    extra words. Class names inside a longer one: the longest match wins ("desk lamp", not "lamp"), and
    class names written as one compound noun (joined only by spaces, hyphens or underscores) name its
    last word, the head noun: "computer mouse" is a mouse, "bike helmet" a helmet. Two classes named
    apart ("a pen and a pencil", "dog, horse") are unparseable; "people" is the plural of "person".
    """
    if not text:
        return None
    lowered = text.lower()
    mentions = class_mentions(lowered, class_names)
    heads = [mention for n, mention in enumerate(mentions)
             if n + 1 == len(mentions) or not _JOINER.fullmatch(lowered[mention.end:mentions[n + 1].start])]
    named = frozenset().union(*(mention.classes for mention in heads))
    return next(iter(named)) if len(named) == 1 else None


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


def check_prompt_kind(kind: str) -> str:
    """`kind` when it is one of PROMPT_KINDS, else ValueError naming it."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"prompt kind {kind!r} is not one of {', '.join(PROMPT_KINDS)}")
    return kind


def prompt_for(kind: str, class_names: Sequence[str]) -> str:
    """The user text of prompt `kind` over `class_names`."""
    if check_prompt_kind(kind) == "reasoning":
        return reasoning_prompt(class_names)
    return classification_prompt(class_names)


def answer_class(text: str | None, kind: str, class_names: Sequence[str]) -> int | None:
    """The class an answer to prompt `kind` names: the whole answer (direct) or the chain's conclusion
    (reasoning); None when there is no answer, or it names no class or several (counted wrong)."""
    if check_prompt_kind(kind) == "reasoning":
        text = parse_chain(text).conclusion if text else None
    return parse_class(text, class_names)


def format_chain(stages: dict[str, str]) -> str:
    """Join stage texts into the tagged chain format (the inverse of parse_chain for valid chains)."""
    return "\n".join(f"<{stage}>{stages[stage]}</{stage}>" for stage in STAGES)
