"""Stable segment ids: a refitted model's centroids take the ids of the previous model's nearest ones,
so that "Champions" stays segment 1 unless the customers really changed (and keep their names where
those are still true: :mod:`tasks.model.claims`)."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.errors import ModelError
from tasks.model.lifecycle import StoredModel
from tasks.model.transform import SegmentModel


@dataclass(frozen=True)
class SegmentMatch:
    """Segment ids of a refitted model's centroids, and how they were matched."""

    segment_ids: tuple[int, ...]
    next_segment_id: int
    matched: dict[int, int]  # new centroid index -> previous segment id
    retired: tuple[int, ...]


def match_segments(new_model: SegmentModel, previous: StoredModel) -> SegmentMatch:
    """Give a refitted model's centroids the ids of the previous model's nearest ones.

    Previous centroids are carried into the new model's standardized space (undo the old scaling,
    apply the new), and an optimal one-to-one assignment on squared distance
    (``scipy.optimize.linear_sum_assignment``) pairs them. Matched centroids keep their id; new ones
    get fresh ids; previous segments left unmatched are retired. K may change.
    """
    if previous.model.features != new_model.features:
        raise ModelError("cannot match segments of models fitted on different features")
    from scipy.optimize import linear_sum_assignment

    old = previous.model.centroids * previous.model.scales + previous.model.means
    old_in_new_space = (old - new_model.means) / new_model.scales
    distances = ((new_model.centroids[:, None, :] - old_in_new_space[None, :, :]) ** 2).sum(axis=2)
    new_rows, old_columns = linear_sum_assignment(distances)
    matched = {
        int(new): previous.segment_ids[int(old_index)] for new, old_index in zip(new_rows, old_columns, strict=True)
    }
    ids: list[int] = []
    next_id = previous.next_segment_id
    for index in range(new_model.n_clusters):
        if index in matched:
            ids.append(matched[index])
        else:
            ids.append(next_id)
            next_id += 1
    retired = tuple(sorted(set(previous.segment_ids) - set(matched.values())))
    return SegmentMatch(tuple(ids), next_id, matched, retired)
