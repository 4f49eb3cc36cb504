"""Charts, report pieces, attribute encoding and naming, algorithm comparison, file names: pure functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.extract.load_file import snake_case, snake_case_columns
from tasks.model.choose_k import KCurve
from tasks.model.compare import ALGORITHMS, compare_algorithms
from tasks.model.fit import fit_segment_model
from tasks.model.naming import attribute_segment_labels, humanize
from tasks.model.transform import SegmentModel, fit_encoding
from tasks.report import charts, html

PNG = b"\x89PNG\r\n\x1a\n"


def blobs(centres: list[tuple[float, float]], per_blob: int = 150, spread: float = 0.3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(centre, spread, size=(per_blob, 2)) for centre in centres])


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("Annual Income (k$)", "annual_income_k"),
        ("Spending Score (1-100)", "spending_score_1_100"),
        ("CustomerID", "customer_id"),
        ("Gender", "gender"),
        ("orderDate", "order_date"),
        ("HTTPStatus", "http_status"),
        ("2024 sales", "c_2024_sales"),
        ("   ", "column"),
        ("Amount €", "amount"),
    ],
)
def test_snake_case_makes_sql_friendly_names(column: str, expected: str) -> None:
    assert snake_case(column) == expected


def test_snake_case_keeps_colliding_names_apart() -> None:
    assert snake_case_columns(["Age", "age", "AGE "]) == {"Age": "age", "age": "age_2", "AGE ": "age_3"}


def test_categorical_columns_are_one_hot_and_missing_numbers_take_the_median() -> None:
    frame = pd.DataFrame(
        {
            "gender": pd.array(["Female", "Male", None, "Female"], dtype="string"),
            "income": [10.0, np.nan, 30.0, 50.0],
        }
    )
    encoding = fit_encoding(frame, ("gender", "income"))
    assert encoding.features == ("gender=(missing)", "gender=Female", "gender=Male", "income")
    assert encoding.fill_values == {"income": 30.0}
    assert encoding.input_columns == ("gender", "income")


def test_a_model_with_categories_scores_unknown_levels_and_round_trips() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "gender": pd.array(rng.choice(["Female", "Male"], size=300), dtype="string"),
            "income": rng.normal(50, 15, size=300),
        }
    )
    fit = fit_segment_model(
        frame,
        ("gender", "income"),
        n_clusters=4,
        k_min=2,
        k_max=6,
        sample_size=1000,
        winsorize_quantile=0.99,
        random_state=1,
    )
    rebuilt = SegmentModel.from_dict(fit.model.to_dict())
    assert rebuilt.categorical == {"gender": ("Female", "Male")}
    np.testing.assert_array_equal(rebuilt.predict(frame), fit.model.predict(frame))
    # a level never seen in training encodes as no level at all instead of failing
    unseen = pd.DataFrame({"gender": pd.array(["Other"], dtype="string"), "income": [50.0]})
    encoded = rebuilt.transform(unseen)
    gender_columns = [index for index, name in enumerate(rebuilt.features) if name.startswith("gender=")]
    expected = (0.0 - rebuilt.means[gender_columns]) / rebuilt.scales[gender_columns]
    np.testing.assert_allclose(encoded[0, gender_columns], expected)
    # a model stored before categories existed still loads
    legacy = fit.model.to_dict()
    del legacy["categorical"], legacy["fill_values"]
    assert SegmentModel.from_dict(legacy).categorical == {}


def test_attribute_segments_are_named_after_their_strongest_features() -> None:
    model = SegmentModel(
        features=("annual_income_k", "spending_score_1_100", "gender=Female"),
        log_features=(),
        caps=np.full(3, np.inf),
        means=np.zeros(3),
        scales=np.ones(3),
        centroids=np.array([[1.4, -1.1, 0.0], [-1.2, 1.3, 0.9], [0.1, 0.0, -0.2], [0.2, 0.1, 0.0]]),
        random_state=0,
        categorical={"gender": ("Female",)},
    )
    ids, names = attribute_segment_labels(model, sizes=[30, 20, 80, 10])
    assert ids == (2, 3, 1, 4)  # the largest cluster is segment 1
    assert names[0] == "High annual income, low spending score"
    assert names[1] == "High spending score, low annual income"
    # two centroids near the average: told apart by their next strongest feature, never "(2)"
    assert names[2] != names[3] and "(2)" not in names[3]
    assert names[2].startswith("Low spending score") or names[2].startswith("Average")
    assert humanize("spending_score_1_100") == "spending score"


def test_compare_measures_four_algorithms_on_the_same_sample() -> None:
    values = blobs([(0, 0), (4, 0), (0, 4)])
    records = compare_algorithms(values, n_clusters=3, random_state=0, sample_size=400)
    assert [record["algorithm"] for record in records] == list(ALGORITHMS)
    by_name = {record["algorithm"]: record for record in records}
    assert all(record["sample_rows"] == 400 for record in records)
    for name in ("kmeans", "gaussian_mixture", "agglomerative_ward"):
        assert by_name[name]["clusters"] == 3 and by_name[name]["silhouette"] > 0.7
        assert by_name[name]["noise_share"] == 0.0
    # DBSCAN finds the three dense groups by itself and leaves few points as noise
    assert by_name["dbscan"]["clusters"] == 3 and by_name["dbscan"]["noise_share"] < 0.1
    assert by_name["kmeans"]["davies_bouldin"] < 0.5


def elbow() -> KCurve:
    inertias = [1000.0, 400.0, 150.0, 120.0, 100.0, 90.0, 82.0, 76.0, 71.0, 67.0]
    stabilities = [None, None, None, 0.9, 0.85, 0.8, 0.7, 0.6, None, None]
    silhouettes = [None, *[0.5] * 9]
    return KCurve(list(range(1, 11)), inertias, silhouettes, stabilities, knee=3, chosen=6, reason="K=6: stable")


def test_charts_are_png_images() -> None:
    profiles = pd.DataFrame(
        {"segment_id": [0, 1, 2], "segment_name": ["No net purchases", "A", "B"], "customers": [5, 60, 35]}
    ).assign(share=lambda frame: frame["customers"] / 100)
    sample = pd.DataFrame({"segment_id": [1, 1, 2, 2], "x": [1.0, 2.0, 5.0, 6.0], "monetary": [10.0, 20, 500, 900]})
    heat = pd.DataFrame({"x": [1.0, -1.0], "monetary": [0.5, -0.5]}, index=["1 A", "2 B"])
    moves = pd.DataFrame(
        {"from_segment_name": ["A", None], "to_segment_name": ["B", "A"], "customers": [3, 4], "from_as_of": [1, 1]}
    )
    for png in (
        charts.elbow_chart(elbow(), 3),
        charts.silhouette_chart(elbow(), 3),
        charts.sizes_chart(profiles),
        charts.heatmap_chart(heat),
        charts.pair_chart(sample, ["x", "monetary"], [(1, "A"), (2, "B")]),
        charts.transitions_chart(moves),
    ):
        assert png.startswith(PNG) and len(png) > 2_000


def test_the_report_shows_the_runs_elbow_else_its_models_else_says_why_there_is_none() -> None:
    training = KCurve([1, 2, 3], [9.0, 4.0, 3.0], [None, 0.6, 0.5], [None, 0.9, 0.8], knee=2, chosen=3, reason="")

    curve, source = html.report_elbow(elbow().as_dict(), training.as_dict())
    assert curve == elbow() and "run's own" in source
    curve, source = html.report_elbow(None, training.as_dict())
    assert curve == training and "fitted this model" in source
    curve, source = html.report_elbow(None, None)
    assert curve is None and "K was fixed" in source
