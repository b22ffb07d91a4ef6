"""Build a sweep's report: report.md, a self-contained report.html with plots, results.tex, trials.csv/parquet.

    python -m reasonbed report runs/<sweep>                 # -> runs/<sweep>/report/report.html
    python -m reasonbed report s3://bucket/sweeps/<sweep>   # -> s3://bucket/sweeps/<sweep>/report/report.html
    python -m reasonbed report s3://... --out DIR           # -> DIR/report.html only (e.g. a read-only bucket)

`publish_report()` writes the report next to the sweep (in the sweep storage, as the sweep driver does
after every study); `build_report()` writes it into a local folder.

Everything is gathered from the trials' own records (result.json, trial.json, provenance.json), the
zero-shot records and the sweep's Optuna study, so every number traces to the trial and checkpoint
it came from. The report is a list of blocks (text, tables as data, images) rendered three ways by
reasonbed.report.document.
"""

from __future__ import annotations

import datetime
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reasonbed import storage
from reasonbed.report import plots
from reasonbed.report.document import Block, Image, to_html, to_latex, to_markdown
from reasonbed.report.sections import (
    ORACLE_NOTE,
    chosen_table,
    importance_blocks,
    label_conditioned_text,
    results_tables,
    tokens_text,
)
from reasonbed.report.sources import SweepData, load_sweep, redact_url, resolve_study_storage
from reasonbed.report.tables import Table
from reasonbed.tune.selection import SELECTIONS, Choice, select

log = logging.getLogger(__name__)


def trials_frame(data: SweepData, chosen: dict[str, dict[tuple, Choice | None]]) -> pd.DataFrame:
    """One row per trial: identity, protocol, seeds, status, prompt, last/best accuracies, cost, provenance,
    chosen checkpoints per selection, hyperparameters (hp.*)."""
    picked = {sel: {(c.method, c.test_domain, c.seed, c.trial_id): c.step for c in choices.values() if c}
              for sel, choices in chosen.items()}
    protocol = data.protocol
    rows = []
    for r in data.records:
        last = r.last
        key = (r.method, r.test_domain, r.seed, r.trial_id)
        row: dict[str, Any] = {
            "study": r.study, "method": r.method, "test_domain": r.test_domain, "seed": r.seed,
            "trial_id": r.trial_id, "status": r.status, "reports": len(r.reports),
            "search": protocol["search"], "early_stopping": protocol["early_stopping"],
            "num_samples": protocol["num_samples"], "seeds": " ".join(str(s) for s in protocol["seeds"]),
            **{name: r.seeds.get(name) for name in ("split_seed", "sampler_seed", "train_seed")},
            "select_on": last.get("select_on"),
            "step": int(last["step"]) if "step" in last else None,
            "total_steps": int(last["total_steps"]) if "total_steps" in last else None,
            "examples_seen": int(last["examples_seen"]) if "examples_seen" in last else None,
            "val_acc": last.get("val_acc"), "test_acc": last.get("test_acc"), "test_out_acc": last.get("test_out_acc"),
            "best_val_acc": max((float(x["val_acc"]) for x in r.reports), default=None),
            "lodo_score": r.lodo_score,
            "seconds": r.seconds, "cpus": r.cpus, "gpus": r.gpus, "cpu_hours": r.cpu_hours, "gpu_hours": r.gpu_hours,
            "uses_chains": data.uses_chains.get(r.path, False),
            **{f"chosen_{sel}_step": steps.get(key) for sel, steps in picked.items()},
            "skipped_inputs": int((r.provenance.get("skipped_inputs") or {}).get("skipped") or 0),
            "dropped_examples": _dropped(r.provenance),
            "code_version": r.provenance.get("code_version"),
            "data_manifest_sha256": r.provenance.get("data_manifest_sha256"), "path": r.path,
        }
        row.update({f"hp.{k}": v for k, v in sorted(r.hparams.items())})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ("step", "total_steps", "examples_seen", "split_seed", "sampler_seed", "train_seed",
                   *(f"chosen_{sel}_step" for sel in picked)):
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")  # integers with gaps, not floats
    for column in [c for c in frame.columns if c.startswith("hp.")]:  # parquet needs one type per column
        kinds = {type(v) for v in frame[column] if v is not None and not (isinstance(v, float) and pd.isna(v))}
        if len(kinds) > 1 or kinds - {int, float, bool, str}:
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    return frame


def study_importances(storage_url: str | None, studies: Sequence[str]) -> tuple[dict[str, dict[str, float]],
                                                                                  dict[str, str]]:
    """optuna_search.param_importances per study; studies without them map to a reason."""
    if storage_url is None:
        return {}, {}
    from reasonbed.tune.optuna_search import param_importances, study_summary

    importances: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    for study in studies:
        try:
            values = param_importances(storage_url, study)
        except KeyError:
            skipped[study] = "not in the Optuna storage"
            continue
        if values:
            importances[study] = values
        else:
            states = study_summary(storage_url, study)["states"]
            skipped[study] = (f"too few COMPLETE trials to estimate ({states.get('COMPLETE', 0)} complete; "
                              f"states {states})" if states.get("COMPLETE", 0) < 2
                              else "no parameter tells its best trials apart (e.g. tied objectives, one value each)")
    return importances, skipped


