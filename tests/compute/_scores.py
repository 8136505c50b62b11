"""The one comparison of two score tables the compute tests make."""
from __future__ import annotations

import numpy as np


def assert_same_scores(a, b) -> None:
    """Two score tables agree: same case order and predictions, uncertainties, probabilities and embeddings
    within 1e-6 (exactly equal in practice: same shards, same seeds)."""
    assert list(a["case_id"]) == list(b["case_id"])
    assert list(a.columns) == list(b.columns)
    np.testing.assert_array_equal(a["predicted_class"].to_numpy(), b["predicted_class"].to_numpy())
    np.testing.assert_allclose(a["uncertainty"].to_numpy(), b["uncertainty"].to_numpy(), rtol=0, atol=1e-6)
    for col in ("probabilities", "embedding"):
        np.testing.assert_allclose(np.stack(a[col].to_list()), np.stack(b[col].to_list()), rtol=0, atol=1e-6)
