"""The serving recipe of docs/serving.md, tested: vLLM's OpenAI-compatible server on the tiny base model with the
exported LoRA adapter as a served module (127.0.0.1, the CPU flags of reasonbed's vllm engine), one image
request answered and parsed, then reasonbed's `openai` engine pointed at it - directly and through
`reasonbed predict --engine openai` - answering as transformers does with the adapter on the base model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from reasonbed.data import catalog
from reasonbed.data.catalog import DataConfig
from reasonbed.inference.base import EngineConfig, Request, SamplingConfig, build_engine
from reasonbed.models import ModelConfig
from reasonbed.train.evaluate import answer_class, prompt_for

pytestmark = pytest.mark.slow
NAME = "shapes-lora"  # the adapter's name on the server: what a client asks for
CLASSES = ["circle", "cross", "ring", "square", "star", "triangle"]
GREEDY = SamplingConfig(n=1, temperature=0.0, max_tokens=12)


def serve_args(adapter: Path) -> list[str]:
    """The LoRA flags of docs/serving.md (as reasonbed.inference.vllm_engine sets them for vllm.LLM)."""
    return ["--enable-lora", "--max-lora-rank", "64", "--max-loras", "1", "--enable-tower-connector-lora",
            "--lora-modules", f"{NAME}={adapter}"]


@pytest.fixture(scope="module")
def server(tiny_model_dir, exported_adapter, start_vllm_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("serving") / "server.log"
    with start_vllm_server(tiny_model_dir, log, serve_args(exported_adapter)) as running:
        yield running


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    root = Path(catalog.resolve(DataConfig(dataset="synthetic_shapes", images_per_class=2))[1])
    folder = tmp_path_factory.mktemp("to-serve")
    paths = sorted((root / "sketch").rglob("*.png"))[:6]
    for index, path in enumerate(paths):
        shutil.copy(path, folder / f"q{index}.png")
    return sorted(folder.glob("*.png"))


def test_served_adapter_answers_like_transformers_and_reasonbeds_openai_engine_uses_it(
        server, images, exported_adapter, tiny_model_dir, tmp_path, ray_session):
    import openai
    from PIL import Image

    from reasonbed.inference.openai_engine import image_data_url
    from reasonbed.share.predict import PredictConfig, run_predict

    assert server.models[:2] == [str(tiny_model_dir), NAME]
    prompt = prompt_for("direct", CLASSES)
    loaded = [Image.open(path).convert("RGB") for path in images]
    # one request, as any OpenAI client sends it
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="EMPTY")
    response = client.chat.completions.create(model=NAME, temperature=0.0, max_tokens=12, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_url(loaded[0])}},
                                     {"type": "text", "text": prompt}]}])
    answer = response.choices[0].message.content
    reference = [c.text for (c,) in build_engine(EngineConfig(
        name="hf", model=ModelConfig(path=str(tiny_model_dir)), lora_path=str(exported_adapter))).generate(
        [Request(image, prompt) for image in loaded], GREEDY)]
    assert answer == reference[0]
    assert answer_class(answer, "direct", CLASSES) == answer_class(reference[0], "direct", CLASSES)
    # reasonbed's openai engine on the served adapter ...
    engine = build_engine(EngineConfig(name="openai", base_url=server.url + "/v1", served_model=NAME))
    assert [c.text for (c,) in engine.generate([Request(image, prompt) for image in loaded], GREEDY)] == reference
    # ... and `reasonbed predict --engine openai` (Ray Data actors; class names from the export's reasonbed.json)
    output = tmp_path / "served.parquet"
    summary = run_predict(PredictConfig(data=str(images[0].parent), adapter=str(exported_adapter),
                                        output=str(output), engine=EngineConfig(
                                            name="openai", base_url=server.url + "/v1", served_model=NAME)))
    rows = pq.read_table(output).to_pylist()
    assert summary["images"] == len(images) and [row["answer"] for row in rows] == reference
    assert {row["engine"] for row in rows} == {"openai"} and {row["model"] for row in rows} == {NAME}
    assert json.loads(json.dumps(rows[0]["prompt"])) == prompt
