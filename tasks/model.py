"""Model: transform features, choose K by the elbow, fit KMeans, and score customers.

A fitted model is plain numbers (:class:`SegmentModel`): the feature list, which features are
log-transformed, their upper caps, the scaler's mean and scale, and the centroids. Scoring uses those
numbers alone, so a model rebuilt from its stored form scores exactly like the one that was fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.errors import ModelError

#: Heavy-tailed features (money, counts) that are log-transformed before scaling.
LOG_TRANSFORMED = frozenset({"frequency", "monetary", "avg_order_value"})
#: The level a missing categorical value gets: it is a category of its own, not dropped.
MISSING_LEVEL = "(missing)"
#: Features the extract computes; every other numeric column is a customer attribute, whose missing
#: values are filled with the training median.
RFM_FEATURES = frozenset({"recency_days", "frequency", "monetary", "avg_order_value", "tenure_days"})
MODEL_FORMAT_VERSION = 1
ELBOW_SAMPLE_SIZE = 50_000
#: Silhouette is O(n^2) in the rows it is measured on: on at most this many (its sampling error at
#: 5,000 is about 0.005).
METRIC_SAMPLE_SIZE = 5_000
SILHOUETTE_SAMPLE_SIZE = 5_000
#: The silhouette's pairwise distances are computed in chunks of rows of at most this many bytes
#: (8 MB: 209 rows of 5,000 distances); chunks of 64 MB were slower, by their page faults.
SILHOUETTE_CHUNK_BYTES = 8 * 2**20
ELBOW_N_INIT = 3
FIT_N_INIT = 4
PREDICT_CHUNK_ROWS = 250_000


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """``log1p`` that keeps the sign, so a net refund (negative spend) stays below zero spend."""
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass(frozen=True)
class SegmentModel:
    """A fitted segmentation model as plain data.

    ``caps``, ``means`` and ``scales`` hold one number per feature, in the transformed space (after
    ``signed_log1p`` for the features listed in ``log_features``); ``centroids`` has shape
    (K, features) in the standardized space. A categorical input column ``gender`` with levels
    ``categorical["gender"]`` becomes one 0/1 feature per level, named ``gender=<level>``; a missing
    numeric attribute takes ``fill_values[column]`` (the training median).
    """

    features: tuple[str, ...]
    log_features: tuple[str, ...]
    caps: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    centroids: np.ndarray
    random_state: int
    library_versions: dict[str, str] = field(default_factory=dict)
    categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fill_values: dict[str, float] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def encoding(self) -> Encoding:
        return Encoding(self.features, self.categorical, self.fill_values)

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The columns the model reads (a categorical column once, however many levels it has)."""
        return self.encoding.input_columns

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Features of ``frame`` -> standardized array: encode, signed log1p, cap, then scale."""
        return _transform(frame, self.encoding, self.log_features, self.caps, self.means, self.scales)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Index (0..K-1) of the nearest centroid for every row of ``frame``, in chunks."""
        labels = np.empty(len(frame), dtype=np.int64)
        for start in range(0, len(frame), PREDICT_CHUNK_ROWS):
            chunk = self.transform(frame.iloc[start : start + PREDICT_CHUNK_ROWS])
            labels[start : start + len(chunk)] = nearest_centroid(chunk, self.centroids)
        return labels

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data; :meth:`from_dict` rebuilds the same model."""
        return {
            "format_version": MODEL_FORMAT_VERSION,
            "features": list(self.features),
            "log_features": list(self.log_features),
            "caps": self.caps.tolist(),
            "means": self.means.tolist(),
            "scales": self.scales.tolist(),
            "centroids": self.centroids.tolist(),
            "random_state": self.random_state,
            "library_versions": dict(self.library_versions),
            "categorical": {column: list(levels) for column, levels in self.categorical.items()},
            "fill_values": dict(self.fill_values),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentModel:
        """Rebuild a model from :meth:`to_dict` output, checking its format and shapes."""
        version = data.get("format_version")
        if version != MODEL_FORMAT_VERSION:
            raise ModelError(f"stored model has format version {version!r}; this release reads {MODEL_FORMAT_VERSION}")
        features = tuple(data["features"])
        n = len(features)
        arrays = {name: np.asarray(data[name], dtype=np.float64) for name in ("caps", "means", "scales")}
        centroids = np.asarray(data["centroids"], dtype=np.float64)
        if any(array.shape != (n,) for array in arrays.values()) or centroids.ndim != 2 or centroids.shape[1] != n:
            raise ModelError(f"stored model is malformed: arrays do not match its {n} features")
        return cls(
            features=features,
            log_features=tuple(data["log_features"]),
            centroids=centroids,
            random_state=int(data["random_state"]),
            library_versions=dict(data.get("library_versions", {})),
            categorical={
                str(column): tuple(map(str, levels)) for column, levels in data.get("categorical", {}).items()
            },
            fill_values={str(column): float(value) for column, value in data.get("fill_values", {}).items()},
            **arrays,
        )


@dataclass(frozen=True)
class Encoding:
    """How input columns become numeric features: ``features`` lists them in order (a categorical
    column ``c`` as ``c=<level>`` per level of ``categorical[c]``); ``fill_values`` replace missing
    numbers."""

    features: tuple[str, ...]
    categorical: dict[str, tuple[str, ...]]
    fill_values: dict[str, float]

    @property
    def input_columns(self) -> tuple[str, ...]:
        columns: dict[str, None] = {}
        for name in self.features:
            column, separator, _ = name.partition("=")
            columns[column if separator and column in self.categorical else name] = None
        return tuple(columns)


def is_categorical(values: pd.Series) -> bool:
    """Text, boolean and pandas categorical columns are one-hot encoded; numbers are not."""
    return not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def categorical_levels(values: pd.Series) -> pd.Series:
    """A categorical column as text, missing values as the level :data:`MISSING_LEVEL`."""
    return values.astype("string").fillna(MISSING_LEVEL)


def fit_encoding(frame: pd.DataFrame, columns: tuple[str, ...]) -> Encoding:
    """The encoding of ``columns`` of ``frame``: numeric columns as they are (a missing attribute
    filled with its median), categorical ones one-hot with their sorted levels."""
    features: list[str] = []
    categorical: dict[str, tuple[str, ...]] = {}
    fill_values: dict[str, float] = {}
    for column in columns:
        values = frame[column]
        if is_categorical(values):
            levels = tuple(sorted(categorical_levels(values).unique()))
            categorical[column] = levels
            features += [f"{column}={level}" for level in levels]
            continue
        features.append(column)
        if column not in RFM_FEATURES:
            median = values.astype("float64").median()
            fill_values[column] = 0.0 if pd.isna(median) else float(median)
    return Encoding(tuple(features), categorical, fill_values)


def _transform(
    frame: pd.DataFrame,
    encoding: Encoding,
    log_features: tuple[str, ...],
    caps: np.ndarray,
    means: np.ndarray,
    scales: np.ndarray,
) -> np.ndarray:
    values = _log_features(frame, encoding, log_features)
    np.minimum(values, caps, out=values)
    values -= means
    values /= scales
    return values


def _log_features(frame: pd.DataFrame, encoding: Encoding, log_features: tuple[str, ...]) -> np.ndarray:
    if not encoding.categorical and not encoding.fill_values:  # the RFM path: one copy, no per-column work
        values = frame.loc[:, list(encoding.features)].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    else:
        values = np.empty((len(frame), len(encoding.features)), dtype=np.float64)
        levels = {column: categorical_levels(frame[column]) for column in encoding.categorical}
        for index, name in enumerate(encoding.features):
            column, separator, level = name.partition("=")
            if separator and column in levels:
                values[:, index] = (levels[column] == level).to_numpy(dtype=np.float64)
            else:
                numbers = pd.to_numeric(frame[name], errors="coerce").astype("float64")
                if name in encoding.fill_values:
                    numbers = numbers.fillna(encoding.fill_values[name])
                values[:, index] = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    for index, name in enumerate(encoding.features):
        if name in log_features:
            values[:, index] = signed_log1p(values[:, index])
    if np.isnan(values).any():
        raise ModelError("features contain missing values; only customers with net purchases are clustered")
    return values


def nearest_centroid(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean distance) for each row of ``values``.

    In chunks of :data:`PREDICT_CHUNK_ROWS` rows, so the (rows x K) distance matrices stay bounded
    however many customers there are (10 MB each at K=5; numpy backs arrays of 4 MB and more with
    huge pages, so chunks much smaller than that cost more in page faults than they save)."""
    labels = np.empty(len(values), dtype=np.int64)
    centroid_norms = np.einsum("ij,ij->i", centroids, centroids)[None, :]
    for start in range(0, len(values), PREDICT_CHUNK_ROWS):
        chunk = values[start : start + PREDICT_CHUNK_ROWS]
        distances = np.einsum("ij,ij->i", chunk, chunk)[:, None] - 2.0 * chunk @ centroids.T + centroid_norms
        labels[start : start + len(chunk)] = distances.argmin(axis=1)
    return labels


