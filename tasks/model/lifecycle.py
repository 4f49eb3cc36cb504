"""Model lifecycle: stored models, drift, and the fit-or-reuse decision.

A :class:`StoredModel` is a fitted :class:`~tasks.model.transform.SegmentModel` plus what makes segments stable
from one night to the next: the segment id and name of each centroid, the next unused id, and the
reference distribution of each feature for the population stability index (PSI). It is plain JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np

from tasks.errors import ModelError
from tasks.model.transform import MODEL_FORMAT_VERSION, SegmentModel, nearest_centroid

PSI_BINS = 10
DRIFT_SAMPLE_SIZE = 50_000
#: Probability floor of an empty PSI bin, so that log(0) does not make the index infinite.
PSI_EPSILON = 1e-4

ModelAction = Literal["fit", "reuse", "refit"]


@dataclass(frozen=True)
class StoredModel:
    """A model as kept in ``segment_models``: numbers, segment labels and drift references."""

    version: int
    model: SegmentModel
    winsorize_quantile: float
    segment_ids: tuple[int, ...]
    segment_names: tuple[str, ...]
    next_segment_id: int
    psi_reference: dict[str, dict[str, list[float]]]
    trained_as_of: date
    training_run_id: str
    metrics: dict[str, Any] = field(default_factory=dict)
    # per segment: the claims of its name (tasks.model.claims; empty when unknown) and its stability
    # under resampling when the model was fitted (None when not measured)
    segment_claims: tuple[tuple[str, ...], ...] = ()
    segment_stability: tuple[float | None, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": MODEL_FORMAT_VERSION,
            "version": self.version,
            "model": self.model.to_dict(),
            "winsorize_quantile": self.winsorize_quantile,
            "segment_ids": list(self.segment_ids),
            "segment_names": list(self.segment_names),
            "next_segment_id": self.next_segment_id,
            "psi_reference": self.psi_reference,
            "trained_as_of": self.trained_as_of.isoformat(),
            "training_run_id": self.training_run_id,
            "metrics": self.metrics,
            "segment_claims": [list(claims) for claims in self.segment_claims],
            "segment_stability": list(self.segment_stability),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredModel:
        """Rebuild from :meth:`to_dict` output; a malformed or foreign row raises :class:`ModelError`."""
        if not isinstance(data, dict) or data.get("format_version") != MODEL_FORMAT_VERSION:
            version = data.get("format_version") if isinstance(data, dict) else None
            raise ModelError(
                f"stored model has format version {version!r}; this release reads {MODEL_FORMAT_VERSION}. "
                "Run with --model-policy refit to fit a new one"
            )
        try:
            model = SegmentModel.from_dict(data["model"])
            ids = tuple(int(value) for value in data["segment_ids"])
            names = tuple(str(value) for value in data["segment_names"])
            if len(ids) != model.n_clusters or len(names) != model.n_clusters:
                raise ModelError(
                    f"stored model {data.get('version')} is malformed: {model.n_clusters} centroids but "
                    f"{len(ids)} segment ids and {len(names)} names"
                )
            return cls(
                version=int(data["version"]),
                model=model,
                winsorize_quantile=float(data["winsorize_quantile"]),
                segment_ids=ids,
                segment_names=names,
                next_segment_id=int(data["next_segment_id"]),
                psi_reference={str(k): v for k, v in data["psi_reference"].items()},
                trained_as_of=date.fromisoformat(data["trained_as_of"]),
                training_run_id=str(data["training_run_id"]),
                metrics=dict(data.get("metrics") or {}),
                # models stored before names had claims: unknown claims, unmeasured stability
                segment_claims=tuple(
                    tuple(map(str, claims)) for claims in data.get("segment_claims") or [()] * len(ids)
                ),
                segment_stability=tuple(data.get("segment_stability") or [None] * len(ids)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(
                f"stored model {data.get('version')} is malformed: {type(error).__name__}: {error}"
            ) from None


def psi_reference(
    values: np.ndarray, features: tuple[str, ...], bins: int = PSI_BINS
) -> dict[str, dict[str, list[float]]]:
    """Per feature: inner decile edges of the training values (transformed space) and the share of
    training values in each bin."""
    reference = {}
    for index, name in enumerate(features):
        column = values[:, index]
        edges = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]))
        shares = _bin_shares(column, edges)
        reference[name] = {"edges": edges.tolist(), "shares": shares.tolist()}
    return reference


def _bin_shares(column: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
    return counts / max(len(column), 1)


def population_stability_index(reference: dict[str, list[float]], column: np.ndarray) -> float:
    """PSI of ``column`` against a reference from :func:`psi_reference`: sum((a - e) * ln(a / e))."""
    expected = np.maximum(np.asarray(reference["shares"]), PSI_EPSILON)
    actual = np.maximum(_bin_shares(column, np.asarray(reference["edges"])), PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def mean_squared_distance(values: np.ndarray, centroids: np.ndarray) -> float:
    """Mean squared distance of each row to its nearest centroid."""
    labels = nearest_centroid(values, centroids)
    return float(((values - centroids[labels]) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class ModelDecision:
    """Whether to fit, reuse or refit, why, and the figures behind it."""

    action: ModelAction
    reason: str
    figures: dict[str, Any]


def decide_model_action(
    policy: Literal["auto", "reuse", "refit"],
    stored: StoredModel | None,
    purchasers: Any,
    *,
    features: tuple[str, ...],
    winsorize_quantile: float,
    as_of: date,
    max_model_age_days: int,
    psi_threshold: float,
    inertia_ratio_threshold: float,
    random_state: int,
) -> ModelDecision:
    """Apply the model policy.

    ``reuse`` takes the stored model (error if there is none or it was fitted on other features);
    ``refit`` always fits; ``auto`` refits when there is no model, its features or transforms changed,
    it is older than ``max_model_age_days``, any feature's PSI exceeds ``psi_threshold``, or its mean
    squared distance to its centroids on today's sample exceeds ``inertia_ratio_threshold`` times that
    of a fresh KMeans with the same K on the same sample (PSI alone misses a change of structure).
    """
    if stored is None:
        if policy == "reuse":
            raise ModelError("model policy 'reuse' but no model is stored yet; run with --model-policy auto or refit")
        return ModelDecision("fit", "no stored model yet", {})
    changed = _changes(stored, features, winsorize_quantile)
    if policy == "reuse":
        if changed:
            raise ModelError(f"model policy 'reuse' but the stored model {stored.version} differs: {changed}")
        return ModelDecision("reuse", f"policy reuse: model {stored.version}", {})
    if policy == "refit":
        return ModelDecision("refit", "policy refit", {})
    if changed:
        return ModelDecision("refit", f"features or transforms changed: {changed}", {})
    age = (as_of - stored.trained_as_of).days
    figures: dict[str, Any] = {"model_version": stored.version, "model_age_days": age}
    if age > max_model_age_days:
        return ModelDecision("refit", f"model {stored.version} is {age} days old (max {max_model_age_days})", figures)

    rng = np.random.default_rng(random_state)
    if len(purchasers) > DRIFT_SAMPLE_SIZE:  # sampled before the transform, which works row by row
        purchasers = purchasers.iloc[np.sort(rng.choice(len(purchasers), DRIFT_SAMPLE_SIZE, replace=False))]
    values = stored.model.transform(purchasers)
    psi = {
        name: population_stability_index(stored.psi_reference[name], values[:, index])
        for index, name in enumerate(stored.model.features)
    }
    figures["psi"] = psi
    worst = max(psi, key=lambda name: psi[name])
    if psi[worst] > psi_threshold:
        return ModelDecision("refit", f"drift: PSI of {worst} is {psi[worst]:.3f} (> {psi_threshold})", figures)

    from sklearn.cluster import KMeans  # here, not at the top: exports and scoring read models, never fit

    stored_msd = mean_squared_distance(values, stored.model.centroids)
    fresh = KMeans(n_clusters=stored.model.n_clusters, n_init=2, random_state=random_state).fit(values)
    fresh_msd = float(fresh.inertia_) / len(values)
    ratio = stored_msd / fresh_msd if fresh_msd > 0 else float("inf")
    figures |= {"stored_mean_sq_distance": stored_msd, "fresh_mean_sq_distance": fresh_msd, "inertia_ratio": ratio}
    if ratio > inertia_ratio_threshold:
        return ModelDecision(
            "refit",
            f"drift: the stored centroids fit today's customers {ratio:.2f}x worse than a fresh fit "
            f"(> {inertia_ratio_threshold})",
            figures,
        )
    return ModelDecision(
        "reuse",
        f"no drift: max PSI {psi[worst]:.3f} ({worst}), inertia ratio {ratio:.2f}; "
        f"model {stored.version} is {age} days old",
        figures,
    )


def _changes(stored: StoredModel, features: tuple[str, ...], winsorize_quantile: float) -> str:
    changes = []
    if stored.model.input_columns != features:
        changes.append(f"features {','.join(stored.model.input_columns)} -> {','.join(features)}")
    if not np.isclose(stored.winsorize_quantile, winsorize_quantile):
        changes.append(f"winsorize quantile {stored.winsorize_quantile} -> {winsorize_quantile}")
    return "; ".join(changes)
