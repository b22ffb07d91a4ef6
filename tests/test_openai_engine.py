"""The `openai` engine against a real OpenAI-compatible server, and the serving recipe of docs/serving.md: one
vLLM API server for the module (on 127.0.0.1, the CPU flags of reasonbed's vllm engine, `--api-key`) serves the
session's tiny Qwen2-VL and the exported LoRA adapter as a served module.

The tests show that the engine generates schema rows through the Ray Data pipeline, that a 5xx answer is
retried by the client with backoff (a small flaky proxy in front of the server answers the first POSTs with
500), that a wrong key is a prompt, clear error with no retry, that the key never reaches the generation
output or the logs, that in-context examples go as earlier turns, and that the served adapter answers as
transformers does with the adapter on the base model - to any OpenAI client, to reasonbed's `openai` engine
and through `reasonbed predict --engine openai`.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reasonbed.config import load, to_dict
from reasonbed.data import synthetic
from reasonbed.generation.config import GenerationConfig
from reasonbed.generation.pipeline import redacted_config, run_generation
from reasonbed.generation.schema import SCHEMA
from reasonbed.generation.shards import ShardStore
from reasonbed.inference.base import EngineConfig, Request, SamplingConfig
from reasonbed.inference.openai_engine import OpenAIEngine

pytestmark = pytest.mark.slow

KEY_ENV = "REASONBED_TEST_OPENAI_ENGINE_KEY"  # a test-specific variable: never a real key's name
KEY = "rb-test-" + uuid.uuid4().hex  # what the server requires; unique, so a leak is unambiguous


NAME = "shapes-lora"  # the exported adapter's name on the server: what a client asks for
CLASSES = ["circle", "cross", "ring", "square", "star", "triangle"]


def serve_args(adapter: Path) -> list[str]:
    """The LoRA flags of docs/serving.md (as reasonbed.inference.vllm_engine sets them for vllm.LLM)."""
    return ["--enable-lora", "--max-lora-rank", "64", "--max-loras", "1", "--enable-tower-connector-lora",
            "--lora-modules", f"{NAME}={adapter}"]


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir: Path, exported_adapter: Path, tmp_path_factory: pytest.TempPathFactory,
                start_vllm_server) -> Iterator:
    """vLLM's OpenAI-compatible server on the tiny model and the exported adapter, requiring KEY (conftest)."""
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with start_vllm_server(tiny_model_dir, log_path, [*serve_args(exported_adapter), "--limit-mm-per-prompt",
                                                      '{"image":3}', "--api-key", KEY], key=KEY) as server:
        yield server