def fit_scaling(
    frame: pd.DataFrame, encoding: Encoding, winsorize_quantile: float
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Fit the transforms on ``frame``: which features get log1p, the caps, means and scales.

    The cap of each feature is its ``winsorize_quantile`` quantile after the log; mean and standard
    deviation are taken after capping. A constant feature gets scale 1 so it does not divide by zero.
    """
    log_features = tuple(name for name in encoding.features if name in LOG_TRANSFORMED)
    values = _log_features(frame, encoding, log_features)
    caps, means, scales = _standardize(values, winsorize_quantile)
    return log_features, caps, means, scales


def _standardize(values: np.ndarray, winsorize_quantile: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the caps, means and scales on ``values`` (after the log) and apply them in place, as
    :func:`_transform` would: the fit then needs no second copy of every customer's features."""
    caps = np.quantile(values, winsorize_quantile, axis=0) if winsorize_quantile < 1.0 else values.max(axis=0)
    np.minimum(values, caps, out=values)
    means = values.mean(axis=0)
    scales = values.std(axis=0)
    scales[scales == 0] = 1.0
    values -= means
    values /= scales
    return caps, means, scales


@dataclass(frozen=True)
class ElbowCurve:
    """Within-cluster sum of squares and silhouette for K = 1..k_max on one sample."""

    ks: list[int]
    inertias: list[float]
    silhouettes: list[float | None]
    knee: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"ks": self.ks, "inertias": self.inertias, "silhouettes": self.silhouettes, "knee": self.knee}


