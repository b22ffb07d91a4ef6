"""The report's figures, drawn with matplotlib's Agg backend into PNG files.

Each function takes plain data (results-table rows, trial records, selection choices, importances),
writes one PNG and returns its path, or None when there is nothing to draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from reasonbed.tune.records import TrialRecord  # noqa: E402
from reasonbed.tune.selection import Choice, Row  # noqa: E402

_DPI = 90


def save_figure(fig: Any, path: Path) -> Path:
    """Write a figure as a PNG without a timestamp (the same figure, the same bytes) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def accuracy_plot(tables: Mapping[str, Sequence[Row]], domains: Sequence[str], path: Path,
                  chance: float | None = None) -> Path | None:
    """Grouped bars: test accuracy (%) per test domain and Avg, one bar per row (the zero-shot row included),
    the standard error over trial seeds as error bars, and a dashed chance line at 1/classes when known.

    `tables` maps a panel title (e.g. "training-domain validation", "ORACLE ...") to results_table rows.
    """
    panels = [(title, rows) for title, rows in tables.items() if rows]
    if not panels:
        return None
    columns = [*domains, "Avg"]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 1.3 * len(columns) + 2) * len(panels), 3.8),
                             squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels, strict=True):
        width = 0.8 / max(1, len(rows))
        for i, row in enumerate(rows):
            means = [100 * row.cells[d].mean if row.cells[d].n else math.nan for d in domains]
            means.append(100 * row.avg if row.avg is not None else math.nan)
            errors = [100 * row.cells[d].se if row.cells[d].n > 1 else 0.0 for d in domains] + [0.0]
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
            ax.bar(xs, means, width, yerr=errors, capsize=3, label=row.method,
                   hatch="//" if row.zero_shot else None, alpha=0.6 if row.zero_shot else 1.0)
        if chance is not None:
            ax.axhline(100 * chance, color="black", linestyle="--", linewidth=1, label=f"chance ({100 * chance:.1f}%)")
        ax.set_xticks(range(len(columns)), columns, rotation=20)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _time(row: Mapping[str, Any], fallback: int) -> int:
    return int(row.get("examples_seen", row.get("step", fallback)))


def learning_curves_plot(records: Sequence[TrialRecord], methods: Sequence[str], domains: Sequence[str],
                         chosen: Mapping[tuple, Choice | None], path: Path, chance: float | None = None) -> Path | None:
    """val_acc against training examples seen (ASHA's time unit; the step when a report lacks it) for every
    trial, one panel per (method, test domain); stars mark chosen checkpoints, a dashed line chance when known.

    Solid lines reached their last step, dashed ones were stopped early (ASHA); colour = seed.
    """
    if not any(r.reports for r in records):
        return None
    fig, axes = plt.subplots(len(methods), len(domains), figsize=(3.6 * len(domains), 2.8 * len(methods)),
                             squeeze=False, sharey=True)
    seeds = sorted({r.seed for r in records})
    colours = {seed: f"C{i % 10}" for i, seed in enumerate(seeds)}
    for i, method in enumerate(methods):
        for j, domain in enumerate(domains):
            ax = axes[i][j]
            for record in records:
                if record.method != method or record.test_domain != domain or not record.reports:
                    continue
                steps = [_time(row, k) for k, row in enumerate(record.reports)]
                values = [100 * float(row["val_acc"]) for row in record.reports]
                ax.plot(steps, values, color=colours[record.seed], marker=".", alpha=0.8,
                        linestyle="-" if record.status == "completed" else "--")
                choice = chosen.get((method, domain, record.seed))
                if choice is not None and choice.trial_id == record.trial_id:
                    ax.plot([_time(choice.report, choice.step)], [100 * choice.val_acc], marker="*", markersize=12,
                            color=colours[record.seed], markeredgecolor="black")
            if chance is not None:
                ax.axhline(100 * chance, color="black", linestyle="--", linewidth=1)
            ax.set_title(f"{method} / test {domain}", fontsize=9)
            ax.set_xlabel("examples seen", fontsize=8)
            if j == 0:
                ax.set_ylabel("val_acc (%)", fontsize=8)
    handles = [plt.Line2D([], [], color=colours[s], label=f"seed {s}") for s in seeds]
    handles += [plt.Line2D([], [], color="grey", linestyle="--", label="stopped early"),
                plt.Line2D([], [], color="grey", marker="*", linestyle="", markeredgecolor="black",
                           label="chosen (training-domain)")]
    if chance is not None:
        handles.append(plt.Line2D([], [], color="black", linestyle="--", label=f"chance ({100 * chance:.1f}%)"))
    axes[0][-1].legend(handles=handles, fontsize=7)
    return save_figure(fig, path)


