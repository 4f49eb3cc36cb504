"""Stable segment ids: a refitted model's centroids take the ids and names of the previous model's
nearest ones, so that "Champions" stays segment 1 unless the customers really changed."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.errors import ModelError
from tasks.model.lifecycle import StoredModel
from tasks.model.transform import SegmentModel


@dataclass(frozen=True)
class SegmentMatch:
    """Segment ids and names of a refitted model's centroids, and how they were matched."""

    segment_ids: tuple[int, ...]
    segment_names: tuple[str, ...]
    next_segment_id: int
    matched: dict[int, int]  # new centroid index -> previous segment id
    retired: tuple[int, ...]


def match_segments(new_model: SegmentModel, previous: StoredModel, grid_names: list[str]) -> SegmentMatch:
    """Give a refitted model's centroids the ids and names of the previous model's nearest ones.

    Previous centroids are carried into the new model's standardized space (undo the old scaling,
    apply the new), and an optimal one-to-one assignment on squared distance
    (``scipy.optimize.linear_sum_assignment``) pairs them. Matched centroids keep id and name; new
    ones get fresh ids and a name from ``grid_names`` (their RFM cell) made unique; previous segments
    left unmatched are retired. K may change.
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
    names_of_old = dict(zip(previous.segment_ids, previous.segment_names, strict=True))

    ids: list[int] = []
    names: list[str] = []
    next_id = previous.next_segment_id
    taken = {names_of_old[segment] for segment in matched.values()}
    for index in range(new_model.n_clusters):
        if index in matched:
            ids.append(matched[index])
            names.append(names_of_old[matched[index]])
            continue
        ids.append(next_id)
        next_id += 1
        names.append(unique_name(grid_names[index], taken))
        taken.add(names[-1])
    retired = tuple(sorted(set(previous.segment_ids) - set(matched.values())))
    return SegmentMatch(tuple(ids), tuple(names), next_id, matched, retired)


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base (2)``, ``base (3)``... whichever is not taken yet."""
    if base not in taken:
        return base
    suffix = 2
    while f"{base} ({suffix})" in taken:
        suffix += 1
    return f"{base} ({suffix})"
