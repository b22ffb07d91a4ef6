"""Prompts and parsers: completions to classes and five-stage chains."""

from __future__ import annotations

import itertools
import re

import pytest

import reasonbed.data.catalog  # noqa: F401 - registers every built-in dataset spec (offline ones too)
from reasonbed.data.specs import DATASETS, get_spec
from reasonbed.prompts import (
    QUESTION,
    STAGES,
    classification_prompt,
    format_chain,
    parse_chain,
    parse_class,
    reasoning_prompt,
)

PACS = get_spec("pacs").display_names
OFFICE = get_spec("office_home").display_names


def test_prompts_carry_question_options_and_tags():
    prompt = classification_prompt(PACS)
    assert prompt.startswith(QUESTION) and all(name in prompt for name in PACS)
    reasoning = reasoning_prompt(PACS)
    positions = [reasoning.index(f"<{stage}>") for stage in STAGES]
    assert positions == sorted(positions)


@pytest.mark.parametrize(("text", "expected"), [
    ("dog", "dog"),
    ("Dog.", "dog"),
    ("  The answer is: GIRAFFE!", "giraffe"),
    ("I think these are elephants", "elephant"),
    ("person", "person"),
])
def test_parse_class_tolerates_case_punctuation_plurals(text, expected):
    assert parse_class(text, PACS) == PACS.index(expected)


@pytest.mark.parametrize("text", ["", None, "a cat", "dog or horse", "hotdog", "doghouse"])
def test_parse_class_none_or_two_is_unparseable(text):
    assert parse_class(text, PACS) is None


def test_parse_class_multiword_and_nested_names():
    assert parse_class("It is a desk lamp.", OFFICE) == OFFICE.index("desk lamp")
    assert parse_class("lamp shade", OFFICE) == OFFICE.index("lamp shade")
    assert parse_class("a trash can", OFFICE) == OFFICE.index("trash can")
    assert parse_class("a pen and a pencil", OFFICE) is None
    assert parse_class("ALARM_CLOCK", OFFICE) == OFFICE.index("alarm clock")


def test_parse_class_names_inside_names_separators_and_irregular_plurals():
    assert parse_class("a computer mouse", OFFICE) == OFFICE.index("mouse")
    assert parse_class("It is a bike helmet.", OFFICE) == OFFICE.index("helmet")
    assert parse_class("desk lamp", OFFICE) == OFFICE.index("desk lamp")
    for text in ("Post_it_Notes", "post-it notes", "postit notes", "Post-It Note", "post it note"):
        assert parse_class(text, OFFICE) == OFFICE.index("postit notes"), text
    assert parse_class("a knife", OFFICE) == OFFICE.index("knives")
    assert parse_class("two mice", OFFICE) == OFFICE.index("mouse")
    assert parse_class("a battery", OFFICE) == OFFICE.index("batteries")
    assert parse_class("a computer, a mouse", OFFICE) is None, "two classes named apart"
    assert parse_class("three people", PACS) == PACS.index("person")  # irregular plural
    assert parse_class("a person", PACS) == PACS.index("person")


# --- every class of every built-in spec, written in many ways -------------------------------------

IRREGULAR = {"knife": "knives", "mouse": "mice", "shelf": "shelves"}
SENTENCES = ("{}", "{}.", "Answer: {}", "The answer is {}!", "I think it looks like {} to me.")


def _other_number(word: str) -> str:
    """The word in the other grammatical number (this test's own small rules, not the parser's)."""
    lower = word.lower()
    for one, many in IRREGULAR.items():
        if lower in (one, many):
            return many if lower == one else one
    if lower.endswith("ies"):
        return word[:-3] + "y"
    if lower.endswith(("sses", "ches", "shes")):
        return word[:-2]
    if lower.endswith("s") and not lower.endswith("ss"):
        return word[:-1]
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + ("es" if lower.endswith(("ch", "sh", "x", "ss")) else "s")


def _variants(folder_name: str) -> set[str]:
    """Case, number and separator variants of a class folder name, each inside several sentences."""
    words = [w for part in folder_name.split("_") for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", part)]
    names = set()
    for number in (words, [*words[:-1], _other_number(words[-1])]):
        for separator in (" ", "-", "_", ""):
            joined = separator.join(number)
            names |= {joined, joined.lower(), joined.upper(), joined.title()}
    return {sentence.format(name) for name in names for sentence in SENTENCES}


@pytest.mark.parametrize("dataset", DATASETS.names())
def test_parse_class_every_class_of_every_spec(dataset):
    spec = get_spec(dataset)
    for names in (spec.display_names, list(spec.classes)):
        for index, folder_name in enumerate(spec.classes):
            for text in _variants(folder_name):
                assert parse_class(text, names) == index, (dataset, folder_name, text)
        for first, second in itertools.permutations(names, 2):
            for text in (f"{first} or {second}", f"{first}, {second}", f"a {first} and two {second}"):
                assert parse_class(text, names) is None, (dataset, text)


def test_domainbed_specs_are_all_covered():
    assert {"pacs", "vlcs", "office_home", "terra_incognita"} <= set(DATASETS.names())


def test_parse_chain_valid_reordered_missing():
    stages = {stage: f"text of {stage.lower()}" for stage in STAGES}
    valid = parse_chain(format_chain(stages))
    assert valid.complete and valid.conclusion == "text of conclusion"
    reordered = parse_chain("<CAPTION>c</CAPTION><SUMMARY>s</SUMMARY><REASONING>r</REASONING>"
                            "<REFLECTION>f</REFLECTION><CONCLUSION>dog</CONCLUSION>")
    assert not reordered.in_order and not reordered.complete
    missing = parse_chain("<SUMMARY>s</SUMMARY><CONCLUSION>dog</CONCLUSION>")
    assert missing.missing == ["CAPTION", "REASONING", "REFLECTION"] and not missing.complete
    unclosed = parse_chain("<SUMMARY>s</SUMMARY><CONCLUSION>dog")
    assert unclosed.conclusion is None
