"""The one training core, in process (scale.backend=local): run directories and the checkpoint-storage claim,
the leakage guard on the examples that reach the worker, chain coverage
and label-conditioned chains (every SARR stage a run of its own: tests/test_methods.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from reasonbed.config import ConfigError, load
from reasonbed.data.splits import LeakageError
from reasonbed.train.config import TrainConfig
from reasonbed.train.driver import prepare_examples, resolve

LOCAL = {"data": {"dataset": "synthetic_shapes", "images_per_class": 3}, "test_domain": "photo",
         "scale": {"backend": "local"},
         "optim": {"batch_size": 8, "max_steps": 2, "lr": 3e-3, "warmup_ratio": 0.0},
         "eval": {"every": 0, "max_per_domain": 2, "reasoning_max_tokens": 24}}


def _cfg(run_dir: Path, *overrides: str) -> TrainConfig:
    return load(TrainConfig, overrides=[f"run_dir={run_dir}", *overrides], base=copy.deepcopy(LOCAL))


@pytest.mark.pretrained_model
def test_reruns_resume_and_other_configs_never_share_a_run(tmp_path, tiny_model_dir):
    """Same command: the finished run's result, nothing retrained. Another config: refused in the run directory
    and in the checkpoint storage (the same storage_path and name), and nothing written is lost."""
    from reasonbed.train.run import run

    shared = [f"model.path={tiny_model_dir}", f"storage_path={tmp_path / 'storage'}", "name=trial-1"]
    first = run(_cfg(tmp_path / "a", *shared))
    assert [row["step"] for row in first.metrics] == [2] and (first.run_dir / "done").is_file()
    assert json.loads((first.run_dir / "selected.json").read_text())["checkpoint"].endswith("checkpoint_step000002")
    saved = {name: (first.run_dir / name).read_bytes() for name in ("config.yaml", "done", "metrics.jsonl")}
    again = run(_cfg(tmp_path / "a", *shared))
    assert again.metrics == first.metrics
    assert first.trained and not again.trained  # a sweep trial reports such a result to Tune itself
    with pytest.raises(ConfigError, match=r"run_dir .* holds a run with another config \(optim.lr: 0.003 -> 0.01\)"):
        run(_cfg(tmp_path / "a", *shared, "optim.lr=0.01"))
    with pytest.raises(ConfigError, match=r"checkpoint storage .*trial-1' holds a run with another config "
                                          r"\(optim.lr: 0.003 -> 0.01\)"):
        run(_cfg(tmp_path / "b", *shared, "optim.lr=0.01"))
    assert {name: (first.run_dir / name).read_bytes() for name in saved} == saved
    # checkpoints nobody claimed (e.g. written by an older version under this name): never restored
    (tmp_path / "storage" / "trial-1" / "reasonbed-run.yaml").unlink()
    with pytest.raises(ConfigError, match="holds checkpoints of a run that did not claim it"):
        run(_cfg(tmp_path / "c", *shared, "optim.lr=0.01"))
    # the default name carries a hash of what is trained: two configs never meet under it
    assert _cfg(tmp_path / "d").run_name != _cfg(tmp_path / "d", "optim.lr=0.01").run_name


@pytest.mark.pretrained_model
def test_leaked_examples_never_reach_training(tmp_path, tiny_model_dir):
    """The guard runs on what the worker receives: a test-domain image or a source out-part image injected
    into the examples stops the worker before the model is even loaded."""
    from reasonbed.train.worker import worker_loop

    cfg, spec, root, index = resolve(_cfg(tmp_path / "run", f"model.path={tiny_model_dir}"))
    examples, rows = prepare_examples(cfg, spec, index)
    loop = {"cfg": cfg, "eval_rows": rows, "model_path": str(tiny_model_dir), "data_root": root,
            "class_names": spec.display_names, "run_dir": str(tmp_path / "run"), "run_name": "x",
            "checkpoint_root": str(tmp_path / "ck"), "super_classes": [], "local_storage": str(tmp_path / "ck")}
    test_row = next(row for row in rows if row["role"] == "test")
    out_row = next(row for row in rows if row["role"] == "source" and row["part"] == "out")
    for leaked in (test_row, {**out_row, "part": "in"}):
        with pytest.raises(LeakageError, match="would leak into training"):
            worker_loop({**loop, "examples": [*examples, {**leaked, "chains": []}]})
    assert not list((tmp_path / "ck").glob("checkpoint_*")), "refused before any step"
    # a leave-one-domain-out run: an image of the held-out source domain, passed off as an in-part image
    cfg, spec, root, index = resolve(_cfg(tmp_path / "lodo", f"model.path={tiny_model_dir}", "val_domain=cartoon"))
    examples, rows = prepare_examples(cfg, spec, index)
    heldout = next(row for row in rows if row["role"] == "heldout")
    with pytest.raises(LeakageError, match=r"held-out domain 'cartoon'"):
        worker_loop({**loop, "cfg": cfg, "eval_rows": rows, "examples": [*examples, {**heldout, "part": "in",
                                                                                       "chains": []}]})


@pytest.mark.slow  # teacher_chains: a template-teacher generation on Ray Data (about 25 s)
def test_chain_coverage_is_checked_before_training(tmp_path, teacher_chains):
    from reasonbed.train.driver import chains_by_image

    cfg, spec, _, index = resolve(_cfg(tmp_path / "run", "method=mtct", f"chains={teacher_chains}"))
    chains = chains_by_image(teacher_chains)
    examples, _ = prepare_examples(cfg, spec, index, chains)
    assert sum(1 for example in examples if example["chains"]) >= 0.5 * len(examples)
    few = dict(list(chains.items())[:5])
    with pytest.raises(ConfigError, match=r"only \d+ of \d+ training images of test domain 'photo' have a kept "
                                          r"chain .*min_chain_coverage=0.5.*another dataset"):
        prepare_examples(cfg, spec, index, few)


def test_retention_keeps_the_checkpoint_training_domain_validation_picks(tmp_path):
    """keep_checkpoints=1 on a falling validation curve: the best-val_acc checkpoint (the one selection reports)
    and the latest (resume) survive; every other is deleted."""
    from reasonbed.train.context import LocalContext

    context = LocalContext(tmp_path / "storage", keep=1)
    for step, val_acc in enumerate([0.2, 0.9, 0.5, 0.4, 0.3], start=1):
        state = tmp_path / f"state{step}"
        state.mkdir()
        (state / "state.json").write_text("{}")
        context.report({"step": step, "val_acc": val_acc}, str(state), step)
    kept = [json.loads((path / "metrics.json").read_text())["step"] for path in context.checkpoints()]
    assert kept == [2, 5]


@pytest.mark.pretrained_model
def test_a_stage_that_restores_a_finished_checkpoint_fails(tmp_path, tiny_model_dir, caplog):
    """A fresh stage whose storage already holds a checkpoint at or past its own total steps (another stage's,
    under the same name) is an error, never a run that trains nothing and returns the other stage's adapter."""
    from reasonbed.train.worker import worker_loop

    cfg, spec, root, index = resolve(_cfg(tmp_path / "run", f"model.path={tiny_model_dir}"))
    examples, rows = prepare_examples(cfg, spec, index)
    loop = {"cfg": cfg, "examples": examples, "eval_rows": rows, "model_path": str(tiny_model_dir), "data_root": root,
            "class_names": spec.display_names, "run_dir": str(tmp_path / "run"), "run_name": "stage",
            "checkpoint_root": str(tmp_path / "ck"), "super_classes": [], "local_storage": str(tmp_path / "ck")}
    with caplog.at_level("INFO", logger="reasonbed.train.worker"):
        worker_loop(loop)  # the first stage trains its 2 steps
    assert "memory estimate per training worker" in caplog.text  # rank 0, before the weights load
    with pytest.raises(RuntimeError, match=r"restored a checkpoint at step 2, at or past its 2 steps"):
        worker_loop({**loop, "run_dir": str(tmp_path / "next-stage")})