def compute_elbow(values: np.ndarray, k_max: int, random_state: int) -> ElbowCurve:
    """Fit KMeans for K = 1..k_max on ``values`` and record inertia, silhouette and the knee.

    The knee is found by :func:`find_knee`; it may be ``None`` when the curve has no knee.
    Silhouettes are computed on a sample of at most 5,000 rows.
    """
    from sklearn.cluster import KMeans  # here, not at the top: scoring and exports never fit

    rng = np.random.default_rng(random_state)
    silhouette_rows = _sample_indices(len(values), SILHOUETTE_SAMPLE_SIZE, rng)
    ks: list[int] = []
    inertias: list[float] = []
    labelings: dict[int, np.ndarray] = {}  # K -> labels of the silhouette rows, where it has a silhouette
    for k in range(1, k_max + 1):
        kmeans = KMeans(n_clusters=k, n_init=ELBOW_N_INIT, random_state=random_state).fit(values)
        ks.append(k)
        inertias.append(float(kmeans.inertia_))
        labels = kmeans.labels_[silhouette_rows]
        if 1 < len(np.unique(labels)) < len(silhouette_rows):
            labelings[k] = labels
    scores = dict(zip(labelings, silhouette_scores(values[silhouette_rows], list(labelings.values())), strict=True))
    silhouettes = [scores.get(k) for k in ks]
    return ElbowCurve(ks=ks, inertias=inertias, silhouettes=silhouettes, knee=find_knee(ks, inertias))


