"""Gate and check rules on plain numbers."""

from __future__ import annotations

import pytest

from tasks.errors import DataGateError, OutputCheckError
from tasks.extract.result import RowCounts
from tasks.gates import PreviousRun, check_input
from tasks.load.checks import OutputFigures, check_output


def counts(missing_amounts: int = 0, late: int = 0, guests: int = 0, scanned: int = 1000) -> RowCounts:
    return RowCounts(
        rows_scanned=scanned,
        rows_in_window=scanned - missing_amounts - late - guests,
        rows_before_window=0,
        rejected_by_reason={
            "null_occurred_at": 0,
            "occurred_at_or_after_as_of": late,
            "non_numeric_amount": missing_amounts,
        },
        guest_rows=guests,
    )


def previous(customers: int = 100, share: float = 0.0) -> PreviousRun:
    return PreviousRun(customers=customers, rows_scanned=1000, quality_rejects=round(share * 1000))


def gate(
    row_counts: RowCounts, customers: int = 100, before: PreviousRun | None = None, force: bool = False
) -> list[str]:
    return check_input(
        row_counts, customers, before or previous(), max_rejected_share_rise=0.05, max_customer_drop=0.5, force=force
    )


def test_guest_checkouts_and_rows_after_as_of_are_not_a_quality_problem() -> None:
    assert gate(counts(guests=400)) == []  # a shop where 40% of rows are guest checkouts
    assert gate(counts(late=600)) == []  # a backfill sees most rows after its as-of date


def test_the_rejected_share_stops_a_run_when_it_doubles_and_rises_by_more_than_five_points() -> None:
    assert gate(counts(missing_amounts=50)) == []  # 0% -> 5.0%: up by exactly 5 points
    with pytest.raises(DataGateError, match=r"5.1% of 1,000 rows were rejected for quality .* up from 0.0%"):
        gate(counts(missing_amounts=51))
    assert gate(counts(missing_amounts=150), before=previous(share=0.08)) == []  # up 7 points, not doubled
    with pytest.raises(DataGateError, match="SEGMENTS_MAX_REJECTED_SHARE_RISE"):
        gate(counts(missing_amounts=170), before=previous(share=0.08))  # doubled and up 9 points
    assert len(gate(counts(missing_amounts=51), force=True)) == 1


def test_a_first_run_has_nothing_to_compare_with_and_no_gate() -> None:
    assert (
        check_input(
            counts(missing_amounts=500), 1, None, max_rejected_share_rise=0.05, max_customer_drop=0.5, force=False
        )
        == []
    )


def test_the_customer_drop_gate_compares_with_the_last_successful_run() -> None:
    assert gate(counts(), customers=50, before=previous(customers=100)) == []
    with pytest.raises(DataGateError, match=r"drop of 51%, more than SEGMENTS_MAX_CUSTOMER_DROP \(50%\)"):
        gate(counts(), customers=49, before=previous(customers=100))


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
