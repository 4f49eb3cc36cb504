"""Choosing K: for each K of the range, a KMeans on a sample of the customers, its silhouette and how
stable its clusters are under resampling; K is the largest of the stable ones whose silhouette is as
good as the best.

Stability is Hennig's clusterboot: the customers are resampled with replacement, clustered again, and
each original cluster is compared with its most similar cluster of the resample by the Jaccard index
of their members (on the customers drawn). A cluster whose mean Jaccard over the resamples is 0.75 or
more is stable; below 0.6 it is not a pattern of the data but of the run.

On RFM data, a continuum, the silhouette alone prefers K=2 or 3 and the knee of the elbow curve 2 to
4, which marketing cannot use, while stability alone prefers the fewest clusters: the range starts at
a K marketing can use (4 by default), and within it the rule takes as many segments as stay stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Hennig's thresholds for a cluster's mean bootstrap Jaccard.
STABLE = 0.75
UNSTABLE = 0.6
#: Silhouettes within this of the best stable K's count as equally good: the larger K is taken.
SILHOUETTE_MARGIN = 0.02
SELECTION_SAMPLE_SIZE = 10_000
BOOTSTRAPS = 20
SELECTION_N_INIT = 3


@dataclass(frozen=True)
class KCurve:
    """What each K = 1..k_max scored on the selection sample: within-cluster sum of squares (the elbow
    curve), silhouette (K >= 2), and for the K of the range the smallest of its clusters'
    stabilities; the knee of the elbow (shown in the report, not the rule), the chosen K and why."""

    ks: list[int]
    inertias: list[float]
    silhouettes: list[float | None]
    stabilities: list[float | None]
    knee: int | None
    chosen: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "ks": self.ks,
            "inertias": self.inertias,
            "silhouettes": self.silhouettes,
            "stabilities": self.stabilities,
            "knee": self.knee,
            "chosen": self.chosen,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KCurve:
        """A curve as stored in ``segment_runs.elbow``; older runs stored no stabilities."""
        ks = [int(k) for k in data["ks"]]
        return cls(
            ks=ks,
            inertias=[float(value) for value in data["inertias"]],
            silhouettes=list(data["silhouettes"]),
            stabilities=list(data.get("stabilities") or [None] * len(ks)),
            knee=data.get("knee"),
            chosen=int(data.get("chosen") or data.get("knee") or ks[0]),
            reason=str(data.get("reason") or ""),
        )


def cluster_stability(
    values: np.ndarray, labels: np.ndarray, resamples: list[np.ndarray], random_state: int
) -> np.ndarray:
    """Each cluster's mean Jaccard over ``resamples`` (indices drawn with replacement from the rows
    of ``values``): the rows drawn are clustered again with KMeans and every cluster of ``labels`` is
    compared with its most similar cluster there. A resample with fewer distinct rows than clusters
    cannot be clustered and is left out (NaN when every one is)."""
    from sklearn.cluster import KMeans

    k = int(labels.max()) + 1
    jaccards = []
    for index, drawn in enumerate(resamples):
        rows = np.unique(drawn)
        if count_distinct_rows(values[rows], limit=k) < k:
            continue
        again = KMeans(n_clusters=k, n_init=SELECTION_N_INIT, random_state=random_state + index).fit(values[rows])
        jaccards.append(best_jaccards(labels[rows], again.labels_, k))
    return np.mean(jaccards, axis=0) if jaccards else np.full(k, np.nan)


def count_distinct_rows(values: np.ndarray, limit: int) -> int:
    """Distinct rows of ``values``, counted up to ``limit`` (enough to know whether K fits): a scan that
    stops early, where sorting every row to count them all costs more than clustering them."""
    seen: set[bytes] = set()
    for row in values:
        seen.add(row.tobytes())
        if len(seen) >= limit:
            break
    return len(seen)


def best_jaccards(reference: np.ndarray, other: np.ndarray, k: int) -> np.ndarray:
    """For each cluster of ``reference`` (0..k-1), the largest Jaccard index with a cluster of
    ``other``, both labelings of the same rows."""
    both = np.zeros((k, int(other.max()) + 1))
    np.add.at(both, (reference, other), 1)
    sizes = both.sum(axis=1)[:, None] + both.sum(axis=0)[None, :] - both
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(both / sizes).max(axis=1)


def resamples_of(rows: int, rng: np.random.Generator, count: int = BOOTSTRAPS) -> list[np.ndarray]:
    """``count`` bootstrap draws (with replacement) of ``rows`` row indices."""
    return [rng.integers(0, rows, rows) for _ in range(count)]


def choose_k(values: np.ndarray, k_min: int, k_max: int, random_state: int) -> KCurve:
    """Score K = 1..``k_max`` on ``values`` (a sample of standardized customers) and choose among
    ``k_min``..``k_max``: of the K whose every cluster is stable (mean bootstrap Jaccard >= 0.75), the
    largest whose silhouette is within 0.02 of the best of them; when none is stable, the K whose
    least stable cluster is the most stable."""
    from sklearn.cluster import KMeans

    from tasks.model.fit import find_knee, sampled_silhouette

    resamples = resamples_of(len(values), np.random.default_rng(random_state))
    ks = list(range(1, min(k_max, len(values) - 1) + 1))
    inertias: list[float] = []
    silhouettes: list[float | None] = []
    stabilities: list[float | None] = []
    for k in ks:
        kmeans = KMeans(n_clusters=k, n_init=SELECTION_N_INIT, random_state=random_state).fit(values)
        inertias.append(float(kmeans.inertia_))
        silhouettes.append(sampled_silhouette(values, kmeans.labels_, random_state) if k > 1 else None)
        in_range = k >= k_min
        stabilities.append(
            _least(cluster_stability(values, kmeans.labels_, resamples, random_state)) if in_range else None
        )
    candidates = [index for index, k in enumerate(ks) if k >= k_min]
    if not candidates:  # fewer distinct customers than k_min: the largest K there is
        candidates = [len(ks) - 1]
        stabilities[-1] = _least(cluster_stability(values, kmeans.labels_, resamples, random_state))
    stable = [index for index in candidates if (stabilities[index] or 0.0) >= STABLE]
    if stable:
        best = max(silhouettes[index] or -1.0 for index in stable)
        index = max(index for index in stable if (silhouettes[index] or -1.0) >= best - SILHOUETTE_MARGIN)
        reason = (
            f"K={ks[index]}: the most segments of {k_min}..{k_max} that are all stable under resampling "
            f"(the least stable at {stabilities[index]:.2f}) with a silhouette within {SILHOUETTE_MARGIN} of the "
            f"best ({silhouettes[index] or 0.0:.3f})"
        )
    else:
        index = max(candidates, key=lambda position: (stabilities[position] or 0.0, -ks[position]))
        reason = (
            f"K={ks[index]}: no K of {k_min}..{k_max} had every segment stable under resampling; this K's least "
            f"stable segment was the most stable ({stabilities[index] or 0.0:.2f})"
        )
    return KCurve(
        ks=ks,
        inertias=inertias,
        silhouettes=silhouettes,
        stabilities=stabilities,
        knee=find_knee(ks, inertias),
        chosen=ks[index],
        reason=reason,
    )


def _least(stability: np.ndarray) -> float | None:
    """The least stable cluster's stability, ``None`` when it could not be measured."""
    least = float(np.min(stability))
    return least if np.isfinite(least) else None
