"""The linear-probe diagnosis: is the class linearly readable from the model's own features?

For every query domain d, a logistic-regression probe (standardised features, L2) is trained on the
features of all other domains (the source domains) and tested on d; beside the model's zero-shot
accuracy on d, the gap probe - zero-shot is what 2402.06599 calls the mapping deficiency: the model
sees the class but does not map it to the right word.

The probe is scikit-learn's `make_pipeline(StandardScaler(), LogisticRegression(C=c))` for three or
more classes (multinomial, L2, unpenalised intercept), fitted by torch's L-BFGS on the same convex
objective; with two classes scikit-learn fits one weight vector where this fits two, which regularises
half as much at the same c. scikit-learn is not a dependency: where it is installed, transformers
imports it (and scipy) with its generation code, about 1 s of CPU in every process that loads a model
(docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def fit_probes(features: Mapping[str, Mapping[str, Any]], test_domains: Sequence[str], kinds: Sequence[str],
               n_classes: int, c: float, max_iter: int) -> list[dict[str, Any]]:
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
            probe = LinearProbe.fit(train_x, train_y, n_classes, c, max_iter)
            if probe.iterations >= max_iter:
                log.warning("probe %s/%s: L-BFGS stopped at probe.max_iter=%d before converging", domain, kind,
                            max_iter)
            rows.append({"domain": domain, "feature": kind,
                         "accuracy": float((probe.predict(test_x) == test_y).mean()),
                         "train_images": int(len(train_y)), "test_images": int(len(test_y)),
                         "chance": 1.0 / n_classes})
    return rows


@dataclass
class LinearProbe:
    """Standardisation (mean, scale) and the multinomial logistic regression on top (weights, bias), float64."""

    mean: Any
    scale: Any
    weights: Any
    bias: Any
    iterations: int

    @classmethod
    def fit(cls, x: Any, y: Any, n_classes: int, c: float, max_iter: int) -> LinearProbe:
        """Minimise sum(cross-entropy) + |W|^2 / (2c) over the weights W and an unpenalised bias, on features
        standardised as StandardScaler does (a feature of zero variance, by its rounding bound, is left unscaled)."""
        import numpy as np
        import torch

        features = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
        mean, variance = features.mean(0), features.var(0, unbiased=False)
        rows, eps = features.shape[0], torch.finfo(torch.float64).eps
        constant = variance <= rows * eps * variance + (rows * mean * eps) ** 2  # scikit-learn's bound
        scale = torch.where(constant, torch.ones_like(variance), variance.sqrt())
        standardised = (features - mean) / scale
        weights = torch.zeros(features.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        solver = torch.optim.LBFGS([weights, bias], max_iter=max_iter, max_eval=15 * max_iter, tolerance_grad=1e-6,
                                   tolerance_change=1e-12, history_size=10, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            solver.zero_grad()
            logits = standardised @ weights + bias
            loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum") + (weights ** 2).sum() / (2 * c)
            loss.backward()
            return loss

        solver.step(objective)
        iterations = int(solver.state[weights].get("n_iter", 0))
        return cls(mean, scale, weights.detach(), bias.detach(), iterations)

    def logits(self, x: Any) -> Any:
        import numpy as np
        import torch

        return ((torch.as_tensor(np.asarray(x), dtype=torch.float64) - self.mean) / self.scale) @ self.weights + self.bias

    def predict(self, x: Any) -> Any:
        """The predicted class of each row of `x` (a numpy array)."""
        return self.logits(x).argmax(1).numpy()
