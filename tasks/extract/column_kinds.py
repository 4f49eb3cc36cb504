"""What the extract needs to know of a source column's type, from each engine's own type names."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import postgresql

#: What the extract needs to know of a column's type.
ColumnKind = Literal["integer", "decimal", "float", "text", "timestamp", "timestamptz", "date", "boolean", "unknown"]


def sqlalchemy_kind(column_type: Any) -> ColumnKind:
    """The kind of a column as SQLAlchemy reflects it (PostgreSQL, SQLite)."""
    if isinstance(column_type, sqltypes.Boolean):
        return "boolean"
    if isinstance(column_type, sqltypes.Integer):
        return "integer"
    if isinstance(column_type, sqltypes.Float):
        return "float"
    if isinstance(column_type, sqltypes.Numeric | postgresql.MONEY):
        return "decimal"
    if isinstance(column_type, sqltypes.DateTime):
        return "timestamptz" if column_type.timezone else "timestamp"
    if isinstance(column_type, sqltypes.Date):
        return "date"
    if isinstance(column_type, sqltypes.String):
        return "text"
    return "unknown"


def duckdb_kind(type_name: str) -> ColumnKind:
    """The kind of a column from DuckDB's type name."""
    name = type_name.upper()
    if name in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT"):
        return "integer"
    if name.startswith("DECIMAL"):
        return "decimal"
    if name in ("DOUBLE", "FLOAT", "REAL"):
        return "float"
    if name == "TIMESTAMP WITH TIME ZONE":
        return "timestamptz"
    if name.startswith("TIMESTAMP"):
        return "timestamp"
    if name == "DATE":
        return "date"
    if name == "VARCHAR":
        return "text"
    if name == "BOOLEAN":
        return "boolean"
    return "unknown"


def spark_kind(data_type: Any) -> ColumnKind:
    """The kind of a column from its Spark type."""
    name = type(data_type).__name__
    kinds: dict[str, ColumnKind] = {
        "LongType": "integer",
        "IntegerType": "integer",
        "ShortType": "integer",
        "ByteType": "integer",
        "DecimalType": "decimal",
        "DoubleType": "float",
        "FloatType": "float",
        "StringType": "text",
        "VarcharType": "text",
        "CharType": "text",
        "TimestampType": "timestamptz",
        "TimestampNTZType": "timestamp",
        "DateType": "date",
        "BooleanType": "boolean",
    }
    return kinds.get(name, "unknown")
