"""The image-text corpus the tiny models are pretrained on (see `reasonbed.models.pretrain`).

Images come from the benchmark's own drawing code (`reasonbed.data.drawing`) with seeds of their
own (`corpus/<seed>/...`, never the benchmark's `<seed>/<style>/<shape>`), and from more of it:
twelve shapes (the benchmark's six and six more), ten colours, eight styles, one to four figures
in a looser layout, and digits (jittered pen strokes or PIL's built-in font), blurred and rotated by
0-90 degrees.

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
    DIGIT_HANDS,
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
# What the vision encoder is first trained to tell apart (one linear head each; see reasonbed.models.pretrain).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ALL_SHAPES, "digit": DIGIT_NAMES, "colour": (*sorted(ALL_COLOURS), "none"), "count": COUNT_WORDS,
    "style": ALL_STYLES,
}
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

    shape_images: int = 8000  # distinct shape images rendered
    digit_images: int = 2000  # distinct digit images rendered
    image_size: int = 56  # side of every corpus image in pixels (Qwen: a multiple of 28)
    # Relative frequency of each style among the shape images (calibration: see reasonbed.models.pretrain).
    style_weights: tuple[tuple[str, float], ...] = tuple(
        (style, 1.5 if style in ("painting", "photo") else 1.0) for style in ALL_STYLES)
    # Relative frequency of each kind of text among the examples.
    kind_weights: tuple[tuple[str, float], ...] = (("caption", 0.1), ("qa", 0.25), ("classify", 0.35),
                                                   ("chain", 0.3))
    option_lists: int = 24  # option lists per answer in the seeded pool (bounds the distinct prompts)
    # Shapes the corpus calls by another word (drawing name -> word), a calibration knob: e.g. (("ring", "hoop"),)
    # makes the benchmark's label "ring" a word the model never read, as real datasets' label words often are.
    # The default recipe uses none (its calibration knobs: style_weights and text_rarity).
    words: tuple[tuple[str, str], ...] = ()
    # Relative frequency in the image-text stage of the images of these shapes (1 for every other image);
    # calibration: a long tail, as in web image-text data (see reasonbed.models.pretrain).
    text_rarity: tuple[tuple[str, float], ...] = (("cross", 0.1), ("triangle", 0.1))

    def word(self, shape: str) -> str:
        """The corpus' word for a shape."""
        return dict(self.words).get(shape, shape)
    max_angle: float = 90.0  # digits are turned by 0..max_angle degrees
    upright: float = 0.25  # share of digits left upright (not resampled by a rotation, as scans are)


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _plural(shape: str, count: int) -> str:
    if count == 1:
        return _article(shape)
    return f"{COUNT_WORDS[count - 1]} {shape}{'es' if shape.endswith('s') else 's'}"


def shape_figures(attrs: dict[str, Any]) -> str:
    """'two red stars' / 'a star' (colourless styles name no colour)."""
    figures = _plural(attrs["word"], attrs["count"])
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
        shape = rng.choice(ALL_SHAPES)
        images.append({"kind": "shape", "shape": shape, "word": spec.word(shape), "count": rng.randint(1, MAX_COUNT),
                       "style": style, "colour": "none" if style in COLOURLESS_STYLES else colour,
                       "ink": colour})
    for _ in range(spec.digit_images):
        angle = 0.0 if rng.random() < spec.upright else rng.uniform(0.0, spec.max_angle)
        images.append({"kind": "digit", "digit": rng.randrange(10), "angle": angle,
                       "blur_side": rng.randint(7, 12), "hand": rng.choice(DIGIT_HANDS)})
    return images


def render_image(attrs: dict[str, Any], index: int, seed: int, size: int) -> Any:
    """The PIL image of one corpus record (its own seeded stream: corpus/<seed>/image/<index>)."""
    rng = random.Random(f"corpus/{seed}/image/{index}")
    if attrs["kind"] == "digit":
        return render_digit(attrs["digit"], size, rng, attrs["angle"], blur_side=attrs["blur_side"], hand=attrs["hand"])
    return render(attrs["shape"], attrs["ink"], attrs["count"], attrs["style"], size, rng,
                  scale=rng.uniform(0.85, 1.1), jitter=0.05, tilt=0.3)


def text_weights(spec: CorpusSpec, attributes: list[dict[str, Any]]) -> list[float]:
    """How often each image is drawn for the image-text stage (shapes of `text_rarity` less often)."""
    rarity = dict(spec.text_rarity)
    return [rarity.get(attrs["shape"], 1.0) if attrs["kind"] == "shape" else 1.0 for attrs in attributes]


def attribute_labels(attrs: dict[str, Any]) -> list[int]:
    """The index of each of an image's ATTRIBUTES values (-100 where the attribute does not apply)."""
    if attrs["kind"] == "digit":
        values = {"digit": DIGIT_NAMES[attrs["digit"]]}
    else:
        values = {"shape": attrs["shape"], "colour": attrs["colour"], "count": COUNT_WORDS[attrs["count"] - 1],
                  "style": attrs["style"]}
    return [names.index(values[name]) if name in values else -100 for name, names in ATTRIBUTES.items()]


