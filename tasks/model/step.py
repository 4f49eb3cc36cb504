"""The model step: fit or reuse a model by policy, label every customer, keep segment ids stable, and
build the output rows. Plain data in and out: no database, no Prefect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from tasks.model.fit import ElbowCurve, clustering_metrics, fit_segment_model
from tasks.model.lifecycle import ModelDecision, StoredModel, decide_model_action, psi_reference
from tasks.model.matching import match_segments
from tasks.model.naming import (
    NO_NET_PURCHASES_NAME,
    attribute_segment_labels,
    cluster_means,
    fresh_segment_labels,
    grid_names,
)
from tasks.model.scores import clusterable, with_scores
from tasks.model.segments import SegmentTable, build_segments
from tasks.model.transform import SegmentModel, nearest_centroid
from tasks.settings import SegmentSettings


@dataclass(frozen=True)
class ModelOutcome:
    """The model decision, the model that scored the run, and the output rows built from it."""

    decision: ModelDecision
    model: SegmentModel
    model_version: int
    labels: np.ndarray
    k_reason: str
    elbow: ElbowCurve | None
    metrics: dict[str, float | None]
    segments: SegmentTable
    new_model: StoredModel | None
    segment_changes: dict[str, Any]
    segment_names: tuple[str, ...]
    comparison: list[dict[str, Any]] | None = None

    @property
    def allowed_names(self) -> set[str]:
        """Names a customer of this run may have: the model's and the reserved one."""
        return set(self.segment_names) | {NO_NET_PURCHASES_NAME}

    @property
    def n_clusters(self) -> int:
        return self.model.n_clusters


# Native thread pools (KMeans' OpenMP, OpenBLAS) held to one thread: on a few features their threads
# only wait on each other, and many times longer while the database holds the other core.
@threadpool_limits.wrap(limits=1)
def segment_features(
    features: pd.DataFrame,
    as_of: date,
    settings: SegmentSettings,
    *,
    run_id: str,
    scored_at: datetime,
    stored: StoredModel | None,
) -> ModelOutcome:
    """Decide to fit, reuse or refit (the model policy), score every customer with net purchases, give
    each cluster its stable segment id and name, and build the assignment and profile rows.

    ``features`` holds one row per customer of the run (the extract's features, and customer
    attributes when the settings name some); ``as_of`` is the run's date."""
    clustered = clusterable(features)
    purchasers = features.loc[clustered]
    decision = decide_model_action(
        settings.model_policy,
        stored,
        purchasers,
        features=settings.features,
        winsorize_quantile=settings.winsorize_quantile,
        as_of=as_of,
        max_model_age_days=settings.max_model_age_days,
        psi_threshold=settings.drift_psi_threshold,
        inertia_ratio_threshold=settings.drift_inertia_ratio,
        random_state=settings.random_state,
    )
    scored = with_scores(features)
    new_model: StoredModel | None = None
    if decision.action == "reuse":
        assert stored is not None
        model, version = stored.model, stored.version
        values = model.transform(purchasers)
        labels = nearest_centroid(values, model.centroids)
        metrics = clustering_metrics(values, labels, model.centroids, np.random.default_rng(settings.random_state))
        del values
        ids, names = stored.segment_ids, stored.segment_names
        k_reason, elbow = f"K={model.n_clusters} of stored model {version}", None
        changes: dict[str, Any] = {"kept": list(ids), "new": [], "retired": []}
    else:
        fit = fit_segment_model(
            purchasers,
            settings.features,
            n_clusters=settings.n_clusters,
            k_min=settings.k_min,
            k_max=settings.k_max,
            sample_size=settings.sample_size,
            winsorize_quantile=settings.winsorize_quantile,
            random_state=settings.random_state,
        )
        model, labels, metrics, k_reason, elbow = fit.model, fit.labels, fit.metrics, fit.k_reason, fit.elbow
        version = stored.version + 1 if stored else 1
        if settings.attributes_only:
            sizes = np.bincount(labels, minlength=model.n_clusters).tolist()
            fresh_ids, fresh_names = attribute_segment_labels(model, sizes)
            base_names = list(fresh_names)
        else:
            means = cluster_means(scored, labels, model.n_clusters)
            fresh_ids, fresh_names = fresh_segment_labels(means)
            base_names = grid_names(means)
        if stored is not None and stored.model.features == model.features:
            match = match_segments(model, stored, base_names)
            ids, names, next_id = match.segment_ids, match.segment_names, match.next_segment_id
            kept = sorted(match.matched.values())
            changes = {"kept": kept, "new": sorted(set(ids) - set(kept)), "retired": list(match.retired)}
        else:
            names = fresh_names
            offset = stored.next_segment_id - 1 if stored else 0  # never reuse an id a past model had
            ids = tuple(segment + offset for segment in fresh_ids)
            next_id = max(ids) + 1
            changes = {"kept": [], "new": sorted(ids), "retired": list(stored.segment_ids) if stored else []}
        new_model = StoredModel(
            version=version,
            model=model,
            winsorize_quantile=settings.winsorize_quantile,
            segment_ids=ids,
            segment_names=names,
            next_segment_id=next_id,
            psi_reference=psi_reference(fit.values, model.features),
            trained_as_of=as_of,
            training_run_id=run_id,
            metrics=metrics,
        )
    comparison = None
    if settings.compare_algorithms:
        from tasks.model.compare import compare_algorithms  # scikit-learn's other algorithms, on request

        comparison = compare_algorithms(model.transform(purchasers), model.n_clusters, settings.random_state)
    segments = build_segments(
        scored,
        labels,
        model,
        clustered=clustered,
        segment_ids=ids,
        segment_names=names,
        as_of=as_of,
        run_id=run_id,
        model_version=str(version),
        scored_at=scored_at,
    )
    return ModelOutcome(
        comparison=comparison,
        decision=decision,
        model=model,
        model_version=version,
        labels=labels,
        k_reason=k_reason,
        elbow=elbow,
        metrics=metrics,
        segments=segments,
        new_model=new_model,
        segment_changes=changes,
        segment_names=tuple(names),
    )
