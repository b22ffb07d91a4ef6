"""Reports and dashboards over a hand-written sweep folder (no Ray): tables, CSV, HTML, LaTeX, s3://, servers.

The fixture writes exactly what a sweep leaves behind - sweep.json, a real SQLite Optuna study per
study, chains/manifest.json, done markers, per trial result.json, params.json, trial.json,
provenance.json and a TensorBoard event file, and the zero-shot records - for 2 methods x 2 test
domains x 2 seeds x 2 trials, the second trial of every study stopped early by ASHA (in ERRORED's
study it errored instead, after its best report); `direct` trials also have leave-one-domain-out
runs (lodo.json).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from conftest import free_port
from reasonbed.cli import build_parser, main
from reasonbed.report.build import build_report
from reasonbed.report.dashboard import dashboard_commands

METHODS = ("direct", "mtct")
DOMAINS = ("photo", "sketch", "cartoon")
TEST_DOMAINS = ("photo", "sketch")
SEEDS = (0, 1)
TOTAL_STEPS = 16
TOKENS = {"completion_tokens": 12345, "prompt_tokens": 6789, "label_conditioned_candidates": 7, "label_conditioned_kept": 3}
SHA = "ab" * 32
PRUNED_STUDY = "mtct-sketch-s1"  # its stopped trial is PRUNED in Optuna: too few COMPLETE for importances
ERRORED = "mtct-photo-s1"  # its second trial errored after a report with the study's best val_acc
CLASSES = ["circle", "square", "star"]
ZERO_SHOT = {("photo", 0): 0.41, ("photo", 1): 0.47, ("sketch", 0): 0.22, ("sketch", 1): 0.30}


def _event_file(directory: Path, reports: list[dict[str, Any]]) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(directory))
    for row in reports:
        values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(row[tag])) for tag in ("val_acc", "test_acc")]
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=row["step"],
                                         summary=summary_pb2.Summary(value=values)))
    writer.close()


def write_sweep(root: Path) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """The sweep folder; returns it and, per study, its trials' reports (trial id -> list) for hand checks."""
    sweep = root / "toy-sweep"
    sweep.mkdir(parents=True)
    rng = random.Random(7)
    studies = [f"{m}-{d}-s{s}" for m in METHODS for d in TEST_DOMAINS for s in SEEDS]
    storage_url = f"sqlite:///{sweep / 'optuna.db'}"
    (sweep / "sweep.json").write_text(json.dumps({
        "name": "toy-sweep", "config": {"methods": list(METHODS), "test_domains": list(TEST_DOMAINS), "search": "tpe",
                                        "num_samples": 2, "seeds": list(SEEDS),
                                        "asha": {"enabled": True, "grace_period": 128, "reduction_factor": 2,
                                                 "max_t": 100000}},
        "study_storage": storage_url, "chains": str(sweep / "chains"), "studies": studies, "classes": CLASSES}))
    for (domain, seed), acc in ZERO_SHOT.items():
        folder = sweep / "zero_shot" / f"{domain}-s{seed}"
        folder.mkdir(parents=True)
        (folder / "zero_shot.json").write_text(json.dumps({
            "method": "zero_shot", "test_domain": domain, "seed": seed, "seeds": {"trial_seed": seed},
            "cpus": 2, "gpus": 0, "seconds": 36.0, "provenance": {"code_version": "c0ffee1"},
            "reports": [{"step": 0, "total_steps": 0, "examples_seen": 0, "val_acc": 0.5, "test_acc": acc,
                         "test_out_acc": acc + 0.01, "select_on": "direct", "seconds": 0.5}]}))
    (sweep / "chains").mkdir()
    (sweep / "chains" / "manifest.json").write_text(json.dumps({"summary": {**TOKENS, "images": 24}}))
    distributions = {"optim.lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
                     "lora.r": optuna.distributions.CategoricalDistribution([4, 8, 16])}
    written: dict[str, list[dict[str, Any]]] = {}
    for number, study_name in enumerate(studies):
        method, domain, seed = study_name.rsplit("-", 2)[0], study_name.split("-")[1], int(study_name[-1])
        study = optuna.create_study(storage=storage_url, study_name=study_name, direction="maximize")
        written[study_name] = []
        for n in range(2):
            trial_id = f"{number:03d}ab_0000{n}"
            hparams = {"optim.lr": 10 ** rng.uniform(-5, -2), "lora.r": rng.choice([4, 8, 16])}
            steps = (8, 16) if n == 0 else (8,)  # trial 1 stopped early by ASHA
            reports = []
            for k, step in enumerate(steps):
                val, test = round(rng.uniform(0.3, 0.95), 4), round(rng.uniform(0.2, 0.9), 4)
                if study_name == ERRORED and n == 1:
                    val = 0.99
                row = {"val_acc": val, "test_acc": test, "test_out_acc": round(rng.uniform(0.2, 0.9), 4),
                       "step": step, "total_steps": TOTAL_STEPS, "examples_seen": 16 * step, "select_on": "direct",
                       "loss": 1.0 / step, "time_total_s": 60.0 * (k + 1) * (n + 1), "training_iteration": k + 1,
                       "unparseable/direct": 0.05, "truncated/direct": 0.0}
                row.update({f"acc/direct/{d}/{part}": rng.uniform(0, 1) for d in DOMAINS if d != domain
                            for part in ("in", "out")})
                row[f"acc/direct/{domain}/test"] = test
                reports.append(row)
            directory = sweep / study_name / f"trial_{trial_id}"
            directory.mkdir(parents=True)
            (directory / "result.json").write_text("".join(json.dumps(r) + "\n" for r in reports))
            (directory / "params.json").write_text(json.dumps(hparams))
            (directory / "trial.json").write_text(json.dumps({
                "study": study_name, "method": method, "test_domain": domain, "seed": seed, "trial_id": trial_id,
                "draw": n, "seeds": {"trial_seed": seed, "split_seed": 1000 + seed, "sampler_seed": 2000 + seed,
                          "train_seed": 3000 + seed},
                "hparams": hparams, "cpus": 2, "gpus": 0, "chains": str(sweep / "chains") if method == "mtct" else ""}))
            if study_name == ERRORED and n == 1:
                (directory / "error.txt").write_text("RuntimeError: worker died")
            (directory / "provenance.json").write_text(json.dumps({
                "config": {"method": method}, "code_version": "c0ffee1+dirty", "packages": {"optuna": "5.0.0"},
                "data_manifest_sha256": SHA, "images": 72,
                "skipped_inputs": {"on_corrupt": "skip", "skipped": 2,
                                   "first": [{"path": "photo/dog/bad.png", "reason": "truncated"}],
                                   **({"dropped_examples": {"count": 3, "first": ["cartoon/dog/a.png"]}}
                                      if method == "mtct" else {})}}))
            _event_file(directory, reports)
            if method == "direct":  # leave-one-domain-out runs; the stopped trial's (higher) ones must not count
                sources = [d for d in DOMAINS if d != domain]
                (directory / "lodo.json").write_text(json.dumps({
                    "sources": sources, "heldout_acc": {d: 0.3 + 0.5 * n for d in sources}, "seconds": 30.0}))
            written[study_name].append({"trial_id": trial_id, "reports": reports})
            if study_name == PRUNED_STUDY and n == 1:
                study.add_trial(optuna.trial.create_trial(params=hparams, distributions=distributions,
                                                          state=optuna.trial.TrialState.PRUNED))
            else:
                study.add_trial(optuna.trial.create_trial(params=hparams, distributions=distributions,
                                                          value=reports[-1]["val_acc"]))
        (sweep / study_name / "done").write_text("{}")
    (sweep / "done").write_text("{}")
    return sweep, written


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return write_sweep(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(sweep: tuple[Path, dict]) -> Path:
    return build_report(str(sweep[0]), sweep[0] / "report")


def _cell(values: list[float]) -> str:
    """DomainBed's format_mean by hand: mean ± population std / sqrt(n), in percent."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f} (n=1)"
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.pstdev(values) / math.sqrt(len(values)):.1f}"


def _cells(table: list[str], method: str) -> list[str]:
    return [c.strip() for c in next(line for line in table if line.startswith(f"| {method} |")).strip("|").split("|")]


def _table(markdown: str, title_word: str) -> list[str]:
    """The lines of the results table whose heading contains title_word."""
    start = next(i for i, line in enumerate(markdown.splitlines()) if line.startswith("### ") and title_word in line)
    lines = markdown.splitlines()[start + 1:]
    end = next((i for i, line in enumerate(lines) if line.startswith("#")), len(lines))
    return [line for line in lines[:end] if line.startswith("|")]


def test_markdown_tables_match_hand_computation(report: Path, sweep: tuple[Path, dict]) -> None:
    markdown = (report.parent / "report.md").read_text()
    written = sweep[1]
    honest, oracle = _table(markdown, "Training-domain"), _table(markdown, "ORACLE (test-domain")
    lodo = _table(markdown, "Leave-one-domain-out selection")
    for table in (honest, oracle, lodo):
        header = table[0]
        assert all(f" {d} |" in header for d in TEST_DOMAINS) and " Avg | Prompt |" in header and "CPU-h" in header
        assert "Teacher tokens" in header and len(table) == 2 + 1 + len(METHODS)
        # the zero-shot row leads every table: the base model per trial seed, no selection
        zero = _cells(table, "zero-shot (base model)")
        assert zero[1:4] == [_cell([ZERO_SHOT[("photo", s)] for s in SEEDS]),
                             _cell([ZERO_SHOT[("sketch", s)] for s in SEEDS]),
                             f"{100 * statistics.fmean(ZERO_SHOT.values()):.1f}"]
        assert zero[4:7] == ["direct", "-", f"{4 * 36.0 * 2 / 3600:.3f}"], "cost: the runs' wall time x CPUs"
    assert "ORACLE (test-domain out-part selection: an upper bound, not a valid result)" in markdown
    # leave-one-domain-out: only finished trials with held-out runs are candidates; mtct has none: X
    finished = [written[f"direct-sketch-s{s}"][0]["reports"][-1]["test_acc"] for s in SEEDS]
    assert _cells(lodo, "direct")[1 + TEST_DOMAINS.index("sketch")] == _cell(finished)
    assert _cells(lodo, "mtct")[1:4] == ["X", "X", "X"], "no held-out runs: X, not a number"
    assert "Leave-one-domain-out choices" in markdown
    # training-domain validation: best val_acc over all trials and checkpoints, per seed; reports test_acc (in)
    mtct = _cells(honest, "mtct")
    means = []
    for domain in TEST_DOMAINS:
        chosen = [max((r for t in written[f"mtct-{domain}-s{s}"] for r in t["reports"]), key=lambda r: r["val_acc"])
                  for s in SEEDS]
        assert mtct[1 + TEST_DOMAINS.index(domain)] == _cell([r["test_acc"] for r in chosen])
        means.append(statistics.fmean(r["test_acc"] for r in chosen))
    assert mtct[3] == f"{100 * statistics.fmean(means):.1f}", "Avg: the mean of the per-domain means"
    errored_row = written[ERRORED][1]["reports"][0]  # the errored trial's report stayed a candidate and won
    assert errored_row["val_acc"] == 0.99
    assert "Errored trials: 1 of 16; 1 of them had valid reports, which stayed candidates; 1 cell choice(s)" in markdown
    # oracle, direct / photo: each trial's last checkpoint, chosen by test_out_acc, reporting its test_acc
    best = [max((t["reports"][-1] for t in written[f"direct-photo-s{s}"]), key=lambda r: r["test_out_acc"])
            for s in SEEDS]
    assert _cells(oracle, "direct")[1 + TEST_DOMAINS.index("photo")] == _cell([r["test_acc"] for r in best])
    # cost: CPU-hours over all 8 trials of a method; teacher tokens only for the method trained on chains
    hours = sum(60.0 * (k + 1) * (n + 1) for n, k in ((0, 1), (1, 0))) * 2 / 3600 * len(TEST_DOMAINS) * len(SEEDS)
    assert mtct[5:] == ["8", f"{hours:.3f}", "0.000", "12,345 (prompt 6,789)"]
    assert _cells(honest, "direct")[-1] == "0"
    assert "Label-conditioned teacher chains" in markdown and "7 candidates, 3 kept" in markdown
    # inputs a run did not train on: corrupt images skipped, training images without a usable chain
    assert "**2 corrupt image(s) skipped**" in markdown and "`photo/dog/bad.png`" in markdown
    assert "**up to 3 training image(s) per run had no usable kept chain and were left out** (8 of 16 runs" in markdown
    # protocol, prompt, statistics and chance under every table
    for note in ("search **Optuna TPE**, 2 draws per study", "ASHA on val_acc (grace 128 examples",
                 "trial seeds 0, 1", "Prompt (`eval.select_on`): `direct`", "standard error over trial seeds",
                 "Chance: 1/3 = 33.3% (3 classes)."):
        assert markdown.count(note) >= 3, note  # under each of the three tables
    # traceability: the chosen trial, step, prompt, accuracies and provenance are listed
    first = max((r for t in written["mtct-sketch-s0"] for r in t["reports"]), key=lambda r: r["val_acc"])
    trial = next(t["trial_id"] for t in written["mtct-sketch-s0"] if first in t["reports"])
    row = next(line for line in markdown.splitlines() if f"`{trial}`" in line and "| mtct | sketch | 0 |" in line)
    val, test = f"{100 * first['val_acc']:.1f}", f"{100 * first['test_acc']:.1f}"
    assert f"| {first['step']} | direct | {val} | {test} | 5.0 | 0.0 |" in row
    assert "c0ffee1+dirty" in row and SHA in row
    assert "(errored)` |" in next(line for line in markdown.splitlines() if "| mtct | photo | 1 |" in line)
    # importances: computed for studies with enough COMPLETE trials, a note for the other
    assert "optim.lr" in markdown and f"- `{PRUNED_STUDY}`: too few COMPLETE trials" in markdown


def test_results_tex(report: Path) -> None:
    tex = (report.parent / "results.tex").read_text()
    assert tex.startswith("\\documentclass{article}") and tex.rstrip().endswith("\\end{document}")
    assert tex.count("\\begin{tabular}{lcccccccc}") == 3 and tex.count("\\toprule") == 3
    assert "zero-shot (base model) & " in tex and "$\\pm$" in tex and "±" not in tex.replace("$\\pm$", "")
    assert "\\texttt{eval.select\\_on}" in tex, "notes escaped for LaTeX"
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0].strip().splitlines()
    assert len(body) == 1 + len(METHODS) and all(line.count(" & ") == 8 for line in body)


def test_trials_table(report: Path) -> None:
    frame = pd.read_csv(report.parent / "trials.csv")
    assert len(frame) == len(METHODS) * len(TEST_DOMAINS) * len(SEEDS) * 2
    for column in ("method", "test_domain", "seed", "status", "val_acc", "test_acc", "cpu_hours", "trial_id",
                   "code_version", "data_manifest_sha256", "hp.optim.lr", "hp.lora.r"):
        assert column in frame.columns, column
    assert sorted(frame["status"].value_counts().items()) == [("completed", 8), ("errored", 1), ("stopped", 7)]
    assert set(frame["skipped_inputs"]) == {2}
    assert dict(frame.groupby("method")["dropped_examples"].max()) == {"direct": 0, "mtct": 3}
    for column in ("search", "early_stopping", "num_samples", "seeds", "select_on", "split_seed", "sampler_seed",
                   "train_seed", "test_out_acc", "examples_seen"):
        assert column in frame.columns, column
    assert set(frame["search"]) == {"Optuna TPE"} and set(frame["seeds"]) == {"0 1"}
    assert set(frame["select_on"]) == {"direct"} and set(frame["num_samples"]) == {2}
    assert sorted(set(frame["split_seed"])) == [1000, 1001]
    stopped = frame[(frame["status"] == "stopped") & (frame["method"] == "mtct")].iloc[0]
    assert stopped["step"] < stopped["total_steps"] and stopped["cpu_hours"] == pytest.approx(120 * 2 / 3600)
    with_lodo = frame[(frame["status"] == "stopped") & (frame["method"] == "direct")].iloc[0]
    assert with_lodo["cpu_hours"] == pytest.approx((120 + 30) * 2 / 3600), "held-out runs are part of the cost"
    finished_direct = frame[(frame["status"] == "completed") & (frame["method"] == "direct")]
    assert finished_direct["lodo_score"].tolist() == pytest.approx([0.3] * 4)
    assert frame[frame["method"] == "mtct"]["lodo_score"].isna().all()
    assert frame["uses_chains"].tolist() == [m == "mtct" for m in frame["method"]]
    assert len(pd.read_parquet(report.parent / "trials.parquet")) == len(frame)


def test_html_is_self_contained(report: Path) -> None:
    page = report.read_text()
    assert report.name == "report.html" and page.count('<img src="data:image/png;base64,') == 4
    assert not re.findall(r"https?://", page)
    assert "<blockquote>" in page and "<strong>ORACLE</strong>" in page and "<h2>Learning curves</h2>" in page
    assert page.count("<table>") >= 5 and "<td>zero-shot (base model)</td>" in page
    assert "<li>Chance: 1/3 = 33.3% (3 classes).</li>" in page and "<code>eval.select_on</code>" in page
    assert importlib.util.find_spec("reasonbed.report.html") is None, "no hand-written Markdown converter"
    assert all((report.parent / "plots" / f"{n}.png").is_file()
               for n in ("accuracy", "learning_curves", "hyperparameters", "importance"))


def test_s3_sweep_with_missing_local_study_storage(sweep: tuple[Path, dict], s3_bucket: str,
                                                   tmp_path: Path) -> None:
    """Records read through fsspec; the sweep's sqlite path is not on this machine: the optuna.db copy is used."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    remote = f"{s3_bucket}/sweeps/toy-sweep"
    fs.put(str(sweep[0]), remote, recursive=True)
    meta = json.loads((sweep[0] / "sweep.json").read_text())
    fs.pipe(f"{remote}/sweep.json", json.dumps({**meta, "study_storage": "sqlite:////nowhere/optuna.db"}).encode())
    page = build_report(f"s3://{remote}", tmp_path / "out")
    markdown = page.with_name("report.md").read_text()
    assert "Sweep report: toy-sweep" in markdown and "optim.lr" in markdown
    assert len(pd.read_csv(page.with_name("trials.csv"))) == 16


def test_dashboard_commands_bind_loopback_by_default() -> None:
    commands = dashboard_commands("sqlite:////tmp/x.db", "/tmp/sweep")
    optuna_cmd, tensorboard_cmd = commands["optuna-dashboard"], commands["tensorboard"]
    assert optuna_cmd[optuna_cmd.index("--host") + 1] == "127.0.0.1" and "sqlite:////tmp/x.db" in optuna_cmd
    assert optuna_cmd[optuna_cmd.index("--port") + 1] == "8080"
    assert tensorboard_cmd[:3] == [sys.executable, "-m", "tensorboard.main"]
    assert tensorboard_cmd[tensorboard_cmd.index("--host") + 1] == "127.0.0.1"
    assert tensorboard_cmd[tensorboard_cmd.index("--port") + 1] == "6006"
    assert tensorboard_cmd[tensorboard_cmd.index("--logdir") + 1] == "/tmp/sweep"
    args = build_parser().parse_args(["dashboard", "runs/x"])
    assert (args.host, args.optuna_port, args.tensorboard_port) == ("127.0.0.1", 8080, 6006)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_dashboard_serves_and_stops(sweep: tuple[Path, dict]) -> None:
    optuna_port, tensorboard_port = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "reasonbed", "dashboard", str(sweep[0]),
                                "--optuna-port", str(optuna_port), "--tensorboard-port", str(tensorboard_port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    pids: list[int] = []  # the two dashboards' processes, once printed
    try:
        deadline, studies, runs = time.monotonic() + 60, None, []
        while time.monotonic() < deadline and process.poll() is None and not (studies and runs):
            try:  # both answer on 127.0.0.1; optuna-dashboard lists the studies, TensorBoard the trials' runs
                with urllib.request.urlopen(f"http://127.0.0.1:{optuna_port}/api/studies", timeout=2) as answer:
                    studies = json.load(answer)["study_summaries"]
                with urllib.request.urlopen(f"http://127.0.0.1:{tensorboard_port}/data/runs", timeout=2) as answer:
                    runs = json.load(answer)
            except OSError:
                pass
            time.sleep(0.5)
        assert process.poll() is None, "".join(output)
        assert studies and runs, f"dashboards did not answer within 60 s:\n{''.join(output)}"
        assert len(studies) == len(METHODS) * len(TEST_DOMAINS) * len(SEEDS)
        assert any("trial_" in run for run in runs), runs
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", "".join(output))]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids), "".join(output)
        assert f"http://127.0.0.1:{optuna_port}" in "".join(output) and "Ray dashboard" in "".join(output)
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in [process.pid, *pids]:  # leave nothing running behind a failed test
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the dashboard did not stop within 30 s of SIGINT:\n{''.join(output)}")
    reader.join(timeout=5)
    assert code == 0, "".join(output)
    assert not any(_alive(pid) for pid in pids), "".join(output)


def test_report_on_a_folder_without_sweep_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "not-a-sweep"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not-a-sweep.*no sweep.json"):
        build_report(str(empty), tmp_path / "out")
    assert main(["report", str(empty)]) == 2
    assert "not-a-sweep" in capsys.readouterr().err


def test_importance_plot_takes_equal_importances(tmp_path: Path) -> None:
    """Equal importances over a method's studies: their mean rounds past them (0.7 * 3 / 3 > 0.7), and the
    min-max error bar must not turn negative (matplotlib refuses it, which ended a sweep at its report)."""
    from reasonbed.report.plots import importance_plot

    importances = {f"direct-{d}-s0": {"optim.lr": 0.7, "lora.dropout": 0.3} for d in ("a", "b", "c")}
    path = importance_plot(importances, dict.fromkeys(importances, "direct"), tmp_path / "importance.png")
    assert path is not None and path.stat().st_size > 0
