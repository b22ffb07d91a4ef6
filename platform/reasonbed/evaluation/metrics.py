"""Metrics of answered rows: per (model, prompt, condition, k, domain) accuracy, unparseable rate,
how often the answer follows the shift's cue, mean tokens, seconds, and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

KEYS = ["model", "prompt", "condition", "k", "domain"]


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, prompt, condition, k, domain), plus a domain "mean" row per setting."""
    frame = frame.assign(follows_cue=(frame["predicted_label"] == frame["cue_label"]) & (frame["cue_label"] >= 0),
                         has_cue=frame["cue_label"] >= 0)
    grouped = frame.groupby(KEYS, sort=True)
    table = grouped.agg(n=("correct", "size"), accuracy=("correct", "mean"), unparseable=("unparseable", "mean"),
                        cues=("has_cue", "sum"), followed=("follows_cue", "sum"),
                        prompt_tokens=("prompt_tokens", "mean"), completion_tokens=("completion_tokens", "mean"),
                        seconds=("seconds", "sum")).reset_index()
    table["cue_rate"] = np.where(table["cues"] > 0, table["followed"] / table["cues"].clip(lower=1), np.nan)
    table = table.drop(columns=["cues", "followed"])
    means = table.groupby(KEYS[:-1], sort=True).agg(
        n=("n", "sum"), accuracy=("accuracy", "mean"), unparseable=("unparseable", "mean"),
        prompt_tokens=("prompt_tokens", "mean"), completion_tokens=("completion_tokens", "mean"),
        seconds=("seconds", "sum"), cue_rate=("cue_rate", "mean")).reset_index().assign(domain="mean")
    return pd.concat([table, means], ignore_index=True)[[*KEYS, "n", "accuracy", "unparseable", "cue_rate",
                                                          "completion_tokens", "prompt_tokens", "seconds"]]


def confusion_matrices(frame: pd.DataFrame, n_classes: int) -> dict[tuple, np.ndarray]:
    """(model, prompt, condition, k, domain) -> counts [true class, predicted class | unparseable]."""
    matrices: dict[tuple, np.ndarray] = {}
    for key, group in frame.groupby(KEYS, sort=True):
        matrix = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
        predicted = group["predicted_label"].to_numpy()
        np.add.at(matrix, (group["label"].to_numpy(), np.where(predicted < 0, n_classes, predicted)), 1)
        matrices[tuple(key)] = matrix
    return matrices


def cost_table(frame: pd.DataFrame, feature_seconds: dict[str, float]) -> pd.DataFrame:
    """Per model: queries, tokens, engine seconds (summed over actors' batches), feature-extraction seconds."""
    cost = frame.groupby("model", sort=False).agg(
        queries=("correct", "size"), prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"), engine_seconds=("seconds", "sum")).reset_index()
    cost["feature_seconds"] = cost["model"].map(lambda name: feature_seconds.get(name, 0.0))
    return cost


def probe_table(probe_rows: Sequence[dict[str, Any]], results: pd.DataFrame, prompt: str) -> pd.DataFrame:
    """Probe accuracy per (model, domain, feature) beside zero-shot accuracy (`prompt`) and the gap."""
    if not probe_rows:
        return pd.DataFrame(columns=["model", "domain", "feature", "probe", "zero_shot", "gap", "chance"])
    probes = pd.DataFrame(probe_rows)
    zero = results[(results["condition"] == "zero_shot") & (results["prompt"] == prompt)][["model", "domain",
                                                                                            "accuracy"]]
    merged = probes.merge(zero.rename(columns={"accuracy": "zero_shot"}), on=["model", "domain"], how="left")
    merged = merged.rename(columns={"accuracy": "probe"})
    merged["gap"] = merged["probe"] - merged["zero_shot"]
    return merged[["model", "domain", "feature", "probe", "zero_shot", "gap", "chance", "train_images",
                   "test_images"]]
