"""What a base model does on an offline benchmark before any fine-tuning: the tiny world's calibration.

`zero_shot(model, processor, dataset)` reports greedy accuracy per domain with the classification
prompt (`reasonbed.train.evaluate.count_correct`, every image of the benchmark as part `test`) and,
on a seeded sample of images spread over the domains, the greedy completions of the reasoning
prompt judged as rejection sampling judges them (`reasonbed.generation.validate.judge`): the share
of valid chains (five tags in order, a conclusion naming one class), of kept chains (valid and
right), and their lengths in tokens. `python -m reasonbed tiny-model --dataset ...` prints it.
"""

from __future__ import annotations

import random
from typing import Any

from reasonbed.data import catalog
from reasonbed.data.reader import scan


def benchmark_rows(dataset: str, data_root: str = "") -> tuple[Any, str, list[dict[str, Any]]]:
    """Spec, root and index rows (all as part `test`) of an offline benchmark at its default size."""
    spec, root = catalog.resolve(catalog.DataConfig(dataset=dataset, root=data_root))
    rows = [{**row, "part": "test", "role": "test"} for row in scan(spec, root)]
    return spec, root, rows


def chain_sample(rows: list[dict[str, Any]], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` rows spread evenly over the domains (seeded)."""
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda row: row["id"]):
        by_domain.setdefault(row["domain"], []).append(row)
    for domain, group in by_domain.items():
        random.Random(f"{seed}/{domain}").shuffle(group)
    picked, position = [], 0
    while len(picked) < min(count, len(rows)):
        for group in by_domain.values():
            if position < len(group) and len(picked) < count:
                picked.append(group[position])
        position += 1
    return picked


def zero_shot(model: Any, processor: Any, dataset: str = "synthetic_shapes", data_root: str = "",
              chains: int = 48, chain_tokens: int = 160, batch_size: int = 16,
              max_per_domain: int = 0) -> dict[str, Any]:
    """Per-domain direct accuracy and chain statistics of `model` on the benchmark `dataset`."""
    from reasonbed.generation.validate import judge
    from reasonbed.inference.base import Request, SamplingConfig
    from reasonbed.inference.sampling import generate
    from reasonbed.models.encoding import decode_image
    from reasonbed.prompts import reasoning_prompt
    from reasonbed.train.data import ImageStore
    from reasonbed.train.evaluate import count_correct, eval_rows, metrics_from_counts

    spec, root, rows = benchmark_rows(dataset, data_root)
    images = ImageStore(root)
    names = spec.display_names
    rows = eval_rows(rows, max_per_domain, seed=0)
    counts = count_correct(model, processor, rows, images.read, names, "direct", 12, batch_size)
    metrics = metrics_from_counts(counts, "direct", {domain: "test" for domain in spec.domains})
    accuracy = {domain: metrics[f"acc/direct/{domain}/test"] for domain in spec.domains}
    result: dict[str, Any] = {"dataset": dataset, "chance": 1.0 / len(names), "accuracy": accuracy,
                              "mean_accuracy": sum(accuracy.values()) / len(accuracy),
                              "images_per_domain": {domain: counts[(domain, "test")][1] for domain in spec.domains},
                              "unparseable": metrics["unparseable/direct"]}
    if chains:
        picked = chain_sample(rows, chains)
        greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=chain_tokens)
        requests = [Request(decode_image(images.read(row["path"])), reasoning_prompt(names)) for row in picked]
        completions = [first for first, in generate(model, processor, requests, greedy, batch_size=batch_size)]
        judged = [judge(completion.text, names, int(row["label"])) for row, completion in zip(picked, completions, strict=True)]
        lengths = sorted(completion.completion_tokens for completion in completions)
        result["chains"] = {
            "n": len(judged), "truncated": sum(c.truncated for c in completions) / len(judged),
            "valid": sum(j["valid"] for j in judged) / len(judged),
            "kept": sum(j["kept"] for j in judged) / len(judged),
            "tokens": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1],
                       "p90": lengths[int(0.9 * (len(lengths) - 1))]},
            "reasons": {reason: sum(j["reject_reason"] == reason for j in judged)
                        for reason in sorted({j["reject_reason"] for j in judged})},
        }
    return result


def format_report(result: dict[str, Any]) -> str:
    """A few human-readable lines of a `zero_shot` result."""
    accuracy = result["accuracy"]
    lines = [f"{result['dataset']}: zero-shot accuracy (classification prompt, greedy; chance "
             f"{result['chance']:.3f}; mean {result['mean_accuracy']:.3f}; unparseable {result['unparseable']:.3f})"]
    lines += [f"  {domain:>10s}  {value:.3f}  ({result['images_per_domain'][domain]} images)"
              for domain, value in accuracy.items()]
    if "chains" in result:
        chains = result["chains"]
        tokens = chains["tokens"]
        lines.append(f"  chains (reasoning prompt, greedy, {chains['n']} images): valid {chains['valid']:.3f}, "
                     f"kept {chains['kept']:.3f}, tokens min {tokens['min']} median {tokens['median']} "
                     f"p90 {tokens['p90']} max {tokens['max']}; {chains['reasons']}")
    return "\n".join(lines)
