"""The transaction source: checked before anything runs (it exists, holds every mapped column with a
usable type, and has rows), with errors that name the setting to fix."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Engine, inspect
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import NoSuchTableError

from tasks.database import connection_errors, make_engine
from tasks.errors import EmptySourceError, SourceError
from tasks.settings import SegmentSettings, env_var, split_table_name


@dataclass(frozen=True)
class SourceColumns:
    """The mapped source columns as found in the database."""

    table: str
    # ids stored as numbers (as pandas writes an integer column with gaps: 17850.0) are kept as integers
    customer_id_is_integer: bool
    occurred_at_type: str
    amount_types: dict[str, str]
    # PostgreSQL: "timestamp" or "timestamptz" for a timestamp column, compared with bounds of its own
    # type (so an index on it stays usable); None for a date, which the queries cast
    time_type: str | None = None
    # PostgreSQL, with a change column: its type as the watermark is cast to (bigint, numeric,
    # timestamp, timestamptz or date)
    changed_at_type: str | None = None


def column_roles(settings: SegmentSettings) -> list[tuple[str, str]]:
    """(setting field, column name) for every mapped column."""
    roles = [
        ("customer_id_column", settings.customer_id_column),
        ("occurred_at_column", settings.occurred_at_column),
    ]
    if settings.uses_quantity_times_price:
        assert settings.quantity_column and settings.unit_price_column
        roles += [
            ("quantity_column", settings.quantity_column),
            ("unit_price_column", settings.unit_price_column),
        ]
    else:
        assert settings.amount_column
        roles.append(("amount_column", settings.amount_column))
    if settings.order_id_column:
        roles.append(("order_id_column", settings.order_id_column))
    if settings.changed_at_column:
        roles.append(("changed_at_column", settings.changed_at_column))
    return roles


def inspect_source(engine: Engine, settings: SegmentSettings) -> SourceColumns:
    """Check that the source table or view exists and holds every mapped column with a usable type.

    Raises :class:`SourceError` naming the table, the column and the setting that mapped it.
    """
    schema, table = split_table_name(settings.source_table)
    with connection_errors(settings.database_url.get_secret_value()):
        inspector = inspect(engine)
        try:
            columns = {column["name"]: column for column in inspector.get_columns(table, schema=schema)}
        except NoSuchTableError:
            raise SourceError(
                f"source table or view {settings.source_table!r} not found in "
                f"{settings.masked_database_url()}; set {env_var('source_table')}"
            ) from None
    if not columns:
        raise SourceError(f"source {settings.source_table!r} has no columns; set {env_var('source_table')}")

    found_types: dict[str, Any] = {}
    for field, column in column_roles(settings):
        if column not in columns:
            near = difflib.get_close_matches(column, list(columns), n=1) or [
                name for name in columns if name.lower() == column.lower()
            ]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SourceError(
                f"column {column!r} not found in {settings.source_table!r}{hint}; set {env_var(field)} "
                f"(columns there: {', '.join(sorted(columns))})"
            )
        found_types[field] = columns[column]["type"]

    for field in ("amount_column", "quantity_column", "unit_price_column"):
        if field in found_types and not _is_numeric_or_unknown(found_types[field], settings.dialect):
            raise SourceError(
                f"column {getattr(settings, field)!r} in {settings.source_table!r} has type "
                f"{found_types[field]}, not a number; set {env_var(field)} to a numeric column "
                "(or cast it in a view)"
            )
    occurred_type = found_types["occurred_at_column"]
    if settings.dialect == "postgresql" and not isinstance(occurred_type, sqltypes.Date | sqltypes.DateTime):
        raise SourceError(
            f"column {settings.occurred_at_column!r} in {settings.source_table!r} has type {occurred_type}, "
            f"not a date or timestamp; set {env_var('occurred_at_column')} (or cast it in a view)"
        )
    changed_at_type = None
    if settings.changed_at_column:
        changed_at_type = _watermark_type(found_types["changed_at_column"])
        if changed_at_type is None:
            raise SourceError(
                f"column {settings.changed_at_column!r} in {settings.source_table!r} has type "
                f"{found_types['changed_at_column']}, not a timestamp, date or number; set "
                f"{env_var('changed_at_column')} to a load timestamp or an increasing row id"
            )
    return SourceColumns(
        table=settings.source_table,
        customer_id_is_integer=is_number_type(found_types["customer_id_column"]),
        occurred_at_type=str(occurred_type),
        amount_types={field: str(found_types[field]) for field in found_types if "amount" in field},
        time_type=_native_time_type(occurred_type) if settings.dialect == "postgresql" else None,
        changed_at_type=changed_at_type,
    )


def _watermark_type(column_type: Any) -> str | None:
    if isinstance(column_type, sqltypes.DateTime):
        return "timestamptz" if column_type.timezone else "timestamp"
    if isinstance(column_type, sqltypes.Date):
        return "date"
    if isinstance(column_type, sqltypes.Integer):
        return "bigint"
    if isinstance(column_type, sqltypes.Numeric) and not isinstance(column_type, sqltypes.Float):
        return "numeric"
    return None


def _native_time_type(column_type: Any) -> str | None:
    if isinstance(column_type, sqltypes.DateTime):
        return "timestamptz" if column_type.timezone else "timestamp"
    return None


def check_source(settings: SegmentSettings) -> SourceColumns:
    """Before a run: the database is reachable, the source and its columns exist with usable types,
    and it holds at least one row. Raises a :class:`SegmentsError` with a one-line message."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        source = inspect_source(engine, settings)
        schema, table = split_table_name(settings.source_table)
        probe = sa.select(sa.literal(1)).select_from(sa.table(table, schema=schema)).limit(1)
        with connection_errors(url), engine.connect() as conn:
            if conn.execute(probe).first() is None:
                raise EmptySourceError(f"source {settings.source_table!r} has no rows; nothing to segment")
        return source
    finally:
        engine.dispose()


def _is_numeric_or_unknown(column_type: Any, dialect: str) -> bool:
    # Float is not a Numeric subclass in every SQLAlchemy 2 release, nor is PostgreSQL's money: name them all.
    if isinstance(column_type, sqltypes.Integer | sqltypes.Numeric | sqltypes.Float | postgresql.MONEY):
        return True
    # SQLite views report no type; rows whose value is not a number are rejected one by one.
    return dialect == "sqlite" and isinstance(column_type, sqltypes.NullType)


def is_number_type(column_type: Any) -> bool:
    """Whether a customer id column holds numbers (integers, decimals, floats): the outputs keep such
    ids as integers. Booleans are not numbers here."""
    return isinstance(column_type, sqltypes.Integer | sqltypes.Numeric | sqltypes.Float) and not isinstance(
        column_type, sqltypes.Boolean
    )


def integer_ids(ids: pd.Series, table: str) -> pd.Series:
    """Customer ids of a number column as int64, or :class:`SourceError` when one is not whole."""
    numbers = pd.to_numeric(ids).astype("float64")
    if len(numbers) and not ((numbers % 1 == 0).all() and numbers.abs().max() < 2**53):
        raise SourceError(
            f"the customer ids of {table!r} are numbers but not all whole; map a text or integer column "
            "(or cast the ids to text in a view)"
        )
    return numbers.astype("int64")
