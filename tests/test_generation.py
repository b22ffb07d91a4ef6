"""Generation: validation rules, engines in Ray actors (vLLM async and offline), shards, resume (local and s3://),
bad input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from reasonbed.config import ConfigError, load
from reasonbed.data import synthetic
from reasonbed.data.specs import DatasetError
from reasonbed.generation.actors import EngineClock
from reasonbed.generation.config import GenerationConfig
from reasonbed.generation.pipeline import run_generation
from reasonbed.generation.schema import SCHEMA
from reasonbed.generation.shards import OutputError, ShardStore, kept_chains
from reasonbed.generation.validate import judge
from reasonbed.inference.base import runs_async
from reasonbed.prompts import STAGES

REPO = Path(__file__).resolve().parents[1]
CLASSES = list(synthetic.SHAPES)


def _chain(conclusion: str = "star", order=STAGES, skip=()) -> str:
    return "".join(f"<{s}>text about {s.lower()}</{s}>" if s != "CONCLUSION" else f"<{s}>{conclusion}</{s}>"
                   for s in order if s not in skip)


@pytest.mark.parametrize(("text", "valid", "kept", "reason"), [
    (_chain("star"), True, True, ""),
    (_chain("It is a star."), True, True, ""),
    (_chain("star", order=("CAPTION", "SUMMARY", "REASONING", "REFLECTION", "CONCLUSION")), False, False,
     "out_of_order"),
    (_chain("star", skip=("REFLECTION",)), False, False, "missing:reflection"),
    (_chain("circle"), True, False, "wrong_conclusion"),
    (_chain("a star or a ring"), False, False, "unparseable_conclusion"),
    (_chain("star", skip=("CONCLUSION",)), False, False, "missing:conclusion"),
    ("no tags at all, just star", False, False, "missing:summary,caption,reasoning,reflection,conclusion"),
])
def test_validation_and_rejection_rules(text, valid, kept, reason):
    result = judge(text, CLASSES, CLASSES.index("star"))
    assert (result["valid"], result["kept"], result["reject_reason"]) == (valid, kept, reason)
    if valid:
        assert result["predicted_label"] >= 0 and result["summary"] == "text about summary"


def _cfg(tmp: Path, data_root: Path, **overrides) -> GenerationConfig:
    base = {"data": {"dataset": "synthetic_shapes", "root": str(data_root)}, "output": str(tmp),
            "shard_size": 6, "engine": {"name": "template"}, "sampling": {"n": 2}}
    return load(GenerationConfig, overrides=[f"{k}={v}" for k, v in overrides.items()], base=base)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen-shapes")
    synthetic.generate(str(root), images_per_class=1)
    return root


def _rows(output: str) -> list[tuple[str, int]]:
    table = ShardStore(output).read()
    return sorted(zip(table.column("image_id").to_pylist(), table.column("candidate").to_pylist(), strict=True))


def test_template_teacher_second_pass_and_manifest(tmp_path, shapes, ray_session):
    summary = run_generation(_cfg(tmp_path / "out", shapes, **{"engine.template_noise": 0.5,
                                                               "second_pass": "rationalize"}))
    assert summary["images"] == 24 and summary["images_with_kept_chain"] == 24
    table = ShardStore(str(tmp_path / "out")).read()
    assert table.schema.equals(SCHEMA)
    first = table.filter(pc.equal(table.column("pass_index"), 0))
    assert first.num_rows == 48
    second = table.filter(pc.equal(table.column("pass_index"), 1))
    assert second.num_rows > 0 and set(second.column("prompt_kind").to_pylist()) == {"rationalization"}
    assert min(second.column("candidate").to_pylist()) == 2  # continues after the first pass's candidates
    ids = _rows(str(tmp_path / "out"))
    assert len(ids) == len(set(ids))
    manifest = ShardStore(str(tmp_path / "out")).read_manifest()
    assert manifest["summary"]["candidates"] == table.num_rows and len(manifest["shards"]) >= 4
    assert kept_chains(str(tmp_path / "out")).num_rows == pytest.approx(summary["kept_pct"] * table.num_rows / 100,
                                                                        abs=0.5)
    # label-conditioned chains are counted, and training leaves them out unless allowed
    conditioned_kept = sum(second.column("kept").to_pylist())
    assert manifest["summary"]["label_conditioned_candidates"] == second.num_rows
    assert summary["label_conditioned_kept"] == conditioned_kept > 0
    from reasonbed.train.driver import chains_by_image

    blind = chains_by_image(str(tmp_path / "out"))
    both = chains_by_image(str(tmp_path / "out"), allow_label_conditioned=True)
    assert sum(map(len, both.values())) - sum(map(len, blind.values())) == conditioned_kept
    assert len(blind) == summary["images_with_blind_kept_chain"] < summary["images_with_kept_chain"]


@pytest.mark.slow
def test_vllm_engine_in_ray_actor_writes_schema_rows(tmp_path, shapes, tiny_model_dir, ray_session):
    """The default engine (vLLM's async engine in a Ray actor, batches in flight) writes schema rows, two
    candidates per image. (That the offline engine samples the same chains: the in-process test below.)"""
    overrides = {"engine.name": "vllm", "engine.model.path": str(tiny_model_dir), "sampling.max_tokens": 16,
                 "engine.max_model_len": 1024, "engine.batch_size": 4}
    cfg = _cfg(tmp_path / "vllm", shapes, **overrides)
    assert runs_async(cfg.engine) and cfg.engine.batches_in_flight > 1, "the async actor is the default"
    summary = run_generation(cfg)
    table = ShardStore(cfg.output).read()
    assert table.schema.equals(SCHEMA) and table.num_rows == 48 == summary["candidates"]
    rows = table.to_pylist()
    assert {row["teacher"] for row in rows} == {tiny_model_dir.name} and {r["engine"] for r in rows} == {"vllm"}
    assert all(row["completion_tokens"] > 0 and row["prompt_tokens"] > 20 for row in rows)
    assert {(row["image_id"], row["candidate"]) for row in rows} == {
        (image_id, c) for image_id in {row["image_id"] for row in rows} for c in (0, 1)}
    assert summary["engine_tokens_per_s"] > 0


@pytest.mark.slow
def test_async_engine_holds_concurrent_batches_and_answers_as_the_offline_engine(shapes, tiny_model_dir):
    """In this process: two batches awaited together are in vLLM's engine at once; every face of both
    backends samples the same tokens (per-request seeds: the same samples whatever the batches, vLLM on CPU
    being batch-invariant here; the pipeline's async and offline engines are these two)."""
    from PIL import Image

    from reasonbed.inference.base import EngineConfig, Request, SamplingConfig, build_engine
    from reasonbed.models.configs import ModelConfig
    from reasonbed.prompts import classification_prompt

    paths = sorted(shapes.rglob("*.png"))[:6]
    requests = [Request(Image.open(path).convert("RGB"), classification_prompt(CLASSES), {"id": path.stem})
                for path in paths]
    first, second = requests[:3], requests[3:]
    sampled = SamplingConfig(n=2, temperature=1.5, top_p=1.0, max_tokens=8, seed=3)

    def ids(completions):
        return [[completion.token_ids for completion in candidates] for candidates in completions]

    async def together(engine):
        return await asyncio.gather(engine.agenerate(first, sampled), engine.agenerate(second, sampled))

    cfg = EngineConfig(name="vllm", model=ModelConfig(path=str(tiny_model_dir)), max_model_len=1024)
    engine = build_engine(cfg)
    try:
        alone = ids(engine.generate(first, sampled))
        assert engine.backend.peak_in_flight == 3
        both = asyncio.run(together(engine))
        assert engine.backend.peak_in_flight == 6, "the second batch did not join the first in the engine"
    finally:
        engine.close()
    assert ids(both[0]) == alone and all(len(candidates) == 2 for candidates in both[1])
    assert any(len({tuple(tokens) for tokens in candidates}) > 1 for candidates in alone), "not sampled"
    offline = build_engine(replace(cfg, vllm_async=False))
    try:
        assert ids(offline.generate(first, sampled)) == alone
        assert [ids(result) for result in asyncio.run(together(offline))] == [ids(result) for result in both]
    finally:
        offline.close()


def test_engine_clock_charges_overlapping_batches_their_share():
    """Charges add up to the engine's busy time: 0-4 s one batch, 4-6 s two (weights 1 and 3), 6-8 s one."""
    now = [0.0]
    clock = EngineClock(clock=lambda: now[0])
    first = clock.start(1)
    now[0] = 4.0
    second = clock.start(3)
    now[0] = 6.0
    assert clock.stop(first) == pytest.approx(4.0 + 2.0 * 1 / 4)
    now[0] = 8.0
    assert clock.stop(second) == pytest.approx(2.0 * 3 / 4 + 2.0)
    now[0] = 20.0  # idle time is nobody's
    third = clock.start(2)
    now[0] = 21.0
    assert clock.stop(third) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weight 0"):
        clock.start(0)


def test_the_async_engine_is_the_default_and_the_offline_one_is_reachable():
    from reasonbed.compat.engines import vllm_available
    from reasonbed.inference.base import EngineConfig

    if not vllm_available():
        pytest.skip("vLLM is not installed here")

    assert runs_async(EngineConfig(name="vllm")) and EngineConfig().vllm_async
    assert not runs_async(EngineConfig(name="vllm", vllm_async=False))
    assert not runs_async(EngineConfig(name="template")) and not runs_async(EngineConfig(name="hf"))
    with pytest.raises(ConfigError, match=r"batches_in_flight \(0\)"):
        EngineConfig(batches_in_flight=0)


@pytest.mark.slow  # a generation driver killed and run again (about 30 s)
def test_resume_after_killing_the_driver(tmp_path, shapes, tiny_model_dir, ray_session):
    """SIGKILL the generation driver after a few shards; the rerun completes without duplicates."""
    output = tmp_path / "killed"
    address = ray_session.get_runtime_context().gcs_address
    command = [sys.executable, str(REPO / "jobs" / "generate_reasoning.py"), "engine.name=hf",
               f"engine.model.path={tiny_model_dir}", f"data.root={shapes}", f"output={output}",
               "shard_size=2", "engine.batch_size=2", "sampling.n=2", "sampling.max_tokens=24"]
    env = {**os.environ, "RAY_ADDRESS": address}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(output.rglob("*.parquet"))) < 3 and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p: p.stat().st_mtime_ns for p in output.rglob("*.parquet")}
    assert 3 <= len(done_before) < 12
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before, "complete shards were rewritten"
    rows = _rows(str(output))
    assert len(rows) == 48 and len(set(rows)) == 48  # every (image, candidate) exactly once


