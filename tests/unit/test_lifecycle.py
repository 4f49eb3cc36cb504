"""Lifecycle decisions and id matching on small arrays, without a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from tasks.model.fit import fit_segment_model
from tasks.model.lifecycle import StoredModel, decide_model_action, population_stability_index, psi_reference
from tasks.model.matching import match_segments

FEATURES = ("recency_days", "frequency", "monetary")
AS_OF = date(2024, 3, 1)


def two_groups(diagonal: bool, n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Half the customers frequent, half rare; half big spenders, half small. On the diagonal the
    frequent ones spend big; off it, the rare ones do. The marginals are the same either way."""
    rng = np.random.default_rng(seed)
    frequent = np.repeat([True, False], n // 2)
    big = frequent if diagonal else ~frequent
    return pd.DataFrame(
        {
            "recency_days": rng.uniform(10, 20, n).round(),
            "frequency": np.where(frequent, 30, 2) * rng.uniform(0.9, 1.1, n),
            "monetary": np.where(big, 5000.0, 50.0) * rng.uniform(0.9, 1.1, n),
        }
    )


def stored_from(frame: pd.DataFrame, k: int = 2, trained: date = AS_OF) -> StoredModel:
    fit = fit_segment_model(
        frame, FEATURES, n_clusters=k, k_min=2, k_max=10, sample_size=10_000, winsorize_quantile=1.0, random_state=0
    )
    return StoredModel(
        version=3,
        model=fit.model,
        winsorize_quantile=1.0,
        segment_ids=tuple(range(1, k + 1)),
        segment_names=tuple(f"segment {i}" for i in range(1, k + 1)),
        next_segment_id=k + 1,
        psi_reference=psi_reference(fit.model.transform(frame), FEATURES),
        trained_as_of=trained,
        training_run_id="r",
    )


def decide(stored: StoredModel | None, frame: pd.DataFrame, policy: str = "auto", as_of: date = AS_OF):
    return decide_model_action(
        policy,
        stored,
        frame,
        features=FEATURES,
        winsorize_quantile=1.0,
        as_of=as_of,
        max_model_age_days=30,  # type: ignore[arg-type]
        psi_threshold=0.25,
        inertia_ratio_threshold=1.25,
        random_state=0,
    )


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(1)
    training = rng.normal(0, 1, (5000, 1))
    reference = psi_reference(training, ("x",))["x"]

    assert population_stability_index(reference, rng.normal(0, 1, 5000)) < 0.02
    assert population_stability_index(reference, rng.normal(1, 1, 5000)) > 0.25


def test_a_change_of_structure_psi_cannot_see_triggers_a_refit() -> None:
    stored = stored_from(two_groups(diagonal=True))

    same = decide(stored, two_groups(diagonal=True, seed=5))
    swapped = decide(stored, two_groups(diagonal=False, seed=5))

    assert same.action == "reuse"
    assert max(swapped.figures["psi"].values()) < 0.25  # the marginals did not move
    assert swapped.action == "refit" and "fit today's customers" in swapped.reason
    assert swapped.figures["inertia_ratio"] > 1.25


def test_drift_is_measured_on_a_sample_transformed_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # only the sample is transformed, and it gives the figures those customers alone give
    import tasks.model.lifecycle as lifecycle

    stored = stored_from(two_groups(diagonal=True))
    today = two_groups(diagonal=True, seed=5)
    whole = decide(stored, today)  # fewer customers than a sample: all of them
    monkeypatch.setattr(lifecycle, "DRIFT_SAMPLE_SIZE", 300)
    transformed: list[int] = []
    original = type(stored.model).transform

    def noting_rows(model, frame):  # type: ignore[no-untyped-def]
        transformed.append(len(frame))
        return original(model, frame)

    monkeypatch.setattr(type(stored.model), "transform", noting_rows)
    sampled = decide(stored, today)

    assert transformed == [300]
    rows = np.sort(np.random.default_rng(0).choice(len(today), 300, replace=False))
    expected = decide(stored, today.iloc[rows])  # the same customers, handed over as the whole
    assert sampled.figures["psi"] == expected.figures["psi"] != whole.figures["psi"]
    assert sampled.action == expected.action


def test_the_policy_decides_before_any_figure() -> None:
    frame = two_groups(diagonal=True)
    stored = stored_from(frame)

    assert decide(None, frame).action == "fit"
    assert decide(stored, frame, policy="refit").action == "refit"
    assert decide(stored, frame, policy="reuse").action == "reuse"
    old = decide(stored, frame, as_of=AS_OF + timedelta(days=31))
    assert old.action == "refit" and "31 days old" in old.reason


def test_matching_follows_centroids_not_cluster_order() -> None:
    frame = two_groups(diagonal=True)
    previous = stored_from(frame)
    permuted = replace(previous.model, centroids=previous.model.centroids[::-1].copy())

    match = match_segments(permuted, previous)

    assert match.segment_ids == previous.segment_ids[::-1]
    assert match.matched == {0: previous.segment_ids[1], 1: previous.segment_ids[0]}
    assert match.retired == () and match.next_segment_id == previous.next_segment_id


def test_a_new_cluster_gets_a_new_id_and_a_vanished_one_retires() -> None:
    frame = two_groups(diagonal=True)
    previous = stored_from(frame)
    extra = np.vstack([previous.model.centroids, [[5.0, 5.0, 5.0]]])

    grown = match_segments(replace(previous.model, centroids=extra), previous)
    assert grown.segment_ids[:2] == previous.segment_ids and grown.segment_ids[2] == 3
    assert grown.next_segment_id == 4

    shrunk = match_segments(replace(previous.model, centroids=previous.model.centroids[:1]), previous)
    assert shrunk.segment_ids == (1,) and shrunk.retired == (2,)


def test_reuse_fails_without_a_model() -> None:
    with pytest.raises(Exception, match="no model is stored yet"):
        decide(None, two_groups(diagonal=True), policy="reuse")
