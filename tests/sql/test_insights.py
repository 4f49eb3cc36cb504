"""The report, export, load-csv and attribute segmentation against real databases (both dialects)."""

from __future__ import annotations

import base64
import json
import re
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tasks.errors import SourceError
from tasks.extract.load_file import load_file
from tasks.report import html
from tasks.report.export import export_segments
from tasks.report.read import NoRunError
from tasks.settings import load_settings
from tasks.synthetic import generate_mall_customers
from tests.support.backend import Backend
from tests.support.shop import AS_OF, load_synthetic, read, run_on, run_once

MALL_FEATURES = "annual_income_k,spending_score_1_100"


def chart_images(html: str) -> dict[str, bytes]:
    """The PNG of every chart image of the page, by its data-chart key."""
    pattern = r'<img class="chart" data-chart="([a-z]+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">'
    return {key: base64.b64decode(data) for key, data in re.findall(pattern, html)}


def test_report_of_the_latest_run_has_every_chart_the_profiles_and_transitions(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    run_once(backend, as_of=AS_OF)
    settings = load_settings(**backend.settings(order_id_column="order_id", model_policy="reuse"))
    second = run_on(settings, AS_OF + timedelta(days=30)).run_id

    data = html.report_data_from_outputs(settings)
    rendered = html.render_report(data, outputs="test")

    assert data.run["run_id"] == second
    images = chart_images(rendered.html)
    assert set(images) == {"elbow", "silhouette", "sizes", "heatmap", "scatter", "transitions"}
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000 for png in images.values())
    # the second run reused the model: the elbow is the one of the run that fitted it, and says so
    first_elbow = read(backend, "segment_runs").set_index("run_id").drop(index=second)["elbow"].iloc[0]
    first_elbow = json.loads(first_elbow) if isinstance(first_elbow, str) else first_elbow
    assert data.elbow is not None and data.elbow.inertias == first_elbow["inertias"]
    assert "the run that fitted this model" in rendered.html
    profiles = read(backend, "segment_profiles").query("run_id == @second")
    for profile in profiles.itertuples():
        assert f"<td>{profile.segment_name}</td>" in rendered.html.replace("&#39;", "'")
        assert profile.recommended_action.replace("'", "&#39;") in rendered.html
    # the transitions table adds up to every customer of either date
    assert data.transitions is not None
    moved = int(data.transitions["customers"].sum())
    assert moved >= len(read(backend, "customer_segments"))
    assert 'id="transitions"' in rendered.html
    # the markdown artifact carries the same charts
    assert rendered.markdown.count("](data:image/png;base64,") == len(images)


def test_report_of_a_model_fitted_with_a_fixed_k_has_no_elbow_and_says_why(backend: Backend) -> None:
    load_synthetic(backend, customers=200)
    run_once(backend, n_clusters=4)

    data = html.report_data_from_outputs(load_settings(**backend.settings()))
    rendered = html.render_report(data, outputs="test")

    assert data.elbow is None
    assert set(chart_images(rendered.html)) == {"sizes", "heatmap", "scatter"}
    assert 'id="elbow-note"' in rendered.html and "K was fixed" in rendered.html


def test_report_without_a_run_says_what_to_run(backend: Backend) -> None:
    with pytest.raises(NoRunError, match="segments run"):
        html.report_data_from_outputs(load_settings(**backend.settings()))


