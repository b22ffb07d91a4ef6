"""After the table: an exported adapter and merged model answer exactly as the run's adapter on the base model,
in transformers and in vLLM; `reasonbed predict` answers a folder without labels (one row per image, vLLM with
the exported adapter) and scores a labelled one exactly as the training run's evaluation did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from reasonbed.config import ConfigError, load, read_yaml
from reasonbed.data import catalog
from reasonbed.inference.base import EngineConfig, Request, SamplingConfig, build_engine
from reasonbed.models import ModelConfig
from reasonbed.prompts import prompt_for
from reasonbed.share.export import ExportConfig, export
from reasonbed.share.predict import PredictConfig, run_predict
from reasonbed.train.config import TrainConfig

pytestmark = pytest.mark.slow
GREEDY = SamplingConfig(n=1, temperature=0.0, max_tokens=12)  # training evaluation's direct budget


@pytest.fixture(scope="module")
def run_cfg(trained_run: Path) -> TrainConfig:
    return load(TrainConfig, base=read_yaml(trained_run / "config.yaml"))


@pytest.fixture(scope="module")
def data_root(run_cfg: TrainConfig) -> Path:
    return Path(catalog.resolve(run_cfg.data)[1])


@pytest.fixture(scope="module")
def photo(data_root: Path) -> list[Path]:
    return sorted((data_root / "photo").rglob("*.png"))


@pytest.fixture(scope="module")
def requests(photo: list[Path], run_cfg: TrainConfig) -> list[Request]:
    from PIL import Image

    classes = catalog.resolve(run_cfg.data)[0].display_names
    return [Request(Image.open(path).convert("RGB"), prompt_for("direct", classes), {"id": path.name})
            for path in photo]


@pytest.fixture(scope="module")
def reference(trained_run: Path, requests: list[Request], tiny_model_dir: Path) -> list[str]:
    """Greedy answers of the run's chosen checkpoint's adapter on the base model (transformers + peft)."""
    checkpoint = json.loads((trained_run / "selected.json").read_text())["checkpoint"]
    engine = build_engine(EngineConfig(name="hf", model=ModelConfig(path=str(tiny_model_dir)),
                                       lora_path=f"{checkpoint}/adapter"))
    return [choice.text for (choice,) in engine.generate(requests, GREEDY)]


@pytest.fixture(scope="module")
def merged(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(ExportConfig(source=str(trained_run), out=str(tmp_path_factory.mktemp("merged")), merge=True))


def test_export_writes_the_adapter_a_model_card_and_reasonbed_json(exported_adapter, trained_run, tiny_model_dir,
                                                                   merged):
    assert {p.name for p in exported_adapter.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                            "README.md", "reasonbed.json"}
    config = json.loads((exported_adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    info = json.loads((exported_adapter / "reasonbed.json").read_text())
    selected = json.loads((trained_run / "selected.json").read_text())
    provenance = json.loads((trained_run / "provenance.json").read_text())
    assert info["checkpoint"] == selected["checkpoint"] and info["metrics"]["test_acc"] == selected["test_acc"]
    assert info["classes"] == ["circle", "cross", "ring", "square", "star", "triangle"] and info["prompt"] == "direct"
    assert (info["min_image_pixels"], info["max_image_pixels"]) == (0, 112 * 112)  # the run's model config
    card = (exported_adapter / "README.md").read_text()
    for text in ("base_model: " + str(tiny_model_dir), "library_name: peft", "| photo | test |",
                 "training-domain validation within the run", info["prompt_text"], "`optim.lr`: `0.001`",
                 provenance["data_manifest_sha256"], "code version", "mm_processor_kwargs={'max_pixels': 12544}"):
        assert text in card, text
    assert f"**{100 * selected['test_acc']:.1f}**" in card
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()
    assert "library_name: transformers" in (merged / "README.md").read_text()
    assert not list(merged.glob("adapter_*"))
    with pytest.raises(ConfigError, match="not empty"):  # nothing already written is lost
        export(ExportConfig(source=str(trained_run), out=str(merged), merge=True))
    with pytest.raises(ConfigError, match="sweep"):
        export(ExportConfig(source=str(trained_run), out=str(merged.parent / "new"), method="direct"))


def test_exports_answer_like_the_adapter_on_the_base_model_in_transformers(exported_adapter, merged, requests,
                                                                         reference, tiny_model_dir):
    from reasonbed.inference.sampling import generate
    from reasonbed.models.families import get_family
    from reasonbed.models.loading import load_processor

    base = build_engine(EngineConfig(name="hf", model=ModelConfig(path=str(tiny_model_dir))))
    assert [c.text for (c,) in base.generate(requests, GREEDY)] != reference  # the adapter changes the answers
    # transformers' own from_pretrained on the adapter folder (peft integration: base model + adapter) ...
    model = get_family("qwen2_vl").model_class.from_pretrained(str(exported_adapter)).eval()
    assert model.active_adapters()
    processor = load_processor(ModelConfig(path=str(tiny_model_dir)))
    assert [c.text for (c,) in generate(model, processor, requests, GREEDY)] == reference
    # ... and the merged model, a plain model folder with its processor
    merged_engine = build_engine(EngineConfig(name="hf", model=ModelConfig(path=str(merged))))
    assert [c.text for (c,) in merged_engine.generate(requests, GREEDY)] == reference


def test_merged_export_loads_in_vllm(merged, requests, reference):
    # the offline engine: the async one (the default) adds an engine-core process; test_generation.py tests it
    engine = build_engine(EngineConfig(name="vllm", model=ModelConfig(path=str(merged)), max_model_len=1024,
                                       batch_size=16, vllm_async=False))
    try:
        assert [c.text for (c,) in engine.generate(requests, GREEDY)] == reference
    finally:
        engine.close()


def test_predict_on_a_folder_without_labels_writes_one_row_per_image(exported_adapter, photo, reference, tmp_path,
                                                                     ray_session):
    hidden = tmp_path / "new-images"  # no class folders: the labels are hidden
    hidden.mkdir()
    names = {}
    for index, path in enumerate(photo):
        names[f"img{index:03d}.png"] = path
        shutil.copy(path, hidden / f"img{index:03d}.png")
    output = tmp_path / "preds.parquet"
    summary = run_predict(PredictConfig(data=str(hidden), adapter=str(exported_adapter), output=str(output),
                                        engine=EngineConfig(name="vllm", max_model_len=1024, batch_size=8)))
    rows = pq.read_table(output).to_pylist()
    assert summary["images"] == len(rows) == len(photo) and not summary["labelled"]
    assert {row["path"] for row in rows} == set(names) and not Path(str(output) + ".accuracy.json").exists()
    assert all(row["label"] == -1 and row["correct"] is None and row["engine"] == "vllm" for row in rows)
    assert rows[0]["prompt"].startswith("What type of object is in this photo?") and rows[0]["prompt_kind"] == "direct"
    # vLLM with the exported adapter answers as transformers with the run's own adapter
    by_path = {row["path"]: row["answer"] for row in rows}
    assert [by_path[name] for name in sorted(names)] == reference
    with pytest.raises(ConfigError, match="exists"):  # an existing output is never overwritten
        run_predict(PredictConfig(data=str(hidden), adapter=str(exported_adapter), output=str(output)))


def test_predict_on_a_labelled_folder_scores_as_the_training_evaluation(exported_adapter, trained_run, run_cfg,
                                                                        data_root, tmp_path, ray_session):
    from reasonbed.data.reader import scan
    from reasonbed.train.driver import evaluation_rows

    output = tmp_path / "preds.parquet"
    summary = run_predict(PredictConfig(data=str(data_root), dataset="synthetic_shapes", output=str(output),
                                        adapter=str(exported_adapter), engine=EngineConfig(name="hf", batch_size=16)))
    assert summary["labelled"]
    scores = json.loads(Path(summary["accuracy"]).read_text())["domains"]
    rows = {row["path"]: row for row in pq.read_table(output).to_pylist()}
    assert summary["images"] == len(rows) == sum(entry["images"] for entry in scores.values()) == 48
    report = json.loads((trained_run / "metrics.jsonl").read_text().splitlines()[-1])
    spec = catalog.resolve(run_cfg.data)[0]
    placed = evaluation_rows(run_cfg, spec, scan(spec, str(data_root)))
    for domain in spec.domains:  # the training run evaluated every test-domain image and the sources' out parts
        for part in ("in", "out"):
            key = f"acc/direct/{domain}/{part}"
            if key not in report:
                continue
            chosen = [rows[row["path"]] for row in placed if row["domain"] == domain and row["part"] == part]
            assert chosen and sum(bool(row["correct"]) for row in chosen) / len(chosen) == pytest.approx(report[key])
    test_in = sum(1 for row in placed if row["domain"] == "photo" and row["part"] == "in")
    weighted = (report["test_acc"] * test_in + report["test_out_acc"] * (12 - test_in)) / 12
    assert scores["photo"]["acc"] == pytest.approx(weighted) and scores["photo"]["images"] == 12


def test_predict_sees_images_at_the_size_the_run_was_trained_on(exported_adapter, trained_run, tmp_path):
    """The run's model.max_image_pixels reaches predict's engine through the export's reasonbed.json or the run
    directory's config.yaml; a model that sets bounds of its own keeps them."""
    from reasonbed.share.predict import resolve

    def engine_model(adapter: Path, **bounds: int) -> ModelConfig:
        cfg = PredictConfig(data=str(tmp_path), adapter=str(adapter), output=str(tmp_path / "p.parquet"),
                            classes=["circle", "square"], engine=EngineConfig(name="hf", model=ModelConfig(**bounds)))
        return resolve(cfg).engine.model

    assert engine_model(exported_adapter).max_image_pixels == 112 * 112
    assert engine_model(trained_run).max_image_pixels == 112 * 112
    own = engine_model(exported_adapter, min_image_pixels=56 * 56)
    assert (own.min_image_pixels, own.max_image_pixels) == (56 * 56, 0)


