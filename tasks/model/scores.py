"""R, F and M scores: 1-5 for recency, frequency and monetary among the customers with net purchases.

The rule, which survives ties: a customer scores 1 plus the number of whole fifths of customers whose
value is strictly worse than theirs. Customers with the same value share a score, and the worst value
always scores 1: when half the customers bought once, every one-time buyer has F=1 and the next value
(two orders) F=3, so a score can be skipped rather than split between equal customers. Without ties
the scores are the usual quintiles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.settings import COMPUTED_FEATURES


def clusterable(features: pd.DataFrame) -> pd.Series:
    """Which customers are clustered: those with net purchases, or everyone when segmenting on
    customer attributes alone (no transaction features)."""
    if "frequency" not in features:
        return pd.Series(True, index=features.index)
    return features["frequency"] > 0


def quintile_scores(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """Score 1-5: 1 + the whole fifths of ``values`` strictly worse than each (see the module)."""
    if values.isna().any():
        raise ValueError("quintile scores of missing values")
    # rank "min": a value's rank is one more than the count of strictly worse values
    worse = values.astype("float64").rank(method="min", ascending=higher_is_better).to_numpy() - 1
    scores = (1 + np.floor(5 * worse / max(len(values), 1))).clip(1, 5).astype("int64")
    return pd.Series(scores, index=values.index)


_SCORED_FEATURES = {"r_score": ("recency_days", False), "f_score": ("frequency", True), "m_score": ("monetary", True)}


def with_scores(features: pd.DataFrame) -> pd.DataFrame:
    """``features`` plus ``r_score``, ``f_score``, ``m_score`` (1-5) for customers with net purchases
    (empty scores, and empty transaction features, when segmenting on attributes alone)."""
    scored = features.copy(deep=False)  # copy-on-write: new columns here never reach ``features``
    for column in COMPUTED_FEATURES:
        if column not in scored:
            scored[column] = pd.Series(pd.NA, index=features.index, dtype="Float64")
    if "frequency" not in features:
        for column in _SCORED_FEATURES:
            scored[column] = pd.Series(pd.NA, index=features.index, dtype="Int64")
        return scored
    purchasers = features["frequency"] > 0
    for column, (source, higher_is_better) in _SCORED_FEATURES.items():
        scores = quintile_scores(features.loc[purchasers, source], higher_is_better)
        scored[column] = scores.reindex(features.index).astype("Int64")
    return scored