class FlakyProxy:
    """An HTTP proxy on 127.0.0.1 that answers the first `failures` POSTs with 500, forwards the rest."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.failures = 0
        self.posts = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 60  # a stuck client connection cannot hold a thread for ever

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes | None) -> None:
                headers = {name: value for name, value in self.headers.items()
                           if name.lower() in ("authorization", "content-type", "accept")}
                request = urllib.request.Request(proxy.upstream + self.path, data=body, headers=headers,
                                                 method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        self._answer(response.status, response.read(),
                                     response.headers.get("Content-Type", "application/json"))
                except urllib.error.HTTPError as error:
                    self._answer(error.code, error.read(), error.headers.get("Content-Type", "application/json"))

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._forward(None)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.posts += 1
                    fail = proxy.failures > 0
                    proxy.failures -= int(fail)
                if fail:
                    self._answer(500, b'{"error": {"message": "injected failure", "code": 500}}')
                else:
                    self._forward(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def reset(self, failures: int) -> None:
        with self.lock:
            self.failures, self.posts = failures, 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def proxy(vllm_server) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(vllm_server.url)
    yield flaky
    flaky.close()


@pytest.fixture(scope="module")
def photo_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("openai-shapes")
    synthetic.generate(str(root), images_per_class=1)  # 24 images; the tests use the 6 of `photo`
    return root


def _engine_cfg(base_url: str, served_model: str, **overrides: object) -> EngineConfig:
    return EngineConfig(name="openai", base_url=base_url, served_model=served_model, api_key_env=KEY_ENV,
                        max_concurrency=2, timeout_s=60.0, **overrides)


def _request(photo_shapes: Path) -> Request:
    from PIL import Image

    image = Image.open(next((photo_shapes / "photo" / "star").glob("*.png"))).convert("RGB")
    return Request(image, "What type of object is in this photo?", {"id": "star-0"})


def test_openai_engine_generates_schema_rows_without_leaking_the_key(
        tmp_path, photo_shapes, vllm_server, ray_session, monkeypatch, caplog):
    # Set in the driver only, after the session's Ray started: the engine runs in a Ray Data actor,
    # so the pipeline itself must carry the key there (workers do not see later driver env changes).
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.INFO)
    output = tmp_path / "chains"
    cfg = load(GenerationConfig, base={
        "data": {"dataset": "synthetic_shapes", "root": str(photo_shapes)}, "output": str(output),
        "domains": ["photo"], "shard_size": 3,
        "engine": {"name": "openai", "base_url": vllm_server.url + "/v1", "served_model": vllm_server.served_model,
                   "api_key_env": KEY_ENV, "batch_size": 3, "max_retries": 2, "timeout_s": 60.0},
        "sampling": {"n": 2, "max_tokens": 16},
    })
    summary = run_generation(cfg)

    store = ShardStore(str(output))
    table = store.read()
    assert table.schema.equals(SCHEMA)
    assert table.num_rows == 12 == summary["candidates"]  # 6 photo images x 2 candidates
    rows = table.to_pylist()
    assert {row["domain"] for row in rows} == {"photo"} and {row["engine"] for row in rows} == {"openai"}
    assert {row["teacher"] for row in rows} == {vllm_server.served_model}
    assert {(row["image_id"], row["candidate"]) for row in rows} == {
        (image_id, c) for image_id in {row["image_id"] for row in rows} for c in (0, 1)}
    assert all(row["completion_tokens"] > 0 and row["prompt_tokens"] > 0 and row["error"] == "" for row in rows)
    assert summary["completion_tokens"] > 0 and len(store.list_shards()) == 2

    # The key is nowhere in the output (shards, manifest), the resolved config or the driver's logs.
    files = [path for path in output.rglob("*") if path.is_file()]
    assert any(path.name == "manifest.json" for path in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["config"]["engine"]["api_key_env"] == KEY_ENV
    assert KEY not in json.dumps(redacted_config(cfg)) and KEY not in json.dumps(to_dict(cfg), default=str)
    assert caplog.records and KEY not in caplog.text
    ray_logs = Path(os.environ["RAY_TMPDIR"]) / "session_latest" / "logs"  # the actors' logs too
    for path in (p for p in ray_logs.rglob("*") if p.is_file()):
        assert KEY.encode() not in path.read_bytes(), f"the API key leaked into Ray's log {path}"


def test_5xx_is_retried_with_backoff(photo_shapes, vllm_server, proxy, monkeypatch):
    from reasonbed.inference.openai_engine import OpenAIEngine

    monkeypatch.setenv(KEY_ENV, KEY)
    engine = OpenAIEngine(_engine_cfg(proxy.url + "/v1", vllm_server.served_model, max_retries=2))
    proxy.reset(failures=2)
    started = time.monotonic()
    [completions] = engine.generate([_request(photo_shapes)], SamplingConfig(n=2, max_tokens=8))
    elapsed = time.monotonic() - started
    assert proxy.posts == 3  # two 500s, then the forwarded request
    assert len(completions) == 2 and all(c.completion_tokens > 0 for c in completions)
    assert elapsed >= 0.5  # the client backed off between attempts (0.5 s then 1 s, with jitter)


def test_5xx_after_all_retries_is_an_endpoint_error(photo_shapes, vllm_server, proxy, monkeypatch):
    from reasonbed.inference.openai_engine import EndpointError, OpenAIEngine

    monkeypatch.setenv(KEY_ENV, KEY)
    engine = OpenAIEngine(_engine_cfg(proxy.url + "/v1", vllm_server.served_model, max_retries=1))
    proxy.reset(failures=5)
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1.*answered 500"):
        engine.generate([_request(photo_shapes)], SamplingConfig(n=1, max_tokens=8))
    assert proxy.posts == 2  # the first attempt and one retry


def test_wrong_key_is_a_prompt_clear_error_without_retries(photo_shapes, vllm_server, proxy, monkeypatch):
    from reasonbed.inference.openai_engine import EndpointError, OpenAIEngine

    monkeypatch.setenv(KEY_ENV, "wrong-" + uuid.uuid4().hex)
    engine = OpenAIEngine(_engine_cfg(proxy.url + "/v1", vllm_server.served_model, max_retries=5))
    proxy.reset(failures=0)
    started = time.monotonic()
    with pytest.raises(EndpointError) as raised:
        engine.generate([_request(photo_shapes)], SamplingConfig(n=1, max_tokens=8))
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert proxy.url + "/v1" in message and "401" in message and KEY_ENV in message
    assert KEY not in message
    assert proxy.posts == 1  # a 401 is not retried (5 retries would have taken ~15 s of backoff)
    assert elapsed < 5.0


def test_in_context_examples_go_as_earlier_turns_like_transformers(photo_shapes, vllm_server, tiny_model_dir,
                                                                  monkeypatch):
    """Two in-context examples (earlier user/assistant turns with images): the endpoint answers them
    greedily exactly as transformers does on the prompt `build_chat_prompt(examples=...)` builds."""
    from PIL import Image

    from reasonbed.inference.base import Example, build_engine
    from reasonbed.models import ModelConfig

    monkeypatch.setenv(KEY_ENV, KEY)
    images = {shape: Image.open(next((photo_shapes / "photo" / shape).glob("*.png"))).convert("RGB")
              for shape in ("star", "ring", "square")}
    question = "What type of object is in this photo? Choose from the following options: ring, square, star."
    request = Request(images["star"], question, {"id": "star-0"},
                      [Example(images["ring"], question, "ring"), Example(images["square"], question, "square")])
    sampling = SamplingConfig(n=1, temperature=0.0, max_tokens=8)
    remote = OpenAIEngine(_engine_cfg(vllm_server.url + "/v1", vllm_server.served_model)).generate(
        [request], sampling)[0][0]
    local = build_engine(EngineConfig(name="hf", model=ModelConfig(path=str(tiny_model_dir)))).generate(
        [request], sampling)[0][0]
    assert remote.prompt_tokens == local.prompt_tokens > 3 * 4  # the same three-image prompt
    assert remote.text == local.text


def test_served_adapter_answers_like_transformers_and_reasonbeds_openai_engine_uses_it(
        vllm_server, exported_adapter, tiny_model_dir, tmp_path, ray_session, monkeypatch):
    """docs/serving.md: one request as any OpenAI client sends it, then reasonbed's `openai` engine and
    `reasonbed predict --engine openai` (Ray Data actors; class names from the export's reasonbed.json)."""
    import shutil

    import openai
    import pyarrow.parquet as pq
    from PIL import Image

    from reasonbed.data import catalog
    from reasonbed.data.catalog import DataConfig
    from reasonbed.inference.base import build_engine
    from reasonbed.inference.openai_engine import image_data_url
    from reasonbed.models import ModelConfig
    from reasonbed.prompts import answer_class, prompt_for
    from reasonbed.share.predict import PredictConfig, run_predict

    monkeypatch.setenv(KEY_ENV, KEY)
    root = Path(catalog.resolve(DataConfig(dataset="synthetic_shapes", images_per_class=2))[1])
    (tmp_path / "to-serve").mkdir()
    for index, path in enumerate(sorted((root / "sketch").rglob("*.png"))[:6]):
        shutil.copy(path, tmp_path / "to-serve" / f"q{index}.png")
    images = sorted((tmp_path / "to-serve").glob("*.png"))
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=12)
    assert vllm_server.models[:2] == [str(tiny_model_dir), NAME]
    prompt = prompt_for("direct", CLASSES)
    loaded = [Image.open(path).convert("RGB") for path in images]
    client = openai.OpenAI(base_url=vllm_server.url + "/v1", api_key=KEY)
    response = client.chat.completions.create(model=NAME, temperature=0.0, max_tokens=12, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_url(loaded[0])}},
                                     {"type": "text", "text": prompt}]}])
    answer = response.choices[0].message.content
    reference = [c.text for (c,) in build_engine(EngineConfig(
        name="hf", model=ModelConfig(path=str(tiny_model_dir)), lora_path=str(exported_adapter))).generate(
        [Request(image, prompt) for image in loaded], greedy)]
    assert answer == reference[0]
    assert answer_class(answer, "direct", CLASSES) == answer_class(reference[0], "direct", CLASSES)
    engine = OpenAIEngine(_engine_cfg(vllm_server.url + "/v1", NAME))
    assert [c.text for (c,) in engine.generate([Request(image, prompt) for image in loaded], greedy)] == reference
    output = tmp_path / "served.parquet"
    summary = run_predict(PredictConfig(data=str(images[0].parent), adapter=str(exported_adapter),
                                        output=str(output), engine=_engine_cfg(vllm_server.url + "/v1", NAME)))
    rows = pq.read_table(output).to_pylist()
    assert summary["images"] == len(images) and [row["answer"] for row in rows] == reference
    assert {row["engine"] for row in rows} == {"openai"} and {row["model"] for row in rows} == {NAME}
    assert json.loads(json.dumps(rows[0]["prompt"])) == prompt