def _dropped(provenance: dict[str, Any]) -> int:
    return int(((provenance.get("skipped_inputs") or {}).get("dropped_examples") or {}).get("count") or 0)


def dropped_text(data: SweepData) -> str:
    """Training images the runs left out for want of a usable kept chain (from each run's provenance)."""
    counts = [_dropped(r.provenance) for r in data.records]
    if not any(counts):
        return "none"
    runs = sum(1 for count in counts if count)
    return (f"**up to {max(counts)} training image(s) per run had no usable kept chain and were left out** "
            f"({runs} of {len(counts)} runs; per run: trials.csv `dropped_examples`)")


def skipped_text(data: SweepData, first: int = 5) -> str:
    """The corrupt images the runs skipped (data.on_corrupt=skip, from each run's provenance), said in one line."""
    paths: dict[str, str] = {}
    settings = set()
    for record in [*data.records, *data.zero_shot]:
        skipped = record.provenance.get("skipped_inputs") or {}
        if skipped:
            settings.add(str(skipped.get("on_corrupt")))
        for item in skipped.get("first") or []:
            paths.setdefault(str(item.get("path")), str(item.get("reason", "")))
    counts = {int((r.provenance.get("skipped_inputs") or {}).get("skipped") or 0) for r in [*data.records,
                                                                                           *data.zero_shot]}
    most = max(counts, default=0)
    if not most:
        checked = "data.on_corrupt=" + "/".join(sorted(settings)) if settings else "not recorded by these runs"
        return f"none ({checked})"
    shown = ", ".join(f"`{path}`" for path in sorted(paths)[:first])
    return (f"**{most} corrupt image(s) skipped** (data.on_corrupt=skip; per run: trials.csv `skipped_inputs`): "
            f"{shown}" + (" ..." if most > first else ""))


def _overview(data: SweepData, storage_url: str | None) -> str:
    statuses: dict[str, int] = {}
    for record in data.records:
        statuses[record.status] = statuses.get(record.status, 0) + 1
    studies = data.sweep.get("studies", [])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    protocol = data.protocol
    lines = [
        f"# Sweep report: {data.name}", "",
        f"- sweep folder: `{data.uri}`",
        f"- studies: {len(studies)} (one per method x test domain x trial seed); methods: "
        f"{', '.join(data.methods) or 'none'}; test domains: {', '.join(data.domains) or 'none'}",
        f"- trials: {len(data.records)}" + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) + ")"
                                            if statuses else ""),
        f"- protocol: search {protocol['search']}, {protocol['num_samples']} draws per study, early stopping "
        f"{protocol['early_stopping']}, trial seeds {', '.join(map(str, protocol['seeds'])) or '?'}",
        f"- zero-shot evaluations: {len(data.zero_shot)}",
        f"- skipped inputs: {skipped_text(data)}",
        f"- training images without a usable chain: {dropped_text(data)}",
        f"- Optuna storage read: `{redact_url(storage_url) if storage_url else 'none found'}`",
        f"- generated: {now}",
    ]
    return "\n".join(lines)


