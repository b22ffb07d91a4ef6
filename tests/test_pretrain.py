"""The tiny world that learns: pretraining corpus, recipe, factory build (cache, lock, random flag), calibration.

Cheap recipes (a few steps on a few dozen images) test the machinery; the session's pretrained
qwen2_vl tiny model (`tiny_model_dir`, built once per session with the factory's own recipe) tests
the calibration the rest of the suite relies on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasonbed.data.drawing import ALL_SHAPES, BENCHMARK_SHAPES
from reasonbed.generation.validate import judge
from reasonbed.models import FAMILIES
from reasonbed.models.configs import ModelConfig
from reasonbed.models.corpus import (
    DIGIT_NAMES,
    KINDS,
    CorpusSpec,
    example_text,
    option_pools,
    render_image,
    sample_attributes,
)
from reasonbed.models.encoding import CorpusEncoder
from reasonbed.models.loading import resolve_model_path
from reasonbed.models.pretrain import PretrainRecipe, answer_loss
from reasonbed.models.tiny import (
    MARKER,
    build_tiny_model,
    largest_weight_difference,
    tiny_model_hash,
    tiny_model_spec,
)

REPO = Path(__file__).resolve().parents[1]
# A recipe that exercises every stage in seconds.
QUICK = PretrainRecipe(corpus=CorpusSpec(shape_images=24, digit_images=8, option_lists=2), vision_steps=3,
                       vision_batch_size=8, steps=4, batch_size=4, warmup_steps=1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corpus_images_are_none_of_the_benchmarks_images(tmp_path):
    """The corpus draws its images from seeds of its own: none of the default corpus's first 1000 shape images (seed
    0, the tiny model's) is pixel for pixel an image of the synthetic benchmark, whose test domains it must not see."""
    import numpy as np
    from PIL import Image

    from reasonbed.data import synthetic

    def pixels(image: Image.Image) -> str:
        return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()

    spec = CorpusSpec()
    synthetic.generate(str(tmp_path), images_per_class=12, image_size=spec.image_size)
    benchmark = {pixels(Image.open(path)) for path in tmp_path.rglob("*.png")}
    shapes = [(index, attrs) for index, attrs in enumerate(sample_attributes(spec, seed=0)) if attrs["kind"] == "shape"]
    corpus = {pixels(render_image(attrs, index, 0, spec.image_size)) for index, attrs in shapes[:1000]}
    assert len(benchmark) == 4 * 6 * 12 and len(corpus) > 990
    assert not benchmark & corpus


def test_corpus_texts_are_true_and_options_vary():
    spec = CorpusSpec(shape_images=60, digit_images=20)
    attributes = sample_attributes(spec, seed=5)
    assert attributes == sample_attributes(spec, seed=5) and attributes != sample_attributes(spec, seed=6)
    assert {a["shape"] for a in attributes if a["kind"] == "shape"} - set(BENCHMARK_SHAPES)  # more shapes
    pools = option_pools(spec, seed=5)
    rng = random.Random(0)
    option_lists = set()
    for attrs in attributes:
        names = DIGIT_NAMES if attrs["kind"] == "digit" else ALL_SHAPES
        answer = DIGIT_NAMES[attrs["digit"]] if attrs["kind"] == "digit" else attrs["shape"]
        prompt, target = example_text("classify", attrs, pools, rng)
        options = prompt.split("options: ", 1)[1].split(". Answer", 1)[0].split(", ")
        option_lists.add(tuple(options))
        assert answer in options and target == answer and set(options) <= set(names)
        prompt, chain = example_text("chain", attrs, pools, rng)
        verdict = judge(chain, options, options.index(answer))
        assert verdict["kept"], (chain, verdict)
        for kind in KINDS:
            assert example_text(kind, attrs, pools, rng)[1]
    sizes = {len(options) for options in option_lists}
    assert len(option_lists) > 20 and min(sizes) == 2 and max(sizes) >= 8  # varied subsets, sizes and orders


