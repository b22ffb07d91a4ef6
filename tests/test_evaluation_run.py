"""OOD evaluation end to end on the tiny model: multi-image prompts agree between vLLM and
transformers; one small real run (two models side by side, k in {0, 2}) on Ray writes the report with
every table and plot, resumes from its shards, and its probe beats chance."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from reasonbed import cli
from reasonbed.config import load
from reasonbed.data import synthetic
from reasonbed.evaluation.config import EvalConfig
from reasonbed.evaluation.plan import load_items
from reasonbed.evaluation.prompts import example_prompt, query_prompt
from reasonbed.evaluation.sampling import Sampler

SECTIONS = ("## Models", "## Zero-shot accuracy", "## In-context learning", "## Domain knowledge",
            "## Linear probe against zero-shot", "## Confusion matrices", "## Cost", "## Skipped episodes",
            "## Provenance")
CORRUPT = "photo/star/star_00099.png"  # beside the generated images: the run's counts stay those of the shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ood-run-shapes")
    synthetic.generate(str(root), images_per_class=6)
    return root


@pytest.mark.slow
def test_multi_image_prompts_agree_in_vllm_and_transformers(shapes, tiny_model_dir):
    from PIL import Image

    from reasonbed.inference.base import EngineConfig, Example, Request, SamplingConfig, build_engine
    from reasonbed.models import ModelConfig

    items = load_items(synthetic.SPEC, str(shapes), {})[0]
    sampler = Sampler(items, synthetic.SPEC.display_names, 0, "synthetic_shapes", "colour")
    names = synthetic.SPEC.display_names

    def image(item):
        return Image.open(shapes / item.path).convert("RGB")

    requests = []
    for condition in ("target", "label_shift", "domain_shift"):
        for query in sampler.queries("cartoon", 2):
            episode = sampler.episode(condition, 2, query)
            examples = [Example(image(item), example_prompt(names), names[shown])
                        for item, shown in zip(episode.examples, episode.shown, strict=True)]
            requests.append(Request(image(query), query_prompt("direct", names), {"id": query.id}, examples))
    sampling = SamplingConfig(n=1, temperature=0.0, max_tokens=8)
    answers = {}
    for name in ("hf", "vllm"):  # vLLM's offline engine: the async one adds an engine-core process (its own test:
        # test_generation.py)
        engine = build_engine(EngineConfig(name=name, model=ModelConfig(path=str(tiny_model_dir)),
                                           images_per_prompt=3, max_model_len=1024, vllm_async=False))
        answers[name] = [(c.token_ids, c.text, c.prompt_tokens) for c, *_ in engine.generate(requests, sampling)]
        if hasattr(engine, "close"):
            engine.close()
    assert all(prompt_tokens > 3 * 4 for _, _, prompt_tokens in answers["hf"])  # three images' tokens each
    assert answers["vllm"] == answers["hf"]  # same prompt ids (3 images), same greedy tokens


@pytest.fixture(scope="module")
def evaluated(shapes, tiny_model_dir, tmp_path_factory, ray_session):
    """One run: the tiny model and the same with a (randomly initialised) LoRA adapter, on hf engines."""
    import peft

    from reasonbed.evaluation.runner import run_evaluation
    from reasonbed.models import LoraConfig, ModelConfig, load_model_and_processor
    from reasonbed.models.lora import peft_lora_config

    work = tmp_path_factory.mktemp("ood-run")
    data = work / "data"  # the shapes and one corrupt file, skipped (data.on_corrupt=skip) and counted
    shutil.copytree(shapes, data)
    (data / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    model, _ = load_model_and_processor(ModelConfig(path=str(tiny_model_dir)))
    lora = peft_lora_config(LoraConfig(), "qwen2_vl")
    lora.init_lora_weights = False  # a non-zero update, so the adapter visibly changes the answers
    peft.get_peft_model(model, lora).save_pretrained(work / "train-run" / "adapter")
    overrides = [
        f"data.root={data}", "data.on_corrupt=skip", "engine.name=hf", "engine.batch_size=12",
        "shots=[0,2]", "queries_per_domain=3", "prompts=[direct]", "max_tokens_direct=6",
        f'models=[{{model: {{path: "{tiny_model_dir}"}}, name: base}}, '
        f'{{model: {{path: "{tiny_model_dir}"}}, adapter: "{work / "train-run"}", name: tuned}}]']
    # the documented smoke command (`evaluate --smoke-test --output DIR`), on the hf engine and two models
    assert cli.main(["evaluate", "--smoke-test", "--output", str(work / "out"), *overrides]) == 0
    cfg = load(EvalConfig, base=yaml.safe_load((work / "out" / "config.yaml").read_text()))  # what the CLI ran
    report = work / "out" / "report.md"
    assert report.is_file() and (work / "out" / "report.html").is_file()
    return cfg, report, run_evaluation


@pytest.mark.slow
def test_report_has_every_table_and_plot(evaluated):
    cfg, report, _ = evaluated
    text = report.read_text()
    out = report.parent
    for section in SECTIONS:
        assert section in text, section
    images = re.findall(r"!\[[^\]]*\]\((plots/[^)]+)\)", text)
    expected = {f"plots/{name}.png" for name in ("accuracy_vs_k-base-direct", "accuracy_vs_k-tuned-direct",
                                                 "probe_vs_zero_shot", "confusion-base-direct",
                                                 "confusion-tuned-direct")}
    assert set(images) == expected and all((out / image).stat().st_size > 5000 for image in images)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(images) and 'src="plots/' not in page
    assert page.count("<table>") == len(re.findall(r"^\|---", text, flags=re.MULTILINE)) >= 8
    results = pd.read_csv(out / "results.csv")
    for model in ("base", "tuned"):
        here = results[results["model"] == model]
        assert {(c, k) for c, k in zip(here["condition"], here["k"], strict=True)} == {
            ("zero_shot", 0), ("knowledge", 0), ("target", 2), ("domain_shift", 2), ("label_shift", 2),
            ("spurious", 2)}
        assert set(here["domain"]) == {*synthetic.STYLES, "mean"}
    predictions = pd.concat([pd.read_parquet(path) for path in (out / "predictions").rglob("*.parquet")])
    assert len(predictions) == 2 * 4 * 3 * 6 - 2 * 3  # models x domains x queries x settings - sketch spurious
    assert predictions.groupby("model")["prompt_tokens"].min().min() > 0
    by_model = predictions.pivot_table(index=["image_id", "condition", "k"], columns="model", values="completion",
                                       aggfunc="first")
    assert (by_model["base"] != by_model["tuned"]).any()  # the adapter was applied
    skipped = json.loads((out / "provenance.json").read_text())["skipped_inputs"]
    assert skipped["skipped"] == 1 and skipped["first"][0]["path"] == CORRUPT
    assert "**1 corrupt image(s) skipped** (data.on_corrupt=skip" in text and f"`{CORRUPT}`" in text


@pytest.mark.slow
def test_probe_beats_chance(evaluated):
    _, report, _ = evaluated
    probe = pd.read_csv(report.parent / "probe.csv")
    vision = probe[probe["feature"] == "vision"]
    assert len(vision) == 2 * 4 and (vision["train_images"] == 3 * 36).all()
    assert vision["probe"].mean() > vision["chance"].iloc[0] + 0.1, vision


@pytest.mark.slow
def test_rerun_resumes_from_complete_shards(evaluated):
    cfg, report, run_evaluation = evaluated
    shards = sorted((report.parent / "predictions").rglob("*.parquet"))
    stamps = {path: path.stat().st_mtime_ns for path in shards}
    shards[0].unlink()
    run_evaluation(cfg)
    assert shards[0].is_file()
    assert {path: path.stat().st_mtime_ns for path in shards[1:]} == {path: stamps[path] for path in shards[1:]}
    cost = report.read_text().split("## Cost", 1)[1]
    assert re.search(r"\| base \| \d+ \| \d+ \| \d+ \| [\d.]+ \| 0\.0 \|", cost)  # features came from the cache
