"""Segments: R/F/M scores, readable names, segment ids, profiles and the assignment table.

Names come from an RFM grid: each segment's mean R, F and M scores (1-5, quintiles of the current
population) pick a cell (Champions, Loyal, At Risk, ...). A first model numbers its segments 1..K from
the most to the least valuable profile; later models keep ids and names by matching centroids
(:func:`tasks.lifecycle.match_segments`). Id 0 is the reserved segment of customers without net
purchases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

from tasks.extract import FEATURE_COLUMNS
from tasks.model import MISSING_LEVEL, SegmentModel

NO_NET_PURCHASES_ID = 0
NO_NET_PURCHASES_NAME = "No net purchases"


@dataclass(frozen=True)
class SegmentPersona:
    """What a segment name means and what marketing should do about it."""

    description: str
    recommended_action: str


PERSONAS: dict[str, SegmentPersona] = {
    "Champions": SegmentPersona(
        "Bought recently, buy often and spend the most.",
        "Reward them; ask for reviews and referrals; offer early access to new products.",
    ),
    "Loyal": SegmentPersona(
        "Buy regularly and respond to promotions.",
        "Upsell higher-value products; invite them to the loyalty programme.",
    ),
    "Potential Loyalists": SegmentPersona(
        "Recent customers with a few orders and average spend.",
        "Offer membership or a loyalty programme; recommend related products.",
    ),
    "Recent": SegmentPersona(
        "Bought very recently, but only once so far.",
        "Onboard them well: welcome series, early support, a reason to come back.",
    ),
    "Promising": SegmentPersona(
        "Recent shoppers who have not spent much yet.",
        "Create brand awareness; offer free trials or a small incentive for the next order.",
    ),
    "Needs Attention": SegmentPersona(
        "Average recency, frequency and spend; may slip without a nudge.",
        "Make limited-time offers based on their past purchases.",
    ),
    "About to Sleep": SegmentPersona(
        "Below-average recency and frequency; will be lost without reactivation.",
        "Share popular products and time-limited discounts; reconnect with them.",
    ),
    "At Risk": SegmentPersona(
        "Used to buy often, but have not bought for a long time.",
        "Send personalised win-back emails; offer renewals and helpful resources.",
    ),
    "Can't Lose": SegmentPersona(
        "Were among the biggest, most frequent buyers, but have not returned for a long time.",
        "Win them back with renewals or new products; talk to them; do not lose them to a competitor.",
    ),
    "Hibernating": SegmentPersona(
        "Last bought long ago, buy rarely and spend little.",
        "Offer other relevant products and special discounts; recreate brand value.",
    ),
    "Lost": SegmentPersona(
        "Lowest recency, frequency and spend.",
        "Revive interest with an outreach campaign, otherwise leave them out of paid campaigns.",
    ),
    NO_NET_PURCHASES_NAME: SegmentPersona(
        "Customers whose orders in the window were all refunded or zero.",
        "Check refund reasons and service issues before any marketing.",
    ),
}


def rfm_segment_name(r_score: int, f_score: int, m_score: int) -> str:
    """The RFM grid: a name for R, F and M scores of 1 (worst) to 5 (best).

    R 4-5 with F 4-5 are Champions; R 1-2 with F 4-5 and high spend are Can't Lose; every (R, F)
    pair maps to exactly one name.
    """
    if r_score >= 4:
        if f_score >= 4:
            return "Champions"
        if f_score >= 2:
            return "Potential Loyalists"
        return "Recent" if r_score == 5 else "Promising"
    if r_score == 3:
        if f_score >= 4:
            return "Loyal"
        return "Needs Attention" if f_score == 3 else "About to Sleep"
    if f_score >= 4 and m_score >= 4:
        return "Can't Lose"
    if f_score >= 3:
        return "At Risk"
    return "Hibernating" if r_score == 2 else "Lost"


def clusterable(features: pd.DataFrame) -> pd.Series:
    """Which customers are clustered: those with net purchases, or everyone when segmenting on
    customer attributes alone (no transaction features)."""
    if "frequency" not in features:
        return pd.Series(True, index=features.index)
    return features["frequency"] > 0


def quintile_scores(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """Score 1-5 by quintile of the population; ties share a score (average percentile rank)."""
    scores = _quintile_array(values.to_numpy(dtype="float64"), higher_is_better)
    return pd.Series(scores.astype("int64"), index=values.index)


def _quintile_array(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """:func:`quintile_scores` of an integer or float array, as int8; ``values`` is not changed.

    pandas' rank(method="average", pct=True), from the count of each value (its ties) instead of
    pandas' rank: a value's average rank is the middle of its run of ties. The score is worked out
    once per distinct value and then looked up for every customer, and integers are shifted in place,
    so few temporary arrays of the population's size are made (at 877k customers, with_scores took
    0.27 s in a fresh process, most of it the kernel handing out pages for such temporaries).
    """
    if values.dtype.kind in "iu":
        ranked = values.astype(np.int64, copy=True)  # our own: shifted in place below
        if not higher_is_better:
            np.negative(ranked, out=ranked)
    else:
        ranked = values if higher_is_better else -values
        if np.isnan(ranked).any():
            raise ValueError("quintile scores of missing values")
    if not len(ranked):
        return np.empty(0, dtype=np.int8)
    lowest = ranked.min()
    whole = ranked.dtype.kind == "i" or not np.any(np.mod(ranked, 1.0))
    if ranked.max() - lowest <= 4 * len(ranked) and whole:
        # whole numbers in a narrow range (recency and tenure days, order counts): counted per value,
        # no sort: 0.01 s instead of 0.11-0.17 s at 877k customers; empty values add no ties
        if ranked.dtype.kind == "i":
            ranked -= lowest
            inverse = ranked
        else:
            inverse = (ranked - lowest).astype(np.int64)
        ties = np.bincount(inverse)
    else:
        _, inverse, ties = np.unique(ranked, return_inverse=True, return_counts=True)
    percentile = (np.cumsum(ties) - (ties - 1) / 2) / len(ranked)
    score_of_value = np.clip(np.ceil(percentile * 5), 1, 5).astype(np.int8)
    return score_of_value[inverse]


_SCORED_FEATURES = {"r_score": ("recency_days", False), "f_score": ("frequency", True), "m_score": ("monetary", True)}


def with_scores(features: pd.DataFrame) -> pd.DataFrame:
    """``features`` plus ``r_score``, ``f_score``, ``m_score`` (1-5) for customers with net purchases
    (empty scores, and empty transaction features, when segmenting on attributes alone)."""
    scored = features.copy(deep=False)  # copy-on-write: new columns here never reach ``features``
    for column in FEATURE_COLUMNS:
        if column not in scored:
            scored[column] = pd.Series(pd.NA, index=features.index, dtype="Float64")
    if "frequency" not in features:
        for column in _SCORED_FEATURES:
            scored[column] = pd.Series(pd.NA, index=features.index, dtype="Int64")
        return scored
    purchasers = features["frequency"].to_numpy() > 0
    everyone = bool(purchasers.all())
    for column, (source, higher_is_better) in _SCORED_FEATURES.items():
        column_values = features[source]
        if pd.api.types.is_integer_dtype(column_values.dtype):  # missing only where there is no purchase
            values = column_values.to_numpy(dtype="int64", na_value=0)
        else:
            values = column_values.to_numpy(dtype="float64", na_value=np.nan)
        scores = _quintile_array(values if everyone else values[purchasers], higher_is_better)
        if everyone:
            data, missing = scores.astype(np.int64), np.zeros(len(scores), dtype=bool)
        else:
            data, missing = np.ones(len(values), dtype=np.int64), ~purchasers
            data[purchasers] = scores
        scored[column] = pd.Series(pd.arrays.IntegerArray(data, missing), index=features.index)
    return scored


def cluster_means(scored: pd.DataFrame, labels: np.ndarray, n_clusters: int) -> pd.DataFrame:
    """Mean R, F, M scores and spend of each cluster (index 0..K-1; NaN for an empty cluster).

    ``labels`` holds the cluster of each customer with ``frequency > 0``, in their order.
    """
    purchasers = scored["frequency"].to_numpy() > 0
    # column by column: the four converted together held ~50 MB more at 877k customers
    means = {
        column: pd.Series(scored[column].to_numpy(dtype="float64", na_value=np.nan)[purchasers]).groupby(labels).mean()
        for column in ("r_score", "f_score", "m_score", "monetary")
    }
    return pd.DataFrame(means).reindex(range(n_clusters))


def grid_names(means: pd.DataFrame) -> list[str]:
    """The RFM grid name of each cluster from its rounded mean scores."""
    names = []
    for _, row in means.iterrows():
        if row[["r_score", "f_score", "m_score"]].isna().any():
            names.append("Unassigned")  # a centroid that attracted nobody today
        else:
            names.append(rfm_segment_name(*(round(row[s]) for s in ("r_score", "f_score", "m_score"))))
    return names


def fresh_segment_labels(means: pd.DataFrame) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Ids 1..K from the most to the least valuable cluster, and unique grid names, per cluster index."""
    ranked = means.assign(value=means[["r_score", "f_score", "m_score"]].sum(axis=1))
    order = [
        int(index) for index in ranked.sort_values(["value", "monetary"], ascending=False, na_position="last").index
    ]
    base_names = grid_names(means)
    ids = [0] * len(means)
    names = [""] * len(means)
    used: dict[str, int] = {}
    for position, index in enumerate(order):
        ids[index] = position + 1
        base = base_names[index]
        used[base] = used.get(base, 0) + 1
        names[index] = base if used[base] == 1 else f"{base} ({used[base]})"
    return tuple(ids), tuple(names)


