"""The end-of-run summary of a generation output: counts, rates, tokens and what was not kept."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def summarise(table: pa.Table, images: int, wall_seconds: float) -> dict[str, Any]:
    """Images, candidates, valid %, kept %, tokens, tokens/s and the images with no kept chain."""
    rows = table.select(["image_id", "path", "candidate", "valid", "kept", "prompt_kind", "prompt_tokens",
                         "completion_tokens", "seconds", "error"]).to_pylist()
    candidates = [row for row in rows if row["candidate"] >= 0]
    unreadable = sorted({row["path"] for row in rows if row["candidate"] < 0})
    kept_images = {row["image_id"] for row in candidates if row["kept"]}
    all_images = {row["image_id"]: row["path"] for row in rows}
    unkept = sorted(path for image_id, path in all_images.items()
                    if image_id not in kept_images and path not in unreadable)
    completion_tokens = sum(row["completion_tokens"] or 0 for row in candidates)
    engine_seconds = sum(row["seconds"] or 0.0 for row in candidates)
    n = max(1, len(candidates))
    conditioned = [row for row in candidates if row["prompt_kind"] == "rationalization"]
    return {
        "images": images, "images_generated": len(all_images), "candidates": len(candidates),
        "valid_pct": round(100.0 * sum(bool(row["valid"]) for row in candidates) / n, 2),
        "kept_pct": round(100.0 * sum(bool(row["kept"]) for row in candidates) / n, 2),
        "images_with_kept_chain": len(kept_images), "images_without_kept_chain": unkept,
        # chains written with the label shown (second_pass=rationalize): training skips them unless
        # allow_label_conditioned=true
        "label_conditioned_candidates": len(conditioned),
        "label_conditioned_kept": sum(bool(row["kept"]) for row in conditioned),
        "images_with_blind_kept_chain": len({row["image_id"] for row in candidates
                                             if row["kept"] and row["prompt_kind"] != "rationalization"}),
        "unreadable_images": unreadable,
        "prompt_tokens": sum(row["prompt_tokens"] or 0 for row in candidates),
        "completion_tokens": completion_tokens,
        "engine_tokens_per_s": round(completion_tokens / engine_seconds, 1) if engine_seconds else None,
        "wall_seconds": round(wall_seconds, 1),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few human lines for the end of a run."""
    unkept, unreadable = summary["images_without_kept_chain"], summary["unreadable_images"]
    lines = [
        f"images {summary['images']}  candidates {summary['candidates']}  valid {summary['valid_pct']}%  "
        f"kept {summary['kept_pct']}%",
        f"tokens: prompt {summary['prompt_tokens']}, completion {summary['completion_tokens']}  "
        f"({summary['engine_tokens_per_s']} tokens/s per engine; wall {summary['wall_seconds']} s)",
        f"images with no kept chain: {len(unkept)}" + (f" e.g. {unkept[:3]}" if unkept else ""),
        f"label-conditioned (rationalization) chains: {summary['label_conditioned_candidates']} written, "
        f"{summary['label_conditioned_kept']} kept (not trained on unless allow_label_conditioned=true); images "
        f"with a kept blind chain: {summary['images_with_blind_kept_chain']}",
        f"unreadable images: {len(unreadable)}" + (f" {unreadable[:3]}" if unreadable else ""),
    ]
    skipped = summary.get("skipped_inputs") or {}
    if skipped.get("skipped"):
        lines.append(f"corrupt images skipped before generation (data.on_corrupt=skip): {skipped['skipped']} "
                     f"{[item['path'] for item in skipped.get('first', [])[:3]]}")
    return "\n".join(lines)
