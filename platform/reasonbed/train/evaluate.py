"""Per-domain accuracy with the classification and reasoning prompts (greedy generation + parsing).

Each worker evaluates its share of the rows; counts are summed over workers. Metric names (stable,
used by tuning and reports): `val_acc` (mean accuracy over the source domains' out parts - the only
number model selection may use), `test_acc` (the test domain; reported, never used to choose),
`acc/<prompt>/<domain>/<part>` per domain and part, and `unparseable/<prompt>` (fraction of answers
naming no class or several, counted as wrong).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from reasonbed.models.loading import build_chat_prompt
from reasonbed.prompts import classification_prompt, parse_chain, parse_class, reasoning_prompt
from reasonbed.train.batching import decode_image


def eval_rows(rows: Sequence[Mapping[str, Any]], max_per_domain: int, seed: int) -> list[Mapping[str, Any]]:
    """Rows to evaluate: all, or a seeded sample of at most `max_per_domain` per (domain, part)."""
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


def predict(model: Any, processor: Any, images: Sequence[Any], prompt: str, kind: str,
            class_names: Sequence[str], max_new_tokens: int) -> list[int | None]:
    """Greedy answers for a batch of images; the parsed class index or None when unparseable."""
    import torch

    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    text = build_chat_prompt(processor, prompt)
    inputs = processor(text=[text] * len(images), images=list(images), return_tensors="pt", padding=True)
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
    tokenizer.padding_side = "right"
    answers = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    if kind == "reasoning":
        return [parse_class(parse_chain(answer).conclusion, class_names) for answer in answers]
    return [parse_class(answer, class_names) for answer in answers]


def count_correct(model: Any, processor: Any, rows: Sequence[Mapping[str, Any]], read_image: Any,
                  class_names: Sequence[str], kind: str, max_new_tokens: int, batch_size: int
                  ) -> dict[tuple[str, str], list[int]]:
    """(domain, part) -> [correct, total, unparseable] over `rows`."""
    prompt = reasoning_prompt(class_names) if kind == "reasoning" else classification_prompt(class_names)
    counts: dict[tuple[str, str], list[int]] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        images = [decode_image(read_image(row["path"])) for row in chunk]
        for row, predicted in zip(chunk, predict(model, processor, images, prompt, kind, class_names,
                                                 max_new_tokens), strict=True):
            entry = counts.setdefault((row["domain"], row["part"]), [0, 0, 0])
            entry[0] += int(predicted == int(row["label"]))
            entry[1] += 1
            entry[2] += int(predicted is None)
    return counts


def metrics_from_counts(counts: Mapping[tuple[str, str], Sequence[int]], kind: str) -> dict[str, float]:
    """Accuracy per (domain, part), the mean over source out parts, the test (and held-out) accuracy, unparseable."""
    metrics: dict[str, float] = {}
    out_accs, total, unparseable = [], 0, 0
    for (domain, part), (correct, n, bad) in sorted(counts.items()):
        if not n:
            continue
        accuracy = correct / n
        metrics[f"acc/{kind}/{domain}/{part}"] = accuracy
        if part == "out":
            out_accs.append(accuracy)
        if part == "test":
            metrics[f"test_acc_{kind}"] = accuracy
        if part == "heldout":  # the left-out source domain of a leave-one-domain-out selection run
            metrics[f"heldout_acc_{kind}"] = accuracy
        total, unparseable = total + n, unparseable + bad
    if out_accs:
        metrics[f"val_acc_{kind}"] = sum(out_accs) / len(out_accs)
    metrics[f"unparseable/{kind}"] = unparseable / total if total else 0.0
    return metrics
