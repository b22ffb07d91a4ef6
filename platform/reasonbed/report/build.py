"""Build a sweep's report: report.md, a self-contained report.html with plots, trials.csv/parquet.

    python -m reasonbed report runs/<sweep>                 # -> runs/<sweep>/report/report.html
    python -m reasonbed report s3://bucket/sweeps/<sweep>   # -> ./runs/<sweep>/report/report.html

Everything is gathered from the trials' own records (result.json, trial.json, provenance.json) and
the sweep's Optuna study, so every number traces to the trial and checkpoint it came from.
"""

from __future__ import annotations

import datetime
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reasonbed.report import plots
from reasonbed.report.html import markdown_to_html
from reasonbed.report.sections import chosen_table, importance_section, results_section
from reasonbed.report.sources import SweepData, load_sweep, redact_url, resolve_study_storage
from reasonbed.tune.selection import Choice, select

log = logging.getLogger(__name__)


def trials_frame(data: SweepData, chosen: dict[str, dict[tuple, Choice | None]]) -> pd.DataFrame:
    """One row per trial: identity, status, last/best accuracies, cost, provenance, hyperparameters (hp.*)."""
    picked = {sel: {(c.method, c.test_domain, c.seed, c.trial_id): c.step for c in choices.values() if c}
              for sel, choices in chosen.items()}
    rows = []
    for r in data.records:
        last = r.last
        key = (r.method, r.test_domain, r.seed, r.trial_id)
        row: dict[str, Any] = {
            "study": r.study, "method": r.method, "test_domain": r.test_domain, "seed": r.seed,
            "trial_id": r.trial_id, "status": r.status, "reports": len(r.reports),
            "step": int(last["step"]) if "step" in last else None,
            "total_steps": int(last["total_steps"]) if "total_steps" in last else None,
            "val_acc": last.get("val_acc"), "test_acc": last.get("test_acc"),
            "best_val_acc": max((float(x["val_acc"]) for x in r.reports), default=None),
            "lodo_score": r.lodo_score,
            "seconds": r.seconds, "cpus": r.cpus, "gpus": r.gpus, "cpu_hours": r.cpu_hours, "gpu_hours": r.gpu_hours,
            "uses_chains": data.uses_chains.get(r.path, False),
            **{f"chosen_{sel}_step": steps.get(key) for sel, steps in picked.items()},
            "code_version": r.provenance.get("code_version"),
            "data_manifest_sha256": r.provenance.get("data_manifest_sha256"), "path": r.path,
        }
        row.update({f"hp.{k}": v for k, v in sorted(r.hparams.items())})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ("step", "total_steps", *(f"chosen_{sel}_step" for sel in picked)):
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
                              else "the estimator could not rank its parameters (e.g. a single value each)")
    return importances, skipped


def _overview(data: SweepData, storage_url: str | None) -> list[str]:
    statuses: dict[str, int] = {}
    for record in data.records:
        statuses[record.status] = statuses.get(record.status, 0) + 1
    studies = data.sweep.get("studies", [])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# Sweep report: {data.name}", "",
        f"- sweep folder: `{data.uri}`",
        f"- studies: {len(studies)} (one per method x test domain x seed); methods: "
        f"{', '.join(data.methods) or 'none'}; test domains: {', '.join(data.domains) or 'none'}",
        f"- trials: {len(data.records)}" + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) + ")"
                                            if statuses else ""),
        f"- Optuna storage read: `{redact_url(storage_url) if storage_url else 'none found'}`",
        f"- generated: {now}", "",
    ]


def build_markdown(data: SweepData, out_dir: Path, storage_url: str | None) -> tuple[str, pd.DataFrame]:
    """The report's Markdown (plots written under out_dir/plots) and the trials table."""
    results, tables = results_section(data)
    chosen = {sel: select(data.records, sel) for sel in ("training_domain", "oracle", "leave_one_domain_out")}
    plot_dir = out_dir / "plots"
    accuracy = plots.accuracy_plot({"training-domain validation": tables["training_domain"],
                                    "ORACLE (test-domain selection, upper bound)": tables["oracle"]},
                                   data.domains, plot_dir / "accuracy.png")
    curves = plots.learning_curves_plot(data.records, data.methods, data.domains, chosen["training_domain"],
                                        plot_dir / "learning_curves.png")
    hparams = plots.hyperparameters_plot(chosen["training_domain"], plot_dir / "hyperparameters.png")
    importances, skipped = study_importances(storage_url, data.sweep.get("studies", []))
    study_method = {r.study: r.method for r in data.records}
    study_method.update({s: s for s in importances if s not in study_method})
    importance = plots.importance_plot(importances, study_method, plot_dir / "importance.png")

    def image(path: Path | None, alt: str) -> list[str]:
        return [f"![{alt}]({path.relative_to(out_dir).as_posix()})", ""] if path else []

    lines = _overview(data, storage_url) + results
    lines += image(accuracy, "Test accuracy per test domain and method (left: training-domain validation; "
                             "right: ORACLE)")
    lines += ["## Learning curves", "",
              "Source-domain validation accuracy (`val_acc`) of every trial against the training step; dashed "
              "trials were stopped early by ASHA; stars mark the training-domain-validation choice.", ""]
    lines += image(curves, "Learning curves") or ["No trial reported any evaluation.", ""]
    lines += ["## Chosen hyperparameters and checkpoints", "",
              "### Training-domain validation (the reported result)", "",
              chosen_table(chosen["training_domain"], data.records), "",
              "### ORACLE choices (test-domain selection, upper bound only)", "",
              chosen_table(chosen["oracle"], data.records), ""]
    if any(chosen["leave_one_domain_out"].values()):
        lines += ["### Leave-one-domain-out choices (val_acc column: mean accuracy on the held-out source domains)",
                  "", chosen_table(chosen["leave_one_domain_out"], data.records), ""]
    lines += image(hparams, "Chosen hyperparameters (training-domain validation) per method / test domain")
    lines += importance_section(importances, skipped, storage_url)
    lines += image(importance, "Hyperparameter importance per method")
    lines += ["## Files", "",
              "- `trials.csv`, `trials.parquet`: one row per trial (status, last and best accuracies, cost, "
              "chosen checkpoints per selection, `lodo_score` where the trial has its leave-one-domain-out runs, "
              "provenance, hyperparameters as `hp.*`).",
              "- `plots/`: the figures above as PNG files.",
              "- Dashboards: `python -m reasonbed dashboard " + data.uri + "` (optuna-dashboard and TensorBoard).",
              ""]
    return "\n".join(lines), trials_frame(data, chosen)


def build_report(sweep_uri: str, out_dir: str | Path) -> Path:
    """Write report.md, report.html, trials.csv and trials.parquet into out_dir; returns report.html's path."""
    sweep_uri = str(sweep_uri)
    data = load_sweep(sweep_uri)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reasonbed-report-") as tmp:
        storage_url = resolve_study_storage(sweep_uri, data.sweep, tmp)
        markdown, frame = build_markdown(data, out, storage_url)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    frame.to_csv(out / "trials.csv", index=False)
    frame.to_parquet(out / "trials.parquet", index=False)
    page = out / "report.html"
    page.write_text(markdown_to_html(markdown, out, title=f"reasonbed report: {data.name}"), encoding="utf-8")
    log.info("report of %s (%d trials) -> %s", sweep_uri, len(data.records), page)
    return page
