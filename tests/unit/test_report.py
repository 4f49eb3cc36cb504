"""The run summary people read in the Prefect UI."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd

from tasks.extract.result import ExtractResult, RowCounts
from tasks.model.step import segment_features
from tasks.report.summary import bar, profile_rows, run_summary_markdown
from tasks.settings import load_settings
from tasks.synthetic import generate_transactions
from tests.support.reference import reference_features


def test_bars_scale_to_the_largest_value() -> None:
    assert bar(10, 10, width=4) == "████"
    assert bar(5, 10, width=4) == "██"
    assert bar(1, 16, width=2) == "▏"
    assert bar(0, 10) == "" and bar(3, 0) == ""


def test_the_summary_names_counts_decision_charts_and_outputs_without_secrets() -> None:
    as_of = date(2024, 3, 1)
    rows = generate_transactions(300, as_of, seed=2)
    reference = reference_features(rows, as_of)
    features = pd.DataFrame(
        [(customer, *values) for customer, values in reference.items()],
        columns=["customer_id", "recency_days", "frequency", "monetary", "avg_order_value", "tenure_days"],
    )
    counts = RowCounts(
        rows_scanned=len(rows),
        rows_in_window=len(rows) - 9,
        rows_before_window=0,
        rejected_by_reason={
            "null_customer_id": 3,
            "null_occurred_at": 0,
            "occurred_at_or_after_as_of": 3,
            "non_numeric_amount": 3,
        },
    )
    extract = ExtractResult(features=features, counts=counts, as_of=as_of, customer_id_is_integer=False)
    settings = load_settings(database_url="postgresql+psycopg://shop:s3cret@db.internal/shop", output_schema="bi")
    outcome = segment_features(features, as_of, settings, run_id="run-1", scored_at=datetime.now(UTC), stored=None)

    markdown = run_summary_markdown(settings, extract, outcome, run_id="run-1", flow_run_id="flow-1")

    assert "# Customer segments as of 2024-03-01" in markdown
    assert f"| scanned | {len(rows):,} |" in markdown and "| rejected: null customer id | 3 |" in markdown
    assert "Action: **fit**: no stored model yet" in markdown
    assert "← knee" in markdown and "**chosen**" in markdown
    for name in outcome.segments.profiles["segment_name"]:
        assert name in markdown
    assert "schema 'bi' of postgresql+psycopg://shop:***@db.internal/shop" in markdown
    assert "s3cret" not in markdown
    table = profile_rows(outcome.segments.profiles)
    assert sum(row["customers"] for row in table) == len(features)
