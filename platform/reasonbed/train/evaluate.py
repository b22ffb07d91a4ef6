"""Per-domain accuracy with the classification and reasoning prompts (greedy generation + parsing).

Evaluation rows carry a `role` (source, test, heldout) and a `part` (DomainBed's `in`/`out` split of
every domain, the test domain's included; `heldout` for a source domain left out of training in
leave-one-domain-out runs). By default only what selection and reports use is evaluated: the source
out parts, both parts of the test domain and a held-out domain; the source in parts only with
`eval.in_parts`. Each worker evaluates its share of the rows; counts are summed over workers.

Metric names (stable; tuning, selection and reports read them), per prompt P in {direct, reasoning}:
`acc/P/<domain>/<in|out|heldout>`; `val_acc_P` (mean over the source domains' out parts: the only
number model selection may use), `test_acc_P` (the test domain's in part: what tables report),
`test_out_acc_P` (its out part: what the oracle selects on; reported separately), `heldout_acc_P`,
`unparseable/P` (answers naming no class or several, counted wrong) and `truncated/P` (completions
cut by the token budget). `val_acc`, `test_acc`, `test_out_acc`, `heldout_acc` are those of the
selection prompt `select_on`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from reasonbed.inference.base import Request, SamplingConfig
from reasonbed.inference.sampling import generate
from reasonbed.models.encoding import decode_image
from reasonbed.prompts import answer_class, prompt_for


def eval_rows(rows: Sequence[Mapping[str, Any]], max_per_domain: int, seed: int, in_parts: bool = False
              ) -> list[Mapping[str, Any]]:
    """Rows to evaluate: source in parts only when asked; all, or a seeded sample of at most
    `max_per_domain` per (domain, part)."""
    rows = [row for row in rows if in_parts or not (row["role"] == "source" and row["part"] == "in")]
    if not max_per_domain:
        return list(rows)
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["domain"], row["part"]), []).append(row)
    chosen = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda row: row["id"])
        random.Random(f"{seed}/{key}").shuffle(group)
        chosen.extend(group[:max_per_domain])
    return chosen


def count_correct(model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], read_image: Any,
                  class_names: Sequence[str], kind: str, max_new_tokens: int, batch_size: int
                  ) -> dict[tuple[str, str], list[int]]:
    """(domain, part) -> [correct, total, unparseable, truncated] over `rows`, greedy answers."""
    prompt = prompt_for(kind, class_names)
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=max_new_tokens)
    requests = [Request(decode_image(read_image(row["path"])), prompt) for row in rows]
    completions = generate(model, processor, requests, greedy, batch_size=batch_size)
    counts: dict[tuple[str, str], list[int]] = {}
    for row, (completion,) in zip(rows, completions, strict=True):
        predicted = answer_class(completion.text, kind, class_names)
        entry = counts.setdefault((row["domain"], row["part"]), [0, 0, 0, 0])
        entry[0] += int(predicted == int(row["label"]))
        entry[1] += 1
        entry[2] += int(predicted is None)
        entry[3] += int(completion.truncated)
    return counts


def metrics_from_counts(counts: Mapping[tuple[str, str], Sequence[int]], kind: str,
                        roles: Mapping[str, str]) -> dict[str, float]:
    """Accuracy per (domain, part) and the summary metrics of one prompt; `roles`: domain -> role."""
    metrics: dict[str, float] = {}
    out_accs, total, unparseable, truncated = [], 0, 0, 0
    for (domain, part), (correct, n, bad, cut) in sorted(counts.items()):
        if not n:
            continue
        accuracy = correct / n
        metrics[f"acc/{kind}/{domain}/{part}"] = accuracy
        role = roles[domain]
        if role == "source" and part == "out":
            out_accs.append(accuracy)
        elif role == "test":
            metrics[f"test_acc_{kind}" if part == "in" else f"test_out_acc_{kind}"] = accuracy
        elif role == "heldout":
            metrics[f"heldout_acc_{kind}"] = accuracy
        total, unparseable, truncated = total + n, unparseable + bad, truncated + cut
    if out_accs:
        metrics[f"val_acc_{kind}"] = sum(out_accs) / len(out_accs)
    metrics[f"unparseable/{kind}"] = unparseable / total if total else 0.0
    metrics[f"truncated/{kind}"] = truncated / total if total else 0.0
    return metrics


def selection_metrics(metrics: Mapping[str, float], select_on: str) -> dict[str, Any]:
    """val_acc, test_acc, test_out_acc (and heldout_acc) of the selection prompt, and which prompt that is."""
    chosen: dict[str, Any] = {"select_on": select_on}
    for name in ("val_acc", "test_acc", "test_out_acc", "heldout_acc"):
        key = f"{name}_{select_on}"
        if key in metrics:
            chosen[name] = metrics[key]
        elif name in ("val_acc", "test_acc"):
            chosen[name] = 0.0  # nothing evaluated in that role (e.g. no source out part): never chosen
    return chosen


def prompts_to_evaluate(cfg: Any, select_on: str) -> list[str]:
    """The prompts eval.direct / eval.reasoning ask for, plus the selection prompt."""
    kinds = [kind for kind, on in (("direct", cfg.eval.direct), ("reasoning", cfg.eval.reasoning)) if on]
    return kinds if select_on in kinds else [*kinds, select_on]
