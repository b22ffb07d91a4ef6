"""A template teacher for the synthetic benchmark: true five-stage chains from known attributes.

It reads each image's attributes (shape, colour, count, style) from the benchmark's metadata and
writes chains whose every statement is true, with wording varied per candidate, in the words the
tiny models' pretraining corpus uses (`reasonbed.models.corpus.shape_chain_stages`: a teacher of the
student's family; with foreign wording the <1M-parameter student spends its fine-tuning on phrasing). With
`template_noise` > 0 a seeded fraction of candidates is spoiled (a missing stage or a wrong
conclusion), so rejection sampling has something to reject on CPU runs.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from reasonbed.data.specs import DatasetError
from reasonbed.data.synthetic import read_metadata
from reasonbed.inference.base import Completion, EngineConfig, Request, SamplingConfig
from reasonbed.models.corpus import shape_chain_stages
from reasonbed.prompts import STAGES, format_chain


class TemplateEngine:
    """The `template` engine: a perfect (optionally noisy) teacher for `synthetic_shapes`."""

    multi_image: ClassVar[bool] = False  # writes chains about one image; in-context examples are refused
    weights: ClassVar[str] = "none"  # no model: chains from the images' metadata
    follows_policy: ClassVar[bool] = False  # runs from its config alone

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
                attributes = self.metadata[path]
                stages = shape_chain_stages({**attributes, "kind": "shape", "word": attributes["shape"],
                                             "count": int(attributes["count"])}, rng)
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