def test_s3_output_and_resume(shapes, s3_bucket, ray_session):
    import s3fs

    output = f"s3://{s3_bucket}/chains"
    run_generation(_cfg(Path("unused"), shapes, output=output))
    fs = s3fs.S3FileSystem()
    shards = sorted(fs.glob(f"{s3_bucket}/chains/**/*.parquet"))
    assert len(shards) == 4
    fs.rm(shards[1])
    stamps = {path: fs.info(path)["LastModified"] for path in shards if path != shards[1]}
    run_generation(_cfg(Path("unused"), shapes, output=output))
    assert {path: fs.info(path)["LastModified"] for path in stamps} == stamps
    assert fs.exists(shards[1]) and len(_rows(output)) == 48


# --- bad input --------------------------------------------------------------------------------------

def test_unknown_engine(tmp_path, shapes):
    with pytest.raises(ConfigError, match="engine.name.*'gpt'.*'template', 'vllm', 'hf', 'openai'"):
        _cfg(tmp_path, shapes, **{"engine.name": "gpt"})


def test_model_path_that_does_not_exist(tmp_path, shapes, ray_session):
    cfg = _cfg(tmp_path, shapes, **{"engine.name": "vllm", "engine.model.path": str(tmp_path / "no-model")})
    with pytest.raises(ConfigError, match="no-model.*does not exist"):
        run_generation(cfg)