def build_blocks(data: SweepData, out_dir: Path, storage_url: str | None) -> tuple[list[Block], dict[str, Table],
                                                                                   pd.DataFrame]:
    """The report's blocks (plots written under out_dir/plots), its results tables and the trials table."""
    tables, rows = results_tables(data)
    chosen = {sel: select(data.records, sel) for sel in SELECTIONS}
    plot_dir = out_dir / "plots"
    chance = 1 / len(data.classes) if data.classes else None
    accuracy = plots.accuracy_plot({"training-domain validation": rows["training_domain"],
                                    "ORACLE (test-domain selection, upper bound)": rows["oracle"]},
                                   data.domains, plot_dir / "accuracy.png", chance=chance)
    curves = plots.learning_curves_plot(data.records, data.methods, data.domains, chosen["training_domain"],
                                        plot_dir / "learning_curves.png", chance=chance)
    hparams = plots.hyperparameters_plot(chosen["training_domain"], plot_dir / "hyperparameters.png")
    importances, skipped = study_importances(storage_url, data.sweep.get("studies", []))
    study_method = {r.study: r.method for r in data.records}
    study_method.update({s: s for s in importances if s not in study_method})
    importance = plots.importance_plot(importances, study_method, plot_dir / "importance.png")

    def image(path: Path | None, alt: str) -> list[Block]:
        return [Image(path.relative_to(out_dir), alt)] if path else []

    chain_counts = data.total_tokens()  # the teacher's tokens and label-conditioned chains, each chains output once
    blocks: list[Block] = [_overview(data, storage_url), "## Results: test-domain accuracy (%)",
                           "Cost per method: CPU-/GPU-hours summed over all its trials (Tune's `time_total_s` x the "
                           "trial's resources) and the teacher's generated tokens of the chains its trials trained on "
                           "(from `<chains>/manifest.json`, prompt tokens in brackets; a chains output shared by "
                           "several methods is counted in each row, once in the sweep total: "
                           f"{tokens_text(chain_counts)}). {label_conditioned_text(chain_counts)}",
                           tables["training_domain"], ORACLE_NOTE, tables["oracle"], tables["leave_one_domain_out"]]
    blocks += image(accuracy, "Test accuracy per test domain and method (left: training-domain validation; "
                              "right: ORACLE); error bars: standard error over trial seeds; dashed: chance")
    blocks += ["## Learning curves",
               "Source-domain validation accuracy (`val_acc`) of every trial against the training examples seen "
               "(ASHA's time unit; the step where reports lack it); dashed trials were stopped early by ASHA; stars "
               "mark the training-domain-validation choice."]
    blocks += image(curves, "Learning curves") or ["No trial reported any evaluation."]
    blocks += ["## Chosen hyperparameters and checkpoints",
               chosen_table(chosen["training_domain"], data.records, "training_domain",
                            "Training-domain validation (the reported result)"),
               chosen_table(chosen["oracle"], data.records, "oracle",
                            "ORACLE choices (test-domain out-part selection, upper bound only)")]
    if any(chosen["leave_one_domain_out"].values()):
        blocks.append(chosen_table(chosen["leave_one_domain_out"], data.records, "leave_one_domain_out",
                                   "Leave-one-domain-out choices"))
    blocks += image(hparams, "Chosen hyperparameters (training-domain validation) per method / test domain")
    blocks += importance_blocks(importances, skipped, storage_url)
    blocks += image(importance, "Hyperparameter importance per method")
    blocks += ["## Files",
               "- `trials.csv`, `trials.parquet`: one row per trial (protocol, seeds, status, prompt, last and best "
               "accuracies, cost, chosen checkpoints per selection, `lodo_score` where the trial has its "
               "leave-one-domain-out runs, provenance, hyperparameters as `hp.*`).\n"
               "- `results.tex`: the three results tables in LaTeX (booktabs), as DomainBed's `results.tex`.\n"
               "- `plots/`: the figures above as PNG files.\n"
               f"- Dashboards: `python -m reasonbed dashboard {data.uri}` (optuna-dashboard and TensorBoard)."]
    return blocks, tables, trials_frame(data, chosen)


def build_report(sweep_uri: str, out_dir: str | Path) -> Path:
    """Write report.md, report.html, results.tex, trials.csv and trials.parquet into out_dir; returns
    report.html's path."""
    sweep_uri = str(sweep_uri)
    data = load_sweep(sweep_uri)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reasonbed-report-") as tmp:
        storage_url = resolve_study_storage(sweep_uri, data.sweep, tmp)
        blocks, tables, frame = build_blocks(data, out, storage_url)
    title = f"reasonbed report: {data.name}"
    (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "results.tex").write_text(to_latex([tables[sel] for sel in SELECTIONS], f"Sweep {data.name}"),
                                     encoding="utf-8")
    frame.to_csv(out / "trials.csv", index=False)
    frame.to_parquet(out / "trials.parquet", index=False)
    page = out / "report.html"
    page.write_text(to_html(blocks, out, title=title), encoding="utf-8")
    log.info("report of %s (%d trials) -> %s", sweep_uri, len(data.records), page)
    return page


def publish_report(sweep_uri: str, local_copy: str | Path | None = None) -> str:
    """Write the report into the sweep storage, `<sweep>/report/`, and return report.html's location.

    A sweep on an object store gets it built in `local_copy` (kept) or in a temporary folder, then
    uploaded file by file, report.html last: whoever sees the page finds the whole report beside it.
    """
    sweep_uri = str(sweep_uri)
    if not storage.is_remote(sweep_uri):
        page = build_report(sweep_uri, Path(sweep_uri) / "report")
        if local_copy and Path(local_copy).resolve() != page.parent.resolve():
            import shutil

            shutil.copytree(page.parent, local_copy, dirs_exist_ok=True)
        return str(page)
    with tempfile.TemporaryDirectory(prefix="reasonbed-report-") as tmp:
        out = Path(local_copy) if local_copy else Path(tmp) / "report"
        page = build_report(sweep_uri, out)
        target = storage.join(sweep_uri, "report")
        for path in sorted(out.rglob("*"), key=lambda path: (path == page, str(path))):
            if path.is_file():
                storage.write_bytes(storage.join(target, path.relative_to(out).as_posix()), path.read_bytes())
    log.info("report of %s -> %s", sweep_uri, target)
    return storage.join(target, page.name)