def humanize(column: str) -> str:
    """A column name as words, without trailing unit or range tokens: ``annual_income_k`` -> ``annual
    income``, ``spending_score_1_100`` -> ``spending score``."""
    words = [word for word in column.split("_") if word]
    while len(words) > 1 and (words[-1].isdigit() or len(words[-1]) == 1):
        words.pop()
    return " ".join(words)


def attribute_segment_labels(
    model: SegmentModel, sizes: Sequence[int], threshold: float = 0.5
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Ids 1..K from the largest to the smallest cluster, and names from each centroid's strongest
    features (at most two, at least ``threshold`` standard deviations from the mean): ``High annual
    income, low spending score``; a categorical level above its share reads ``mostly Female``.
    Names are made unique with a number."""
    order = sorted(range(model.n_clusters), key=lambda index: (-sizes[index], index))
    ids = [0] * model.n_clusters
    names = [""] * model.n_clusters
    used: dict[str, int] = {}
    for position, index in enumerate(order):
        ids[index] = position + 1
        centroid = model.centroids[index]
        strongest = sorted(range(len(model.features)), key=lambda feature: -abs(centroid[feature]))
        parts: list[str] = []
        for feature in strongest:
            value = float(centroid[feature])
            if abs(value) < threshold or len(parts) == 2:
                break
            column, separator, level = model.features[feature].partition("=")
            if separator and column in model.categorical:
                if value > 0:
                    parts.append(f"mostly {level}")
            else:
                parts.append(f"{'high' if value > 0 else 'low'} {humanize(column)}")
        base = ", ".join(parts) if parts else "average profile"
        base = base[0].upper() + base[1:]
        used[base] = used.get(base, 0) + 1
        names[index] = base if used[base] == 1 else f"{base} ({used[base]})"
    return tuple(ids), tuple(names)


@dataclass(frozen=True)
class SegmentTable:
    """The run's output frames: one row per customer, and one profile per segment."""

    assignments: pd.DataFrame
    profiles: pd.DataFrame


def build_segments(
    scored: pd.DataFrame,
    labels: np.ndarray,
    model: SegmentModel,
    *,
    clustered: pd.Series,
    segment_ids: Sequence[int],
    segment_names: Sequence[str],
    as_of: date,
    run_id: str,
    model_version: str,
    scored_at: datetime,
) -> SegmentTable:
    """Join features, scores and labels into the ``customer_segments`` and ``segment_profiles`` rows.

    ``scored`` holds every customer of the run (from :func:`with_scores`); ``clustered`` marks those
    that were clustered (:func:`clusterable`) and ``labels`` holds their cluster index (0..K-1), in
    their order; ``segment_ids`` and ``segment_names`` the id and name of each cluster index. The other
    customers (no net purchases) get the reserved segment 0. Customer attributes the model used are
    kept as columns after the transaction features.
    """
    attributes = [name for name in model.input_columns if name not in FEATURE_COLUMNS]
    cluster = pd.Series(-1, index=scored.index, dtype="int64")
    cluster.loc[clustered] = labels
    segment_of_cluster = {index: int(segment) for index, segment in enumerate(segment_ids)}
    names = {int(segment): name for segment, name in zip(segment_ids, segment_names, strict=True)}
    scored = scored.copy(deep=False)  # copy-on-write (pandas 3): the caller's frame stays as it was
    scored["segment_id"] = cluster.map(segment_of_cluster).fillna(NO_NET_PURCHASES_ID).astype("int64")
    # Names and the run's one-value text columns as categoricals: at 877k customers, ~1 MB each
    # instead of 13-35 MB of repeated strings.
    scored["segment_name"] = (
        scored["segment_id"].map(names | {NO_NET_PURCHASES_ID: NO_NET_PURCHASES_NAME}).astype("category")
    )
    scored["as_of"] = as_of
    scored["run_id"] = _one_value(run_id, scored.index)
    scored["model_version"] = _one_value(model_version, scored.index)
    scored["scored_at"] = scored_at

    profiles = _profiles(scored, model, segment_of_cluster, attributes, as_of=as_of, run_id=run_id)
    columns = [
        "customer_id",
        "segment_id",
        "segment_name",
        *FEATURE_COLUMNS,
        "r_score",
        "f_score",
        "m_score",
        "as_of",
        "run_id",
        "model_version",
        "scored_at",
        *attributes,
    ]
    return SegmentTable(assignments=scored[columns].reset_index(drop=True), profiles=profiles)


def _one_value(value: str, index: pd.Index) -> pd.Series:
    codes = np.zeros(len(index), dtype=np.int8)
    return pd.Series(pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype([value])), index=index)


