"""Gate and check rules on plain numbers."""

from __future__ import annotations

import pytest

from tasks.errors import DataGateError, OutputCheckError
from tasks.extract.result import RowCounts
from tasks.gates import check_input
from tasks.load.checks import OutputFigures, check_output


def counts(null_ids: int = 0, late: int = 0, scanned: int = 1000) -> RowCounts:
    return RowCounts(
        rows_scanned=scanned,
        rows_in_window=scanned - null_ids - late,
        rows_before_window=0,
        rejected_by_reason={
            "null_customer_id": null_ids,
            "null_occurred_at": 0,
            "occurred_at_or_after_as_of": late,
            "non_numeric_amount": 0,
        },
    )


def gate(row_counts: RowCounts, customers: int = 100, previous: int | None = None, force: bool = False) -> list[str]:
    return check_input(row_counts, customers, previous, max_rejected_share=0.05, max_customer_drop=0.5, force=force)


def test_rows_after_as_of_are_not_a_quality_problem() -> None:
    assert gate(counts(late=600)) == []  # a backfill sees most rows after its as-of date


def test_the_rejected_share_gate_counts_quality_rejections_only() -> None:
    assert gate(counts(null_ids=50)) == []  # exactly 5% passes
    with pytest.raises(DataGateError, match=r"5.1% of 1,000 rows were rejected"):
        gate(counts(null_ids=51))
    assert len(gate(counts(null_ids=51), force=True)) == 1


def test_the_customer_drop_gate_compares_with_the_last_successful_run() -> None:
    assert gate(counts(), customers=50, previous=100) == []
    with pytest.raises(DataGateError, match="drop of 51%"):
        gate(counts(), customers=49, previous=100)
    assert gate(counts(), customers=1, previous=None) == []  # nothing to compare with yet


def test_output_checks_list_every_failure() -> None:
    figures = OutputFigures(
        customers_written=9,
        null_customer_ids=1,
        duplicate_customer_ids=2,
        customers_without_segment=0,
        rows_of_other_runs=0,
        customers_in_profiles=10,
        segment_names=frozenset({"Champions", "Ghosts"}),
    )

    with pytest.raises(OutputCheckError) as raised:
        check_output(figures, expected_customers=10, allowed_names={"Champions", "No net purchases"})

    message = str(raised.value)
    for part in (
        "1 null customer ids",
        "2 duplicate customer ids",
        "9 customers written, 10 in the run",
        "profiles count 10 customers, assignments 9",
        "segment names not in the model: Ghosts",
    ):
        assert part in message
