"""The run's output rows: one assignment per customer (features, scores, segment) and one profile per
segment (size, share, purity, stability, feature means and medians, centroid)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

from tasks.model.claims import SegmentName, persona_of
from tasks.model.naming import NO_NET_PURCHASES_ID, NO_NET_PURCHASES_NAME, PERSONAS, SegmentPersona
from tasks.model.transform import MISSING_LEVEL, SegmentModel
from tasks.settings import COMPUTED_FEATURES


@dataclass(frozen=True)
class SegmentTable:
    """The run's output frames: one row per customer, and one profile per segment."""

    assignments: pd.DataFrame
    profiles: pd.DataFrame


def build_segments(
    scored: pd.DataFrame,
    labels: np.ndarray,
    model: SegmentModel,
    *,
    clustered: pd.Series,
    segment_ids: Sequence[int],
    segment_names: Sequence[SegmentName],
    stability: Sequence[float | None],
    as_of: date,
    run_id: str,
    model_version: str,
    scored_at: datetime,
) -> SegmentTable:
    """Join features, scores and labels into the ``customer_segments`` and ``segment_profiles`` rows.

    ``scored`` holds every customer of the run (from :func:`with_scores`); ``clustered`` marks those
    that were clustered (:func:`clusterable`) and ``labels`` holds their cluster index (0..K-1), in
    their order; ``segment_ids``, ``segment_names`` and ``stability`` the id, name and stability of
    each cluster index. The other customers (no net purchases) get the reserved segment 0. Customer
    attributes the model used are kept as columns after the transaction features.
    """
    attributes = [name for name in model.input_columns if name not in COMPUTED_FEATURES]
    cluster = pd.Series(-1, index=scored.index, dtype="int64")
    cluster.loc[clustered] = labels
    segment_of_cluster = {index: int(segment) for index, segment in enumerate(segment_ids)}
    names = {int(segment): name.name for segment, name in zip(segment_ids, segment_names, strict=True)}
    scored = scored.copy(deep=False)  # copy-on-write (pandas 3): the caller's frame stays as it was
    scored["segment_id"] = cluster.map(segment_of_cluster).fillna(NO_NET_PURCHASES_ID).astype("int64")
    scored["segment_name"] = (
        scored["segment_id"].map(names | {NO_NET_PURCHASES_ID: NO_NET_PURCHASES_NAME}).astype("category")
    )
    scored["as_of"] = as_of
    scored["run_id"] = run_id
    scored["model_version"] = model_version
    scored["scored_at"] = scored_at

    about = {
        int(segment): (name, stable)
        for segment, name, stable in zip(segment_ids, segment_names, stability, strict=True)
    }
    centroids = _segment_centroids(cluster, model, segment_of_cluster)
    profiles = _profiles(scored, model, centroids, attributes, about, as_of=as_of, run_id=run_id)
    columns = [
        "customer_id",
        "segment_id",
        "segment_name",
        *COMPUTED_FEATURES,
        "r_score",
        "f_score",
        "m_score",
        "as_of",
        "run_id",
        "model_version",
        "scored_at",
        *attributes,
    ]
    return SegmentTable(assignments=scored[columns].reset_index(drop=True), profiles=profiles)


def _profiles(
    scored: pd.DataFrame,
    model: SegmentModel,
    centroid_of_segment: dict[int, list[float]],
    attributes: list[str],
    about: dict[int, tuple[SegmentName, float | None]],
    *,
    as_of: date,
    run_id: str,
) -> pd.DataFrame:
    total = len(scored)
    segment_ids = scored["segment_id"].to_numpy()
    scores = ["r_score", "f_score", "m_score"]
    values = scored[[*COMPUTED_FEATURES, *scores]].astype("float64").groupby(segment_ids, sort=True)
    sizes = values.size()
    mean_of, median_of = values.mean().to_dict("index"), values[list(COMPUTED_FEATURES)].median().to_dict("index")
    segment_names = scored.drop_duplicates("segment_id").set_index("segment_id")["segment_name"]
    members_of = (
        dict(iter(scored[["segment_id", *attributes]].groupby("segment_id", sort=True, observed=True)))
        if attributes
        else {}
    )
    purchasers = scored.loc[scored["frequency"] > 0] if scored["frequency"].notna().any() else None
    rows = []
    for segment_id in sizes.index:
        name = str(segment_names[segment_id])
        named, stability = about.get(int(segment_id), (None, None))
        if segment_id == NO_NET_PURCHASES_ID:
            persona = PERSONAS[NO_NET_PURCHASES_NAME]
        elif named is not None and named.claims and purchasers is not None:
            persona = persona_of(named, purchasers.loc[purchasers["segment_id"] == segment_id])
        else:
            persona = _attribute_persona(name)
        row: dict[str, object] = {
            "run_id": run_id,
            "as_of": as_of,
            "segment_id": int(segment_id),
            "segment_name": name,
            "description": persona.description,
            "recommended_action": persona.recommended_action,
            "customers": int(sizes[segment_id]),
            "share": int(sizes[segment_id]) / total,
            "purity": None if named is None else named.purity,
            "stability": stability,
        }
        for feature in COMPUTED_FEATURES:
            row[f"mean_{feature}"] = _float_or_none(mean_of[segment_id][feature])
            row[f"median_{feature}"] = _float_or_none(median_of[segment_id][feature])
        for score in scores:
            row[f"mean_{score}"] = _float_or_none(mean_of[segment_id][score])
        centroid = centroid_of_segment.get(int(segment_id))
        row["centroid"] = json.dumps(dict(zip(model.features, centroid, strict=True))) if centroid else None
        row["attribute_means"] = (
            json.dumps(_attribute_means(members_of[segment_id], model, attributes)) if attributes else None
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _segment_centroids(
    cluster: pd.Series, model: SegmentModel, segment_of_cluster: dict[int, int]
) -> dict[int, list[float]]:
    """Each segment's centroid: its cluster's, or for a segment of several clusters (which no claim
    told apart) their mean weighted by members."""
    sizes = cluster[cluster >= 0].value_counts()
    centroids: dict[int, list[float]] = {}
    for segment in set(segment_of_cluster.values()):
        indexes = [index for index, of in segment_of_cluster.items() if of == segment]
        weights = np.array([sizes.get(index, 0) for index in indexes], dtype=np.float64)
        weights = weights if weights.sum() > 0 else np.ones(len(indexes))
        centroids[segment] = np.average(model.centroids[indexes], axis=0, weights=weights).tolist()
    return centroids


def _attribute_means(members: pd.DataFrame, model: SegmentModel, attributes: list[str]) -> dict[str, float | None]:
    """Mean of each numeric attribute and the share of each categorical level among ``members``."""
    means: dict[str, float | None] = {}
    for column in attributes:
        if column in model.categorical:
            levels = members[column].astype("string").fillna(MISSING_LEVEL)
            for level in model.categorical[column]:
                means[f"{column}={level}"] = float((levels == level).mean())
        else:
            means[column] = _float_or_none(pd.to_numeric(members[column], errors="coerce").mean())
    return means


def _attribute_persona(name: str) -> SegmentPersona:
    return SegmentPersona(
        f"{name}, compared with the average customer (see the feature means).",
        "Tailor offers and messages to this profile, and compare the segment's response with the others.",
    )


def _float_or_none(value: float) -> float | None:
    return None if pd.isna(value) else float(value)
