"""The report's tables as data: results per selection (with cost, prompt, protocol, chance, zero-shot row),
the chosen checkpoints, the hyperparameter importances.

Results tables come from `selection.results_table` (DomainBed style: rows = methods, columns = test
domains + Avg, mean ± standard error over trial seeds), led by the zero-shot row, with a Prompt
column (the prompt each number comes from), the cost of each row and the teacher-chain tokens behind
it. Every table says which protocol produced it. Every chosen number is listed with the trial, step,
prompt and provenance (code version, data manifest hash) it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reasonbed.report.sources import SweepData
from reasonbed.report.tables import Cell, Code, Table
from reasonbed.tune.records import TrialRecord
from reasonbed.tune.selection import (
    SCORES,
    SELECTIONS,
    TITLES,
    Choice,
    Row,
    errored_summary,
    format_avg,
    results_table,
    select,
)

ORACLE_NOTE = ("> **ORACLE** - selected by the test domain's out-part accuracy at the last checkpoint of each "
               "trial, reporting its in part: an upper bound that peeks at the test domain, as DomainBed's "
               "oracle does. It is not a valid domain-generalization result; quote the training-domain "
               "validation table.")
STATISTICS_NOTE = ("Cells: test-domain accuracy (%) of its **in** part, mean ± standard error over trial seeds "
                   "(DomainBed's `collect_results.format_mean`: population std / sqrt(n)); `n=1`: a single seed; "
                   "Avg: the mean of the per-domain means, `X` when a domain has no result.")
PROMPTS = {"direct": "the classification prompt's answer", "reasoning": "the reasoning prompt's parsed conclusion"}


def tokens_text(tokens: Mapping[str, int]) -> str:
    if not tokens.get("completion_tokens") and not tokens.get("prompt_tokens"):
        return "0"
    return f"{tokens.get('completion_tokens', 0):,} (prompt {tokens.get('prompt_tokens', 0):,})"


def label_conditioned_text(counts: Mapping[str, int]) -> str:
    """How many teacher chains saw the label in their prompt (training leaves them out by default)."""
    return (f"Label-conditioned teacher chains (the prompt named the label; left out of training unless "
            f"`allow_label_conditioned`): {counts.get('label_conditioned_candidates', 0):,} candidates, "
            f"{counts.get('label_conditioned_kept', 0):,} kept.")


def protocol_note(data: SweepData) -> str:
    p = data.protocol
    seeds = ", ".join(str(seed) for seed in p["seeds"]) or "?"
    return (f"Protocol: search **{p['search']}**, {p['num_samples']} draws per study (draw 0 = the defaults); "
            f"early stopping: {p['early_stopping']}; trial seeds {seeds} (each changes the in/out split, the draws "
            f"and the training seed).")


def chance_note(data: SweepData) -> str | None:
    if not data.classes:
        return None
    return f"Chance: 1/{len(data.classes)} = {100 / len(data.classes):.1f}% ({len(data.classes)} classes)."


def prompt_note(rows: Sequence[Row]) -> str:
    used = sorted({p for row in rows for p in row.select_on.split("/") if p})
    if not used:
        return "Prompt: not recorded by these reports."
    return "Prompt (`eval.select_on`): " + "; ".join(f"`{p}` = {PROMPTS.get(p, p)}" for p in used) + "."


def results_tables(data: SweepData) -> tuple[dict[str, Table], dict[str, list[Row]]]:
    """The three selection tables (and their rows, for plots)."""
    tables, all_rows = {}, {}
    for selection in SELECTIONS:
        rows = results_table(data.records, data.domains, selection, zero_shot=data.zero_shot)
        cells: list[list[Cell]] = []
        for row in rows:
            tokens = "0" if row.zero_shot else tokens_text(data.method_tokens(row.method))
            cells.append([row.method, *(row.cells[d] for d in data.domains), format_avg(row), row.select_on or "-",
                          "-" if row.zero_shot else str(row.trials), f"{row.cpu_hours:.3f}", f"{row.gpu_hours:.3f}",
                          tokens])
        summary = errored_summary(data.records, select(data.records, selection))
        notes = [STATISTICS_NOTE, prompt_note(rows), protocol_note(data)]
        if data.zero_shot:
            notes.append("zero-shot (base model): the untrained base model on the same images, prompt and parser, "
                         "once per trial seed; no selection involved.")
        notes += [note for note in (chance_note(data),) if note]
        notes.append(f"Errored trials: {summary['errored']} of {len(data.records)}; {summary['errored_candidates']} "
                     f"of them had valid reports, which stayed candidates; {summary['chosen_from_errored']} "
                     f"cell choice(s) came from an errored trial.")
        if selection == "leave_one_domain_out":
            notes.append("Chosen by the mean accuracy on each source domain held out in turn (extra runs with the "
                         "trial's hyperparameters); the result is the trial's main run at its last checkpoint. "
                         "X: no finished trial has those runs (sweep with `lodo_selection=true`).")
        tables[selection] = Table(["Method", *data.domains, "Avg", "Prompt", "Trials", "CPU-h", "GPU-h",
                                   "Teacher tokens (generated)"], cells, TITLES[selection], notes)
        all_rows[selection] = rows
    return tables, all_rows


def _short_hparams(hparams: Mapping[str, Any]) -> str:
    parts = []
    for key, value in sorted(hparams.items()):
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return ", ".join(parts) or "(defaults)"


def _percent(value: Any) -> str:
    return f"{100 * float(value):.1f}" if isinstance(value, (int, float)) else ""


def chosen_table(chosen: Mapping[tuple, Choice | None], records: Sequence[TrialRecord], selection: str,
                 title: str) -> Table:
    """One row per (method, test domain, trial seed): the chosen trial, checkpoint, prompt, accuracies, hparams,
    the unparseable and truncated fractions of its prompt, provenance."""
    by_key = {(r.method, r.test_domain, r.seed, r.trial_id): r for r in records}
    score = [] if SCORES[selection] == "val_acc" else [SCORES[selection]]  # what the selection maximised
    columns = ["Method", "Test domain", "Seed", "Study", "Trial", "Step", "Prompt", *score, "val_acc",
               "test_acc (in)", "unparseable %", "truncated %", "Hyperparameters", "code_version",
               "data_manifest_sha256"]
    rows: list[list[Cell]] = []
    for (method, domain, seed), choice in chosen.items():
        if choice is None:
            continue
        record = by_key.get((method, domain, seed, choice.trial_id))
        provenance = record.provenance if record else {}
        prompt = choice.select_on
        rows.append([method, domain, str(seed), record.study if record else "?",
                     Code(choice.trial_id + (" (errored)" if choice.errored else "")), str(choice.step), prompt or "-",
                     *(_percent(choice.score) for _ in score), _percent(choice.val_acc), _percent(choice.test_acc),
                     _percent(choice.report.get(f"unparseable/{prompt}")), _percent(choice.report.get(f"truncated/{prompt}")),
                     Code(_short_hparams(choice.hparams)), Code(str(provenance.get("code_version") or "unknown")),
                     Code(str(provenance.get("data_manifest_sha256") or "unknown"))])
    return Table(columns, rows, title)


def importance_blocks(importances: Mapping[str, Mapping[str, float]], skipped: Mapping[str, str],
                      storage_url: str | None) -> list[str | Table]:
    """Per-study importances as a table, and a note for every study without them."""
    blocks: list[str | Table] = ["## Hyperparameter importance (Optuna, PED-ANOVA)"]
    if storage_url is None:
        return [*blocks, "No Optuna storage was found for this sweep (neither `study_storage` nor an `optuna.db` "
                         "copy in the sweep folder): importances are left out."]
    params = sorted({p for values in importances.values() for p in values})
    if importances:
        blocks.append("Importance of each hyperparameter for the study's objective (`val_acc`, training-domain "
                      "validation), over its COMPLETE trials; trials stopped early (PRUNED) are not used. PED-ANOVA: "
                      "how far the hyperparameter's values in the study's best 10% of trials (at least one) stand "
                      "apart from all of them; shares summing to 1 per study, rough with few trials.")
        blocks.append(Table(["Study", *params], [[study, *(f"{values[p]:.3f}" if p in values else "" for p in params)]
                                                 for study, values in importances.items()]))
    if skipped:
        blocks.append("Skipped (no importances):\n\n" + "\n".join(f"- `{study}`: {reason}"
                                                                   for study, reason in skipped.items()))
    return blocks
