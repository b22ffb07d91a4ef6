"""The linear-probe diagnosis: is the class linearly readable from the model's own features?

For every query domain d, a logistic-regression probe (standardised features, L2) is trained on the
features of all other domains (the source domains) and tested on d; beside the model's zero-shot
accuracy on d, the gap probe - zero-shot is what 2402.06599 calls the mapping deficiency: the model
sees the class but does not map it to the right word.

The probe is scikit-learn's `make_pipeline(StandardScaler(), LogisticRegression(C=c))` (multinomial,
L2, unpenalised intercept), fitted by torch's L-BFGS on the same convex objective. scikit-learn is not
a dependency: where it is installed, transformers imports it (and scipy) with its generation code, about
1 s of CPU in every process that loads a model (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def fit_probes(features: Mapping[str, Mapping[str, Any]], test_domains: Sequence[str], kinds: Sequence[str],
               n_classes: int, c: float, max_iter: int, seed: int) -> list[dict[str, Any]]:
    """One row per (test domain, feature kind): probe accuracy on d, trained on every other domain."""
    import numpy as np

    rows = []
    for domain in test_domains:
        sources = [name for name in sorted(features) if name != domain]
        if not sources:
            continue
        for kind in kinds:
            train_x = np.concatenate([features[name][kind] for name in sources])
            train_y = np.concatenate([features[name]["labels"] for name in sources])
            test_x, test_y = features[domain][kind], features[domain]["labels"]
            predict = fit_logistic_regression(train_x, train_y, n_classes, c, max_iter, seed)
            rows.append({"domain": domain, "feature": kind, "accuracy": float((predict(test_x) == test_y).mean()),
                         "train_images": int(len(train_y)), "test_images": int(len(test_y)),
                         "chance": 1.0 / n_classes})
    return rows


def fit_logistic_regression(x: Any, y: Any, n_classes: int, c: float, max_iter: int, seed: int) -> Any:
    """Standardise, then minimise sum(cross-entropy) + |W|^2 / (2c) over weights W and an unpenalised bias
    (scikit-learn's objective for `LogisticRegression(C=c)`), in float64; returns x -> predicted labels."""
    import numpy as np
    import torch

    torch.manual_seed(seed)  # L-BFGS from zeros draws nothing: fixed for any later change that would
    features = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    mean = features.mean(0)
    scale = features.std(0, unbiased=False)
    scale[scale == 0] = 1.0  # a constant feature stays zero, as StandardScaler leaves it
    standardised = (features - mean) / scale
    weights = torch.zeros(features.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS([weights, bias], max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-12,
                               history_size=10, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        solver.zero_grad()
        logits = standardised @ weights + bias
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum") + (weights ** 2).sum() / (2 * c)
        loss.backward()
        return loss

    solver.step(objective)
    weights, bias = weights.detach(), bias.detach()

    def predict(query: Any) -> Any:
        scaled = (torch.as_tensor(np.asarray(query), dtype=torch.float64) - mean) / scale
        return (scaled @ weights + bias).argmax(1).numpy()

    return predict
