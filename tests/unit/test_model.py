"""Model: transforms, automatic K by stability and silhouette, determinism, and models as plain data."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import tasks.model.step as step
from tasks.errors import ModelError
from tasks.model.choose_k import STABLE, UNSTABLE, best_jaccards, choose_k, cluster_stability, resamples_of
from tasks.model.fit import clustering_metrics, find_knee, fit_segment_model
from tasks.model.transform import Encoding, SegmentModel, fit_scaling, nearest_centroid, signed_log1p
from tasks.settings import load_settings

FEATURES = ("recency_days", "frequency", "monetary")
# Behavioural groups far apart in (recency days, orders, net spend).
GROUP_CENTRES = [(5, 40, 8000.0), (60, 10, 900.0), (250, 3, 120.0), (700, 1, 15.0), (20, 2, 3000.0)]


def planted_groups(k: int, per_group: int = 300, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for group, (recency, frequency, monetary) in enumerate(GROUP_CENTRES[:k]):
        frames.append(
            pd.DataFrame(
                {
                    "recency_days": np.clip(rng.normal(recency, recency * 0.08 + 1, per_group), 0, None).round(),
                    "frequency": np.clip(rng.normal(frequency, frequency * 0.08, per_group), 1, None).round(),
                    "monetary": rng.normal(monetary, monetary * 0.08, per_group),
                }
            )
        )
        truth.append(np.full(per_group, group))
    return pd.concat(frames, ignore_index=True), np.concatenate(truth)


def fit(frame: pd.DataFrame, **overrides: object):
    options = {
        "n_clusters": None,
        "k_min": 2,
        "k_max": 10,
        "sample_size": 200_000,
        "winsorize_quantile": 0.99,
        "random_state": 42,
    } | overrides
    return fit_segment_model(frame, FEATURES, **options)  # type: ignore[arg-type]


def test_signed_log1p_keeps_net_refunds_below_zero() -> None:
    values = np.array([-99.0, 0.0, 99.0])

    assert signed_log1p(values).tolist() == pytest.approx([-np.log(100), 0.0, np.log(100)])


def test_scaling_caps_the_upper_tail_and_standardizes() -> None:
    frame = pd.DataFrame({"recency_days": np.arange(100.0), "frequency": np.ones(100), "monetary": np.arange(100.0)})
    frame.loc[99, "recency_days"] = 10_000.0  # one extreme value

    log_features, caps, means, scales = fit_scaling(frame, Encoding(FEATURES, {}, {}), winsorize_quantile=0.95)

    assert log_features == ("frequency", "monetary")
    assert caps[0] == pytest.approx(np.quantile(frame["recency_days"], 0.95))
    assert caps[0] < 10_000
    assert scales[1] == 1.0  # a constant feature does not divide by zero
    assert means[1] == pytest.approx(np.log(2))


@pytest.mark.parametrize("planted_k", [3, 4, 5])
def test_automatic_k_finds_planted_groups_as_the_most_stable_segments(planted_k: int) -> None:
    frame, truth = planted_groups(planted_k)

    result = fit(frame, k_min=2, k_max=8)

    assert result.n_clusters == planted_k
    assert adjusted_rand_score(truth, result.labels) == pytest.approx(1.0)
    curve = result.curve
    assert curve is not None and curve.ks == list(range(1, 9)) and curve.chosen == planted_k
    stability = dict(zip(curve.ks, curve.stabilities, strict=True))
    assert stability[1] is None and all(stability[k] >= STABLE for k in range(2, planted_k + 1))
    # a stable K beyond the planted groups only cuts one in two: its silhouette falls short
    best = max(curve.silhouettes[index] or 0 for index, k in enumerate(curve.ks) if k > 1)
    assert curve.silhouettes[planted_k - 1] == best
    assert "stable under resampling" in result.k_reason
    assert result.stability.min() >= 0.95  # every planted group comes back from every resample
    assert result.metrics["silhouette"] is not None and result.metrics["silhouette"] > 0.7


def test_without_a_stable_k_the_most_stable_one_is_taken_and_says_so() -> None:
    values = np.random.default_rng(2).normal(size=(600, 2))  # one round cloud: every cut into 5 or 6 is arbitrary

    curve = choose_k(values, k_min=5, k_max=6, random_state=0)

    in_range = [value for k, value in zip(curve.ks, curve.stabilities, strict=True) if k >= 5]
    assert all(value is not None and value < STABLE for value in in_range)
    assert curve.chosen == curve.ks[curve.stabilities.index(max(in_range))]  # type: ignore[type-var]
    assert "no K of 5..6 had every segment stable" in curve.reason


def test_stability_tells_well_separated_groups_from_overlapping_ones() -> None:
    rng = np.random.default_rng(5)
    centres = ((0, 0), (6, 0), (0, 6), (6, 6), (3, 9))
    apart = np.vstack([rng.normal(centre, 0.3, size=(120, 2)) for centre in centres])
    overlapping = rng.normal(size=(600, 2))  # the same five clusters asked of one round cloud

    def stability(values: np.ndarray) -> np.ndarray:
        from sklearn.cluster import KMeans

        labels = KMeans(5, n_init=3, random_state=0).fit(values).labels_
        return cluster_stability(values, labels, resamples_of(len(values), np.random.default_rng(0)), 0)

    assert stability(apart).min() > 0.95
    assert stability(overlapping).mean() < UNSTABLE < STABLE


def test_jaccard_compares_each_cluster_with_its_best_match() -> None:
    reference = np.array([0, 0, 0, 1, 1, 2])
    other = np.array([1, 1, 0, 0, 0, 0])  # cluster 0 split; 1 and 2 merged

    jaccards = best_jaccards(reference, other, 3)

    assert jaccards.tolist() == pytest.approx([2 / 3, 2 / 4, 1 / 4])


def test_the_same_seed_gives_the_same_model_and_labels() -> None:
    frame, _ = planted_groups(4)

    first, second = fit(frame, sample_size=500), fit(frame, sample_size=500)

    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.model.centroids, second.model.centroids)


def test_k_is_fixed_when_given_and_fits_on_a_sample() -> None:
    frame, _ = planted_groups(4)

    result = fit(frame, n_clusters=6, sample_size=200)

    assert result.n_clusters == 6
    assert result.curve is None and len(result.stability) == 6
    assert set(result.labels) == set(range(6))
    assert len(result.labels) == len(frame)  # every customer assigned, not only the sample


def test_the_fit_keeps_the_standardized_features_the_stored_model_gives_and_predicts_from() -> None:
    frame, _ = planted_groups(3)
    frame.loc[::7, "monetary"] *= -0.01  # net refunds: the signed log on both sides

    result = fit(frame, n_clusters=3)

    # standardized in place during the fit, they are what transform() of the stored model gives
    assert np.array_equal(result.values, result.model.transform(frame))
    assert np.array_equal(result.labels, result.model.predict(frame))


def test_labels_are_the_nearest_centroid_and_inertia_their_squared_distances() -> None:
    rng = np.random.default_rng(4)
    values, centroids = rng.normal(size=(1000, 3)), rng.normal(size=(4, 3))
    distances = ((values[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)

    labels = nearest_centroid(values, centroids)
    metrics = clustering_metrics(values, labels, centroids, np.random.default_rng(0))

    assert np.array_equal(labels, distances.argmin(axis=1))
    assert metrics["inertia"] == pytest.approx(distances.min(axis=1).sum(), rel=1e-12)


def test_a_shop_with_a_handful_of_customers_gets_as_many_segments_as_it_has_profiles() -> None:
    # Four customers: K cannot reach the range's 4 with a silhouette (one customer per cluster)
    frame = pd.DataFrame(
        {"recency_days": [1, 50, 200, 400], "frequency": [10, 3, 1, 2], "monetary": [900.0, 120.0, 15.0, 60.0]}
    )

    result = fit(frame, k_min=4, k_max=8)

    assert result.curve is not None and result.curve.ks == [1, 2, 3]
    assert result.curve.silhouettes[0] is None and all(score is not None for score in result.curve.silhouettes[1:])
    assert result.n_clusters == 3 and len(set(result.labels)) == 3


def test_too_few_distinct_customers_for_k_is_a_clear_error() -> None:
    frame = pd.DataFrame({"recency_days": [1.0, 1.0, 5.0], "frequency": [1.0, 1.0, 2.0], "monetary": [9.0, 9.0, 20.0]})

    with pytest.raises(ModelError, match="only 2 distinct customer profile"):
        fit(frame, n_clusters=3)


def test_a_model_stored_as_json_scores_identically() -> None:
    frame, _ = planted_groups(4)
    result = fit(frame)

    stored = json.dumps(result.model.to_dict())
    rebuilt = SegmentModel.from_dict(json.loads(stored))

    assert np.array_equal(rebuilt.predict(frame), result.labels)
    assert rebuilt.library_versions["scikit-learn"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 99}, "format version 99"),
        ({"centroids": [[1.0, 2.0]]}, "malformed"),
        ({"means": [0.0]}, "malformed"),
    ],
)
def test_a_corrupted_model_is_refused(change: dict, message: str) -> None:
    frame, _ = planted_groups(3)
    data = fit(frame, n_clusters=3).model.to_dict() | change

    with pytest.raises(ModelError, match=message):
        SegmentModel.from_dict(data)


def test_the_knee_is_not_pulled_early_by_a_dominant_first_drop() -> None:
    # Measured on five planted groups: Kneedle on the raw curve answered 3.
    inertias = [4500.0, 1663.2, 703.6, 282.5, 22.6, 12.4, 10.2, 9.1, 8.1, 7.0]

    assert find_knee(list(range(1, 11)), inertias) == 5


def planted_features() -> pd.DataFrame:
    """Three planted groups of customers as the extract gives them, for the model step."""
    frame, _ = planted_groups(3)
    return frame.assign(
        customer_id=[f"c{index}" for index in range(len(frame))],
        avg_order_value=frame["monetary"] / frame["frequency"],
        tenure_days=frame["recency_days"] + 30,
    )


def test_the_model_step_runs_its_native_thread_pools_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # KMeans' OpenMP and OpenBLAS default to a thread per core; on the model's sample they only waited
    # on each other (and on the database using the other core).
    from threadpoolctl import threadpool_info, threadpool_limits

    threads_seen: list[int] = []
    original = step.fit_segment_model

    def fit_noting_threads(*args, **kwargs):  # type: ignore[no-untyped-def]
        threads_seen.extend(pool["num_threads"] for pool in threadpool_info())
        return original(*args, **kwargs)

    monkeypatch.setattr(step, "fit_segment_model", fit_noting_threads)
    with threadpool_limits(limits=2):  # what a 2-core machine gives by default
        step.segment_features(
            planted_features(),
            date(2024, 3, 1),
            load_settings(n_clusters=3),
            run_id="r",
            scored_at=datetime.now(UTC),
            stored=None,
        )
        after = {pool["num_threads"] for pool in threadpool_info()}

    assert threads_seen and set(threads_seen) == {1}
    assert after == {2}  # the caller's limits come back
