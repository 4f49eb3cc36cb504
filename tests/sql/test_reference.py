"""The database's features equal an independent pandas computation on generated data."""

from __future__ import annotations

import pytest

from tasks.synthetic import generate_transactions
from tests.sql.test_customer_features import assert_features_equal, features_by_customer, run_extract
from tests.support.backend import Backend
from tests.support.fixtures import AS_OF
from tests.support.reference import reference_features
from tests.support.shop import write_transactions


@pytest.mark.parametrize(("lookback_days", "by_order"), [(None, True), (120, True), (None, False)])
def test_features_equal_an_independent_computation(backend: Backend, lookback_days: int | None, by_order: bool) -> None:
    rows = generate_transactions(400, AS_OF, seed=11)
    assert (rows["amount"].dropna() < 0).any() and rows["customer_id"].isna().any()  # refunds and bad rows
    write_transactions(backend, rows)

    result = run_extract(backend, lookback_days=lookback_days, order_id_column="order_id" if by_order else "")

    expected = reference_features(rows, AS_OF, lookback_days=lookback_days, by_order=by_order)
    assert len(expected) > 200
    assert_features_equal(features_by_customer(result.features), expected)
