"""Segments: the RFM naming grid, scores, reserved segment, ids and profiles."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from tasks.model.claims import member_frames, name_segments
from tasks.model.naming import NO_NET_PURCHASES_NAME, PERSONAS, cluster_means, fresh_segment_ids, rfm_segment_name
from tasks.model.scores import clusterable, quintile_scores, with_scores
from tasks.model.segments import build_segments
from tasks.model.transform import SegmentModel

GRID_NAMES = {
    "Champions",
    "Loyal",
    "Potential Loyalists",
    "Recent",
    "Promising",
    "Needs Attention",
    "About to Sleep",
    "At Risk",
    "Can't Lose",
    "Hibernating",
    "Lost",
}


def test_every_score_combination_has_a_grid_name_and_every_name_is_reachable() -> None:
    names = {rfm_segment_name(r, f, m) for r, f, m in itertools.product(range(1, 6), repeat=3)}

    assert names == GRID_NAMES
    assert all(name in PERSONAS for name in names)


@pytest.mark.parametrize(
    ("scores", "name"),
    [
        ((5, 5, 5), "Champions"),
        ((5, 1, 1), "Recent"),
        ((1, 5, 5), "Can't Lose"),
        ((1, 5, 2), "At Risk"),
        ((1, 1, 1), "Lost"),
        ((2, 2, 2), "Hibernating"),
        ((3, 3, 3), "Needs Attention"),
    ],
)
def test_grid_cells(scores: tuple[int, int, int], name: str) -> None:
    assert rfm_segment_name(*scores) == name


def test_quintile_scores_share_ties_and_reverse_recency() -> None:
    frequency = pd.Series([1, 1, 1, 1, 2, 3, 4, 5, 8, 13], dtype="float64")
    recency = pd.Series(np.arange(10.0))

    f_scores = quintile_scores(frequency)
    r_scores = quintile_scores(recency, higher_is_better=False)

    assert f_scores.iloc[:4].nunique() == 1  # equal frequencies get equal scores
    assert f_scores.iloc[-1] == 5
    assert r_scores.iloc[0] == 5 and r_scores.iloc[-1] == 1  # the most recent scores best
    assert set(f_scores).issubset(range(1, 6))


def test_the_worst_value_always_scores_one_however_many_customers_share_it() -> None:
    # half the customers bought once: they are the least frequent, so F=1, not a middle score
    frequency = pd.Series([1] * 50 + [2] * 20 + [3] * 15 + list(range(4, 19)), dtype="float64")

    scores = quintile_scores(frequency)

    assert set(scores.iloc[:50]) == {1}
    assert set(scores.iloc[50:70]) == {3}  # 50% strictly below: 1 + 2 whole fifths (no customer has F=2)
    assert set(scores.iloc[70:85]) == {4} and scores.iloc[-1] == 5
    everyone_equal = quintile_scores(pd.Series([7.0] * 40))
    assert set(everyone_equal) == {1}


def test_without_ties_the_scores_are_quintiles() -> None:
    values = pd.Series(np.random.default_rng(3).permutation(1000).astype(float))

    scores = quintile_scores(values)
    reversed_scores = quintile_scores(values, higher_is_better=False)

    assert scores.value_counts().sort_index().tolist() == [200] * 5
    assert (scores[values < 200] == 1).all() and (scores[values >= 800] == 5).all()
    assert (reversed_scores == 6 - scores).all()


def test_scores_rank_purchasers_only_from_integer_and_fractional_columns() -> None:
    rng = np.random.default_rng(11)
    frequency = rng.integers(0, 12, 3000)
    recency = pd.array(rng.integers(0, 400, 3000), dtype="Int64")
    recency[frequency == 0] = pd.NA  # no purchase: no last purchase either
    features = pd.DataFrame(
        {"recency_days": recency, "frequency": frequency, "monetary": rng.lognormal(4, 1, 3000).round(2)}
    )

    scored = with_scores(features)

    buyers = features[frequency > 0]
    for score, column, higher_is_better in (
        ("r_score", "recency_days", False),
        ("f_score", "frequency", True),
        ("m_score", "monetary", True),
    ):
        values = buyers[column].astype("float64")
        # 1 + the whole fifths of the buyers strictly worse, counted one by one
        worse = [(values < value).sum() if higher_is_better else (values > value).sum() for value in values]
        expected = [min(5, 1 + 5 * count // len(values)) for count in worse]
        assert scored.loc[frequency > 0, score].tolist() == expected
        assert scored.loc[frequency == 0, score].isna().all()
    assert "r_score" not in features  # the caller's frame is left as it was


def test_build_segments_assigns_everyone_with_unique_names_and_a_reserved_segment() -> None:
    features = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "f"],
            "recency_days": pd.array([2, 3, 400, 500, pd.NA, 1], dtype="Int64"),
            "frequency": [20, 18, 1, 1, 0, 19],
            "monetary": [900.0, 800.0, 10.0, 12.0, -5.0, 950.0],
            "avg_order_value": [45.0, 44.4, 10.0, 12.0, np.nan, 50.0],
            "tenure_days": pd.array([300, 280, 400, 500, pd.NA, 310], dtype="Int64"),
        }
    )
    labels = np.array([0, 0, 1, 1, 0])  # for the five customers with frequency > 0, in order
    model = SegmentModel(
        features=("recency_days", "frequency", "monetary"),
        log_features=("frequency", "monetary"),
        caps=np.full(3, np.inf),
        means=np.zeros(3),
        scales=np.ones(3),
        centroids=np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]),
        random_state=0,
    )

    scored = with_scores(features)
    ids = fresh_segment_ids(cluster_means(scored, labels, model.n_clusters))
    names = name_segments(member_frames(scored, labels, model.n_clusters))
    table = build_segments(
        scored,
        labels,
        model,
        clustered=clusterable(scored),
        segment_ids=ids,
        segment_names=names,
        stability=(0.9, 0.8),
        as_of=date(2024, 3, 1),
        run_id="r1",
        model_version="1",
        scored_at=datetime(2024, 3, 1, 2, tzinfo=UTC),
    )
    assignments = table.assignments.set_index("customer_id")
    assert assignments.index.is_unique and len(assignments) == len(features)
    assert assignments.loc["e", "segment_id"] == 0
    assert assignments.loc["e", "segment_name"] == NO_NET_PURCHASES_NAME
    assert pd.isna(assignments.loc["e", "r_score"])
    # the frequent, recent, big spenders are segment 1; two of the three are Champions in the grid,
    # too few for that name: it says what is true of all three
    assert set(assignments.loc[["a", "b", "f"], "segment_id"]) == {1}
    assert assignments.loc["a", "segment_name"] == "Active repeat buyers"
    assert set(assignments.loc[["c", "d"], "segment_id"]) == {2}
    assert assignments["segment_name"].nunique() == assignments["segment_id"].nunique() == 3

    profiles = table.profiles.set_index("segment_id")
    assert profiles["customers"].sum() == len(features)
    assert profiles["share"].sum() == pytest.approx(1.0)
    assert profiles.loc[1, "mean_monetary"] == pytest.approx((900 + 800 + 950) / 3)
    assert profiles.loc[1, "median_monetary"] == 900.0
    assert profiles.loc[2, "median_recency_days"] == 450.0 and profiles.loc[2, "mean_tenure_days"] == 450.0
    assert profiles.loc[1, "mean_r_score"] == pytest.approx(
        table.assignments.query("segment_id == 1")["r_score"].mean()
    )
    # the reserved segment: one customer without a recency, a negative net spend
    assert profiles.loc[0, "customers"] == 1 and profiles.loc[0, "median_monetary"] == -5.0
    assert pd.isna(profiles.loc[0, "mean_recency_days"]) and pd.isna(profiles.loc[0, "median_tenure_days"])
    assert pd.isna(profiles.loc[0, "centroid"]) and isinstance(profiles.loc[1, "centroid"], str)
    assert profiles["description"].str.len().min() > 10
    assert set(table.assignments["run_id"]) == {"r1"}
