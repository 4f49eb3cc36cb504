"""Where the engines differ: the few expressions of the extract's SQL that PostgreSQL, SQLite, DuckDB
and Spark write differently. The queries in ``sql/`` are written once and call these.

- Money is exact: PostgreSQL ``numeric``; DuckDB and Spark ``DECIMAL(38, 6)`` (amounts to the
  millionth); SQLite has no exact decimal, so it sums integers of micro-units.
- Times are compared as the engine's timestamps read in UTC (SQLite: Julian days) and leave as epoch
  microseconds.
- A value that is not a number or a time (CSV files, SQLite's loose types) reads as null and is
  counted as rejected; PostgreSQL columns are checked to have the right types before the run.

Every method takes identifiers that were validated and quoted (or the queries' own column names)
and returns SQL; values stay bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tasks.database import QuotedIdentifier, SqlFragment

EngineName = Literal["postgresql", "sqlite", "duckdb", "spark"]
MONEY_DECIMAL = "decimal(38, 6)"


@dataclass(frozen=True)
class SourceDialect:
    """The engine's way of writing the extract's few engine-specific expressions.

    ``time_type`` is PostgreSQL's type of the time column (``timestamp`` or ``timestamptz``, compared
    with bounds of that type so that an index on it stays usable; ``None`` for a date, cast to
    ``timestamptz``). ``watermark_type`` is the type the change column's watermark is cast back to.
    """

    engine: EngineName
    time_type: str | None = None
    watermark_type: str = "bigint"

    # --- times ---------------------------------------------------------------------------------------
    def time(self, column: QuotedIdentifier) -> SqlFragment:
        """The time column as the engine compares it (null where a value is not a time)."""
        match self.engine:
            case "postgresql":
                return SqlFragment(column if self.time_type else f"cast({column} as timestamptz)")
            case "sqlite":
                return SqlFragment(f"julianday({column})")
            case _:
                return SqlFragment(f"try_cast({column} as timestamp)")

    def bound(self, name: str) -> SqlFragment:
        """The bound parameter ``name`` (an instant, see :meth:`time_value`) in the time column's terms."""
        match self.engine:
            case "postgresql":
                return SqlFragment(f"cast(:{name} as {self.time_type or 'timestamptz'})")
            case "sqlite":
                return SqlFragment(f"julianday(:{name})")
            case _:
                return SqlFragment(f"cast(:{name} as timestamp)")

    def time_value(self, moment: datetime) -> Any:
        """The value bound for an instant (UTC): PostgreSQL takes the datetime (naive for a
        ``timestamp`` column, read as UTC), the others its UTC text."""
        if self.engine == "postgresql":
            return moment.replace(tzinfo=None) if self.time_type == "timestamp" else moment
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    def epoch_us(self, expression: str) -> SqlFragment:
        """A time as epoch microseconds (bigint)."""
        match self.engine:
            case "postgresql":
                # date_part is a double precision (extract is a slower numeric); exact to the microsecond today
                return SqlFragment(f"cast(round(date_part('epoch', {expression}) * 1000000) as bigint)")
            case "sqlite":
                # to the millisecond, so that float noise in a Julian day cannot move a day boundary
                return SqlFragment(f"cast(round(({expression} - 2440587.5) * 86400000) as integer) * 1000")
            case "duckdb":
                return SqlFragment(f"epoch_us({expression})")
            case "spark":
                return SqlFragment(f"unix_micros({expression})")

    # --- money ---------------------------------------------------------------------------------------
    def money(self, column: QuotedIdentifier) -> SqlFragment:
        """An amount column as exact money (null where it is not a number)."""
        match self.engine:
            case "postgresql":
                return SqlFragment(f"cast({column} as numeric)")
            case "sqlite":
                return SqlFragment(
                    f"case when typeof({column}) in ('integer', 'real') "
                    f"then cast(round({column} * 1000000) as integer) end"
                )
            case _:
                return SqlFragment(f"try_cast({column} as {MONEY_DECIMAL})")

    def money_product(self, quantity: QuotedIdentifier, unit_price: QuotedIdentifier) -> SqlFragment:
        """Quantity times unit price as exact money (null where either is not a number)."""
        match self.engine:
            case "postgresql":
                return SqlFragment(f"cast({quantity} as numeric) * cast({unit_price} as numeric)")
            case "sqlite":
                return SqlFragment(
                    f"case when typeof({quantity}) in ('integer', 'real') and typeof({unit_price}) in "
                    f"('integer', 'real') then cast(round({quantity} * {unit_price} * 1000000) as integer) end"
                )
            case _:
                return SqlFragment(
                    f"cast(try_cast({quantity} as {MONEY_DECIMAL}) * try_cast({unit_price} as {MONEY_DECIMAL}) "
                    f"as {MONEY_DECIMAL})"
                )

    def money_is_null(self, money: str, columns: list[QuotedIdentifier]) -> SqlFragment:
        """Whether a row has no amount. PostgreSQL's columns are numbers (checked before the run), so
        it tests the columns without computing the amount of every row."""
        if self.engine == "postgresql":
            return SqlFragment("(" + " or ".join(f"{column} is null" for column in columns) + ")")
        return SqlFragment(f"({money}) is null")

    def money_text(self, expression: str) -> SqlFragment:
        """Summed money as it leaves the query: exact decimal text (SQLite: micro-units back to units)."""
        match self.engine:
            case "postgresql":
                return SqlFragment(expression)  # read as COPY's text
            case "sqlite":
                return SqlFragment(f"{expression} / 1000000.0")
            case "duckdb":
                return SqlFragment(f"cast({expression} as varchar)")
            case "spark":
                return SqlFragment(f"cast({expression} as string)")

    # --- incremental nights --------------------------------------------------------------------------
    def in_ids(self, column: QuotedIdentifier, ids_table: str) -> SqlFragment:
        """The rows of the customers listed in ``ids_table`` (one ``customer_id`` column)."""
        if self.engine == "postgresql":
            # an array, so that each customer is looked up through the index on the customer id (with
            # `in (select ...)` the planner joins them with a scan of the whole source instead)
            return SqlFragment(f"{column} = any(array(select customer_id from {ids_table}))")
        return SqlFragment(f"{column} in (select customer_id from {ids_table})")

    def as_text(self, expression: str) -> SqlFragment:
        """A value as text (the watermark is stored as text)."""
        return SqlFragment(f"cast({expression} as {'string' if self.engine == 'spark' else 'varchar'})")

    def watermark_bound(self) -> SqlFragment:
        """The stored watermark (``:watermark``, text) cast back to the change column's type."""
        return SqlFragment(f"cast(:watermark as {self.watermark_type})")


#: The types a change column's watermark is cast back to, by the column's kind and the engine.
WATERMARK_TYPES: dict[str, dict[EngineName, str]] = {
    "integer": {"postgresql": "bigint", "sqlite": "integer", "duckdb": "bigint", "spark": "bigint"},
    "decimal": {"postgresql": "numeric", "sqlite": "real", "duckdb": "decimal(38, 10)", "spark": "decimal(38, 10)"},
    "timestamp": {"postgresql": "timestamp", "sqlite": "text", "duckdb": "timestamp", "spark": "timestamp_ntz"},
    "timestamptz": {"postgresql": "timestamptz", "sqlite": "text", "duckdb": "timestamptz", "spark": "timestamp"},
    "date": {"postgresql": "date", "sqlite": "text", "duckdb": "date", "spark": "date"},
}