def _corpus_examples(processor, shape_images: int, seed: int):
    """A small corpus of `seed`: its images, their `CorpusEncoder`, and one (image index, prompt, target) per
    image, the kinds of text in turn."""
    spec = CorpusSpec(shape_images=shape_images, digit_images=2)
    attributes = sample_attributes(spec, seed=seed)
    images = [render_image(attrs, index, seed, spec.image_size) for index, attrs in enumerate(attributes)]
    pools, rng = option_pools(spec, seed=seed), random.Random(seed)
    examples = [(index, *example_text(KINDS[index % len(KINDS)], attrs, pools, rng))
                for index, attrs in enumerate(attributes)]
    return images, CorpusEncoder(processor, images), examples


def test_corpus_encoder_equals_training_encoding():
    from reasonbed.models.encoding import encode_pathway
    from reasonbed.models.families import get_family
    from reasonbed.models.tiny import MAX_PIXELS, MIN_PIXELS, build_tokenizer

    family = get_family("qwen2_vl")
    processor = family.tiny_processor(build_tokenizer(family), MIN_PIXELS, MAX_PIXELS)
    images, encoder, examples = _corpus_examples(processor, shape_images=6, seed=1)
    for index, prompt, target in examples:
        fast, slow = encoder.item(index, prompt, target), encode_pathway(processor, images[index], prompt, target)
        assert fast.keys() == slow.keys()
        for key in slow:
            assert fast[key].equal(slow[key]), key


def test_answer_loss_is_the_models_own_loss_and_gradient():
    """The image-text stage's loss from the answer positions' logits equals transformers' causal-LM loss over
    the whole sequence, and so do its gradients, on a padded batch of answers of different lengths and places."""
    import torch

    from reasonbed.models.encoding import collate
    from reasonbed.models.families import get_family
    from reasonbed.models.tiny import MAX_PIXELS, MIN_PIXELS, build_tokenizer, instantiate_tiny_model

    family = get_family("qwen2_vl")
    tokenizer = build_tokenizer(family)
    processor = family.tiny_processor(tokenizer, MIN_PIXELS, MAX_PIXELS)
    model = instantiate_tiny_model(family, "tiny", tokenizer, seed=0).train()
    _, encoder, examples = _corpus_examples(processor, shape_images=4, seed=2)
    batch = collate([encoder.item(*example) for example in examples], processor.tokenizer.pad_token_id)
    labels = batch.pop("labels")
    assert len({int(row.ne(-100).nonzero()[0]) for row in labels}) > 1  # the answers start at different places

    def loss_and_grads(loss_of):
        model.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ours, our_grads = loss_and_grads(lambda: answer_loss(model, batch, labels, (labels[:, 1:] != -100).sum()))
    theirs, their_grads = loss_and_grads(lambda: model(**batch, labels=labels).loss)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5) and ours.item() > 0
    assert len(our_grads) == len(their_grads)
    for mine, reference in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-6)