def _profiles(
    scored: pd.DataFrame,
    model: SegmentModel,
    segment_of_cluster: dict[int, int],
    attributes: list[str],
    *,
    as_of: date,
    run_id: str,
) -> pd.DataFrame:
    centroid_of_segment = {segment: model.centroids[index].tolist() for index, segment in segment_of_cluster.items()}
    total = len(scored)
    segment_ids = scored["segment_id"].to_numpy()
    # One grouped pass per statistic over the numeric columns (iterating the groups took a copy of
    # every column per segment: 0.3 s at 877k customers)
    scores = ["r_score", "f_score", "m_score"]
    values = scored[[*FEATURE_COLUMNS, *scores]].astype("float64").groupby(segment_ids, sort=True)
    sizes = values.size()
    mean_of, median_of = values.mean().to_dict("index"), values[FEATURE_COLUMNS].median().to_dict("index")
    segment_names = scored.drop_duplicates("segment_id").set_index("segment_id")["segment_name"]
    members_of = (
        dict(iter(scored[["segment_id", *attributes]].groupby("segment_id", sort=True, observed=True)))
        if attributes
        else {}
    )
    rows = []
    for segment_id in sizes.index:
        name = str(segment_names[segment_id])
        persona = PERSONAS.get(name.split(" (")[0]) or _attribute_persona(name)
        row: dict[str, object] = {
            "run_id": run_id,
            "as_of": as_of,
            "segment_id": int(segment_id),
            "segment_name": name,
            "description": persona.description,
            "recommended_action": persona.recommended_action,
            "customers": int(sizes[segment_id]),
            "share": int(sizes[segment_id]) / total,
        }
        for feature in FEATURE_COLUMNS:
            row[f"mean_{feature}"] = _float_or_none(mean_of[segment_id][feature])
            row[f"median_{feature}"] = _float_or_none(median_of[segment_id][feature])
        for score in scores:
            row[f"mean_{score}"] = _float_or_none(mean_of[segment_id][score])
        centroid = centroid_of_segment.get(int(segment_id))
        row["centroid"] = json.dumps(dict(zip(model.features, centroid, strict=True))) if centroid else None
        row["attribute_means"] = (
            json.dumps(_attribute_means(members_of[segment_id], model, attributes)) if attributes else None
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _attribute_means(members: pd.DataFrame, model: SegmentModel, attributes: list[str]) -> dict[str, float | None]:
    """Mean of each numeric attribute and the share of each categorical level among ``members``."""
    means: dict[str, float | None] = {}
    for column in attributes:
        if column in model.categorical:
            levels = members[column].astype("string").fillna(MISSING_LEVEL)
            for level in model.categorical[column]:
                means[f"{column}={level}"] = float((levels == level).mean())
        else:
            means[column] = _float_or_none(pd.to_numeric(members[column], errors="coerce").mean())
    return means


def _attribute_persona(name: str) -> SegmentPersona:
    return SegmentPersona(
        f"{name}, compared with the average customer (see the feature means).",
        "Tailor offers and messages to this profile, and compare the segment's response with the others.",
    )


def _float_or_none(value: float) -> float | None:
    return None if pd.isna(value) else float(value)
