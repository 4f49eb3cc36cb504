"""Alternative clustering algorithms side by side with KMeans, on one sample of the model's space.

The notebooks tried hierarchical clustering and DBSCAN next to KMeans; this fits KMeans, a Gaussian
mixture, Ward agglomerative clustering and DBSCAN on the same standardized sample and measures each the
same way (silhouette, Davies-Bouldin, cluster sizes, noise share). KMeans stays the production model:
the comparison only informs.
"""

from __future__ import annotations

import math
import time
from typing import Any

import kneed
import numpy as np
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans
from sklearn.metrics import davies_bouldin_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

#: Ward linkage holds O(n^2) distances: on at most this many rows.
COMPARE_SAMPLE_SIZE = 3_000
ALGORITHMS = ("kmeans", "gaussian_mixture", "agglomerative_ward", "dbscan")


def dbscan_eps(values: np.ndarray, min_samples: int) -> float:
    """DBSCAN's radius from the knee of the sorted distances to each point's ``min_samples``-th
    neighbour (the k-distance plot); the 90th percentile of those distances when there is no knee."""
    distances, _ = NearestNeighbors(n_neighbors=min_samples).fit(values).kneighbors(values)
    k_distances = np.sort(distances[:, -1])
    locator = kneed.KneeLocator(np.arange(len(k_distances)), k_distances, curve="convex", direction="increasing")
    eps = float(locator.knee_y) if locator.knee_y is not None else float(np.quantile(k_distances, 0.9))
    return max(eps, 1e-6)


def _labels(algorithm: str, values: np.ndarray, n_clusters: int, random_state: int) -> tuple[np.ndarray, str]:
    if algorithm == "kmeans":
        model = KMeans(n_clusters=n_clusters, n_init=4, random_state=random_state)
        return model.fit_predict(values), f"K={n_clusters}, k-means++"
    if algorithm == "gaussian_mixture":
        mixture = GaussianMixture(n_components=n_clusters, covariance_type="full", random_state=random_state)
        return mixture.fit(values).predict(values), f"{n_clusters} components, full covariance"
    if algorithm == "agglomerative_ward":
        ward = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward")
        return ward.fit_predict(values), f"{n_clusters} clusters, Ward linkage"
    if algorithm == "dbscan":
        min_samples = max(2 * values.shape[1], 4)
        eps = dbscan_eps(values, min_samples)
        return DBSCAN(eps=eps, min_samples=min_samples).fit_predict(values), f"eps={eps:.3f}, min_samples={min_samples}"
    raise ValueError(f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")


def compare_algorithms(
    values: np.ndarray, n_clusters: int, random_state: int, sample_size: int = COMPARE_SAMPLE_SIZE
) -> list[dict[str, Any]]:
    """Fit each algorithm of :data:`ALGORITHMS` on at most ``sample_size`` rows of ``values`` (already
    standardized) and measure it. One record per algorithm: clusters found, silhouette and
    Davies-Bouldin (on the points not labelled noise; ``None`` with fewer than two clusters), cluster
    sizes largest first, noise share (DBSCAN's outliers), seconds, and the parameters used."""
    rng = np.random.default_rng(random_state)
    if len(values) > sample_size:
        values = values[np.sort(rng.choice(len(values), size=sample_size, replace=False))]
    records = []
    for algorithm in ALGORITHMS:
        started = time.perf_counter()
        labels, parameters = _labels(algorithm, values, n_clusters, random_state)
        seconds = time.perf_counter() - started
        clustered = labels >= 0
        found = np.unique(labels[clustered])
        silhouette = davies_bouldin = None
        if 1 < len(found) < int(clustered.sum()):
            silhouette = float(silhouette_score(values[clustered], labels[clustered]))
            davies_bouldin = float(davies_bouldin_score(values[clustered], labels[clustered]))
        sizes = sorted((int((labels == label).sum()) for label in found), reverse=True)
        records.append(
            {
                "algorithm": algorithm,
                "clusters": len(found),
                "silhouette": _finite(silhouette),
                "davies_bouldin": _finite(davies_bouldin),
                "sizes": sizes,
                "noise_share": float((~clustered).mean()),
                "sample_rows": len(values),
                "seconds": round(seconds, 3),
                "parameters": parameters,
            }
        )
    return records


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
