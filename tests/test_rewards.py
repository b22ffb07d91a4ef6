"""Rewards on hand-written completions (well-formed and malformed), their weighted combination, the
image transforms of the consistency reward, and bad input (unknown reward, mismatched weights)."""

from __future__ import annotations

import pytest

from reasonbed.data.synthetic import SPEC
from reasonbed.prompts import STAGES, answer_class, format_chain
from reasonbed.registry import RegistryError
from reasonbed.rewards import REWARDS, score
from reasonbed.rewards.transforms import TRANSFORMS

# SPEC: round: circle, ring; polygon: square, triangle; symbol: cross, star
NAMES = SPEC.display_names
LABEL = {name: index for index, name in enumerate(NAMES)}
SUPER = SPEC.super_classes
CONTEXT = {"class_names": NAMES, "super_classes": SUPER}


def chain(conclusion: str) -> str:
    return format_chain({**{stage: f"the {stage.lower()}" for stage in STAGES}, "CONCLUSION": conclusion})


def reward(name: str, completions, labels, **context):
    return REWARDS.get(name)(completions, labels, **{**CONTEXT, **context})


def test_spec_hierarchy_is_what_the_tests_assume():
    assert SUPER[LABEL["circle"]] == SUPER[LABEL["ring"]] == "round"
    assert SUPER[LABEL["square"]] == "polygon" and SUPER[LABEL["star"]] == "symbol"


def test_format_reasoning_five_tags_in_order():
    complete = chain("circle")
    two_stages = "<SUMMARY>plan</SUMMARY><CONCLUSION>circle</CONCLUSION>"
    reordered = complete.replace("<SUMMARY>the summary</SUMMARY>\n", "") + "\n<SUMMARY>late</SUMMARY>"
    unclosed = complete.replace("</CONCLUSION>", "")
    completions = [complete, two_stages, reordered, unclosed, "circle", "", None, "<SUMMARY><CAPTION>"]
    scores = reward("format", completions, [0] * len(completions), prompt_kind="reasoning")
    assert scores == pytest.approx([1.0, 0.2, 0.5, 0.4, 0.0, 0.0, 0.0, 0.0])


def test_format_direct_plain_answer_only():
    completions = ["circle", " Circle.", "circles", "CIRCLE\n", "a circle", "circle star", "banana", "", None,
                   chain("circle")]
    scores = reward("format", completions, [0] * len(completions), prompt_kind="direct")
    assert scores == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_accuracy_parses_the_answer_per_prompt():
    label = LABEL["star"]
    direct = ["star", "It is a star.", "circle", "star or circle", "", None, "<CONCLUSION>star"]
    assert reward("accuracy", direct, [label] * 7, prompt_kind="direct") == [1, 1, 0, 0, 0, 0, 1]
    reasoning = [chain("star"), chain("circle"), "<SUMMARY>star</SUMMARY>", "star", chain("star or cross"),
                 "<CONCLUSION>star</CONCLUSION>", None]
    assert reward("accuracy", reasoning, [label] * 7, prompt_kind="reasoning") == [1, 0, 0, 0, 0, 1, 0]


def test_hierarchy_partial_credit_and_outside_penalty():
    circle = LABEL["circle"]
    completions = ["circle", "ring", "square", "banana", "circle or ring", "", None, "the ring."]
    labels = [circle] * len(completions)
    assert reward("hierarchy", completions, labels, prompt_kind="direct") == [1.0, 0.5, 0.0, -1.0, -1.0, -1.0, -1.0, 0.5]
    custom = reward("hierarchy", completions[:4], labels[:4], prompt_kind="direct", hierarchy_partial=0.25,
                    outside_penalty=2.0)
    assert custom == [1.0, 0.25, 0.0, -2.0]
    flat = reward("hierarchy", ["ring"], [circle], prompt_kind="direct", super_classes=None)
    assert flat == [0.0], "without a hierarchy a wrong class earns nothing"
    reasoning = reward("hierarchy", [chain("ring"), "<SUMMARY>ring</SUMMARY>"], [circle, circle])
    assert reasoning == [0.5, -1.0], "a chain without a conclusion answers nothing"
    with pytest.raises(ValueError, match="super_classes has 2 entries for 6 classes"):
        reward("hierarchy", ["ring"], [circle], super_classes=["a", "b"])


def test_consistency_agreement_with_the_transformed_view():
    star = LABEL["star"]
    completions = ["star", "star", "circle", "nothing", "star"]
    views = [["star", "star"], ["star", "circle"], ["star", "star"], ["nothing", "nothing"], []]
    scores = reward("consistency", completions, [star] * 5, prompt_kind="direct", view_completions=views)
    assert scores == [1.0, 0.5, 0.0, 0.0, 0.0], "unparseable answers agree with nothing"
    malformed_views = reward("consistency", ["star"], [star], prompt_kind="direct", view_completions=[[None, ""]])
    assert malformed_views == [0.0]
    with pytest.raises(ValueError, match="needs context view_completions"):
        reward("consistency", ["star"], [star], prompt_kind="direct")


