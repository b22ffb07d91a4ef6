"""A template teacher for the synthetic benchmark: true five-stage chains from known attributes.

It reads each image's attributes (shape, colour, count, style) from the benchmark's metadata and
writes chains whose every statement is true, with wording varied per candidate. With
`template_noise` > 0 a seeded fraction of candidates is spoiled (a missing stage or a wrong
conclusion), so rejection sampling has something to reject on CPU runs.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from reasonbed.data.specs import DatasetError
from reasonbed.data.synthetic import SHAPE_FACTS, read_metadata
from reasonbed.inference.base import Completion, EngineConfig, Request, SamplingConfig
from reasonbed.prompts import STAGES, format_chain

_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
# Short on purpose: a chain costs its tokens in every training step and every generation (about 70 tokens
# of the tiny models' tokenizer; docs/training.md, "The tiny world").
_STYLE_WORDS = {
    "photo": "a shaded photo-like style",
    "sketch": "black outlines on white",
    "cartoon": "a flat cartoon style with thick outlines",
    "painting": "a noisy, blurred painting style",
}
_SUMMARIES = (
    "I will compare the outline of the figures with each option.",
    "I will match the outline of the figures to one option.",
    "I will count corners and curves, then pick an option.",
)
_REFLECTIONS = (
    "The {style} style changes colour and texture, not the outline.",
    "Colour and number do not decide the class; the outline does.",
    "Every figure has the same outline, that of a {shape}.",
)


def _plural(shape: str, count: int) -> str:
    if count == 1:
        return f"a {shape}" if shape[0] not in "aeiou" else f"an {shape}"
    return f"{_COUNT_WORDS[count]} {shape}{'es' if shape.endswith('s') else 's'}"


def true_chain(attributes: dict[str, Any], options: list[str], rng: random.Random) -> dict[str, str]:
    """The five stages of a true chain about an image with these attributes."""
    shape, count, style, colour = attributes["shape"], int(attributes["count"]), attributes["style"], attributes["colour"]
    figures = _plural(shape, count)
    coloured = figures if colour == "none" else f"{figures} in {colour}"
    return {
        "SUMMARY": rng.choice(_SUMMARIES),
        "CAPTION": f"Drawn in {_STYLE_WORDS[style]}, the image shows {coloured}.",
        "REASONING": f"Each figure has {SHAPE_FACTS[shape]}; of the options, that is the {shape}.",
        "REFLECTION": rng.choice(_REFLECTIONS).format(style=style, shape=shape),
        "CONCLUSION": shape,
    }


class TemplateEngine:
    """The `template` engine: a perfect (optionally noisy) teacher for `synthetic_shapes`."""

    multi_image: ClassVar[bool] = False  # writes chains about one image; in-context examples are refused

    def __init__(self, cfg: EngineConfig, data_root: str = "", storage_options: dict | None = None,
                 **_: Any) -> None:
        if not data_root:
            raise DatasetError("the template engine needs the synthetic benchmark's root (data.root)")
        try:
            self.metadata = read_metadata(data_root, storage_options)
        except FileNotFoundError:
            raise DatasetError(
                f"the template engine needs attribute metadata (metadata.jsonl) under {data_root!r}: "
                "it only serves the synthetic_shapes benchmark"
            ) from None
        self.noise = cfg.template_noise
        self.model_id = "template-teacher"

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        results = []
        for request in requests:
            if request.examples:
                raise ValueError("template engine: in-context examples are not supported (one image per prompt)")
            path = request.meta["path"]
            if path not in self.metadata:
                raise DatasetError(f"template engine: no attributes for image {path!r} in metadata.jsonl")
            options = list(request.meta["class_names"])
            candidates = []
            for index in range(sampling.n):
                rng = random.Random(f"{sampling.seed}/{path}/{request.meta.get('candidate_offset', 0) + index}")
                stages = true_chain(self.metadata[path], options, rng)
                if rng.random() < self.noise:
                    if rng.random() < 0.5:
                        stages.pop(rng.choice(STAGES[:-1]))
                        text = "\n".join(f"<{s}>{stages[s]}</{s}>" for s in STAGES if s in stages)
                    else:
                        stages["CONCLUSION"] = rng.choice([name for name in options if name != stages["CONCLUSION"]])
                        text = format_chain(stages)
                else:
                    text = format_chain(stages)
                candidates.append(Completion(text, len(request.prompt.split()), len(text.split())))
            results.append(candidates)
        return results
