"""The model card (README.md) and the machine-readable `reasonbed.json` of an exported model.

The card says what the model is and how it was chosen: base model, method, test domain and the
selection method with the prompt it selected on, per-domain accuracies of the chosen report (the
test domain's in part is the reported number), the hyperparameters, the data manifest hash and the
code version, and how to load it in transformers and vLLM. `reasonbed.json` carries what
`reasonbed predict` needs to ask the same question (class names, prompt kind and text, family).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from reasonbed.models.configs import IMAGE_BOUNDS, ModelConfig
from reasonbed.models.families import get_family
from reasonbed.share.source import Chosen

SELECTION_NAMES = {"run": "training-domain validation within the run (best val_acc over its checkpoints)",
                   "training_domain": "training-domain validation (best val_acc over the sweep's trials and checkpoints)",
                   "oracle": "ORACLE (test domain's out part; an upper bound, not a valid result)",
                   "leave_one_domain_out": "leave-one-domain-out (best mean held-out accuracy)"}
CARD_HPARAMS = ("method", "method_config", "optim.lr", "optim.batch_size", "optim.epochs", "optim.max_steps",
                "optim.schedule", "optim.warmup_ratio", "optim.weight_decay", "lora.r", "lora.alpha", "lora.dropout",
                "seed", "data.holdout_fraction", "data.split_seed")


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}" if isinstance(value, (int, float)) else "-"


def domain_table(report: Mapping[str, Any], prompt: str, test_domain: str) -> list[str]:
    """Markdown rows: domain, its role, accuracy on its in / out / held-out parts (%), from acc/<prompt>/..."""
    found: dict[str, dict[str, float]] = {}
    for key, value in report.items():
        match = re.fullmatch(rf"acc/{re.escape(prompt)}/(.+)/(in|out|heldout)", key)
        if match:
            found.setdefault(match.group(1), {})[match.group(2)] = value
    rows = ["| domain | role | in | out | held out |", "|---|---|---|---|---|"]
    for domain in sorted(found, key=lambda name: (name != test_domain, name)):
        parts = found[domain]
        role = "test" if domain == test_domain else ("held out" if "heldout" in parts else "source")
        rows.append(f"| {domain} | {role} | {_pct(parts.get('in'))} | {_pct(parts.get('out'))} | "
                    f"{_pct(parts.get('heldout'))} |")
    return rows


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and key != "method_config":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def model_card(chosen: Chosen, info: Mapping[str, Any]) -> str:
    """README.md of an export; `info` is the content of its reasonbed.json."""
    report, config = chosen.report, _flat(chosen.train_config)
    prompt, test_domain = info["prompt"], info["test_domain"]
    library = "transformers" if info["merged"] else "peft"
    lines = ["---", f"base_model: {info['base_model']}", f"library_name: {library}",
             "tags: [reasonbed, domain-generalization, lora, multimodal]", "---", "",
             f"# {info['name']}", "",
             f"{'The base model with a LoRA adapter merged into its weights' if info['merged'] else 'A LoRA adapter'}"
             f" for `{info['base_model']}` ({info['family']}), fine-tuned by reasonbed with method "
             f"`{config.get('method')}` on the {info['dataset']} domains other than **{test_domain}** (the test "
             "domain, never trained on).", "",
             "## How it was chosen", "",
             f"- source: `{chosen.source}` ({chosen.label})",
             f"- selection: {SELECTION_NAMES.get(chosen.selection, chosen.selection)}",
             f"- selected on the `{prompt}` prompt: \"{info['prompt_text']}\"",
             f"- checkpoint: `{chosen.checkpoint}`", "",
             "## Accuracy of the chosen checkpoint (%)", "",
             f"- test accuracy (test domain {test_domain}, in part): **{_pct(report.get('test_acc'))}**",
             f"- validation accuracy (source domains' out parts, what selection used): {_pct(report.get('val_acc'))}",
             f"- test domain's out part: {_pct(report.get('test_out_acc'))}", "",
             *domain_table(report, prompt, test_domain), "",
             "## Hyperparameters", ""]
    if chosen.hparams:
        lines.append(f"Sampled by the sweep: `{json.dumps(chosen.hparams, sort_keys=True, default=str)}`")
        lines.append("")
    lines += [f"- `{key}`: `{json.dumps(config[key], default=str)}`" for key in CARD_HPARAMS if key in config]
    lines += ["", "## Provenance", "",
              f"- data manifest sha256: `{chosen.provenance.get('data_manifest_sha256', 'unknown')}` "
              f"({chosen.provenance.get('images', '?')} images)",
              f"- code version: `{chosen.provenance.get('code_version') or 'unknown'}`",
              f"- packages: `{json.dumps(chosen.provenance.get('packages', {}), sort_keys=True)}`",
              f"- classes (label order): {', '.join(info['classes'])}", "",
              "## Use", "", "```python"]
    if info["merged"]:
        lines += ["from transformers import AutoModelForImageTextToText, AutoProcessor",
                  "model = AutoModelForImageTextToText.from_pretrained(\"THIS_DIR\")",
                  "processor = AutoProcessor.from_pretrained(\"THIS_DIR\")",
                  "# vLLM: vllm.LLM(model=\"THIS_DIR\")"]
    else:
        lines += ["from peft import PeftModel",
                  "from transformers import AutoModelForImageTextToText, AutoProcessor",
                  f"base = AutoModelForImageTextToText.from_pretrained(\"{info['base_model']}\")",
                  "model = PeftModel.from_pretrained(base, \"THIS_DIR\")",
                  f"processor = AutoProcessor.from_pretrained(\"{info['base_model']}\")",
                  f"# vLLM: vllm.LLM(model=\"{info['base_model']}\", enable_lora=True, "
                  "enable_tower_connector_lora=True) with LoRARequest(\"adapter\", 1, \"THIS_DIR\")"]
        bounds = {key: info[key] for key in IMAGE_BOUNDS if info.get(key)}
        if bounds:  # the base model's processor does not know them: give both libraries the sizes training used
            pixels = get_family(info["family"]).vllm_mm_processor_kwargs(ModelConfig(family=info["family"], **bounds))
            lines += [f"# trained with {', '.join(f'model.{k}={v}' for k, v in bounds.items())}: vLLM needs "
                      f"mm_processor_kwargs={pixels}; transformers: processor.image_processor.size's longest_edge "
                      "(max) / shortest_edge (min), as reasonbed's ModelFamily.configure_processor sets them"]
    lines += ["```", "", "Batch predictions: `reasonbed predict --model BASE --adapter THIS_DIR --data FOLDER "
              "--out preds.parquet` (with the merged model: `--model THIS_DIR`); serving: docs/serving.md.", ""]
    return "\n".join(lines)