def silhouette_scores(values: np.ndarray, labelings: list[np.ndarray]) -> list[float]:
    """The mean silhouette (Euclidean distance) of each labeling of the rows of ``values``, as
    ``sklearn.metrics.silhouette_score`` computes it, with the pairwise distances computed once for all.

    scikit-learn computes the distances again for every labeling and sums each row's distances per
    cluster in a Python loop (a ``bincount`` per row): 0.13 s per labeling of 5,000 rows, 1.2 s for the
    elbow's nine Ks. Here each chunk of rows of the distance matrix is multiplied by every labeling's
    one-hot matrix: 0.14 s for the nine, equal to scikit-learn's to 1e-16. A point alone in its cluster
    scores 0; every labeling needs from 2 to ``len(values) - 1`` distinct labels.
    """
    n = len(values)
    codes, one_hots = [], []
    for labels in labelings:
        levels, code = np.unique(labels, return_inverse=True)
        if not 1 < len(levels) < n:
            raise ValueError(f"a silhouette needs 2 to {n - 1} clusters of {n} rows, not {len(levels)}")
        codes.append(code)
        one_hots.append(np.eye(len(levels))[code])
    sums = [np.empty(one_hot.shape) for one_hot in one_hots]  # row x cluster: sum of the distances
    norms = np.einsum("ij,ij->i", values, values)
    step = max(1, SILHOUETTE_CHUNK_BYTES // (8 * n))
    for start in range(0, n, step):
        stop = min(start + step, n)
        # scikit-learn's Euclidean distances, in its order of operations
        distances = values[start:stop] @ values.T
        distances *= -2.0
        distances += norms[start:stop, None]
        distances += norms[None, :]
        np.maximum(distances, 0.0, out=distances)
        distances[np.arange(stop - start), np.arange(start, stop)] = 0.0  # each point to itself
        np.sqrt(distances, out=distances)
        for one_hot, total in zip(one_hots, sums, strict=True):
            np.matmul(distances, one_hot, out=total[start:stop])
    rows = np.arange(n)
    scores = []
    for code, total in zip(codes, sums, strict=True):
        sizes = np.bincount(code).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            own = total[rows, code] / (sizes[code] - 1)  # mean distance to the rest of its cluster (0/0 alone)
            means = total / sizes
            means[rows, code] = np.inf
            nearest = means.min(axis=1)  # mean distance to the nearest other cluster
            silhouettes = np.nan_to_num((nearest - own) / np.maximum(own, nearest))
        scores.append(float(silhouettes.mean()))
    return scores


def find_knee(ks: list[int], inertias: list[float]) -> int | None:
    """The knee of the elbow curve, found by ``kneed`` (Kneedle) on the logarithm of the inertia.

    On a linear scale the first drop (K=1 to 2) dominates Kneedle's normalised curve and the knee comes
    early: with five well-separated groups it answered K=3. On the log scale each drop counts by its
    ratio; planted groups of 2 to 5 were recovered, and on continuum-like RFM data the answer was the
    same as on the linear scale (3-4). Returns ``None`` when the curve has no knee.
    """
    if len(ks) < 3:
        return None
    import kneed  # here, not at the top: it imports scipy.signal and matplotlib (~0.7 s)

    floor = max(inertias[0], 1.0) * 1e-12  # inertia can reach 0 when K equals the distinct points
    log_inertias = np.log(np.asarray(inertias) + floor)
    locator = kneed.KneeLocator(ks, log_inertias, curve="convex", direction="decreasing")
    return int(locator.knee) if locator.knee is not None else None


def choose_n_clusters(curve: ElbowCurve, k_min: int, k_max: int) -> tuple[int, str]:
    """K from the elbow: the knee, kept within k_min..k_max. Returns K and the reason in words.

    Without a knee (a curve with no bend), the K with the best silhouette in the range is taken.
    """
    upper = min(k_max, max(curve.ks))
    if curve.knee is not None:
        k = min(max(curve.knee, k_min), upper)
        if k == curve.knee:
            return k, f"knee of the elbow curve at K={k}"
        return k, f"knee of the elbow curve at K={curve.knee}, kept within {k_min}..{k_max}"
    candidates = [
        (score, k)
        for k, score in zip(curve.ks, curve.silhouettes, strict=True)
        if score is not None and k_min <= k <= upper
    ]
    if not candidates:
        return k_min, f"no knee in the elbow curve; K={k_min}, the smallest allowed"
    best_score, best_k = max(candidates, key=lambda item: (item[0], -item[1]))
    return best_k, f"no knee in the elbow curve; K={best_k} has the best silhouette ({best_score:.3f})"


@dataclass(frozen=True)
class FitResult:
    """A fitted model, the labels of every clustered customer, and how K was chosen."""

    model: SegmentModel
    labels: np.ndarray
    n_clusters: int
    k_reason: str
    elbow: ElbowCurve | None
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
) -> FitResult:
    """Fit the segmentation model on customers with net purchases and label every one of them.

    ``frame`` holds one row per customer with ``frequency > 0``. K is ``n_clusters`` when given,
    else chosen by :func:`choose_n_clusters` on an elbow computed on at most 50,000 customers. KMeans
    (k-means++, ``random_state``) is fitted on at most ``sample_size`` customers and every customer is
    then assigned to the nearest centroid. The same inputs and seed give the same result.
    """
    import sklearn
    from sklearn.cluster import KMeans

    encoding = fit_encoding(frame, features)
    log_features = tuple(name for name in encoding.features if name in LOG_TRANSFORMED)
    values = _log_features(frame, encoding, log_features)
    caps, means, scales = _standardize(values, winsorize_quantile)  # values: now what transform() gives
    distinct_points = _count_distinct_rows(values, limit=k_max + 1)
    needed = n_clusters if n_clusters is not None else k_min
    if distinct_points < needed:
        raise ModelError(
            f"only {distinct_points} distinct customer profile(s) with net purchases; {needed} segments "
            "need at least as many (lower --n-clusters / --k-min, or widen the window)"
        )
    rng = np.random.default_rng(random_state)
    elbow = None
    if n_clusters is None:
        elbow_values = values[_sample_indices(len(values), ELBOW_SAMPLE_SIZE, rng)]
        elbow = compute_elbow(elbow_values, min(k_max, distinct_points), random_state)
        n_clusters, k_reason = choose_n_clusters(elbow, k_min, k_max)
    else:
        k_reason = f"K={n_clusters} fixed by the n_clusters setting"

    fit_values = values if len(values) <= sample_size else values[_sample_indices(len(values), sample_size, rng)]
    kmeans = KMeans(n_clusters=n_clusters, n_init=FIT_N_INIT, random_state=random_state).fit(fit_values)
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
    metrics = clustering_metrics(values, labels, model.centroids, rng)
    return FitResult(
        model=model,
        labels=labels,
        n_clusters=n_clusters,
        k_reason=k_reason,
        elbow=elbow,
        metrics=metrics,
        values=values,
    )


