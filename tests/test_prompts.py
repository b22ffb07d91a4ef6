"""Prompts and parsers: completions to classes and five-stage chains."""

from __future__ import annotations

import pytest

from reasonbed.data.specs import get_spec
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
