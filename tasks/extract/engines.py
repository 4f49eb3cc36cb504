"""Sessions on the engine that holds the transactions: PostgreSQL, SQLite or DuckDB through SQLAlchemy,
or Spark through Spark Connect (a cluster at ``sc://host:port``, or ``local[N]`` started in this
process). One session is one snapshot where the engine has them (PostgreSQL: REPEATABLE READ).

A session knows the source relation (a table, or with DuckDB and Spark a path of Parquet or CSV
files), the kinds of its columns, and runs the extract's queries, returning frames. What the engines
write differently is in :mod:`tasks.extract.dialects`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, NoSuchTableError

from tasks.database import (
    QuotedIdentifier,
    connection_errors,
    make_engine,
    quote_identifier,
    quote_table,
    read_with_copy,
    scrub,
)
from tasks.errors import DatabaseUnavailableError, SourceError
from tasks.extract.column_kinds import ColumnKind, duckdb_kind, spark_kind, sqlalchemy_kind
from tasks.extract.dialects import EngineName
from tasks.settings import SegmentSettings, check_identifier, env_var, is_file_source, split_table_name

#: The name under which a Spark session sees a source of files.
SPARK_FILES_VIEW = "segments_source"
FETCH_CHUNK_ROWS = 100_000
SPARK_CONNECT_TIMEOUT_SECONDS = 10


class SourceSession(ABC):
    """One snapshot of the transaction source."""

    engine: EngineName
    #: the source in a query's FROM: a quoted table, or the engine's reader of the files
    relation: str
    #: bound parameters the relation needs (DuckDB's file path)
    relation_parameters: dict[str, Any]

    def __init__(self, settings: SegmentSettings) -> None:
        self.settings = settings

    @abstractmethod
    def columns(self) -> dict[str, ColumnKind]:
        """The source's columns and their kinds; :class:`SourceError` when it is not there."""

    @abstractmethod
    def quote(self, name: str) -> QuotedIdentifier:
        """A validated identifier quoted for the engine."""

    @abstractmethod
    def read(self, sql: str, params: dict[str, Any]) -> pd.DataFrame:
        """The rows of a query as a frame."""

    @abstractmethod
    def customer_ids_table(self, ids: pd.Series) -> str:
        """A temporary table (or view) of ``customer_id`` holding ``ids``, for the rest of the session."""

    def close(self) -> None:  # noqa: B027 - nothing to close for a session that holds no resource
        """End the snapshot."""


class SqlSession(SourceSession):
    """PostgreSQL, SQLite or DuckDB, through SQLAlchemy."""

    def __init__(self, settings: SegmentSettings) -> None:
        super().__init__(settings)
        self.url = settings.source
        self.engine = settings.source_engine
        connect_args = {"read_only": True} if self.engine == "duckdb" and _duckdb_file(self.url) else None
        self._engine = make_engine(self.url, connect_args)
        self.relation_parameters = {}
        with self._errors():
            self.conn: Connection = self._engine.connect()
            if self.engine == "postgresql":
                self.conn.execution_options(isolation_level="REPEATABLE READ")
                self.conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
            elif self.engine == "duckdb":
                self.conn.execute(text("SET TimeZone = 'UTC'"))
        table = settings.source_table
        if is_file_source(table):
            reader = "read_csv" if _is_csv(table) else "read_parquet"
            self.relation = f"{reader}(:source_path)"
            self.relation_parameters = {"source_path": _files_pattern(table)}
        else:
            self.relation = quote_table(self.conn, table)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        with connection_errors(self.url, self.settings.source_setting):
            yield

    def quote(self, name: str) -> QuotedIdentifier:
        return quote_identifier(self.conn, name, "column")

    def columns(self) -> dict[str, ColumnKind]:
        if self.engine == "duckdb":
            return self._duckdb_columns()
        schema, table = split_table_name(self.settings.source_table)
        with self._errors():
            try:
                found = sa.inspect(self.conn).get_columns(table, schema=schema)
            except NoSuchTableError:
                found = []
        if not found:
            raise _not_found(self.settings)
        return {column["name"]: sqlalchemy_kind(column["type"]) for column in found}

    def _duckdb_columns(self) -> dict[str, ColumnKind]:
        try:
            rows = self.conn.execute(text(f"describe select * from {self.relation}"), self.relation_parameters)
        except DBAPIError as exc:
            raise _not_found(self.settings, _first_line(exc.orig or exc, self.url)) from None
        return {row[0]: duckdb_kind(row[1]) for row in rows}

    def read(self, sql: str, params: dict[str, Any]) -> pd.DataFrame:
        params = params | self.relation_parameters
        with self._errors():
            if self.engine == "postgresql":
                return read_with_copy(self.conn, sql, params)
            if self.engine == "duckdb":
                import duckdb  # its module only when DuckDB reads

                try:
                    return _read_duckdb(self.conn, sql, params)
                except duckdb.Error as exc:  # e.g. a CSV value that does not fit its column's type
                    raise SourceError(
                        f"DuckDB could not read {self.settings.source_table!r}: {_first_line(exc, self.url)}; "
                        f"check {env_var('source_table')} and its column settings"
                    ) from None
            result = self.conn.execution_options(stream_results=True, yield_per=FETCH_CHUNK_ROWS).execute(
                text(sql), params
            )
            columns = list(result.keys())
            chunks = [
                pd.DataFrame.from_records([tuple(row) for row in part], columns=columns)
                for part in result.partitions(FETCH_CHUNK_ROWS)
            ]
        return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=columns)

    def customer_ids_table(self, ids: pd.Series) -> str:
        name = "changed_customers"
        customer_id = self.quote(self.settings.customer_id_column)
        drop = " on commit drop" if self.engine == "postgresql" else ""
        # the source's own id type, so that the lookups compare like with like
        self.conn.execute(
            text(
                f"create temporary table {name}{drop} as "
                f"select {customer_id} as customer_id from {self.relation} limit 0"
            ),
            self.relation_parameters,
        )
        values = [{"id": value} for value in ids.tolist()]
        if values:
            self.conn.execute(text(f"insert into {name} (customer_id) values (:id)"), values)
        if self.engine == "postgresql":
            # the planner needs the table's size to look the customers up through the source's index
            self.conn.exec_driver_sql(f"analyze {name}")
        return name

    def close(self) -> None:
        with contextlib.suppress(DBAPIError):
            self.conn.rollback()
            self.conn.close()
        self._engine.dispose()