# A Ray Train run's driver up to the fit, in a fresh process (init_ray, the cluster check and the trainer replaced:
# no Ray here): which heavy libraries it imported by then.
DRIVER_UP_TO_THE_FIT = """
import json, sys
import reasonbed.ray_runtime
from reasonbed.config import load
from reasonbed.train import driver
from reasonbed.train.config import TrainConfig

class Trainer:
    def fit(self):
        print(json.dumps({name: name in sys.modules for name in ("transformers", "peft")}))
        raise SystemExit(0)

reasonbed.ray_runtime.init_ray = lambda **kwargs: None
driver.check_storage_for_cluster = lambda cfg, root: None
driver.build_trainer = lambda cfg, loop_config, run, callbacks=(): Trainer()
driver.run_training(load(TrainConfig, overrides=sys.argv[1:]))
"""


def test_the_driver_of_a_ray_train_run_never_imports_transformers(tmp_path):
    """Each Tune trial and each training job on the head node is such a driver: transformers (about 9 s of CPU
    per process, with the meta-device memory estimate) is the workers' business alone."""
    import subprocess
    import sys

    model = tmp_path / "model"  # what the driver reads of a checkpoint: its config.json
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2_vl",
                                                   "architectures": ["Qwen2VLForConditionalGeneration"]}))
    overrides = [f"run_dir={tmp_path / 'run'}", f"model.path={model}", "data.dataset=synthetic_shapes",
                 "data.images_per_class=3", "test_domain=photo", "scale.backend=ray"]
    result = subprocess.run([sys.executable, "-c", DRIVER_UP_TO_THE_FIT, *overrides], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"transformers": False, "peft": False}


def test_a_finished_checkpoint_in_object_storage_is_named_by_its_uri(tmp_path, s3_bucket):
    """A driver that stopped between the last checkpoint and `done`: the rerun finishes from the checkpoint in
    storage, which must be read from s3://, not from a local path of the same name (fs.glob drops the protocol)."""
    from reasonbed import storage
    from reasonbed.train.rundir import RunDir

    run = RunDir(_cfg(tmp_path / "run", f"storage_path=s3://{s3_bucket}/core", "name=finished", "scale.backend=ray"))
    fs, root = storage.filesystem(run.storage_root)
    for step in (2, 4):
        fs.pipe(f"{root}/checkpoint_step{step:06d}/state.json", json.dumps({"step": step}).encode())
    assert run.finished_checkpoint(6) is None
    found = run.finished_checkpoint(4)
    assert found == storage.join(run.storage_root, "checkpoint_step000004") and found.startswith("s3://")
    fs, path = storage.filesystem(found)
    assert json.loads(fs.cat(f"{path}/state.json"))["step"] == 4
