"""The linear-probe diagnosis: is the class linearly readable from the model's own features?

For every query domain d, a logistic-regression probe (standardised features, L2) is trained on the
features of all other domains (the source domains) and tested on d; beside the model's zero-shot
accuracy on d, the gap probe - zero-shot is what 2402.06599 calls the mapping deficiency: the model
sees the class but does not map it to the right word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def fit_probes(features: Mapping[str, Mapping[str, Any]], test_domains: Sequence[str], kinds: Sequence[str],
               n_classes: int, c: float, max_iter: int, seed: int) -> list[dict[str, Any]]:
    """One row per (test domain, feature kind): probe accuracy on d, trained on every other domain."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = []
    for domain in test_domains:
        sources = [name for name in sorted(features) if name != domain]
        if not sources:
            continue
        for kind in kinds:
            train_x = np.concatenate([features[name][kind] for name in sources])
            train_y = np.concatenate([features[name]["labels"] for name in sources])
            test_x, test_y = features[domain][kind], features[domain]["labels"]
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
            probe.fit(train_x, train_y)
            rows.append({"domain": domain, "feature": kind, "accuracy": float((probe.predict(test_x) == test_y).mean()),
                         "train_images": int(len(train_y)), "test_images": int(len(test_y)),
                         "chance": 1.0 / n_classes})
    return rows
