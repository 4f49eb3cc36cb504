"""The transaction source: checked before anything runs (it exists, holds every mapped column with a
usable type, and has rows), with errors that name the setting to fix."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import types as sqltypes

from tasks.errors import EmptySourceError, SourceError
from tasks.extract.column_kinds import ColumnKind
from tasks.extract.dialects import WATERMARK_TYPES, EngineName, SourceDialect
from tasks.extract.engines import SourceSession, open_source
from tasks.settings import SegmentSettings, env_var, is_file_source


@dataclass(frozen=True)
class SourceColumns:
    """The mapped source columns as found in the source."""

    table: str
    # ids stored as numbers (as pandas writes an integer column with gaps: 17850.0) are kept as integers
    customer_id_is_integer: bool
    kinds: dict[str, ColumnKind]
    # PostgreSQL: "timestamp" or "timestamptz" for a timestamp column, compared with bounds of its own
    # type (so an index on it stays usable); None for a date, which the queries cast
    time_type: str | None = None
    # with a change column: the kind of its values (integer, decimal, timestamp, timestamptz or date)
    changed_at_kind: str | None = None

    def dialect(self, engine: EngineName) -> SourceDialect:
        """How the queries are written for ``engine`` on these columns."""
        watermark = WATERMARK_TYPES[self.changed_at_kind or "integer"][engine]
        return SourceDialect(engine=engine, time_type=self.time_type, watermark_type=watermark)


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


def inspect_source(session: SourceSession, settings: SegmentSettings) -> SourceColumns:
    """Check that the source exists and holds every mapped column with a usable type.

    Raises :class:`SourceError` naming the source, the column and the setting that mapped it.
    """
    columns = session.columns()
    if not columns:
        raise SourceError(f"source {settings.source_table!r} has no columns; set {env_var('source_table')}")
    kinds: dict[str, ColumnKind] = {}
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
        kinds[field] = columns[column]

    # Declared types must fit; a file's types are guessed (CSV), so there a value that is not a number
    # or a time reads as null and its row is counted as rejected. SQLite views report no type.
    loose: tuple[ColumnKind, ...] = ("text", "unknown") if is_file_source(settings.source_table) else ("unknown",)
    numbers: tuple[ColumnKind, ...] = ("integer", "decimal", "float", *loose)
    for field in ("amount_column", "quantity_column", "unit_price_column"):
        if field in kinds and kinds[field] not in numbers:
            raise SourceError(
                f"column {getattr(settings, field)!r} in {settings.source_table!r} is of type {kinds[field]}, "
                f"not a number; set {env_var(field)} to a numeric column (or cast it in a view)"
            )
    times: tuple[ColumnKind, ...] = ("timestamp", "timestamptz", "date", *loose)
    if kinds["occurred_at_column"] not in times and session.engine != "sqlite":
        raise SourceError(
            f"column {settings.occurred_at_column!r} in {settings.source_table!r} is of type "
            f"{kinds['occurred_at_column']}, not a date or timestamp; set {env_var('occurred_at_column')} "
            "(or cast it in a view)"
        )
    changed_at_kind = None
    if settings.changed_at_column:
        changed_at_kind = kinds["changed_at_column"]
        if changed_at_kind not in WATERMARK_TYPES:
            raise SourceError(
                f"column {settings.changed_at_column!r} in {settings.source_table!r} is of kind "
                f"{changed_at_kind}, not a timestamp, date or number; set {env_var('changed_at_column')} "
                "to a load timestamp or an increasing row id"
            )
    occurred_kind = kinds["occurred_at_column"]
    return SourceColumns(
        table=settings.source_table,
        customer_id_is_integer=kinds["customer_id_column"] in ("integer", "decimal", "float"),
        kinds=kinds,
        time_type=occurred_kind
        if session.engine == "postgresql" and occurred_kind in ("timestamp", "timestamptz")
        else None,
        changed_at_kind=changed_at_kind,
    )


def check_source(settings: SegmentSettings) -> SourceColumns:
    """Before a run: the source is reachable, exists with its columns of usable types, and holds at
    least one row. Raises a :class:`SegmentsError` with a one-line message."""
    with open_source(settings) as session:
        source = inspect_source(session, settings)
        probe = session.read(f"select 1 as found from {session.relation} limit 1", {})
    if probe.empty:
        raise EmptySourceError(f"source {settings.source_table!r} has no rows; nothing to segment")
    return source


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