def test_length_penalty_beyond_budget():
    scores = reward("length", ["a"] * 5, [0] * 5, length_budget=4, completion_tokens=[2, 4, 6, 8, 40])
    assert scores == [0.0, 0.0, -0.5, -1.0, -1.0]
    by_words = reward("length", ["one two three four five six", None, ""], [0, 0, 0], length_budget=4)
    assert by_words == [-0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="length_budget >= 1"):
        reward("length", ["a"], [0], length_budget=0)


def test_answer_class_reads_the_answer_of_each_prompt_kind_and_rejects_others():
    assert answer_class("star", "direct", NAMES) == LABEL["star"]
    assert answer_class(chain("a star"), "reasoning", NAMES) == LABEL["star"]
    assert answer_class("star", "reasoning", NAMES) is None  # no conclusion: no answer
    assert answer_class(None, "direct", NAMES) is None and answer_class("", "reasoning", NAMES) is None
    with pytest.raises(ValueError, match="prompt kind 'chat'"):
        answer_class("star", "chat", NAMES)


def test_score_combines_weighted_terms_and_keeps_each():
    completions = ["circle", "ring", "banana", "a circle"]
    labels = [LABEL["circle"]] * 4
    scores = score(["format", "accuracy", "hierarchy"], [0.5, 1.0, 0.5], completions, labels,
                   prompt_kind="direct", **CONTEXT)
    assert scores.terms["format"] == [1.0, 1.0, 0.0, 0.0]
    assert scores.terms["accuracy"] == [1.0, 0.0, 0.0, 1.0]
    assert scores.terms["hierarchy"] == [1.0, 0.5, -1.0, 1.0]
    assert scores.total == pytest.approx([2.0, 0.75, -0.5, 1.5])
    means = scores.means()
    assert means["reward/total"] == pytest.approx(3.75 / 4) and means["reward/format"] == 0.5
    assert set(means) == {"reward/format", "reward/accuracy", "reward/hierarchy", "reward/total"}


def test_custom_reward_plugs_in_by_registry():
    @REWARDS.register("test_shortness")
    def shortness(completions, labels, **_):
        return [1.0 / (1 + len(text or "")) for text in completions]

    scores = score(["test_shortness", "accuracy"], [1.0, 2.0], ["star", ""], [LABEL["star"]] * 2,
                   prompt_kind="direct", **CONTEXT)
    assert scores.total == pytest.approx([0.2 + 2.0, 1.0])


@pytest.mark.parametrize("name", ["hflip", "crop", "grayscale"])
def test_transforms_keep_image_size(name):
    from PIL import Image

    image = Image.new("RGB", (56, 48), (200, 10, 10))
    image.putpixel((0, 0), (0, 0, 255))
    out = TRANSFORMS.get(name)(image)
    assert out.size == image.size and out.mode == "RGB"
    if name == "hflip":
        assert out.getpixel((55, 0)) == (0, 0, 255)


# --- bad input --------------------------------------------------------------------------------------

def test_unknown_reward_name():
    with pytest.raises(RegistryError, match="unknown reward 'correctness'.*accuracy.*consistency.*format"):
        REWARDS.get("correctness")
    with pytest.raises(RegistryError, match="unknown reward 'correctness'"):
        score(["format", "correctness"], [1.0, 1.0], ["star"], [0], **CONTEXT)


def test_weights_that_do_not_match_the_rewards():
    with pytest.raises(ValueError, match=r"1 reward weights \[1.0\] for 2 rewards \['format', 'accuracy'\]"):
        score(["format", "accuracy"], [1.0], ["star"], [0], **CONTEXT)
    with pytest.raises(ValueError, match="not a finite number"):
        score(["format"], [float("nan")], ["star"], [0], **CONTEXT)
    with pytest.raises(ValueError, match="2 completions but 1 labels"):
        score(["format"], [1.0], ["star", "ring"], [0], **CONTEXT)
    with pytest.raises(ValueError, match="no reward named"):
        score([], [], ["star"], [0], **CONTEXT)


def test_a_reward_returning_the_wrong_count_is_caught():
    @REWARDS.register("test_broken")
    def broken(completions, labels, **_):
        return [0.0]

    with pytest.raises(ValueError, match="reward 'test_broken' returned 1 values for 2 completions"):
        score(["test_broken"], [1.0], ["a", "b"], [0, 0], **CONTEXT)
