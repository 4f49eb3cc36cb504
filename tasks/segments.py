"""Segments: R/F/M scores, readable names, segment ids, profiles and the assignment table.

Names come from an RFM grid: each segment's mean R and F scores (1-5, quintiles of the current
population) pick a cell (Champions, Loyal, At Risk, ...). Ids are provisional in this release: segments
are numbered 1..K from the most to the least valuable profile; id 0 is the reserved segment of
customers without net purchases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

from tasks.extract import FEATURE_COLUMNS
from tasks.model import SegmentModel

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


def quintile_scores(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """Score 1-5 by quintile of the population; ties share a score (average percentile rank)."""
    ranked = values if higher_is_better else -values
    percentile = ranked.rank(method="average", pct=True)
    return (percentile * 5).apply(np.ceil).clip(1, 5).astype("int64")


def score_customers(features: pd.DataFrame) -> pd.DataFrame:
    """R, F and M scores (1-5) of customers with net purchases: recency lower is better."""
    return pd.DataFrame(
        {
            "r_score": quintile_scores(features["recency_days"].astype("float64"), higher_is_better=False),
            "f_score": quintile_scores(features["frequency"].astype("float64")),
            "m_score": quintile_scores(features["monetary"].astype("float64")),
        },
        index=features.index,
    )


@dataclass(frozen=True)
class SegmentTable:
    """The run's output frames: one row per customer, and one profile per segment."""

    assignments: pd.DataFrame
    profiles: pd.DataFrame


def build_segments(
    features: pd.DataFrame,
    labels: np.ndarray,
    model: SegmentModel,
    *,
    as_of: date,
    run_id: str,
    model_version: str,
    scored_at: datetime,
) -> SegmentTable:
    """Join features, labels and scores into the ``customer_segments`` and ``segment_profiles`` rows.

    ``features`` holds every customer of the run; ``labels`` the cluster index (0..K-1) of those with
    ``frequency > 0``, in their order. Customers without net purchases get the reserved segment 0.
    """
    purchasers = features["frequency"] > 0
    scored = features.copy()
    scores = score_customers(features.loc[purchasers])
    for column in ("r_score", "f_score", "m_score"):
        scored[column] = pd.Series(pd.NA, index=features.index, dtype="Int64")
        scored.loc[purchasers, column] = scores[column].to_numpy()
    cluster = pd.Series(-1, index=features.index, dtype="int64")
    cluster.loc[purchasers] = labels

    segment_of_cluster, names = _name_clusters(scored.loc[purchasers], cluster.loc[purchasers], model.n_clusters)
    scored["segment_id"] = cluster.map(segment_of_cluster).fillna(NO_NET_PURCHASES_ID).astype("int64")
    scored["segment_name"] = scored["segment_id"].map(names | {NO_NET_PURCHASES_ID: NO_NET_PURCHASES_NAME})
    scored["as_of"] = as_of
    scored["run_id"] = run_id
    scored["model_version"] = model_version
    scored["scored_at"] = scored_at

    profiles = _profiles(scored, model, segment_of_cluster, as_of=as_of, run_id=run_id)
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
    ]
    return SegmentTable(assignments=scored[columns].reset_index(drop=True), profiles=profiles)


def _name_clusters(
    purchasers: pd.DataFrame, cluster: pd.Series, n_clusters: int
) -> tuple[dict[int, int], dict[int, str]]:
    """Segment id and unique name for each cluster index, the most valuable profile first."""
    means = purchasers[["r_score", "f_score", "m_score", "monetary"]].astype("float64").groupby(cluster).mean()
    means = means.reindex(range(n_clusters))
    means["value"] = means[["r_score", "f_score", "m_score"]].sum(axis=1)
    order = means.sort_values(["value", "monetary"], ascending=False, na_position="last").index
    segment_of_cluster = {int(index): position + 1 for position, index in enumerate(order)}
    names: dict[int, str] = {}
    used: dict[str, int] = {}
    for index in order:
        row = means.loc[index]
        if row.isna().any():
            base = "Unassigned"  # a centroid that attracted nobody
        else:
            base = rfm_segment_name(*(round(row[s]) for s in ("r_score", "f_score", "m_score")))
        used[base] = used.get(base, 0) + 1
        names[segment_of_cluster[int(index)]] = base if used[base] == 1 else f"{base} ({used[base]})"
    return segment_of_cluster, names


def _profiles(
    scored: pd.DataFrame,
    model: SegmentModel,
    segment_of_cluster: dict[int, int],
    *,
    as_of: date,
    run_id: str,
) -> pd.DataFrame:
    centroid_of_segment = {segment: model.centroids[index].tolist() for index, segment in segment_of_cluster.items()}
    total = len(scored)
    rows = []
    for _, members in scored.groupby("segment_id", sort=True):
        segment_id = int(members["segment_id"].iloc[0])
        name = str(members["segment_name"].iloc[0])
        persona = PERSONAS.get(name.split(" (")[0], PERSONAS["Needs Attention"])
        row: dict[str, object] = {
            "run_id": run_id,
            "as_of": as_of,
            "segment_id": segment_id,
            "segment_name": name,
            "description": persona.description,
            "recommended_action": persona.recommended_action,
            "customers": len(members),
            "share": len(members) / total,
        }
        for feature in FEATURE_COLUMNS:
            column = members[feature].astype("float64")
            row[f"mean_{feature}"] = _float_or_none(column.mean())
            row[f"median_{feature}"] = _float_or_none(column.median())
        for score in ("r_score", "f_score", "m_score"):
            row[f"mean_{score}"] = _float_or_none(members[score].astype("float64").mean())
        centroid = centroid_of_segment.get(segment_id)
        row["centroid"] = json.dumps(dict(zip(model.features, centroid, strict=True))) if centroid else None
        rows.append(row)
    return pd.DataFrame(rows)


def _float_or_none(value: float) -> float | None:
    return None if pd.isna(value) else float(value)