class SparkSource(SourceSession):
    """Spark through Spark Connect: a cluster (``sc://``) or ``local[N]`` in this process."""

    engine: EngineName = "spark"

    def __init__(self, settings: SegmentSettings) -> None:
        super().__init__(settings)
        self.spark = spark_session(settings.source, settings.source_setting)
        self.relation_parameters = {}
        table = settings.source_table
        if is_file_source(table):
            with self._errors():
                reader = self.spark.read
                frame = reader.csv(table, header=True, inferSchema=True) if _is_csv(table) else reader.parquet(table)
                frame.createOrReplaceTempView(SPARK_FILES_VIEW)
            self.relation = SPARK_FILES_VIEW
        else:  # table, schema.table or catalog.schema.table, each part a validated plain name
            self.relation = ".".join(f"`{check_identifier(part, 'table')}`" for part in table.split("."))

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        from pyspark.errors import PySparkException

        try:
            with pandas_warning_ignored():
                yield
        except PySparkException as exc:
            message = _first_line(exc, self.settings.source)
            if any(mark in message for mark in ("PATH_NOT_FOUND", "TABLE_OR_VIEW_NOT_FOUND", "UNABLE_TO_INFER")):
                raise _not_found(self.settings, message) from None
            if _is_unreachable(message):
                raise _unreachable(self.settings, message) from None
            raise SourceError(f"Spark failed: {message}; check {env_var('source_table')}") from None

    def quote(self, name: str) -> QuotedIdentifier:
        return QuotedIdentifier(f"`{check_identifier(name, 'column')}`")

    def columns(self) -> dict[str, ColumnKind]:
        with self._errors():
            schema = self.spark.table(self.relation.replace("`", "")).schema
        return {field.name: spark_kind(field.dataType) for field in schema.fields}

    def read(self, sql: str, params: dict[str, Any]) -> pd.DataFrame:
        with self._errors():
            # through Arrow (pyspark's own pandas conversion lags behind pandas releases)
            return self.spark.sql(sql, args=params).toArrow().to_pandas()

    def customer_ids_table(self, ids: pd.Series) -> str:
        name = "changed_customers"
        with self._errors():
            kind = self.columns()[self.settings.customer_id_column]
            spark_type = "bigint" if kind == "integer" else "string"
            values = pa.array(ids.tolist(), pa.int64() if kind == "integer" else pa.string())
            frame = self.spark.createDataFrame(pa.table({"customer_id": values}), f"customer_id {spark_type}")
            frame.createOrReplaceTempView(name)
        return name


