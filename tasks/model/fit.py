"""Fitting: K chosen by stability and silhouette, KMeans, and the quality figures of a clustering.

scikit-learn is imported where it is used, so that scoring and exports, which only read a stored
model, start without it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.errors import ModelError
from tasks.model.choose_k import (
    SELECTION_SAMPLE_SIZE,
    UNSTABLE,
    KCurve,
    choose_k,
    cluster_stability,
    count_distinct_rows,
    resamples_of,
)
from tasks.model.transform import (
    LOG_TRANSFORMED,
    SegmentModel,
    fit_encoding,
    log_features_array,
    nearest_centroid,
    standardize,
)

#: Silhouette is quadratic in the rows it is measured on: on at most this many.
METRIC_SAMPLE_SIZE = 5_000
#: scikit-learn computes pairwise distances in chunks of its working memory, 1 GB by default: the
#: silhouette of 5,000 rows would hold all 200 MB of them at once.
PAIRWISE_MEMORY_MB = 32
FIT_N_INIT = 4


def sampled_silhouette(values: np.ndarray, labels: np.ndarray, random_state: int) -> float | None:
    """scikit-learn's silhouette on at most :data:`METRIC_SAMPLE_SIZE` rows (it is quadratic in the
    rows); ``None`` where it is undefined (fewer than 2 or as many clusters as rows)."""
    import sklearn
    from sklearn.metrics import silhouette_score

    if not 1 < len(np.unique(labels)) < len(values):
        return None
    sample_size = METRIC_SAMPLE_SIZE if len(values) > METRIC_SAMPLE_SIZE else None
    with sklearn.config_context(working_memory=PAIRWISE_MEMORY_MB):
        score = float(silhouette_score(values, labels, sample_size=sample_size, random_state=random_state))
    return score if math.isfinite(score) else None


def find_knee(ks: list[int], inertias: list[float]) -> int | None:
    """The knee of the elbow curve, found by ``kneed`` (Kneedle) on the logarithm of the inertia.

    On a linear scale the first drop (K=1 to 2) dominates Kneedle's normalised curve and the knee comes
    early: with five well-separated groups it answered K=3. On the log scale each drop counts by its
    ratio; planted groups of 2 to 5 were recovered, and on continuum-like RFM data the answer was the
    same as on the linear scale (3-4). Returns ``None`` when the curve has no knee.
    """
    if len(ks) < 3:
        return None
    import kneed  # here, not at the top: it imports scipy.signal and matplotlib

    floor = max(inertias[0], 1.0) * 1e-12  # inertia can reach 0 when K equals the distinct points
    log_inertias = np.log(np.asarray(inertias) + floor)
    locator = kneed.KneeLocator(ks, log_inertias, curve="convex", direction="decreasing")
    return int(locator.knee) if locator.knee is not None else None


@dataclass(frozen=True)
class FitResult:
    """A fitted model, the labels of every clustered customer, how K was chosen, and how stable each
    cluster is under resampling (index 0..K-1)."""

    model: SegmentModel
    labels: np.ndarray
    n_clusters: int
    k_reason: str
    curve: KCurve | None
    stability: np.ndarray
    metrics: dict[str, float | None]
    values: np.ndarray  # every customer's standardized features: what ``model.transform(frame)`` gives


def fit_segment_model(
    frame: pd.DataFrame,
    features: tuple[str, ...],
    *,
    n_clusters: int | None,
    k_min: int,
    k_max: int,
    sample_size: int,
    winsorize_quantile: float,
    random_state: int,
    previous: SegmentModel | None = None,
) -> FitResult:
    """Fit the segmentation model on customers with net purchases and label every one of them.

    ``frame`` holds one row per customer with ``frequency > 0``. K is ``n_clusters`` when given, else
    chosen by :func:`tasks.model.choose_k.choose_k` on a sample of at most 10,000 customers. KMeans
    (k-means++, ``random_state``) is fitted on at most ``sample_size`` customers and every customer is
    then assigned to the nearest centroid; each cluster's stability is measured on the same sample.
    The same inputs and seed give the same result.

    A refit passes the ``previous`` model. With the same features, KMeans starts from its centroids,
    carried into the new scaling, so that segments follow their customers instead of being drawn
    afresh; and an automatic K stays the previous K (in the range) while none of the segments so fitted
    is unstable (mean bootstrap Jaccard below 0.6): K changes when the data no longer hold its segments,
    not when another K's stability crosses 0.75 from one week to the next.
    """
    import sklearn
    from sklearn.cluster import KMeans

    encoding = fit_encoding(frame, features)
    log_features = tuple(name for name in encoding.features if name in LOG_TRANSFORMED)
    values = log_features_array(frame, encoding, log_features)
    caps, means, scales = standardize(values, winsorize_quantile)  # values: now what transform() gives
    distinct_points = count_distinct_rows(values, limit=max(k_max, n_clusters or 0) + 1)
    needed = n_clusters if n_clusters is not None else min(k_min, distinct_points)
    if distinct_points < max(needed, 2):
        raise ModelError(
            f"only {distinct_points} distinct customer profile(s) with net purchases; {needed} segments "
            "need at least as many (lower --n-clusters / --k-min, or widen the window)"
        )
    rng = np.random.default_rng(random_state)
    selection = values[_sample_indices(len(values), SELECTION_SAMPLE_SIZE, rng)]
    fit_values = values if len(values) <= sample_size else values[_sample_indices(len(values), sample_size, rng)]
    resamples = resamples_of(len(selection), np.random.default_rng(random_state))
    start = None  # a refit starts from the previous centroids, carried into the new scaling
    if previous is not None and (previous.features, previous.log_features) == (encoding.features, log_features):
        start = (previous.centroids * previous.scales + previous.means - means) / scales

    def kmeans_of(k: int) -> KMeans:
        if start is not None and len(start) == k:
            return KMeans(n_clusters=k, init=start, n_init=1, random_state=random_state)
        return KMeans(n_clusters=k, n_init=FIT_N_INIT, random_state=random_state)

    curve, kmeans, stability = None, None, None
    if n_clusters is None:
        curve = choose_k(selection, k_min, min(k_max, distinct_points), random_state)
        n_clusters, k_reason = curve.chosen, curve.reason
        if start is not None and k_min <= len(start) <= min(k_max, distinct_points) and len(start) != n_clusters:
            kept = kmeans_of(len(start)).fit(fit_values)
            kept_stability = cluster_stability(
                selection, nearest_centroid(selection, kept.cluster_centers_), resamples, random_state
            )
            least = float(np.nanmin(kept_stability)) if np.isfinite(kept_stability).any() else 0.0
            if least >= UNSTABLE:
                k_reason = (
                    f"K={len(start)} kept from the previous model: none of its segments became unstable on "
                    f"today's customers (the least stable at {least:.2f}, >= {UNSTABLE}); without a previous "
                    f"model the rule would take {k_reason}"
                )
                n_clusters, kmeans, stability = len(start), kept, kept_stability
                curve = dataclasses.replace(curve, chosen=n_clusters, reason=k_reason)
    else:
        k_reason = f"K={n_clusters} fixed by the n_clusters setting"
    if kmeans is None:
        kmeans = kmeans_of(n_clusters).fit(fit_values)
    model = SegmentModel(
        features=encoding.features,
        categorical=encoding.categorical,
        fill_values=encoding.fill_values,
        log_features=log_features,
        caps=caps,
        means=means,
        scales=scales,
        centroids=np.asarray(kmeans.cluster_centers_, dtype=np.float64),
        random_state=random_state,
        library_versions={"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    )
    labels = nearest_centroid(values, model.centroids)
    if stability is None:
        stability = cluster_stability(selection, nearest_centroid(selection, model.centroids), resamples, random_state)
    metrics = clustering_metrics(values, labels, model.centroids, rng)
    return FitResult(
        model=model,
        labels=labels,
        n_clusters=n_clusters,
        k_reason=k_reason,
        curve=curve,
        stability=stability,
        metrics=metrics,
        values=values,
    )


def clustering_metrics(
    values: np.ndarray, labels: np.ndarray, centroids: np.ndarray, rng: np.random.Generator
) -> dict[str, float | None]:
    """Inertia (sum of squared distances to the assigned centroid, all rows) and, on a sample of at
    most 5,000 rows, silhouette, Davies-Bouldin and Calinski-Harabasz (``None`` with one cluster)."""
    inertia = float(((values - centroids[labels]) ** 2).sum())
    rows = _sample_indices(len(values), METRIC_SAMPLE_SIZE, rng)
    sample, sample_labels = values[rows], labels[rows]
    metrics: dict[str, float | None] = {
        "inertia": inertia,
        "silhouette": None,
        "davies_bouldin": None,
        "calinski_harabasz": None,
    }
    if 1 < len(np.unique(sample_labels)) < len(sample):
        from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

        metrics["silhouette"] = sampled_silhouette(sample, sample_labels, 0)
        metrics["davies_bouldin"] = float(davies_bouldin_score(sample, sample_labels))
        metrics["calinski_harabasz"] = float(calinski_harabasz_score(sample, sample_labels))
    return {key: (None if value is None or not math.isfinite(value) else value) for key, value in metrics.items()}


def _sample_indices(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))