def option_pool(names: tuple[str, ...], per_answer: int, rng: random.Random) -> dict[str, list[list[str]]]:
    """For each name, `per_answer` option lists holding it: 2..len(names) options, sorted half the time."""
    pool: dict[str, list[list[str]]] = {}
    for answer in names:
        lists = []
        for _ in range(per_answer):
            others = [name for name in names if name != answer]
            chosen = [answer, *rng.sample(others, rng.randint(1, len(others)))]
            rng.shuffle(chosen)
            if rng.random() < 0.5:
                chosen = [name for name in names if name in chosen]
            lists.append(chosen)
        pool[answer] = lists
    return pool


def _angle_words(angle: float) -> str:
    rounded = int(round(angle / 15.0) * 15)
    return "upright" if rounded == 0 else f"turned by about {rounded} degrees"


def caption(attrs: dict[str, Any]) -> str:
    if attrs["kind"] == "digit":
        return (f"A blurry white digit {DIGIT_NAMES[attrs['digit']]} on a black background, "
                f"{_angle_words(attrs['angle'])}.")
    return f"A {attrs['style']} image of {shape_figures(attrs)}."


def shape_chain_stages(attrs: dict[str, Any], rng: random.Random) -> dict[str, str]:
    """The five stages of a true chain about a shape image (attributes shape, word, count, colour, style).

    One way to write a true chain: the corpus teaches it, and the template teacher of the synthetic
    benchmark (`reasonbed.inference.template`) writes its chains with it, as a larger model of the
    same family would (teacher and student share a language; only the benchmark's images are new).
    """
    word, style = attrs["word"], attrs["style"]
    return {
        "SUMMARY": rng.choice(SHAPE_SUMMARIES),
        "CAPTION": caption(attrs),
        "REASONING": f"Each figure has {SHAPE_FACTS[attrs['shape']]}. Among the options, that is {_article(word)}.",
        "REFLECTION": rng.choice(SHAPE_REFLECTIONS).format(style=style, shape=word),
        "CONCLUSION": word,
    }


def shape_chain(attrs: dict[str, Any], options: list[str], rng: random.Random) -> str:  # noqa: ARG001
    return format_chain(shape_chain_stages(attrs, rng))


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
    answer = {"shape": attrs["word"], "count": COUNT_WORDS[attrs["count"] - 1], "style": attrs["style"],
              "colour": attrs["colour"]}[topic]
    return SHAPE_QUESTIONS[topic], answer


def example_text(kind: str, attrs: dict[str, Any], pools: dict[str, list[list[str]]],
                 rng: random.Random) -> tuple[str, str]:
    """(prompt, target) of one example of `kind` about an image with `attrs`."""
    if kind == "caption":
        return rng.choice(CAPTION_PROMPTS), caption(attrs)
    if kind == "qa":
        return question_answer(attrs, rng)
    answer = DIGIT_NAMES[attrs["digit"]] if attrs["kind"] == "digit" else attrs["word"]
    options = rng.choice(pools[answer])
    if kind == "classify":
        return classification_prompt(options), answer
    if kind == "chain":
        chain = digit_chain if attrs["kind"] == "digit" else shape_chain
        return reasoning_prompt(options), chain(attrs, options, rng)
    raise ValueError(f"unknown example kind {kind!r}; known: {', '.join(KINDS)}")


def option_pools(spec: CorpusSpec, seed: int) -> dict[str, list[list[str]]]:
    """Per answer (every shape and digit name), the seeded option lists its prompts draw from."""
    rng = random.Random(f"corpus/{seed}/options")
    words = tuple(spec.word(shape) for shape in ALL_SHAPES)
    return {**option_pool(words, spec.option_lists, rng), **option_pool(DIGIT_NAMES, spec.option_lists, rng)}


def tokenizer_texts() -> list[str]:
    """Every corpus template filled with every value (deterministic): the tokenizer's training text."""
    rng = random.Random("corpus/tokenizer")
    spec = CorpusSpec()
    texts = [classification_prompt(list(ALL_SHAPES)), reasoning_prompt(list(ALL_SHAPES)),
             classification_prompt(list(DIGIT_NAMES)), reasoning_prompt(list(DIGIT_NAMES)),
             *CAPTION_PROMPTS, *SHAPE_QUESTIONS.values(), DIGIT_QUESTION,
             "system\nYou are a helpful assistant.", "user\n", "assistant\n"]
    for style in ALL_STYLES:
        for shape in ALL_SHAPES:
            for count in range(1, MAX_COUNT + 1):
                colour = "none" if style in COLOURLESS_STYLES else sorted(ALL_COLOURS)[count % len(ALL_COLOURS)]
                attrs = {"kind": "shape", "shape": shape, "word": spec.word(shape), "count": count, "style": style,
                         "colour": colour}
                texts.append(shape_chain(attrs, list(ALL_SHAPES), rng))
    for colour in ALL_COLOURS:
        texts.append(f"{colour} " * 3)
    for digit in range(10):
        for angle in range(0, 91, 15):
            texts.append(digit_chain({"kind": "digit", "digit": digit, "angle": float(angle)}, [], rng))
    return texts