def clustering_metrics(
    values: np.ndarray, labels: np.ndarray, centroids: np.ndarray, rng: np.random.Generator
) -> dict[str, float | None]:
    """Inertia (sum of squared distances to the assigned centroid, all rows) and, on a sample of at
    most 5,000 rows, silhouette, Davies-Bouldin and Calinski-Harabasz (``None`` with one cluster)."""
    inertia = 0.0
    for start in range(0, len(values), PREDICT_CHUNK_ROWS):  # temporaries of a chunk's size only
        stop = start + PREDICT_CHUNK_ROWS
        inertia += float(((values[start:stop] - centroids[labels[start:stop]]) ** 2).sum())
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

        metrics["silhouette"] = silhouette_scores(sample, [sample_labels])[0]
        metrics["davies_bouldin"] = float(davies_bouldin_score(sample, sample_labels))
        metrics["calinski_harabasz"] = float(calinski_harabasz_score(sample, sample_labels))
    return {key: (None if value is None or not math.isfinite(value) else value) for key, value in metrics.items()}


def _sample_indices(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def _count_distinct_rows(values: np.ndarray, limit: int) -> int:
    """Distinct rows of ``values``, counted up to ``limit`` (enough to know whether K fits)."""
    seen: set[bytes] = set()
    for row in values:
        seen.add(row.tobytes())
        if len(seen) >= limit:
            break
    return len(seen)
