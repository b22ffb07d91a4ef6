"""The evaluation report: report.md, a self-contained report.html (plots inlined), plots/, results.csv,
probe.csv and confusion.json, all built from the answered rows.

Every table is computed from the data (`metrics`) and kept as a table (reasonbed.report.tables), then
rendered to Markdown and HTML by the same document code as the sweep reports (reasonbed.report.document).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reasonbed.data.specs import DatasetSpec
from reasonbed.evaluation import metrics, plots
from reasonbed.evaluation.plan import ResolvedModel
from reasonbed.report.document import Block, Image, to_html, to_markdown
from reasonbed.report.tables import Table


@dataclass
class ReportInputs:
    """What the report is built from."""

    config: Any  # the resolved EvalConfig
    spec: DatasetSpec
    models: list[ResolvedModel]
    domains: list[str]  # query domains
    predictions: pd.DataFrame  # answered rows (run.SCHEMA)
    probe_rows: list[dict[str, Any]] = field(default_factory=list)
    feature_seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    nuisance: str = "domain"
    provenance: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0


def _pct(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * float(value):.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Block]:
    return [Table(list(header), [[str(value) for value in row] for row in rows])]


def _image(path: Path, out_dir: Path, alt: str) -> list[Block]:
    return [Image(path.relative_to(out_dir), alt)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def _lookup(results: pd.DataFrame, **where: Any) -> pd.DataFrame:
    mask = pd.Series(True, index=results.index)
    for column, value in where.items():
        mask &= results[column] == value
    return results[mask]


def _accuracy_cells(results: pd.DataFrame, panels: Sequence[str], **where: Any) -> list[str]:
    here = _lookup(results, **where)
    return [_pct(here[here["domain"] == d]["accuracy"].max()) if (here["domain"] == d).any() else "" for d in panels]


def build_blocks(inputs: ReportInputs, out_dir: Path) -> tuple[list[Block], dict[str, Any]]:
    """The report's blocks (plots written under out_dir/plots) and the tables it shows."""
    cfg, spec, frame = inputs.config, inputs.spec, inputs.predictions
    results = metrics.results_table(frame)
    panels = [*inputs.domains, "mean"]
    names = [model.name for model in inputs.models]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# OOD evaluation: {spec.name}", "",
             f"- domains (query): {', '.join(inputs.domains)}; classes: {len(spec.classes)} (chance "
             f"{100 / len(spec.classes):.1f}%)",
             f"- conditions: zero_shot, {', '.join(cfg.conditions)}; shots k: {', '.join(map(str, cfg.shots))}; "
             f"prompts: {', '.join(cfg.prompts)}",
             f"- queries per domain: {cfg.queries_per_domain or 'all'}; seed {cfg.seed}; engine `{cfg.engine.name}`; "
             f"spurious nuisance attribute: {inputs.nuisance}",
             f"- answered queries: {len(frame)}; wall time {inputs.wall_seconds:.0f} s; generated {now}", "",
             "## Models", ""]
    lines += _table(["name", "base model", "family", "adapter", "key"],
                    [[m.name, f"`{m.model.path}`", m.model.family, f"`{m.adapter}`" if m.adapter else "none",
                      f"`{m.key}`"] for m in inputs.models])
    lines += ["## Zero-shot accuracy (%)", ""]
    rows = []
    for model in names:
        for prompt in cfg.prompts:
            here = _lookup(results, model=model, prompt=prompt, condition="zero_shot", domain="mean")
            rows.append([model, prompt, *_accuracy_cells(results, panels, model=model, prompt=prompt,
                                                          condition="zero_shot"),
                         _pct(here["unparseable"].max()), f"{here['completion_tokens'].max():.1f}"])
    lines += _table(["model", "prompt", *panels, "unparseable %", "mean tokens"], rows)
    lines += ["## In-context learning: accuracy (%) against k", "",
              "k = 0 is the zero-shot prompt. `cue %`: answers that follow the shift's cue (label_shift: the "
              "permuted label; spurious: the class whose examples share the query's nuisance value).", ""]
    rows = []
    for model in names:
        for prompt in cfg.prompts:
            for condition in cfg.icl_conditions:
                for k in cfg.icl_shots:
                    mean = _lookup(results, model=model, prompt=prompt, condition=condition, k=k, domain="mean")
                    if mean.empty:
                        continue
                    rows.append([model, prompt, condition, k, *_accuracy_cells(
                        results, panels, model=model, prompt=prompt, condition=condition, k=k),
                        _pct(mean["unparseable"].max()), _pct(mean["cue_rate"].max()),
                        f"{mean['completion_tokens'].max():.1f}"])
    lines += _table(["model", "prompt", "condition", "k", *panels, "unparseable %", "cue %", "mean tokens"], rows)
    plot_dir = out_dir / "plots"
    shown: dict[str, Any] = {"results": results}
    for model in names:
        for prompt in cfg.prompts:
            path = plots.accuracy_vs_k(results, model, prompt, panels, cfg.icl_conditions,
                                       plot_dir / f"accuracy_vs_k-{_slug(model)}-{prompt}.png")
            lines += _image(path, out_dir, f"Accuracy against k: {model}, {prompt} prompt")
    if "knowledge" in cfg.conditions:
        lines += ["## Domain knowledge in the prompt (k = 0)", "",
                  "Zero-shot accuracy (%) without / with the class descriptions of the spec (same prompt otherwise).",
                  ""]
        rows = []
        for model in names:
            for prompt in cfg.prompts:
                without = _accuracy_cells(results, panels, model=model, prompt=prompt, condition="zero_shot")
                with_ = _accuracy_cells(results, panels, model=model, prompt=prompt, condition="knowledge")
                rows.append([model, prompt, *[f"{a} / {b}" for a, b in zip(without, with_, strict=True)]])
        lines += _table(["model", "prompt", *panels], rows)
    lines += _probe_section(inputs, results, out_dir, shown)
    lines += _confusion_section(inputs, frame, out_dir, shown)
    cost = metrics.cost_table(frame, inputs.feature_seconds)
    lines += ["## Cost", ""]
    lines += _table(["model", "queries", "prompt tokens", "completion tokens", "engine seconds", "feature seconds"],
                    [[r.model, r.queries, r.prompt_tokens, r.completion_tokens, f"{r.engine_seconds:.1f}",
                      f"{r.feature_seconds:.1f}"] for r in cost.itertuples()])
    if inputs.skipped:
        lines += ["## Skipped episodes", ""]
        lines += _table(["episode", "queries"], sorted(inputs.skipped.items()))
    prov = inputs.provenance
    lines += ["## Provenance", "",
              f"- code version: `{prov.get('code_version')}`",
              f"- packages: {', '.join(f'{k} {v}' for k, v in prov.get('packages', {}).items())}",
              f"- data manifest sha256: `{prov.get('data_manifest_sha256')}` ({prov.get('images')} images)",
              *_skipped_inputs_line(prov.get("skipped_inputs")),
              "- resolved config:", "", "```yaml", _yaml(prov.get("config", {})).rstrip(), "```", ""]
    shown["cost"] = cost
    return _grouped(lines), shown


