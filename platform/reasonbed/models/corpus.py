"""The image-text corpus the tiny models are pretrained on (see `reasonbed.models.pretrain`).

Images come from the benchmark's own drawing code (`reasonbed.data.drawing`) with seeds of their
own (`corpus/<seed>/...`, never the benchmark's `<seed>/<style>/<shape>`), and from more of it:
twelve shapes (the benchmark's six and six more), ten colours, eight styles, one to four figures
in a looser layout, and digit glyphs of PIL's built-in font, blurred and rotated by 0-90 degrees.

Every image has known attributes, so every text about it is true. Texts come in four kinds:
- `caption`: a short description (style, count, colour, shape; for digits the digit and its turn);
- `qa`: one question about one attribute (shape, colour, count, style; which digit) and its answer;
- `classify`: RD-MLDG's classification prompt (`reasonbed.prompts.classification_prompt`) over a
  varied option list (2 to 12 options, always holding the true one, in sorted or shuffled order),
  answered with the option, so the model learns to pick from the options it is given;
- `chain`: the reasoning prompt (`reasonbed.prompts.reasoning_prompt`) over such a list, answered
  with a short five-tag chain (summary, caption, reasoning, reflection, conclusion), true for the
  image, in wording close to but not the same as the benchmark's template teacher.
The option lists come from a fixed seeded pool, which keeps the number of distinct prompts (each is
encoded once) small. `tokenizer_texts()` is every template filled with every value: what the
tokenizer is trained on, so a prompt or a chain costs few tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from reasonbed.data.drawing import (
    ALL_COLOURS,
    ALL_SHAPES,
    ALL_STYLES,
    COLOURLESS_STYLES,
    MAX_COUNT,
    SHAPE_FACTS,
    render,
    render_digit,
)
from reasonbed.prompts import classification_prompt, format_chain, reasoning_prompt

KINDS = ("caption", "qa", "classify", "chain")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COUNT_WORDS = ("one", "two", "three", "four")
DIGIT_FACTS = (
    "one closed oval loop",
    "a single upright stroke",
    "a curve on top and a flat base",
    "two bumps that open to the left",
    "a closed corner and a crossing upright stroke",
    "a flat top, a short stem and a bump below",
    "a stroke that curls into a loop at the bottom",
    "a flat top and one long slanted stroke",
    "two loops stacked on each other",
    "a loop at the top and a stroke going down",
)
CAPTION_PROMPTS = ("Describe the image.", "What does the image show?", "Write a short caption for the image.")
SHAPE_QUESTIONS = {
    "shape": "What shape are the figures?",
    "colour": "What colour are the figures?",
    "count": "How many figures are there?",
    "style": "In what style is the image drawn?",
}
DIGIT_QUESTION = "Which digit is shown?"
SHAPE_SUMMARIES = (
    "I will look at the outline of the figures and match it to an option.",
    "I will describe the figures, then pick the option their outline fits.",
    "The outline decides the class, so I will compare it with each option.",
)
SHAPE_REFLECTIONS = (
    "The {style} style changes colour and texture, not the outline, so it is a {shape}.",
    "Colour and number do not decide the class; the outline fits a {shape}.",
    "Every figure has the same outline, the outline of a {shape}.",
)
DIGIT_SUMMARY = "I will look at the strokes of the digit and match them to an option."
DIGIT_REFLECTION = "Turning a digit does not change its strokes, so it is {name}."


@dataclass(frozen=True)
class CorpusSpec:
    """How many images of which kinds the corpus draws, and how often each kind of text appears."""

    shape_images: int = 4000  # distinct shape images rendered
    digit_images: int = 1200  # distinct digit images rendered
    image_size: int = 56  # side of every corpus image in pixels (Qwen: a multiple of 28)
    # Relative frequency of each style among the shape images (calibration: see reasonbed.models.pretrain).
    style_weights: tuple[tuple[str, float], ...] = tuple((style, 1.0) for style in ALL_STYLES)
    # Relative frequency of each kind of text among the examples.
    kind_weights: tuple[tuple[str, float], ...] = (("caption", 0.15), ("qa", 0.2), ("classify", 0.35),
                                                   ("chain", 0.3))
    option_lists: int = 256  # size of the seeded pool of option lists per domain (shapes, digits)
    max_angle: float = 90.0  # digits are turned by 0..max_angle degrees


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _plural(shape: str, count: int) -> str:
    if count == 1:
        return _article(shape)
    return f"{COUNT_WORDS[count - 1]} {shape}{'es' if shape.endswith('s') else 's'}"


def shape_figures(attrs: dict[str, Any]) -> str:
    """'two red stars' / 'a star' (colourless styles name no colour)."""
    figures = _plural(attrs["shape"], attrs["count"])
    if attrs["colour"] == "none":
        return figures
    words = figures.split(" ", 1)
    return f"{words[0]} {attrs['colour']} {words[1]}"


def sample_attributes(spec: CorpusSpec, seed: int) -> list[dict[str, Any]]:
    """The attributes of every corpus image (shapes first, then digits), from the corpus seed."""
    rng = random.Random(f"corpus/{seed}/attributes")
    styles = [style for style, _ in spec.style_weights]
    weights = [weight for _, weight in spec.style_weights]
    images: list[dict[str, Any]] = []
    for _ in range(spec.shape_images):
        style = rng.choices(styles, weights)[0]
        colour = rng.choice(sorted(ALL_COLOURS))
        images.append({"kind": "shape", "shape": rng.choice(ALL_SHAPES), "count": rng.randint(1, MAX_COUNT),
                       "style": style, "colour": "none" if style in COLOURLESS_STYLES else colour,
                       "ink": colour})
    for _ in range(spec.digit_images):
        images.append({"kind": "digit", "digit": rng.randrange(10), "angle": rng.uniform(0.0, spec.max_angle),
                       "blur_side": rng.randint(7, 14)})
    return images


def render_image(attrs: dict[str, Any], index: int, seed: int, size: int) -> Any:
    """The PIL image of one corpus record (its own seeded stream: corpus/<seed>/image/<index>)."""
    rng = random.Random(f"corpus/{seed}/image/{index}")
    if attrs["kind"] == "digit":
        return render_digit(attrs["digit"], size, rng, attrs["angle"], blur_side=attrs["blur_side"])
    return render(attrs["shape"], attrs["ink"], attrs["count"], attrs["style"], size, rng,
                  scale=rng.uniform(0.75, 1.15), jitter=0.07, tilt=0.6)


def option_pool(names: tuple[str, ...], size: int, rng: random.Random) -> list[list[str]]:
    """`size` option lists over `names`: 2..len(names) options, sorted (half the time) or shuffled."""
    pool = []
    for _ in range(size):
        chosen = rng.sample(names, rng.randint(2, len(names)))
        if rng.random() < 0.5:
            chosen = [name for name in names if name in chosen]
        pool.append(chosen)
    return pool


def _with_answer(options: list[str], answer: str, rng: random.Random) -> list[str]:
    """`options` holding `answer`: it replaces a random option when missing."""
    if answer in options:
        return options
    options = list(options)
    options[rng.randrange(len(options))] = answer
    return options


def _angle_words(angle: float) -> str:
    rounded = int(round(angle / 15.0) * 15)
    return "upright" if rounded == 0 else f"turned by about {rounded} degrees"


def caption(attrs: dict[str, Any]) -> str:
    if attrs["kind"] == "digit":
        return (f"A blurry white digit {DIGIT_NAMES[attrs['digit']]} on a black background, "
                f"{_angle_words(attrs['angle'])}.")
    return f"A {attrs['style']} image of {shape_figures(attrs)}."


def shape_chain(attrs: dict[str, Any], options: list[str], rng: random.Random) -> str:
    shape, style = attrs["shape"], attrs["style"]
    return format_chain({
        "SUMMARY": rng.choice(SHAPE_SUMMARIES),
        "CAPTION": caption(attrs),
        "REASONING": f"Each figure has {SHAPE_FACTS[shape]}. Among the options, that is {_article(shape)}.",
        "REFLECTION": rng.choice(SHAPE_REFLECTIONS).format(style=style, shape=shape),
        "CONCLUSION": shape,
    })


def digit_chain(attrs: dict[str, Any], options: list[str], rng: random.Random) -> str:
    name = DIGIT_NAMES[attrs["digit"]]
    return format_chain({
        "SUMMARY": DIGIT_SUMMARY,
        "CAPTION": caption(attrs),
        "REASONING": f"The strokes form {DIGIT_FACTS[attrs['digit']]}, which is how {name} is written.",
        "REFLECTION": DIGIT_REFLECTION.format(name=name),
        "CONCLUSION": name,
    })


def question_answer(attrs: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    if attrs["kind"] == "digit":
        return DIGIT_QUESTION, DIGIT_NAMES[attrs["digit"]]
    topics = ["shape", "count", "style"] + ([] if attrs["colour"] == "none" else ["colour"])
    topic = rng.choice(topics)
    answer = {"shape": attrs["shape"], "count": COUNT_WORDS[attrs["count"] - 1], "style": attrs["style"],
              "colour": attrs["colour"]}[topic]
    return SHAPE_QUESTIONS[topic], answer


def example_text(kind: str, attrs: dict[str, Any], pools: dict[str, list[list[str]]],
                 rng: random.Random) -> tuple[str, str]:
    """(prompt, target) of one example of `kind` about an image with `attrs`."""
    if kind == "caption":
        return rng.choice(CAPTION_PROMPTS), caption(attrs)
    if kind == "qa":
        return question_answer(attrs, rng)
    answer = DIGIT_NAMES[attrs["digit"]] if attrs["kind"] == "digit" else attrs["shape"]
    options = _with_answer(rng.choice(pools[attrs["kind"]]), answer, rng)
    if kind == "classify":
        return classification_prompt(options), answer
    if kind == "chain":
        chain = digit_chain if attrs["kind"] == "digit" else shape_chain
        return reasoning_prompt(options), chain(attrs, options, rng)
    raise ValueError(f"unknown example kind {kind!r}; known: {', '.join(KINDS)}")


def option_pools(spec: CorpusSpec, seed: int) -> dict[str, list[list[str]]]:
    rng = random.Random(f"corpus/{seed}/options")
    return {"shape": option_pool(ALL_SHAPES, spec.option_lists, rng),
            "digit": option_pool(DIGIT_NAMES, spec.option_lists, rng)}


def tokenizer_texts() -> list[str]:
    """Every corpus template filled with every value (deterministic): the tokenizer's training text."""
    rng = random.Random("corpus/tokenizer")
    texts = [classification_prompt(list(ALL_SHAPES)), reasoning_prompt(list(ALL_SHAPES)),
             classification_prompt(list(DIGIT_NAMES)), reasoning_prompt(list(DIGIT_NAMES)),
             *CAPTION_PROMPTS, *SHAPE_QUESTIONS.values(), DIGIT_QUESTION,
             "system\nYou are a helpful assistant.", "user\n", "assistant\n"]
    for style in ALL_STYLES:
        for shape in ALL_SHAPES:
            for count in range(1, MAX_COUNT + 1):
                colour = "none" if style in COLOURLESS_STYLES else sorted(ALL_COLOURS)[count % len(ALL_COLOURS)]
                attrs = {"kind": "shape", "shape": shape, "count": count, "style": style, "colour": colour}
                texts.append(shape_chain(attrs, list(ALL_SHAPES), rng))
    for colour in ALL_COLOURS:
        texts.append(f"{colour} " * 3)
    for digit in range(10):
        for angle in range(0, 91, 15):
            texts.append(digit_chain({"kind": "digit", "digit": digit, "angle": float(angle)}, [], rng))
    return texts
