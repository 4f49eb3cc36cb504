"""Database access: engines, the SQL file loader, identifier quoting and error translation.

SQL lives in ``sql/`` as Jinja templates. Templates receive only two kinds of values: identifiers that
were validated by :func:`tasks.settings.check_identifier` and quoted by the dialect's identifier
preparer (wrapped in :class:`QuotedIdentifier`), and flags/choices the code controls. Every data value is
a bound parameter (``:name``) and never reaches the template.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from sqlalchemy import Engine, create_engine, event, text

if TYPE_CHECKING:
    import pandas as pd
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from tasks.errors import DatabaseUnavailableError, LockTimeoutError
from tasks.settings import check_identifier, mask_url, split_table_name

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
SQLITE_BUSY_TIMEOUT_SECONDS = 30


class QuotedIdentifier(str):
    """An identifier (or ``schema.name``) that was validated and quoted for one dialect."""


class SqlFragment(str):
    """SQL built by the code from quoted identifiers and fixed text (tasks/extract/dialects.py)."""


def quote_identifier(engine_or_conn: Engine | Connection, name: str, what: str = "name") -> QuotedIdentifier:
    """Validate ``name`` against the identifier pattern and quote it for the connection's dialect."""
    check_identifier(name, what)
    return QuotedIdentifier(engine_or_conn.dialect.identifier_preparer.quote(name))


def quote_table(engine_or_conn: Engine | Connection, name: str, schema: str | None = None) -> QuotedIdentifier:
    """Validate and quote ``table``, ``schema.table``, or ``table`` in an explicit ``schema``."""
    table_schema, table = split_table_name(name)
    schema = table_schema or schema
    preparer = engine_or_conn.dialect.identifier_preparer
    if schema is None:
        return QuotedIdentifier(preparer.quote(table))
    check_identifier(schema, "schema")
    return QuotedIdentifier(f"{preparer.quote_schema(schema)}.{preparer.quote(table)}")


@functools.cache
def _template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(SQL_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - SQL, not HTML; values are bound parameters, identifiers pre-quoted
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def load_sql(name: str, dialect: str | None = None, **context: Any) -> str:
    """Render ``sql/<name>.<dialect>.sql`` if it exists, else ``sql/<name>.sql``.

    ``context`` may hold :class:`QuotedIdentifier` values, booleans, ``None`` and plain strings
    from a fixed set the caller controls; any other string is refused so that a raw, unquoted name
    can never be formatted into SQL by mistake.
    """
    for key, value in context.items():
        if isinstance(value, str) and not isinstance(value, QuotedIdentifier | SqlKeyword | SqlFragment):
            raise TypeError(f"load_sql({name!r}): {key} must be a QuotedIdentifier or SqlKeyword")
    candidates = [f"{name}.{dialect}.sql"] if dialect else []
    candidates.append(f"{name}.sql")
    for candidate in candidates:
        if (SQL_DIR / candidate).is_file():
            return _template_environment().get_template(candidate).render(**context)
    raise FileNotFoundError(f"no SQL file for {name!r} ({' or '.join(candidates)}) in {SQL_DIR}")


class SqlKeyword(str):
    """A piece of SQL chosen by the code from a fixed set (e.g. a column type), never from input."""

    ALLOWED = frozenset(
        {
            "bigint",
            "text",
            "integer",
            "smallint",
            "numeric",
            "real",
            "double precision",
            "timestamp",
            "timestamptz",
            "date",
            "jsonb",
        }
    )

    def __new__(cls, value: str) -> SqlKeyword:
        if value not in cls.ALLOWED:
            raise ValueError(f"{value!r} is not an allowed SQL keyword")
        return super().__new__(cls, value)


def split_statements(script: str) -> list[str]:
    """Split a script of ``;``-terminated statements into statements, dropping ``--`` comment lines.

    The project's scripts keep semicolons out of string literals, so a plain split is exact.
    """
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    return [statement.strip() for statement in code.split(";") if statement.strip()]


def make_engine(url: str, connect_args: dict[str, Any] | None = None) -> Engine:
    """Create an engine for ``url`` with the project's connection settings.

    PostgreSQL connections fail fast (10 s connect timeout) and say who they are in
    ``pg_stat_activity``; SQLite waits up to 30 s on a locked file instead of failing at once.
    """
    if url.startswith("duckdb"):
        return create_engine(url, connect_args=connect_args or {})
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10, "application_name": "customer-segments"},
    )


@contextlib.contextmanager
def connection_errors(url: str, setting: str = "SEGMENTS_DATABASE_URL") -> Iterator[None]:
    """Turn "cannot connect" errors into :class:`DatabaseUnavailableError` with the URL masked,
    naming ``setting`` as the one to check."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        if _is_connection_failure(exc):
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise DatabaseUnavailableError(
                f"cannot connect to {mask_url(url)}: {scrub(reason, url)}; check {setting} "
                "and that the server is running"
            ) from None
        raise


def _is_connection_failure(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig else ""
    markers = (
        "connection refused",
        "could not connect",
        "connection failed",
        "could not translate host",
        "name or service not known",
        "timeout expired",
        "password authentication failed",
        "unable to open database file",
        "cannot open database",
        "server closed the connection",
        "terminating connection",
    )
    missing_database = text.startswith("connection") and 'database "' in text and "does not exist" in text
    return missing_database or any(marker in text for marker in markers)


def scrub(message: str, url: str) -> str:
    """Remove the password of ``url`` from ``message``, wherever a driver may have echoed it."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:  # noqa: BLE001 - an unparseable URL has nothing to scrub
        return message
    if password:
        message = message.replace(str(password), "***")
    return message


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: the database was unreachable, the write waited too long for a lock
    held by another session, or PostgreSQL aborted the transaction for a serialization failure or a
    deadlock. A missing table, a bad column or a failed check is permanent and fails at once."""
    if isinstance(error, DatabaseUnavailableError | LockTimeoutError):
        return True
    if isinstance(error, DBAPIError):
        import psycopg.errors

        if isinstance(error.orig, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
            return True
        return isinstance(error, OperationalError | InterfaceError) and _is_connection_failure(error)
    return False


def read_with_copy(conn: Connection, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """PostgreSQL: the query's rows through ``COPY ... TO STDOUT`` as CSV, parsed by Arrow: one stream
    instead of a Python tuple per row. NULL is written as ``\\N`` so that an empty text is not
    mistaken for a missing value."""
    import pyarrow as pa  # here, not at import: most commands that need a database never read with COPY
    import pyarrow.csv as pacsv
    from psycopg import sql as psql

    compiled = str(text(sql).compile(dialect=conn.dialect))  # the driver's %(name)s placeholders
    statement = psql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER, NULL '\\N')").format(psql.SQL(compiled))
    buffer = io.BytesIO()
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    with driver_connection.cursor() as cursor, cursor.copy(statement, params) as copy:
        for block in copy:
            buffer.write(block)
    table = pacsv.read_csv(
        pa.BufferReader(buffer.getbuffer()),
        convert_options=pacsv.ConvertOptions(
            null_values=["\\N"],
            strings_can_be_null=True,
            # monetary stays the database's exact text until the features need a number
            column_types={"customer_id": pa.string(), "monetary": pa.string(), "watermark": pa.string()},
        ),
    )
    return table.to_pandas()
