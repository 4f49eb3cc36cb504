"""A fitted model as plain numbers, and the transforms that turn features into its standardized space.

:class:`SegmentModel` holds the feature list, which features are log-transformed, their upper caps,
the scaler's mean and scale, and the centroids. Scoring uses those numbers alone (numpy, no
scikit-learn), so a model rebuilt from its stored form scores exactly like the one that was fitted.
"""

from __future__ import annotations

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
        """Index (0..K-1) of the nearest centroid for every row of ``frame``."""
        return nearest_centroid(self.transform(frame), self.centroids)

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
    values = log_features_array(frame, encoding, log_features)
    np.minimum(values, caps, out=values)
    values -= means
    values /= scales
    return values


def log_features_array(frame: pd.DataFrame, encoding: Encoding, log_features: tuple[str, ...]) -> np.ndarray:
    """``frame`` encoded as a (rows x features) array: numbers as they are (a missing attribute filled),
    each categorical level as 0/1, and signed log1p applied to ``log_features``."""
    levels = {column: categorical_levels(frame[column]) for column in encoding.categorical}
    columns = []
    for name in encoding.features:
        column, separator, level = name.partition("=")
        values: np.ndarray
        if separator and column in levels:
            values = (levels[column] == level).to_numpy(dtype=np.float64)
        else:
            numbers = pd.to_numeric(frame[name], errors="coerce").astype("float64")
            if name in encoding.fill_values:
                numbers = numbers.fillna(encoding.fill_values[name])
            values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        columns.append(signed_log1p(values) if name in log_features else values)
    array = np.column_stack(columns) if columns else np.empty((len(frame), 0))
    if np.isnan(array).any():
        raise ModelError("features contain missing values; only customers with net purchases are clustered")
    return array


def nearest_centroid(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean distance) for each row of ``values``."""
    distances = (
        np.einsum("ij,ij->i", values, values)[:, None]
        - 2.0 * values @ centroids.T
        + np.einsum("ij,ij->i", centroids, centroids)[None, :]
    )
    return distances.argmin(axis=1)


def fit_scaling(
    frame: pd.DataFrame, encoding: Encoding, winsorize_quantile: float
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Fit the transforms on ``frame``: which features get log1p, the caps, means and scales.

    The cap of each feature is its ``winsorize_quantile`` quantile after the log; mean and standard
    deviation are taken after capping. A constant feature gets scale 1 so it does not divide by zero.
    """
    log_features = tuple(name for name in encoding.features if name in LOG_TRANSFORMED)
    values = log_features_array(frame, encoding, log_features)
    caps, means, scales = standardize(values, winsorize_quantile)
    return log_features, caps, means, scales


def standardize(values: np.ndarray, winsorize_quantile: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the caps, means and scales on ``values`` (after the log) and apply them to ``values``, as
    :meth:`SegmentModel.transform` would."""
    caps = np.quantile(values, winsorize_quantile, axis=0) if winsorize_quantile < 1.0 else values.max(axis=0)
    np.minimum(values, caps, out=values)
    means = values.mean(axis=0)
    scales = values.std(axis=0)
    scales[np.isclose(scales, 0.0)] = 1.0  # a constant feature (up to rounding) does not divide by zero
    values -= means
    values /= scales
    return caps, means, scales
