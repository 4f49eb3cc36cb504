"""The output tables: where they are, and their schema brought up to date by Alembic migrations
(``tasks/load/migrations``), which the job applies before it records a run and ``segments migrate``
applies on demand.

Each output schema (PostgreSQL) or database file (SQLite) keeps its own ``alembic_version`` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import NoSuchTableError

from tasks.database import QuotedIdentifier, connection_errors, make_engine, quote_identifier, quote_table
from tasks.errors import SourceError
from tasks.extract.engines import open_source
from tasks.extract.source import inspect_source, is_number_type
from tasks.settings import SegmentSettings, split_table_name

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class OutputTables:
    """Quoted names of the output tables in the configured schema (SQLite: the database file)."""

    schema: QuotedIdentifier | None
    segment_runs: QuotedIdentifier
    segment_profiles: QuotedIdentifier
    segment_models: QuotedIdentifier
    customer_segments: QuotedIdentifier
    customer_segment_history: QuotedIdentifier
    segment_transitions: QuotedIdentifier
    customer_feature_state: QuotedIdentifier
    schema_name: str | None

    def table(self, name: str, columns: dict[str, Any]) -> sa.TableClause:
        """A lightweight Core table for DML; SQLAlchemy quotes its names again on compile."""
        return sa.table(name, *(sa.column(column, kind) for column, kind in columns.items()), schema=self.schema_name)


def output_tables(engine: Engine | Connection, settings: SegmentSettings) -> OutputTables:
    """Where the outputs go: ``output_schema`` on PostgreSQL, the database file on SQLite."""
    schema = settings.output_schema if settings.dialect == "postgresql" else None
    return OutputTables(
        schema=quote_identifier(engine, schema, "schema") if schema else None,
        segment_runs=quote_table(engine, "segment_runs", schema),
        segment_profiles=quote_table(engine, "segment_profiles", schema),
        segment_models=quote_table(engine, "segment_models", schema),
        customer_segments=quote_table(engine, "customer_segments", schema),
        customer_segment_history=quote_table(engine, "customer_segment_history", schema),
        segment_transitions=quote_table(engine, "segment_transitions", schema),
        customer_feature_state=quote_table(engine, "customer_feature_state", schema),
        schema_name=schema,
    )


def describe_outputs(settings: SegmentSettings) -> str:
    """Where the output tables live, without credentials."""
    where = f"schema {settings.output_schema!r} of " if settings.dialect == "postgresql" else ""
    return f"customer_segments, segment_profiles, segment_runs in {where}{settings.masked_database_url()}"


def migrate_outputs(conn: Connection, settings: SegmentSettings) -> None:
    """Bring the output tables up to the latest migration on ``conn`` (in its transaction), creating
    the output schema first when it is missing."""
    schema = settings.output_schema if settings.dialect == "postgresql" else None
    # Only create a missing schema: PostgreSQL asks for CREATE on the database even for "create schema
    # if not exists" of an existing one, which a least-privilege job role does not have.
    if schema is not None and not sa.inspect(conn).has_schema(schema):
        conn.exec_driver_sql(f"create schema {quote_identifier(conn, schema, 'schema')}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes |= {
        "connection": conn,
        "output_schema": schema,
        # asked only when customer_segments is created: the source's id type, kept by the output
        "customer_id_is_integer": lambda: source_ids_are_integers(conn, settings),
    }
    command.upgrade(config, "head")


def schema_revision(conn: Connection, settings: SegmentSettings) -> tuple[str | None, str]:
    """The output tables' current migration (``None`` before the first) and the latest one."""
    schema = settings.output_schema if settings.dialect == "postgresql" else None
    current = MigrationContext.configure(conn, opts={"version_table_schema": schema}).get_current_revision()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return current, str(ScriptDirectory.from_config(config).get_current_head())


def migrate(settings: SegmentSettings) -> tuple[str | None, str]:
    """`segments migrate`: upgrade the output tables in one transaction; returns the revision before
    and after."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.begin() as conn:
            before, _ = schema_revision(conn, settings)
            migrate_outputs(conn, settings)
            after, _ = schema_revision(conn, settings)
    finally:
        engine.dispose()
    return before, str(after)


def source_ids_are_integers(conn: Connection, settings: SegmentSettings) -> bool:
    """Whether the customer ids of the source (or, for attributes alone, of the customer table) are
    numbers, which the outputs keep as integers; text otherwise."""
    if settings.source_table:
        with open_source(settings) as session:
            return inspect_source(session, settings).customer_id_is_integer
    assert settings.customer_table
    schema, table = split_table_name(settings.customer_table)
    try:
        columns = {column["name"]: column["type"] for column in sa.inspect(conn).get_columns(table, schema=schema)}
    except NoSuchTableError:
        raise SourceError(
            f"{settings.customer_table!r} not found in {settings.masked_database_url()}: the output tables take "
            "its customer id type; set SEGMENTS_CUSTOMER_TABLE"
        ) from None
    return is_number_type(columns.get(settings.customer_id_column))
