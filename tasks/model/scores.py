"""R, F and M scores: each customer's quintile (1-5) of recency, frequency and monetary among the
customers with net purchases, by pandas' percentile rank (ties share a rank)."""

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
    """Score 1-5 by quintile of the population; ties share a score (average percentile rank)."""
    if values.isna().any():
        raise ValueError("quintile scores of missing values")
    percentile = values.astype("float64").rank(method="average", pct=True, ascending=higher_is_better)
    scores = np.ceil(percentile.to_numpy() * 5).clip(1, 5).astype("int64")
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
