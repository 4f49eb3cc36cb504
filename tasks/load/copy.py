"""A frame's rows written on the connection of the caller's transaction: PostgreSQL ``COPY ... FROM STDIN``,
or plain rows for an ``executemany`` (SQLite)."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import sql as psql
from sqlalchemy import Connection

from tasks.settings import check_identifier

COPY_BATCH_ROWS = 50_000


def copy_rows_into(conn: Connection, schema: str | None, table: str, columns: list[str], frame: pd.DataFrame) -> None:
    """Write the ``columns`` of ``frame`` into ``table`` with one ``COPY``: one statement streaming all
    the rows instead of a statement per batch.

    Names are validated, then composed by psycopg's ``sql.Identifier``, which quotes them. The CSV is
    rendered by Arrow (strings quoted, NULL as an unquoted empty field, which PostgreSQL's CSV format
    reads as NULL). Times with a zone are sent as UTC wall times and the transaction reads them in UTC.
    A database error is raised as SQLAlchemy raises it for any other statement.
    """
    for name in (schema, table, *columns):
        if name is not None:
            check_identifier(name, "name")
    target = psql.Identifier(schema, table) if schema else psql.Identifier(table)
    statement = psql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, psql.SQL(", ").join(psql.Identifier(column) for column in columns)
    )
    rows = frame[columns]
    zoned = [name for name in columns if isinstance(rows[name].dtype, pd.DatetimeTZDtype)]
    if zoned:
        rows = rows.assign(**{name: rows[name].dt.tz_convert("UTC").dt.tz_localize(None) for name in zoned})
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
    arrow_rows = pa.Table.from_pandas(rows, preserve_index=False)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    try:
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            # rendered a batch at a time: the CSV of every row at once would double the write's memory
            for batch in arrow_rows.to_batches(max_chunksize=COPY_BATCH_ROWS):
                buffer = io.BytesIO()
                pacsv.write_csv(batch, buffer, options)
                copy.write(buffer.getbuffer())
    except psycopg.Error as error:
        raise sa.exc.DBAPIError.instance(statement.as_string(driver_connection), None, error, psycopg.Error) from error


def records(frame: pd.DataFrame, json_columns: set[str]) -> list[dict[str, Any]]:
    """``frame`` as a list of plain dicts for executemany: missing values as None, timestamps as
    datetimes, JSON text columns parsed."""
    rows: list[dict[str, Any]] = [
        {str(key): value for key, value in row.items()}
        for row in frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    ]
    for row in rows:
        for column, value in row.items():
            if isinstance(value, pd.Timestamp):
                row[column] = value.to_pydatetime()
        for column in json_columns:
            if isinstance(row.get(column), str):
                row[column] = json.loads(row[column])
    return rows
