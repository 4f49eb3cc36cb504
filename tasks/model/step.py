"""The model step: fit or reuse a model by policy, label every customer, keep segment ids stable, name
each segment by what is true of its members, and build the output rows. Plain data in and out: no
database, no Prefect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from tasks.model.choose_k import KCurve
from tasks.model.claims import SegmentName, member_frames, name_segments, true_share
from tasks.model.fit import clustering_metrics, fit_segment_model
from tasks.model.lifecycle import ModelDecision, StoredModel, decide_model_action, psi_reference
from tasks.model.matching import match_segments
from tasks.model.naming import NO_NET_PURCHASES_NAME, attribute_segment_labels, cluster_means, fresh_segment_ids
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
    curve: KCurve | None
    metrics: dict[str, float | None]
    segments: SegmentTable
    new_model: StoredModel | None
    segment_changes: dict[str, Any]
    segment_names: tuple[str, ...]
    comparison: list[dict[str, Any]] | None = None
    #: on a refit, each customer's segment id under the model it replaces (0 without net purchases),
    #: in the order of the assignments: who moved only because the model changed
    previous_model_segments: np.ndarray | None = None

    @property
    def allowed_names(self) -> set[str]:
        """Names a customer of this run may have: the model's and the reserved one."""
        return set(self.segment_names) | {NO_NET_PURCHASES_NAME}

    @property
    def n_clusters(self) -> int:
        return self.model.n_clusters


@dataclass(frozen=True)
class Labelling:
    """Each cluster index's segment id, name (with its claims and purity) and stability."""

    ids: tuple[int, ...]
    names: list[SegmentName]
    stability: tuple[float | None, ...]
    next_id: int
    changes: dict[str, Any]


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
    each cluster its stable segment id and a name true of its members, and build the assignment and
    profile rows.

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
    curve = None
    if decision.action == "reuse":
        assert stored is not None
        model, version = stored.model, stored.version
        values = model.transform(purchasers)
        labels = nearest_centroid(values, model.centroids)
        metrics = clustering_metrics(values, labels, model.centroids, np.random.default_rng(settings.random_state))
        labelling = reused_labelling(stored, scored, labels, settings.attributes_only)
        k_reason = f"K={model.n_clusters} of stored model {version}"
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
            previous=model_refitted(stored, settings),
        )
        model, labels, metrics, k_reason, curve = fit.model, fit.labels, fit.metrics, fit.k_reason, fit.curve
        version = stored.version + 1 if stored else 1
        stability = tuple(float(value) if np.isfinite(value) else None for value in fit.stability)
        labelling = fitted_labelling(model, stored, scored, labels, stability, settings)
        new_model = StoredModel(
            version=version,
            model=model,
            winsorize_quantile=settings.winsorize_quantile,
            segment_ids=labelling.ids,
            segment_names=tuple(name.name for name in labelling.names),
            next_segment_id=labelling.next_id,
            psi_reference=psi_reference(fit.values, model.features),
            trained_as_of=as_of,
            training_run_id=run_id,
            metrics=metrics,
            segment_claims=tuple(name.claims for name in labelling.names),
            segment_stability=labelling.stability,
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
        segment_ids=labelling.ids,
        segment_names=labelling.names,
        stability=labelling.stability,
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
        curve=curve,
        metrics=metrics,
        segments=segments,
        new_model=new_model,
        segment_changes=labelling.changes,
        segment_names=tuple(name.name for name in labelling.names),
        previous_model_segments=(
            segments_under(stored, purchasers, clustered) if new_model is not None and stored is not None else None
        ),
    )


def model_refitted(stored: StoredModel | None, settings: SegmentSettings) -> SegmentModel | None:
    """The model a refit replaces, when it has the same features: its K and centroids are where the
    refit starts from."""
    return stored.model if stored is not None and stored.model.input_columns == settings.features else None


def segments_under(stored: StoredModel, purchasers: pd.DataFrame, clustered: pd.Series) -> np.ndarray | None:
    """Each customer's segment id under the ``stored`` model (0 for those not clustered), in the order
    of ``clustered``; ``None`` when the stored model reads columns today's features lack."""
    if not set(stored.model.input_columns) <= set(purchasers.columns):
        return None
    segments = np.zeros(len(clustered), dtype=np.int64)
    labels = nearest_centroid(stored.model.transform(purchasers), stored.model.centroids)
    segments[clustered.to_numpy()] = np.asarray(stored.segment_ids, dtype=np.int64)[labels]
    return segments


def fitted_labelling(
    model: SegmentModel,
    stored: StoredModel | None,
    scored: pd.DataFrame,
    labels: np.ndarray,
    stability: tuple[float | None, ...],
    settings: SegmentSettings,
) -> Labelling:
    """Ids and names of a new model's clusters: matched to the stored model's (same features), which
    keep their id, and their name where it is still true; otherwise fresh ids from the most to the
    least valuable cluster (RFM) or the largest (attributes alone), after every id a past model had."""
    sizes = np.bincount(labels, minlength=model.n_clusters).tolist()
    if settings.attributes_only:
        fresh_ids, fresh_names = attribute_segment_labels(model, sizes)
        names = [SegmentName(name, (), None) for name in fresh_names]
    else:
        fresh_ids = fresh_segment_ids(cluster_means(scored, labels, model.n_clusters))
        names = []
    keep: dict[int, tuple[str, ...]] = {}
    previous_ids: tuple[int, ...] = stored.segment_ids if stored else ()
    if stored is not None and stored.model.features == model.features:
        match = match_segments(model, stored)
        ids, next_id = match.segment_ids, match.next_segment_id
        claims_of = dict(zip(stored.segment_ids, stored.segment_claims, strict=True))
        keep = {index: claims_of[segment] for index, segment in match.matched.items() if claims_of[segment]}
    else:
        offset = stored.next_segment_id - 1 if stored else 0  # never reuse an id a past model had
        ids = tuple(segment + offset for segment in fresh_ids)
        next_id = max(ids) + 1
    if not settings.attributes_only:
        names = name_segments(member_frames(scored, labels, model.n_clusters), keep)
    ids = one_id_per_name(ids, names)
    changes = {
        "kept": sorted(set(ids) & set(previous_ids)),
        "new": sorted(set(ids) - set(previous_ids)),
        "retired": sorted(set(previous_ids) - set(ids)),
    }
    return Labelling(ids, names, stability, next_id, changes)


def one_id_per_name(ids: Sequence[int], names: Sequence[SegmentName]) -> tuple[int, ...]:
    """Clusters that no claim tells apart keep one name (:mod:`tasks.model.claims`): they are one
    segment, under the smallest of their ids."""
    first: dict[str, int] = {}
    for segment, name in zip(ids, names, strict=True):
        first[name.name] = min(first.get(name.name, segment), segment)
    return tuple(first[name.name] for name in names)


def reused_labelling(stored: StoredModel, scored: pd.DataFrame, labels: np.ndarray, attributes_only: bool) -> Labelling:
    """The stored model's ids, names and stability, each name's purity measured on today's members."""
    names = []
    members_of = None if attributes_only else member_frames(scored, labels, stored.model.n_clusters)
    for index, (name, claims) in enumerate(zip(stored.segment_names, stored.segment_claims, strict=True)):
        purity = true_share(members_of[index], claims) if members_of is not None and claims else None
        names.append(SegmentName(name, claims, purity))
    changes = {"kept": list(stored.segment_ids), "new": [], "retired": []}
    return Labelling(stored.segment_ids, names, stored.segment_stability, stored.next_segment_id, changes)
