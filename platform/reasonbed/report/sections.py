"""The Markdown sections of a sweep report: results tables with cost, chosen hyperparameters, importances.

Results tables come from `selection.results_table` / `selection.markdown_table` (DomainBed style:
rows = methods, columns = test domains + Avg, mean ± std over seeds), with one more cost column:
the teacher-chain tokens behind each method. Every chosen number is listed with the trial, step and
provenance (code version, data manifest hash) it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reasonbed.report.sources import SweepData
from reasonbed.tune.records import TrialRecord
from reasonbed.tune.selection import Choice, markdown_table, results_table

ORACLE_NOTE = ("> **ORACLE** - selected by test-domain accuracy (last checkpoint of each trial): an upper bound "
               "that peeks at the test domain, as DomainBed's oracle does. It is not a valid "
               "domain-generalization result; quote the training-domain validation table.")


def md_cell(value: Any) -> str:
    """A value safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _tokens(tokens: Mapping[str, int]) -> str:
    if not tokens.get("completion_tokens") and not tokens.get("prompt_tokens"):
        return "0"
    return f"{tokens.get('completion_tokens', 0):,} (prompt {tokens.get('prompt_tokens', 0):,})"


def with_token_column(table: str, rows: Sequence[Mapping[str, Any]], data: SweepData) -> str:
    """Append a "Teacher tokens" column to a markdown_table (its rows are in the order of `rows`)."""
    lines = table.splitlines()
    table_lines = [n for n, line in enumerate(lines) if line.startswith("|")]
    if len(table_lines) < 2:
        return table
    header, separator, body = table_lines[0], table_lines[1], table_lines[2:]
    lines[header] += " Teacher tokens (generated) |"
    lines[separator] += "---|"
    for n, row in zip(body, rows, strict=True):
        lines[n] += f" {_tokens(data.method_tokens(row['method']))} |"
    return "\n".join(lines)


def results_section(data: SweepData) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Markdown of the three selection tables; also returns the rows per selection for plots."""
    tables = {sel: results_table(data.records, data.domains, sel)
              for sel in ("training_domain", "oracle", "leave_one_domain_out")}
    total = data.total_tokens()
    lines = [
        "## Results: test-domain accuracy (%)", "",
        "Each cell: mean ± std (population) over seeds of the test accuracy of the checkpoint chosen per "
        "(method, test domain, seed); Avg averages a seed's test domains (seeds missing a domain are left out). "
        "Cost per method: CPU-/GPU-hours summed over all its trials (Tune's `time_total_s` x the trial's "
        "resources) and the teacher's generated tokens of the chains its trials trained on (from "
        "`<chains>/manifest.json`, prompt tokens in brackets; a chains output shared by several methods is "
        f"counted in each row, once in the sweep total: {_tokens(total)}).", "",
        with_token_column(markdown_table(tables["training_domain"], data.domains, "training_domain"),
                          tables["training_domain"], data), "",
        ORACLE_NOTE, "",
        with_token_column(markdown_table(tables["oracle"], data.domains, "oracle"), tables["oracle"], data), "",
        markdown_table(tables["leave_one_domain_out"], data.domains, "leave_one_domain_out"), "",
    ]
    return lines, tables


def _short_hparams(hparams: Mapping[str, Any]) -> str:
    parts = []
    for key, value in sorted(hparams.items()):
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return ", ".join(parts) or "(defaults)"


def chosen_table(chosen: Mapping[tuple, Choice | None], records: Sequence[TrialRecord]) -> str:
    """One row per (method, test domain, seed): the chosen trial, checkpoint, accuracies, hparams, provenance."""
    by_key = {(r.method, r.test_domain, r.seed, r.trial_id): r for r in records}
    header = ["Method", "Test domain", "Seed", "Study", "Trial", "Step", "val_acc", "test_acc", "Hyperparameters",
              "code_version", "data_manifest_sha256"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, domain, seed), choice in chosen.items():
        if choice is None:
            continue
        record = by_key.get((method, domain, seed, choice.trial_id))
        provenance = record.provenance if record else {}
        cells = [method, domain, seed, record.study if record else "?", f"`{choice.trial_id}`", choice.step,
                 f"{100 * choice.val_acc:.1f}", f"{100 * choice.test_acc:.1f}",
                 f"`{md_cell(_short_hparams(choice.hparams))}`", f"`{provenance.get('code_version') or 'unknown'}`",
                 f"`{provenance.get('data_manifest_sha256') or 'unknown'}`"]
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def importance_section(importances: Mapping[str, Mapping[str, float]], skipped: Mapping[str, str],
                       storage_url: str | None) -> list[str]:
    """Per-study importances as a table, and a note for every study without them."""
    lines = ["## Hyperparameter importance (Optuna, fANOVA)", ""]
    if storage_url is None:
        return [*lines, "No Optuna storage was found for this sweep (neither `study_storage` nor an `optuna.db` "
                        "copy in the sweep folder): importances are left out.", ""]
    params = sorted({p for values in importances.values() for p in values})
    if importances:
        lines += ["Importance of each hyperparameter for the study's objective (`val_acc`, training-domain "
                  "validation), over its COMPLETE trials; trials stopped early (PRUNED) are not used.", "",
                  "| Study | " + " | ".join(params) + " |", "|---|" + "---|" * len(params)]
        for study, values in importances.items():
            cells = [f"{values[p]:.3f}" if p in values else "" for p in params]
            lines.append(f"| {study} | " + " | ".join(cells) + " |")
        lines.append("")
    if skipped:
        lines.append("Skipped (no importances):")
        lines += [f"- {study}: {reason}" for study, reason in skipped.items()]
        lines.append("")
    return lines