def test_build_is_deterministic_cached_by_recipe_and_shows_progress(tmp_path: Path, capfd, monkeypatch):
    import torch

    first = build_tiny_model("qwen2_vl", out=tmp_path / "a", recipe=QUICK)
    progress = capfd.readouterr().err
    assert "vision step 3/3" in progress and "image-text step 4/4" in progress
    assert "loss" in progress and "elapsed" in progress and "eta" in progress
    # The same bytes in a process where vLLM's CPU worker has run: it makes torch.set_num_threads a no-op
    # after setting its own thread count (here: two threads, then the no-op, as vLLM 0.32 does).
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(torch, "set_num_threads", lambda count: None)
    try:
        second = build_tiny_model("qwen2_vl", out=tmp_path / "b", recipe=QUICK)
    finally:
        torch._C.set_num_threads(threads)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert _sha(first / name) == _sha(second / name), name
    marker = json.loads((first / MARKER).read_text())
    assert marker["spec"]["pretrain"] == json.loads(json.dumps(QUICK.as_dict())) and marker["pretraining"]["text_loss"] > 0

    # Replaying the two processes in one (the suite's build) writes their bytes, with their losses.
    replayed = build_tiny_model("qwen2_vl", out=tmp_path / "replayed", recipe=QUICK, in_one_process=True)
    assert _sha(replayed / "model.safetensors") == _sha(first / "model.safetensors")
    measured = [json.loads((path / MARKER).read_text())["pretraining"] for path in (first, replayed)]
    assert [m["in_one_process"] for m in measured] == [False, True] and all(m["processes"] == 2 for m in measured)
    assert all(measured[0][key] == measured[1][key] for key in ("vision_loss", "text_loss")), measured

    # Data parallelism is the one-process math: the same model up to float summation order, the same losses.
    one_process = build_tiny_model("qwen2_vl", out=tmp_path / "one", recipe=dataclasses.replace(QUICK, processes=1))
    assert QUICK.processes == 2 and largest_weight_difference(first, one_process) < 1e-5
    losses = [json.loads((path / MARKER).read_text())["pretraining"] for path in (first, one_process)]
    for key in ("vision_loss", "text_loss"):
        assert losses[0][key] == pytest.approx(losses[1][key], rel=1e-3), key

    random_model = build_tiny_model("qwen2_vl", out=tmp_path / "r", pretrained=False)
    assert _sha(random_model / "model.safetensors") != _sha(first / "model.safetensors")  # it did train

    # The recipe is in the cache hash: a cache hit returns at once, a changed recipe builds anew.
    cached = build_tiny_model("qwen2_vl", recipe=QUICK)
    started = time.perf_counter()
    assert build_tiny_model("qwen2_vl", recipe=QUICK) == cached
    assert time.perf_counter() - started < 1.0
    assert _sha(cached / "model.safetensors") == _sha(first / "model.safetensors")
    changed = PretrainRecipe(**{**QUICK.__dict__, "lr": QUICK.lr / 2})
    assert tiny_model_hash(tiny_model_spec("qwen2_vl", recipe=changed)) != tiny_model_hash(
        tiny_model_spec("qwen2_vl", recipe=QUICK))
    assert tiny_model_hash(tiny_model_spec("qwen2_vl", "small")) == tiny_model_hash(
        tiny_model_spec("qwen2_vl", "small", pretrained=False))  # the small size is never pretrained


def test_random_model_reachable_by_flag(tmp_path: Path, tiny_model_dir: Path):
    random_dir = Path(resolve_model_path(ModelConfig(tiny_pretrained=False)))
    assert random_dir != tiny_model_dir and "-random-" in random_dir.name
    assert json.loads((random_dir / MARKER).read_text())["spec"]["pretrain"] is None
    assert json.loads((tiny_model_dir / MARKER).read_text())["spec"]["pretrain"] is not None
    assert Path(resolve_model_path(ModelConfig())) == tiny_model_dir
    command = [sys.executable, "-m", "reasonbed", "tiny-model", "--random", "--no-eval"]
    shown = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    assert shown == [str(random_dir)]


@pytest.mark.slow  # two processes pretraining: seconds of real time
def test_concurrent_builds_build_once(tmp_path: Path):
    """Two processes ask for one model at once: one builds it, the other waits and reuses it. (The builder in one
    process: the data-parallel helpers are the test above's.)"""
    script = (
        "import sys; from reasonbed.models.corpus import CorpusSpec; from reasonbed.models.pretrain import "
        "PretrainRecipe; from reasonbed.models.tiny import build_tiny_model; "
        "recipe = PretrainRecipe(corpus=CorpusSpec(shape_images=24, digit_images=8, option_lists=2), vision_steps=3, "
        "vision_batch_size=8, steps=12, batch_size=4, warmup_steps=1, processes=1); "
        f"print(build_tiny_model('qwen2_vl', out={str(tmp_path / 'model')!r}, recipe=recipe))"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=REPO) for _ in range(2)]
    results = [process.communicate(timeout=600) for process in processes]
    assert all(process.returncode == 0 for process in processes), results
    assert {out.strip() for out, _ in results} == {str(tmp_path / "model")}
    built = [err for _, err in results if "image-text step 12/12" in err]
    waited = [err for _, err in results if "waiting for another process" in err]
    assert len(built) == 1 and len(waited) == 1, results
    assert json.loads((tmp_path / "model" / MARKER).read_text())["built_by_pid"] in {p.pid for p in processes}


