"""Segment names: an RFM grid for transaction segments (Champions, Loyal, At Risk, ...) with what
each name means and what marketing should do, and names from the strongest features for segments of
customer attributes. A first model numbers its segments 1..K from the most to the least valuable;
later models keep ids and names by matching centroids (:mod:`tasks.model.matching`). Id 0 is the
reserved segment of customers without net purchases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.model.transform import SegmentModel

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


_GRID = np.array(
    [[[rfm_segment_name(r, f, m) for m in range(1, 6)] for f in range(1, 6)] for r in range(1, 6)], dtype=object
)


def grid_cells(scored: pd.DataFrame) -> pd.Series:
    """Each scored customer's own cell of the RFM grid (:func:`rfm_segment_name` of their scores)."""
    scores = scored[["r_score", "f_score", "m_score"]].to_numpy(dtype=np.int64) - 1
    return pd.Series(_GRID[scores[:, 0], scores[:, 1], scores[:, 2]], index=scored.index, dtype=object)


def cluster_means(scored: pd.DataFrame, labels: np.ndarray, n_clusters: int) -> pd.DataFrame:
    """Mean R, F, M scores and spend of each cluster (index 0..K-1; NaN for an empty cluster).

    ``labels`` holds the cluster of each customer with ``frequency > 0``, in their order.
    """
    purchasers = scored.loc[scored["frequency"] > 0, ["r_score", "f_score", "m_score", "monetary"]]
    return purchasers.astype("float64").groupby(labels).mean().reindex(range(n_clusters))


def fresh_segment_ids(means: pd.DataFrame) -> tuple[int, ...]:
    """Ids 1..K from the most to the least valuable cluster (sum of mean R, F and M scores, then spend),
    per cluster index."""
    ranked = means.assign(value=means[["r_score", "f_score", "m_score"]].sum(axis=1))
    order = [
        int(index) for index in ranked.sort_values(["value", "monetary"], ascending=False, na_position="last").index
    ]
    ids = [0] * len(means)
    for position, index in enumerate(order):
        ids[index] = position + 1
    return tuple(ids)


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
    income, low spending score``; a categorical level above its share reads ``mostly Female``; a
    centroid near the average reads ``Average profile``. Names that would be equal are told apart by
    the centroid's next strongest feature ("leaning ...")."""
    order = sorted(range(model.n_clusters), key=lambda index: (-sizes[index], index))
    ids = [0] * model.n_clusters
    for position, index in enumerate(order):
        ids[index] = position + 1
    phrases = [_centroid_phrases(model, index) for index in range(model.n_clusters)]
    strong = [sum(1 for _, strength in parts[:2] if strength >= threshold) for parts in phrases]
    lengths = list(strong)
    while True:
        names = [_phrase(parts, count, length) for parts, count, length in zip(phrases, strong, lengths, strict=True)]
        clashing = [
            index for index, name in enumerate(names) if names.count(name) > 1 and lengths[index] < len(phrases[index])
        ]
        if not clashing:
            return tuple(ids), tuple(names)
        for index in clashing:
            lengths[index] += 1


def _centroid_phrases(model: SegmentModel, index: int) -> list[tuple[str, float]]:
    """How a centroid differs from the average customer, strongest first, with how strongly (standard
    deviations): ("high annual income", 1.4), ("mostly Female", 0.9)."""
    centroid = model.centroids[index]
    phrases: list[tuple[str, float]] = []
    for feature in sorted(range(len(model.features)), key=lambda position: -abs(centroid[position])):
        value = float(centroid[feature])
        column, separator, level = model.features[feature].partition("=")
        if separator and column in model.categorical:
            if value > 0:
                phrases.append((f"mostly {level}", value))
        elif value != 0:
            phrases.append((f"{'high' if value > 0 else 'low'} {humanize(column)}", abs(value)))
    return phrases


def _phrase(parts: list[tuple[str, float]], strong: int, length: int) -> str:
    """The first ``strong`` phrases as the name (or "Average profile"), and the next ones up to
    ``length`` as leanings."""
    words = [phrase for phrase, _ in parts[:strong]] or ["average profile"]
    words += [f"leaning {phrase}" for phrase, _ in parts[strong:length]]
    text = ", ".join(words)
    return text[0].upper() + text[1:]