@contextlib.contextmanager
def open_source(settings: SegmentSettings) -> Iterator[SourceSession]:
    """A session on the settings' source, closed (its snapshot ended) on the way out."""
    session: SourceSession = SparkSource(settings) if settings.source_engine == "spark" else SqlSession(settings)
    try:
        yield session
    finally:
        session.close()


@functools.cache
def spark_session(url: str, setting: str) -> Any:
    """The Spark Connect session for ``url``, started once per process (``local[N]`` starts Spark
    here; ``sc://`` connects to a cluster). Times are read in UTC."""
    try:
        with pandas_warning_ignored():
            from pyspark.sql import SparkSession
    except ImportError:
        raise SourceError(
            f"{setting} asks for Spark, which is not installed; install it with `uv sync --extra spark`"
        ) from None
    if url.startswith("sc://"):
        _reach_spark_connect(url, setting)
    else:
        # Spark started here reads its configuration from this folder unless the user has their own:
        # errors only, no progress bars, so that the job's console stays the job's
        os.environ.setdefault("SPARK_CONF_DIR", str(Path(__file__).with_name("spark_conf")))
    try:
        with pandas_warning_ignored():
            builder = SparkSession.builder.remote(url).config("spark.sql.session.timeZone", "UTC")
            # getOrCreate would hand back a session already open to another URL; local[N] starts its server
            session = builder.getOrCreate() if url.startswith("local") else builder.create()
            session.conf.set("spark.sql.session.timeZone", "UTC")
    except Exception as exc:  # noqa: BLE001 - pyspark raises many kinds here; each becomes one line
        raise _unreachable_spark(url, setting, _first_line(exc, url)) from None
    return session


def _reach_spark_connect(url: str, setting: str) -> None:
    """Fail in seconds when nothing listens at a Spark Connect URL: Spark's own client retries for
    about ten minutes (time for a cluster to start), too long for a wrong host or port."""
    address = url.removeprefix("sc://").split("/", 1)[0]
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "15002")
    try:
        socket.create_connection((host, int(port)), timeout=SPARK_CONNECT_TIMEOUT_SECONDS).close()
    except (OSError, ValueError) as exc:
        raise _unreachable_spark(url, setting, str(exc) or type(exc).__name__) from None


@contextlib.contextmanager
def pandas_warning_ignored() -> Iterator[None]:
    """pyspark 4 warns about pandas 3 as it imports its pandas code; what the job uses of it (frames
    of plain columns, each way) is tested with the pandas this project locks."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
        yield


def _unreachable_spark(url: str, setting: str, reason: str) -> DatabaseUnavailableError:
    from tasks.settings import mask_url

    return DatabaseUnavailableError(f"cannot reach Spark at {mask_url(url)}: {reason}; check {setting}")


def _unreachable(settings: SegmentSettings, reason: str) -> DatabaseUnavailableError:
    return _unreachable_spark(settings.source, settings.source_setting, reason)


def _is_unreachable(message: str) -> bool:
    return any(mark in message for mark in ("UNAVAILABLE", "Connection refused", "failed to connect", "DEADLINE"))


def _not_found(settings: SegmentSettings, reason: str | None = None) -> SourceError:
    what = "files" if is_file_source(settings.source_table) else "table or view"
    detail = f" ({reason})" if reason else ""
    if not is_file_source(settings.source_table) and Path(settings.source_table).exists():
        detail += f"; for the files at {settings.source_table!r}, write ./{settings.source_table}"
    return SourceError(
        f"source {what} {settings.source_table!r} not found in {settings.masked_source_url()}{detail}; "
        f"set {env_var('source_table')}"
    )


def _first_line(exc: BaseException, url: str) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return scrub(lines[0] if lines else type(exc).__name__, url)


def _duckdb_file(url: str) -> bool:
    database = sa.engine.make_url(url).database
    return bool(database) and database != ":memory:"


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".csv.gz", ".tsv"))


def _files_pattern(path: str) -> str:
    """A folder means every Parquet file under it (as Spark reads a folder)."""
    return str(Path(path) / "**" / "*.parquet") if Path(path).is_dir() else path


# --- reading rows ----------------------------------------------------------------------------------
def _read_duckdb(conn: Connection, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """DuckDB: the query's result as DuckDB converts it, without a Python tuple per row."""
    compiled = text(sql).bindparams(**params).compile(dialect=conn.dialect)
    positional = [compiled.params[name] for name in compiled.positiontup or []]
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    return driver_connection.execute(compiled.string, positional).df()