def _skipped_inputs_line(skipped: dict[str, Any] | None) -> list[str]:
    """The corrupt images left out (data.on_corrupt=skip), as one provenance line; none when none were."""
    if not skipped or not skipped.get("skipped"):
        return []
    first = ", ".join(f"`{row['path']}`" for row in skipped.get("first", []))
    more = " ..." if skipped["skipped"] > len(skipped.get("first", [])) else ""
    return [f"- **{skipped['skipped']} corrupt image(s) skipped** (data.on_corrupt=skip; provenance.json "
            f"`skipped_inputs`): {first}{more}"]


def _grouped(items: Sequence[Block]) -> list[Block]:
    """Consecutive Markdown lines joined into one text block (tables and images stay blocks of their own)."""
    blocks: list[Block] = []
    text: list[str] = []
    for item in items:
        if isinstance(item, str):
            text.append(item)
            continue
        if "".join(text).strip():
            blocks.append("\n".join(text))
        text = []
        blocks.append(item)
    if "".join(text).strip():
        blocks.append("\n".join(text))
    return blocks


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, sort_keys=False)


def _probe_section(inputs: ReportInputs, results: pd.DataFrame, out_dir: Path, shown: dict[str, Any]) -> list[Block]:
    prompt = "direct" if "direct" in inputs.config.prompts else inputs.config.prompts[0]
    probes = metrics.probe_table(inputs.probe_rows, results, prompt)
    shown["probe"] = probes
    lines = ["## Linear probe against zero-shot", ""]
    if probes.empty:
        return [*lines, "No probe was fitted (probe.enabled is false, the engine has no local model, or the "
                        "dataset has one domain).", ""]
    lines += [f"Probe: logistic regression on the model's own pooled features, trained on every other domain, "
              f"tested on the domain; zero-shot: the {prompt} prompt. Cells: probe / zero-shot / gap (probe - "
              f"zero-shot, the mapping deficiency), in %.", ""]
    rows = []
    for (model, feature), group in probes.groupby(["model", "feature"], sort=False):
        cells = []
        for domain in inputs.domains:
            here = group[group["domain"] == domain]
            cells.append("" if here.empty else f"{_pct(here['probe'].iloc[0])} / {_pct(here['zero_shot'].iloc[0])} "
                                               f"/ {_pct(here['gap'].iloc[0])}")
        rows.append([model, feature, *cells, _pct(group["probe"].mean()), _pct(group["gap"].mean())])
    lines += _table(["model", "feature", *inputs.domains, "mean probe", "mean gap"], rows)
    path = plots.probe_vs_zero_shot(probes, [m.name for m in inputs.models], inputs.domains,
                                    out_dir / "plots" / "probe_vs_zero_shot.png")
    return [*lines, *_image(path, out_dir, "Probe against zero-shot accuracy per domain")]


