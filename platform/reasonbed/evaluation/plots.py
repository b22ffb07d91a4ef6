"""The evaluation report's figures (matplotlib, Agg backend), each written to one PNG.

accuracy_vs_k: accuracy against k per condition, one panel per domain (k = 0 is the zero-shot point
shared by every condition; the star is the domain-knowledge prompt); probe_vs_zero_shot: probe and
zero-shot accuracy per domain, one panel per model; confusion: zero-shot confusion heat maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reasonbed.report.plots import save_figure  # noqa: E402


def accuracy_vs_k(results: pd.DataFrame, model: str, prompt: str, panels: Sequence[str], conditions: Sequence[str],
                  path: Path) -> Path:
    """Accuracy (%) against k per in-context condition, one panel per domain (and the mean)."""
    rows = results[(results["model"] == model) & (results["prompt"] == prompt)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, domain in zip(axes[0], panels, strict=True):
        here = rows[rows["domain"] == domain]
        zero = here[here["condition"] == "zero_shot"]["accuracy"]
        for index, condition in enumerate(conditions):
            points = here[here["condition"] == condition].sort_values("k")
            ks = [0, *points["k"].tolist()]
            values = [zero.iloc[0] if len(zero) else np.nan, *points["accuracy"].tolist()]
            ax.plot(ks, [100 * v for v in values], marker="o", color=f"C{index}", label=condition)
        knowledge = here[here["condition"] == "knowledge"]["accuracy"]
        if len(knowledge):
            ax.plot([0], [100 * knowledge.iloc[0]], marker="*", markersize=13, linestyle="", color="black",
                    label="knowledge (k=0)")
        ax.set_title(domain, fontsize=10)
        ax.set_xticks(sorted({0, *rows["k"].tolist()}))
        ax.set_xlabel("in-context examples k")
        ax.set_ylim(-2, 102)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{model}, {prompt} prompt", fontsize=10)
    return save_figure(fig, path)


def probe_vs_zero_shot(probes: pd.DataFrame, models: Sequence[str], domains: Sequence[str], path: Path) -> Path:
    """Bars per domain: zero-shot accuracy and each probe's accuracy, one panel per model."""
    fig, axes = plt.subplots(1, len(models), figsize=(max(4.0, 1.4 * len(domains) + 2) * len(models), 3.4),
                             squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        here = probes[probes["model"] == model]
        series = [("zero-shot", [here[here["domain"] == d]["zero_shot"].max() for d in domains])]
        for feature in sorted(here["feature"].unique()):
            picked = here[here["feature"] == feature]
            series.append((f"probe ({feature})", [picked[picked["domain"] == d]["probe"].max() for d in domains]))
        width = 0.8 / len(series)
        for index, (label, values) in enumerate(series):
            xs = [j + (index - (len(series) - 1) / 2) * width for j in range(len(domains))]
            ax.bar(xs, [100 * v for v in values], width, label=label)
        if len(here):
            ax.axhline(100 * here["chance"].iloc[0], color="grey", linestyle=":", label="chance")
        ax.set_xticks(range(len(domains)), domains, rotation=20)
        ax.set_ylim(0, 100)
        ax.set_title(model, fontsize=10)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("accuracy (%)")
    return save_figure(fig, path)


def confusion(matrices: Mapping[str, np.ndarray], class_names: Sequence[str], title: str, path: Path) -> Path:
    """Heat maps of counts (rows: true class; columns: predicted class, then unparseable), one per panel key."""
    keys = list(matrices)
    side = 0.35 * len(class_names) + 2
    fig, axes = plt.subplots(1, len(keys), figsize=(side * len(keys), side), squeeze=False)
    labels = [*class_names, "(none)"]
    for ax, key in zip(axes[0], keys, strict=True):
        matrix = matrices[key]
        ax.imshow(matrix, cmap="Blues", aspect="auto")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
        if len(class_names) <= 12:
            for (i, j), value in np.ndenumerate(matrix):
                if value:
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
    axes[0][0].set_ylabel("true", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
