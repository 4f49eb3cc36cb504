"""The SQL loader only renders identifiers that were validated and quoted."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tasks.database import QuotedIdentifier, SqlKeyword, load_sql, quote_identifier, quote_table, split_statements
from tasks.extract.dialects import EngineName, SourceDialect


@pytest.fixture
def pg_engine() -> sa.Engine:
    # compiling and quoting need only the dialect, no connection
    return sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_identifiers_are_quoted_for_the_dialect(pg_engine: sa.Engine) -> None:
    assert quote_identifier(pg_engine, "amount") == "amount"
    assert quote_identifier(pg_engine, "Amount") == '"Amount"'  # mixed case keeps its case
    assert quote_identifier(pg_engine, "order") == '"order"'  # reserved word
    assert quote_table(pg_engine, "Sales.orders") == '"Sales".orders'
    assert quote_table(pg_engine, "orders", schema="analytics") == "analytics.orders"


@pytest.mark.parametrize(
    "name",
    ["amount; drop table x", 'amount"--', "a b", "1st", "amount/*", "ｓales", "x" * 64, ""],
)
def test_names_outside_the_pattern_are_refused(pg_engine: sa.Engine, name: str) -> None:
    with pytest.raises(ValueError, match="not a plain identifier"):
        quote_identifier(pg_engine, name)


def test_templates_refuse_raw_strings() -> None:
    with pytest.raises(TypeError, match="must be a QuotedIdentifier"):
        load_sql("customer_segments_table", customer_segments="x; drop table y")

    with pytest.raises(ValueError, match="not an allowed SQL keyword"):
        SqlKeyword("text); drop table y; --")


@pytest.mark.parametrize(
    ("engine", "own", "others"),
    [
        ("postgresql", "date_part('epoch'", ["julianday", "epoch_us(", "unix_micros", "try_cast"]),
        ("sqlite", "julianday", ["date_part", "epoch_us(", "unix_micros", "try_cast"]),
        ("duckdb", "epoch_us(", ["julianday", "date_part", "unix_micros"]),
        ("spark", "unix_micros", ["julianday", "date_part", "epoch_us("]),
    ],
)
def test_one_feature_query_takes_each_engines_own_expressions(engine: EngineName, own: str, others: list[str]) -> None:
    sql = load_sql("customer_features", engine=SourceDialect(engine), **FEATURE_TEMPLATE_NAMES)

    assert own in sql
    assert not [other for other in others if other in sql]


FEATURE_TEMPLATE_NAMES = {
    name: QuotedIdentifier(name) for name in ("source", "customer_id", "occurred_at", "amount")
} | {
    "quantity": None,
    "unit_price": None,
    "order_id": None,
    "changed_at": None,
    "lookback": False,
    "one_customer": False,
    "changed_customers": None,
    "changed_since": False,
    "pending": False,
    "amount_is_null": False,
}


def test_scripts_split_into_statements_without_comments() -> None:
    script = "-- a comment; with a semicolon\ncreate table a (x int);\n\ncreate index b on a (x);\n"

    assert split_statements(script) == ["create table a (x int)", "create index b on a (x)"]