def test_compare_fits_four_algorithms_and_keeps_the_table_on_the_run(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    run_id = run_once(backend, compare_algorithms=True)

    runs = read(backend, "segment_runs")
    stored = runs.loc[runs["run_id"] == run_id, "algorithm_comparison"].iloc[0]
    comparison = json.loads(stored) if isinstance(stored, str) else stored
    assert [row["algorithm"] for row in comparison] == [
        "kmeans",
        "gaussian_mixture",
        "agglomerative_ward",
        "dbscan",
    ]
    for row in comparison:
        assert sum(row["sizes"]) + round(row["noise_share"] * row["sample_rows"]) == row["sample_rows"]
    page = html.render_report(html.report_data_from_outputs(load_settings(**backend.settings())), outputs="test").html
    assert 'id="comparison"' in page and "agglomerative_ward" in page and "Davies-Bouldin" in page


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_export_round_trips_the_current_segments(backend: Backend, tmp_path: Path, file_format: str) -> None:
    load_synthetic(backend, customers=200)
    run_once(backend)
    output = tmp_path / f"segments.{file_format}"

    rows = export_segments(load_settings(**backend.settings()), output, file_format)  # type: ignore[arg-type]

    exported = pd.read_csv(output) if file_format == "csv" else pq.read_table(output).to_pandas()
    table = read(backend, "customer_segments", order_by="customer_id")
    assert rows == len(table) == len(exported)
    assert list(exported.columns) == list(table.columns)
    assert exported["customer_id"].astype(str).tolist() == table["customer_id"].astype(str).tolist()
    assert exported["segment_name"].tolist() == table["segment_name"].tolist()
    # money to the cent, whole numbers whole (some customers have no recency: still integers)
    assert exported["monetary"].astype(float).tolist() == table["monetary"].astype(float).round(2).tolist()
    if file_format == "csv":
        text = output.read_text().splitlines()
        header, first = text[0].split(","), text[1].split(",")
        for column in ("recency_days", "r_score", "frequency", "segment_id"):
            assert "." not in first[header.index(column)], (column, first[header.index(column)])
        assert len(first[header.index("avg_order_value")].split(".")[-1]) <= 2
    else:
        for column in ("recency_days", "r_score", "frequency", "segment_id", "previous_segment_id"):
            assert pd.api.types.is_integer_dtype(exported[column]), column
    assert not list(tmp_path.glob(".segments*"))  # no temporary file left behind
    if file_format == "parquet":  # read and written in chunks of 100,000 rows, not row by row
        assert pq.ParquetFile(output).metadata.num_row_groups == 1


def load_mall(backend: Backend, tmp_path: Path, customers: int = 200) -> None:
    csv = tmp_path / "Mall_Customers.csv"
    generate_mall_customers(customers, seed=11).to_csv(csv, index=False)
    rows, renamed = load_file(load_settings(**backend.settings()), csv, backend.table("mall_customers"))
    assert rows == customers
    assert renamed["Annual Income (k$)"] == "annual_income_k"
    assert renamed["Spending Score (1-100)"] == "spending_score_1_100"
    assert renamed["CustomerID"] == "customer_id"


def test_mall_customers_on_income_and_spending_find_five_segments(backend: Backend, tmp_path: Path) -> None:
    load_mall(backend, tmp_path)
    settings = load_settings(
        **backend.settings(source_table="", customer_table=backend.table("mall_customers"), features=MALL_FEATURES)
    )

    run = run_on(settings, date(2026, 1, 1))

    assert run.outcome.n_clusters == 5
    assert run.outcome.k_reason.startswith("K=5: the most segments of 4..8 that are all stable")
    table = read(backend, "customer_segments")
    assert len(table) == 200 and set(table["segment_id"]) == {1, 2, 3, 4, 5}
    assert table["frequency"].isna().all()  # no transactions: the RFM columns stay empty
    assert {"annual_income_k", "spending_score_1_100"} <= set(table.columns)
    names = set(table["segment_name"])
    assert any(name.startswith("High annual income") or "high annual income" in name for name in names)
    assert any("low spending score" in name.lower() for name in names)
    # the report of an attribute run plots the attributes
    data = html.report_data_from_outputs(settings)
    assert set(chart_images(html.render_report(data, outputs="test").html)) >= {"scatter", "heatmap"}


def test_categorical_attributes_are_one_hot_encoded_beside_rfm(backend: Backend, tmp_path: Path) -> None:
    load_synthetic(backend, customers=200)
    customers = read(backend, "transactions")["customer_id"].dropna().unique()
    attributes = pd.DataFrame(
        {
            "customer_id": customers,
            "gender": ["Female" if index % 3 else None for index in range(len(customers))],
            "age": [20 + index % 50 for index in range(len(customers))],
        }
    ).iloc[:-10]  # ten customers have no attribute row: filled, not dropped
    attributes.to_sql("customer_attributes", backend.engine(), schema=backend.schema, index=False, if_exists="replace")
    settings = load_settings(
        **backend.settings(
            order_id_column="order_id",
            customer_table=backend.table("customer_attributes"),
            features="recency_days,frequency,monetary,gender,age",
            n_clusters=4,
        )
    )

    run = run_on(settings, AS_OF)

    model = run.outcome.model
    assert model.categorical == {"gender": ("(missing)", "Female")}
    assert "gender=Female" in model.features and "gender=(missing)" in model.features
    assert model.input_columns == ("recency_days", "frequency", "monetary", "gender", "age")
    table = read(backend, "customer_segments")
    assert len(table) == len(customers) and {"gender", "age"} <= set(table.columns)
    # the stored model reads back and scores the same
    from tasks.load.model_store import load_latest_model

    stored = load_latest_model(settings)
    assert stored is not None and stored.model.categorical == model.categorical
    assert stored.model.fill_values == pytest.approx(model.fill_values)


def test_a_missing_attribute_column_names_the_setting(backend: Backend, tmp_path: Path) -> None:
    load_mall(backend, tmp_path)
    settings = load_settings(
        **backend.settings(
            source_table="", customer_table=backend.table("mall_customers"), features="annual_income,spending_score"
        )
    )
    with pytest.raises(
        SourceError, match=r"'annual_income' not found .*did you mean 'annual_income_k'.*SEGMENTS_FEATURES"
    ):
        run_on(settings, date(2026, 1, 1))


def test_load_csv_refuses_to_overwrite_unless_asked(backend: Backend, tmp_path: Path) -> None:
    load_mall(backend, tmp_path, customers=20)
    csv = tmp_path / "Mall_Customers.csv"
    settings = load_settings(**backend.settings())
    with pytest.raises(SourceError, match="already exists"):
        load_file(settings, csv, backend.table("mall_customers"))
    load_file(settings, csv, backend.table("mall_customers"), if_exists="append")
    with backend.engine().connect() as conn:
        count = conn.execute(sa.text(f"select count(*) from {backend.table('mall_customers')}")).scalar_one()
    assert count == 40