def hyperparameters_plot(chosen: Mapping[tuple, Choice | None], path: Path, limit: int = 12) -> Path | None:
    """One panel per hyperparameter: its chosen value per (method, test domain), one point per seed (colour)."""
    choices = [c for c in chosen.values() if c is not None]
    keys = sorted({k for c in choices for k in c.hparams})[:limit]
    if not keys:
        return None
    groups = list(dict.fromkeys(f"{c.method}/{c.test_domain}" for c in choices))
    seeds = sorted({c.seed for c in choices})
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for n, key in enumerate(keys):
        ax = axes[n // cols][n % cols]
        points = [(groups.index(f"{c.method}/{c.test_domain}"), c.hparams[key], c.seed)
                  for c in choices if key in c.hparams]
        values = [v for _, v, _ in points]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            ys = [float(v) for v in values]
            if min(ys) > 0 and max(ys) / min(ys) > 100:
                ax.set_yscale("log")
        else:
            labels = sorted({str(v) for v in values})
            ys = [labels.index(str(v)) for v in values]
            ax.set_yticks(range(len(labels)), labels)
        offsets = [(seeds.index(seed) - (len(seeds) - 1) / 2) * 0.08 for _, _, seed in points]
        ax.scatter([g + o for (g, _, _), o in zip(points, offsets, strict=True)], ys, s=24,
                   c=[f"C{seeds.index(seed) % 10}" for _, _, seed in points])
        ax.set_xticks(range(len(groups)), groups, rotation=35, ha="right", fontsize=7)
        ax.set_title(key, fontsize=9)
    for n in range(len(keys), rows * cols):
        axes[n // cols][n % cols].axis("off")
    return save_figure(fig, path)


def importance_plot(importances: Mapping[str, Mapping[str, float]], study_method: Mapping[str, str], path: Path
                    ) -> Path | None:
    """Mean PED-ANOVA importance of each hyperparameter per method (over its studies), min-max as error."""
    per_method: dict[str, dict[str, list[float]]] = {}
    for study, values in importances.items():
        for param, value in values.items():
            per_method.setdefault(study_method[study], {}).setdefault(param, []).append(float(value))
    if not per_method:
        return None
    fig, axes = plt.subplots(1, len(per_method), figsize=(4.5 * len(per_method), 3.2), squeeze=False)
    for ax, (method, params) in zip(axes[0], sorted(per_method.items()), strict=True):
        names = sorted(params, key=lambda p: sum(params[p]) / len(params[p]))
        means = [sum(params[p]) / len(params[p]) for p in names]
        # clipped at 0: the mean of equal values can round past them (matplotlib refuses a negative error)
        low = [max(0.0, m - min(params[p])) for m, p in zip(means, names, strict=True)]
        high = [max(0.0, max(params[p]) - m) for m, p in zip(means, names, strict=True)]
        ax.barh(range(len(names)), means, xerr=[low, high], capsize=3)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance (PED-ANOVA)")
        studies = sum(1 for s in importances if study_method[s] == method)
        ax.set_title(f"{method} ({studies} studies)", fontsize=9)
    return save_figure(fig, path)
