"""Out-of-distribution evaluation of MLLMs (arXiv 2402.06599's study, issue 13).

Zero-shot and in-context accuracy per domain under four example conditions (target distribution,
domain shift, label shift, spurious correlation), a domain-knowledge prompt against the same prompt
without it, and a linear-probe diagnosis (probe on the model's own features vs its zero-shot answer),
for a list of models (a base model and fine-tuned adapters side by side), reported as Markdown + HTML.

Modules: `config` (EvalConfig), `sampling` (conditions and in-context examples), `prompts` (the
example turns and the knowledge text), `adapters` (run/adapter dirs and the base-model check), `run`
(the Ray Data run over the engines, resumable shards), `features` and `probe` (pooled features on Ray,
cached, and the logistic-regression probe), `metrics`, `plots`, `report` and `job` (the job's main).
"""