def test_export_from_a_sweep_is_the_model_its_selection_picked(tmp_path, ray_session):
    from reasonbed.tune.config import SweepConfig
    from reasonbed.tune.driver import run_sweep
    from reasonbed.tune.records import load_records
    from reasonbed.tune.selection import select

    cfg = load(SweepConfig, overrides=[f"storage={tmp_path / 'runs'}", "name=export-me"], base={
        "data": {"dataset": "synthetic_shapes", "images_per_class": 2}, "methods": ["direct"],
        "test_domains": ["photo"], "num_samples": 2, "zero_shot": False, "search": "random",
        "train": {"optim.max_steps": 2, "optim.batch_size": 4, "eval.every": 1, "eval.max_per_domain": 2,
                  "scale.backend": "local"},
        "asha": {"enabled": False}})
    sweep = run_sweep(cfg)["sweep"]
    records = load_records(sweep)
    for selection in ("training_domain", "oracle"):
        choice = select(records, selection)[("direct", "photo", 0)]
        out = export(ExportConfig(source=sweep, out=str(tmp_path / selection), selection=selection))
        info = json.loads((out / "reasonbed.json").read_text())
        assert info["checkpoint"] == choice.report["checkpoint"] and info["step"] == choice.step
        assert info["selection"] == selection and info["metrics"]["test_acc"] == choice.test_acc
        weights = Path(choice.report["checkpoint"]) / "adapter" / "adapter_model.safetensors"
        assert (out / "adapter_model.safetensors").read_bytes() == weights.read_bytes()
        card = (out / "README.md").read_text()
        assert f"trial {choice.trial_id}" in card and "Sampled by the sweep" in card
    assert "ORACLE" in (tmp_path / "oracle" / "README.md").read_text()
    with pytest.raises(ConfigError, match="--method direct --test-domain photo --seed 0"):
        export(ExportConfig(source=sweep, out=str(tmp_path / "none"), method="mtct"))