def _confusion_section(inputs: ReportInputs, frame: pd.DataFrame, out_dir: Path, shown: dict[str, Any]) -> list[Block]:
    classes = inputs.spec.display_names
    matrices = metrics.confusion_matrices(frame, len(classes))
    shown["confusion"] = matrices
    lines = ["## Confusion matrices (zero-shot)", "",
             "Rows: true class; columns: the answer ((none): unparseable). Every (model, prompt, condition, k, "
             "domain) matrix is in confusion.json.", ""]
    for model in inputs.models:
        for prompt in inputs.config.prompts:
            panel = {domain: matrices[(model.name, prompt, "zero_shot", 0, domain)] for domain in inputs.domains
                     if (model.name, prompt, "zero_shot", 0, domain) in matrices}
            if not panel:
                continue
            path = plots.confusion(panel, classes, f"{model.name}, {prompt} prompt, zero-shot",
                                   out_dir / "plots" / f"confusion-{_slug(model.name)}-{prompt}.png")
            lines += [f"### {model.name}, {prompt} prompt", ""]
            if len(classes) <= 12 and prompt == inputs.config.prompts[0]:
                for domain, matrix in panel.items():
                    lines += [f"{domain}:", ""]
                    lines += _table(["true \\ answer", *classes, "(none)"],
                                    [[name, *row] for name, row in zip(classes, matrix.tolist(), strict=True)])
            lines += _image(path, out_dir, f"Confusion heat maps: {model.name}, {prompt}")
    return lines


def write_report(inputs: ReportInputs, out_dir: str | Path) -> Path:
    """Write report.md, report.html, plots/, results.csv, probe.csv and confusion.json; returns report.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks, shown = build_blocks(inputs, out_dir)
    (out_dir / "report.md").write_text(to_markdown(blocks))
    (out_dir / "report.html").write_text(to_html(blocks, out_dir, f"OOD evaluation: {inputs.spec.name}"))
    shown["results"].to_csv(out_dir / "results.csv", index=False)
    shown["probe"].to_csv(out_dir / "probe.csv", index=False)
    confusion = [{"model": key[0], "prompt": key[1], "condition": key[2], "k": int(key[3]), "domain": key[4],
                  "matrix": matrix.tolist()} for key, matrix in shown["confusion"].items()]
    (out_dir / "confusion.json").write_text(json.dumps({"classes": [*inputs.spec.display_names, "(none)"],
                                                        "matrices": confusion}))
    (out_dir / "provenance.json").write_text(json.dumps(inputs.provenance, indent=2, default=str))
    return out_dir / "report.md"