def test_unreadable_image_is_counted_or_stops(tmp_path, ray_session):
    root = tmp_path / "data"
    synthetic.generate(str(root), images_per_class=1)
    (root / "photo" / "ring" / "ring_00000.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="photo/ring/ring_00000.png"):  # data.on_corrupt=error: before anything
        run_generation(_cfg(tmp_path / "stop", root))
    assert not (tmp_path / "stop" / "pass0").exists()
    summary = run_generation(_cfg(tmp_path / "skip", root, **{"data.on_corrupt": "skip"}))
    assert summary["skipped_inputs"]["skipped"] == 1
    assert summary["skipped_inputs"]["first"][0]["path"] == "photo/ring/ring_00000.png"
    assert summary["candidates"] == 46
    manifest = json.loads((tmp_path / "skip" / "manifest.json").read_text())
    assert manifest["summary"]["skipped_inputs"]["skipped"] == 1


def test_output_that_cannot_be_written(tmp_path, shapes):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="a-file.*cannot be written"):
        run_generation(_cfg(blocker / "out", shapes))


def test_shard_files_are_whole(tmp_path, shapes, ray_session):
    run_generation(_cfg(tmp_path / "whole", shapes))
    for path in (tmp_path / "whole").rglob("*"):
        assert ".tmp-" not in path.name
        if path.suffix == ".parquet":
            assert pq.ParquetFile(path).metadata.num_rows > 0
