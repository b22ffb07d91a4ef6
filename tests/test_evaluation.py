"""OOD evaluation, the cheap part: condition sampling (balance, no self-example, seeds, label and
spurious shift asserted on the sampled examples), multi-image chat prompts, metrics, bad input."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from reasonbed.config import ConfigError, load
from reasonbed.data import synthetic
from reasonbed.data.specs import DatasetError
from reasonbed.evaluation.config import EvalConfig
from reasonbed.evaluation.plan import load_items, plan_rows
from reasonbed.evaluation.sampling import Sampler, Unavailable

CONDITIONS = ("target", "domain_shift", "label_shift", "spurious")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ood-shapes")
    synthetic.generate(str(root), images_per_class=5)
    return root


@pytest.fixture(scope="module")
def items(shapes):
    found, nuisance, _ = load_items(synthetic.SPEC, str(shapes), {})
    assert nuisance == "colour"
    return found


def _sampler(items, seed=0, nuisance="colour") -> Sampler:
    return Sampler(items, synthetic.SPEC.display_names, seed, "synthetic_shapes", nuisance)


def _episodes(sampler, condition, k):
    for domain in synthetic.STYLES:
        for query in sampler.queries(domain, 0):
            try:
                yield sampler.episode(condition, k, query)
            except Unavailable:
                assert condition == "spurious"


@pytest.mark.parametrize(("condition", "k"), [(c, k) for c in CONDITIONS for k in (2, 4, 8, 12)
                                               if (c, k) != ("spurious", 12)])  # 5 images/class: no 2 same-colour
def test_examples_are_class_balanced_and_never_the_query(items, condition, k):
    sampler, seen = _sampler(items), 0
    for episode in _episodes(sampler, condition, k):
        assert len(episode.examples) == k
        assert episode.query.id not in {item.id for item in episode.examples}
        assert len({item.id for item in episode.examples}) == k
        counts = Counter(item.label for item in episode.examples)
        assert max(counts.values()) - (min(counts.values()) if len(counts) == 6 else 0) <= 1, counts
        assert len(counts) == min(k, 6)
        domains = {item.domain for item in episode.examples}
        if condition in ("target", "label_shift", "spurious"):
            assert domains == {episode.query.domain}  # colour is the nuisance: examples from the query's domain
        else:
            assert len(domains) == 1 and episode.query.domain not in domains
        seen += 1
    assert seen >= (5 * 6 * 3 if condition != "spurious" else 1)  # few same-colour pairs at large k


def test_deterministic_by_seed(items):
    def draw(seed):
        sampler = _sampler(items, seed)
        return [(e.query.id, [i.id for i in e.examples], e.shown) for c in CONDITIONS for e in _episodes(sampler, c, 4)]

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)
    assert _sampler(items, 3).queries("photo", 12) == _sampler(items, 3).queries("photo", 12)
    subset = _sampler(items).queries("photo", 12)
    assert len(subset) == 12 and Counter(item.label for item in subset) == Counter(dict.fromkeys(range(6), 2))


def test_label_shift_permutes_labels_consistently(items):
    sampler = _sampler(items)
    for domain in synthetic.STYLES:
        mapping: dict[int, int] = {}
        for query in sampler.queries(domain, 0):
            episode = sampler.episode("label_shift", 8, query)
            for item, shown in zip(episode.examples, episode.shown, strict=True):
                assert shown != item.label  # every label really changes
                assert mapping.setdefault(item.label, shown) == shown  # one permutation per domain
            assert episode.cue_label == sampler.permutation(domain)[query.label] != query.label
        assert sorted(mapping) == sorted(mapping.values()) == list(range(6))  # a permutation of the classes


@pytest.mark.parametrize("nuisance", ["colour", "domain"])
def test_spurious_aligns_the_nuisance_with_the_label_but_not_in_the_query(items, nuisance):
    if nuisance == "domain":  # any DomainBed dataset: the domain itself is the nuisance
        items = [replace(item, nuisance=item.domain) for item in items]
    sampler, checked, misleading = _sampler(items, nuisance=nuisance), 0, 0
    for episode in _episodes(sampler, "spurious", 4):
        value_of: dict[int, str] = {}
        for item, shown in zip(episode.examples, episode.shown, strict=True):
            assert shown == item.label
            assert value_of.setdefault(item.label, item.nuisance) == item.nuisance  # agrees in every example
        if len(value_of) <= len({item.nuisance for item in items}) - (nuisance == "colour"):
            assert len(set(value_of.values())) == len(value_of)  # distinct values: the nuisance predicts the label
        assert value_of.get(episode.query.label) != episode.query.nuisance  # ... but not in the query
        if episode.cue_label >= 0:
            assert value_of[episode.cue_label] == episode.query.nuisance != value_of.get(episode.query.label)
            misleading += 1
        checked += 1
    assert checked >= (3 if nuisance == "colour" else 4) * 6 * 5 - 10 and misleading > 0
    if nuisance == "colour":  # sketches are colourless: no spurious colour to align there
        with pytest.raises(Unavailable, match="one value"):
            sampler.episode("spurious", 2, sampler.queries("sketch", 1)[0])


def test_plan_rows_cover_every_condition(shapes):
    cfg = load(EvalConfig, overrides=[f"data.root={shapes}", "shots=[0,2]", "queries_per_domain=6",
                                      "prompts=[direct]", "engine.name=hf"])
    sampler = _sampler(load_items(synthetic.SPEC, str(shapes), {})[0])
    rows, skipped = plan_rows(cfg, synthetic.SPEC, sampler)
    per = Counter((row["condition"], row["k"]) for row in rows)
    assert per[("zero_shot", 0)] == per[("knowledge", 0)] == per[("target", 2)] == 24
    assert per[("spurious", 2)] == 18 and sum(skipped.values()) == 6 and "sketch" in next(iter(skipped))
    assert all(len(json.loads(row["examples"])) == row["k"] for row in rows)


# --- bad input --------------------------------------------------------------------------------------

def test_k_larger_than_a_class_has_images_names_it(shapes):
    cfg = load(EvalConfig, overrides=[f"data.root={shapes}", "shots=[0,30]", "engine.name=hf", "domains=[photo]"])
    sampler = _sampler(load_items(synthetic.SPEC, str(shapes), {})[0])
    with pytest.raises(DatasetError, match=r"'synthetic_shapes'.*domain 'photo'.*k=30.*5 image\(s\) of class "
                                           r"'\w+' besides the query, but only 4 exist"):
        plan_rows(cfg, synthetic.SPEC, sampler)


def test_engine_without_multi_image_support_is_refused():
    with pytest.raises(ConfigError, match=r"engine 'template' does not support several images.*3 asked.*hf"):
        load(EvalConfig, overrides=["engine.name=template", "shots=[0,2]"])
    cfg = load(EvalConfig, overrides=["engine.name=template", "shots=[0]"])  # zero-shot only: fine
    assert cfg.images_per_prompt == 1


def test_every_engine_says_where_its_weights_are_and_which_cannot_run_on_their_own():
    from reasonbed.generation.config import GenerationConfig
    from reasonbed.inference.base import ENGINES, engine_weights
    from reasonbed.share.predict import PredictConfig

    weights = {name: engine_weights(name) for name in ENGINES.names()}  # read from the classes, nothing built
    assert weights == {"hf": "local", "openai": "served", "template": "none", "vllm": "local", "vllm_actor": "local"}
    assert all(isinstance(ENGINES.get(name).multi_image, bool) for name in ENGINES.names())
    with pytest.raises(ConfigError, match="the template engine has no model .* cannot predict"):
        load(PredictConfig, overrides=["engine.name=template", "output=/tmp/x.parquet", "data=/tmp/images"])
    # GRPO's rollout engine is built from a training run's live model: refused wherever engines run on their own
    for config, overrides in ((GenerationConfig, ["output=/tmp/chains"]), (EvalConfig, []),
                              (PredictConfig, ["output=/tmp/x.parquet", "data=/tmp/images"])):
        with pytest.raises(ConfigError, match="engine 'vllm_actor' samples a training run's live policy.*hf, openai"):
            load(config, overrides=["engine.name=vllm_actor", *overrides])


def test_bad_config_values_name_the_key():
    with pytest.raises(ConfigError, match="conditions.*'noise'.*allowed"):
        load(EvalConfig, overrides=["conditions=[target,noise]"])
    with pytest.raises(ConfigError, match="shots"):
        load(EvalConfig, overrides=["shots=[0,-2]"])


def test_an_adapter_brings_the_image_bounds_it_was_trained_with(tmp_path):
    """From a run directory's config.yaml or an export's reasonbed.json; a model with bounds of its own keeps them."""
    from reasonbed.evaluation.adapters import with_trained_image_bounds
    from reasonbed.models.configs import ModelConfig

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  max_image_pixels: 12544\n  min_image_pixels: 0\n")
    export = tmp_path / "export"
    export.mkdir()
    (export / "reasonbed.json").write_text(json.dumps({"min_image_pixels": 3136, "max_image_pixels": 6272}))
    base = ModelConfig()
    trained = with_trained_image_bounds(base, str(run / "adapter"))
    assert (trained.min_image_pixels, trained.max_image_pixels) == (0, 12544)
    exported = with_trained_image_bounds(base, str(export))
    assert (exported.min_image_pixels, exported.max_image_pixels) == (3136, 6272)
    own = with_trained_image_bounds(ModelConfig(max_image_pixels=9000), str(export))
    assert (own.min_image_pixels, own.max_image_pixels) == (0, 9000)  # its own bounds, not mixed with the export's
    assert with_trained_image_bounds(base, str(tmp_path)) == base and with_trained_image_bounds(base, "") == base


def test_adapter_for_another_base_model_is_refused(tmp_path, tiny_model_dir):
    from reasonbed.evaluation.adapters import check_adapter, resolve_adapter
    from reasonbed.models import (
        LoraConfig,
        ModelConfig,
        apply_lora,
        build_tiny_model,
        load_model_and_processor,
    )

    other = build_tiny_model("qwen2_5_vl", pretrained=False)  # CI pretrains qwen2_vl only
    model, _ = load_model_and_processor(ModelConfig(family="qwen2_5_vl", path=str(other)))
    apply_lora(model, LoraConfig(), "qwen2_5_vl").save_pretrained(tmp_path / "run" / "adapter")
    adapter = resolve_adapter(str(tmp_path / "run"))  # a run directory resolves to its adapter/
    assert adapter == str((tmp_path / "run" / "adapter").resolve())
    check_adapter(adapter, ModelConfig(family="qwen2_5_vl", path=str(other)), str(other))  # its own base: fits
    with pytest.raises(ConfigError, match=r"adapter '.*adapter'.*qwen2_5_vl-tiny.*does not fit model .*qwen2_vl-tiny"
                                          r".*module 'model\.visual\.blocks\.0\.mlp\.\w+_proj'"):
        check_adapter(adapter, ModelConfig(path=str(tiny_model_dir)), str(tiny_model_dir))
    with pytest.raises(ConfigError, match="neither a LoRA adapter directory"):
        resolve_adapter(str(tmp_path))


# --- prompts and metrics ----------------------------------------------------------------------------

def test_chat_prompt_with_examples(tiny_model_dir):
    from reasonbed.models import ModelConfig, build_chat_prompt, load_processor

    processor = load_processor(ModelConfig(path=str(tiny_model_dir)))
    single = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}], tokenize=False,
        add_generation_prompt=True)
    assert build_chat_prompt(processor, "Q?") == build_chat_prompt(processor, "Q?", examples=()) == single
    text = build_chat_prompt(processor, "Q?", examples=[("E1?", "circle"), ("E2?", "star")])
    assert text.count("<|image_pad|>") == 3 and text.endswith(single[single.index("<|im_start|>user"):])
    turns = ["E1?<|im_end|>\n<|im_start|>assistant\ncircle<|im_end|>", "E2?<|im_end|>\n<|im_start|>assistant\nstar",
             "<|image_pad|><|vision_end|>Q?<|im_end|>\n<|im_start|>assistant\n"]
    assert 0 < text.index(turns[0]) < text.index(turns[1]) < text.index(turns[2])


def test_metrics_from_answered_rows():
    import pandas as pd

    from reasonbed.evaluation.metrics import confusion_matrices, results_table

    rows = [{"model": "m", "prompt": "direct", "condition": "label_shift", "k": 2, "domain": d, "label": label,
             "predicted_label": predicted, "cue_label": cue, "correct": label == predicted,
             "unparseable": predicted < 0, "prompt_tokens": 10, "completion_tokens": 2, "seconds": 0.5}
            for d, label, predicted, cue in [("a", 0, 0, 1), ("a", 1, 0, 0), ("a", 1, -1, 0), ("b", 0, 1, 1)]]
    table = results_table(pd.DataFrame(rows)).set_index("domain")
    assert table.loc["a", "accuracy"] == pytest.approx(1 / 3) and table.loc["a", "unparseable"] == pytest.approx(1 / 3)
    assert table.loc["a", "cue_rate"] == pytest.approx(1 / 3) and table.loc["b", "cue_rate"] == 1.0
    assert table.loc["mean", "accuracy"] == pytest.approx(1 / 6) and table.loc["mean", "n"] == 4
    matrix = confusion_matrices(pd.DataFrame(rows), 2)[("m", "direct", "label_shift", 2, "a")]
    assert matrix.tolist() == [[1, 0, 0], [1, 0, 1]]


def test_probe_is_scikit_learns_logistic_regression_on_standardised_features():
    """At the fitted weights the gradient of sum(cross-entropy) + |W|^2 / (2c) vanishes (scikit-learn's objective for
    LogisticRegression(C=c), unpenalised intercept), on features standardised as StandardScaler does; the class of a
    held-out domain is read."""
    import numpy as np
    import torch

    from reasonbed.evaluation.probe import LinearProbe, fit_probes

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 3

    def domain(shift: float, n: int = 60) -> dict[str, np.ndarray]:
        labels = np.arange(n) % 3
        vision = centers[labels] + rng.normal(size=(n, 8)) + shift
        vision[:, 0] *= 1000.0  # standardised away
        vision[:, 1] = 5.0  # a constant feature: left unscaled, no division by zero
        return {"vision": vision.astype(np.float32), "labels": labels}

    features = {"a": domain(0.0), "b": domain(0.3), "c": domain(-0.3)}
    rows = fit_probes(features, ["a", "c"], ["vision"], n_classes=3, c=1.0, max_iter=200)
    assert [row["domain"] for row in rows] == ["a", "c"] and all(row["train_images"] == 120 for row in rows)
    assert all(row["accuracy"] > 0.9 for row in rows), rows

    x = np.concatenate([features["b"]["vision"], features["c"]["vision"]])
    labels = np.array([0] * 10 + [1] * 70 + [2] * 40)  # unbalanced: the intercept matters
    for c in (0.05, 1.0):
        probe = LinearProbe.fit(x, labels, 3, c, 500)
        assert probe.iterations < 500
        standardised = (torch.as_tensor(x, dtype=torch.float64) - probe.mean) / probe.scale
        assert torch.allclose(standardised.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-9)
        assert torch.allclose(standardised.std(0, unbiased=False)[[0, *range(2, 8)]], torch.ones(7, dtype=torch.float64))
        assert probe.scale[1] == 1.0
        residual = torch.softmax(probe.logits(x), 1) - torch.nn.functional.one_hot(torch.as_tensor(labels), 3)
        assert torch.allclose(standardised.T @ residual + probe.weights / c, torch.zeros(8, 3, dtype=torch.float64),
                              atol=1e-4), c
        assert torch.allclose(residual.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-4), c


def test_a_corrupt_image_stops_the_evaluation_before_anything_or_is_skipped_and_counted(tmp_path):
    """data.on_corrupt on the evaluation's read path: `error` names the file before any engine starts or anything is
    written; `skip` leaves it out of the items and counts it (the report and provenance.json say it: the real
    run in tests/test_evaluation_run.py)."""
    from reasonbed.evaluation.runner import run_evaluation

    root = tmp_path / "data"
    synthetic.generate(str(root), images_per_class=1)
    corrupt = "photo/star/star_00000.png"
    (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    cfg = load(EvalConfig, overrides=[f"data.root={root}", f"output={tmp_path / 'out'}",
                                      'models=[{model: {path: "Qwen/Qwen2-VL-2B-Instruct", family: qwen2_vl}}]'])
    with pytest.raises(DatasetError, match=f"{corrupt}.*data.on_corrupt=skip"):
        run_evaluation(cfg)
    assert not (tmp_path / "out").exists()
    found, _, checked = load_items(synthetic.SPEC, str(root), {}, "skip")
    assert corrupt not in {item.path for item in found} and len(found) == 4 * 6 - 1
    assert checked.record()["skipped"] == 1 and checked.record()["first"][0]["path"] == corrupt


def test_dry_run_prints_the_resolved_config_and_starts_nothing(tmp_path, capsys):
    import yaml

    from reasonbed.cli import main

    out = tmp_path / "out"
    assert main(["evaluate", "--smoke-test", "--dry-run", "--output", str(out), "--model", "/models/base", "--family",
                 "qwen2_5_vl", "--adapter", "runs/mtct", "--adapter", "runs/sarr", "--shots", "0,4",
                 "prompts=[direct]"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out.split("# dry run")[0])
    assert [(m["model"]["path"], m["model"]["family"], m["adapter"]) for m in printed["models"]] == [
        ("/models/base", "qwen2_5_vl", ""), ("/models/base", "qwen2_5_vl", "runs/mtct"),
        ("/models/base", "qwen2_5_vl", "runs/sarr")]
    assert printed["shots"] == [0, 4] and printed["prompts"] == ["direct"] and printed["queries_per_domain"] == 12
    assert not out.exists()