@pytest.mark.parametrize("family", sorted(set(FAMILIES.names()) - {ModelConfig().family}))  # the default: built above
def test_every_family_can_be_pretrained(tmp_path: Path, family: str):
    from reasonbed.models.loading import load_model_and_processor

    path = build_tiny_model(family, out=tmp_path / family, recipe=QUICK, progress=lambda line: None)
    assert json.loads((path / MARKER).read_text())["pretraining"]["vision_loss"] > 0
    model, _ = load_model_and_processor(ModelConfig(family=family, path=str(path)))
    assert type(model).__name__.endswith("ForConditionalGeneration")


@pytest.fixture(scope="module")
def shapes_zero_shot(tiny_model_dir: Path) -> dict:
    from reasonbed.evaluation.zeroshot import zero_shot
    from reasonbed.models.loading import load_model_and_processor

    model, processor = load_model_and_processor(ModelConfig(path=str(tiny_model_dir)))
    return zero_shot(model, processor, "synthetic_shapes", chains=24)


def test_zero_shot_above_chance_everywhere_and_below_ceiling_somewhere(shapes_zero_shot: dict):
    accuracy, chance = shapes_zero_shot["accuracy"], shapes_zero_shot["chance"]
    assert all(n >= 48 for n in shapes_zero_shot["images_per_domain"].values())
    assert min(accuracy.values()) > chance + 0.05, accuracy
    assert min(accuracy.values()) < 0.8 * max(accuracy.values()), accuracy  # one style is clearly harder


def test_greedy_chains_are_valid_in_at_least_half_the_cases(shapes_zero_shot: dict):
    chains = shapes_zero_shot["chains"]
    assert chains["valid"] >= 0.5 and chains["kept"] > 0, chains
    assert chains["tokens"]["max"] <= 120, chains


def test_digits_zero_shot_above_chance_on_every_angle_and_below_ceiling_on_some(tiny_model_dir: Path, capsys):
    """Through `reasonbed tiny-model` (the cached model; what it prints: the model, then each domain's accuracy)."""
    import re

    from reasonbed import cli

    assert cli.main(["tiny-model", "--dataset", "rotated_digits", "--chains", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == str(tiny_model_dir)
    chance = float(re.search(r"rotated_digits: zero-shot accuracy .*chance ([\d.]+);", printed)[1])
    accuracy = {angle: float(value) for angle, value, _ in re.findall(r"^ +(\d+) +([\d.]+) +\((\d+) images\)$",
                                                                      printed, flags=re.MULTILINE)}
    assert chance == 0.1 and len(accuracy) == 6, printed
    assert min(accuracy.values()) > chance + 0.03, accuracy
    assert min(accuracy.values()) < 0.8 * max(accuracy.values()), accuracy  # one angle is clearly harder


def test_a_replica_that_fails_before_joining_is_reported_at_once():
    """A helper replica that dies while starting (here: its call raises TypeError) fails the build at once, named,
    instead of leaving rank 0 waiting out the join timeout."""
    import operator

    from reasonbed.models.replicas import JOIN_TIMEOUT_S, spawn_replicas

    started = time.perf_counter()
    with (pytest.raises(RuntimeError, match=r"replica 1 exited with code 1 before it joined"),
          spawn_replicas(2, operator.truediv, ())):
        pytest.fail("rank 0 joined a group whose helper had died")
    assert time.perf_counter() - started < JOIN_TIMEOUT_S / 10
