"""Files in and out: load a CSV or Parquet file into a table (to try one's own data), and export the
current segments with their features (the notebooks' "segmented CSV")."""

from __future__ import annotations

import decimal
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.attributes import read_customer_attributes
from tasks.database import connection_errors, make_engine
from tasks.errors import ConfigurationError, SourceError
from tasks.outputs import iter_current_segments
from tasks.settings import IDENTIFIER_PATTERN, SegmentSettings, split_table_name

LOAD_CHUNK_ROWS = 50_000
ExportFormat = Literal["csv", "parquet"]


def snake_case(name: str) -> str:
    """A column name made SQL-friendly: ``Annual Income (k$)`` -> ``annual_income_k``,
    ``CustomerID`` -> ``customer_id``, ``Spending Score (1-100)`` -> ``spending_score_1_100``."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()
    if not text:
        text = "column"
    if text[0].isdigit():
        text = f"c_{text}"
    return text[:63]


def snake_case_columns(columns: list[str]) -> dict[str, str]:
    """Each column's snake_case name, made unique with ``_2``, ``_3`` where two names collide."""
    renamed: dict[str, str] = {}
    taken: set[str] = set()
    for column in columns:
        base = snake_case(str(column))
        name, number = base, 1
        while name in taken:
            number += 1
            name = f"{base[: 63 - len(str(number)) - 1]}_{number}"
        taken.add(name)
        renamed[str(column)] = name
    return renamed


def _read_chunks(path: Path) -> Iterator[pd.DataFrame]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=LOAD_CHUNK_ROWS):
            yield batch.to_pandas()
    elif suffix in {".csv", ".txt", ".tsv"}:
        yield from pd.read_csv(path, chunksize=LOAD_CHUNK_ROWS, sep="\t" if suffix == ".tsv" else ",")
    else:
        raise ConfigurationError(f"{path.name}: expected a .csv, .tsv or .parquet file")


def temporary_file_beside(path: Path) -> Path:
    """An empty temporary file in ``path``'s folder (created if missing), to be renamed over ``path``
    once complete, with the permissions the user's umask gives new files (not mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return Path(temporary)


def write_file_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so a reader never sees
    half a file."""
    temporary = temporary_file_beside(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_file(
    settings: SegmentSettings, path: Path, table: str, if_exists: Literal["fail", "replace", "append"] = "fail"
) -> tuple[int, dict[str, str]]:
    """Load ``path`` (CSV, TSV or Parquet) into ``table`` of the configured database in one transaction,
    column names made snake_case. Returns the rows loaded and the column renaming.

    ``if_exists``: ``fail`` (the default) refuses to touch an existing table, ``replace`` drops it
    first, ``append`` adds rows.
    """
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such file")
    schema, name = split_table_name(table)
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    rows = 0
    renamed: dict[str, str] = {}
    try:
        with connection_errors(url), engine.begin() as conn:
            for index, chunk in enumerate(_read_chunks(path)):
                if index == 0:
                    renamed = snake_case_columns(list(chunk.columns))
                chunk = chunk.rename(columns=renamed)
                try:
                    chunk.to_sql(
                        name,
                        conn,
                        schema=schema,
                        if_exists=if_exists if index == 0 else "append",
                        index=False,
                        chunksize=LOAD_CHUNK_ROWS,
                    )
                except ValueError as error:  # pandas: "Table 'x' already exists."
                    raise SourceError(f"{error} Use --if-exists replace or append") from None
                rows += len(chunk)
    except pd.errors.ParserError as error:
        raise ConfigurationError(f"{path.name}: not a readable CSV ({error})") from None
    finally:
        engine.dispose()
    if not renamed:
        raise ConfigurationError(f"{path.name}: the file has no rows")
    return rows, renamed


def _plain_types(frame: pd.DataFrame) -> pd.DataFrame:
    """Decimal money (PostgreSQL numeric) as float, so every chunk has the same Arrow and CSV types."""
    for column in frame.columns:
        if frame[column].dtype == object and frame[column].map(lambda value: isinstance(value, decimal.Decimal)).any():
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def export_segments(settings: SegmentSettings, output: Path, file_format: ExportFormat) -> int:
    """Write the current ``customer_segments`` (features, scores, segment) to ``output`` as CSV or
    Parquet, with every customer-table column joined when ``SEGMENTS_CUSTOMER_TABLE`` is set. Written
    to a temporary file and renamed, so a failed export leaves no half file. Returns the rows written."""
    attributes = None
    if settings.customer_table:
        attributes = _all_customer_columns(settings)
    temporary = temporary_file_beside(output)
    rows = 0
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    try:
        for index, chunk in enumerate(iter_current_segments(settings)):
            chunk = _plain_types(chunk)
            if attributes is not None:
                chunk = _join_customer_columns(chunk, attributes)
            if file_format == "csv":
                chunk.to_csv(temporary, mode="w" if index == 0 else "a", header=index == 0, index=False)
            else:
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(temporary, schema)
                writer.write_table(table.cast(schema))
            rows += len(chunk)
        if writer is not None:
            writer.close()
            writer = None
        os.replace(temporary, output)
    finally:
        if writer is not None:
            writer.close()
        temporary.unlink(missing_ok=True)
    return rows


def _all_customer_columns(settings: SegmentSettings) -> pd.DataFrame:
    """Every column of the customer table whose name is a plain identifier, keyed by ``customer_id``."""
    from sqlalchemy import inspect

    assert settings.customer_table
    schema, table = split_table_name(settings.customer_table)
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        names = [column["name"] for column in inspect(engine).get_columns(table, schema=schema)]
    finally:
        engine.dispose()
    columns = tuple(name for name in names if IDENTIFIER_PATTERN.match(name) and name != settings.customer_id_column)
    frame, _, _ = read_customer_attributes(settings.model_copy(update={"features": columns}))
    return frame


def _join_customer_columns(chunk: pd.DataFrame, attributes: pd.DataFrame) -> pd.DataFrame:
    extra = [column for column in attributes.columns if column != "customer_id" and column not in chunk.columns]
    left = chunk.assign(join_id=chunk["customer_id"].astype("string"))
    right = attributes[["customer_id", *extra]].assign(join_id=attributes["customer_id"].astype("string"))
    return left.merge(right.drop(columns="customer_id"), on="join_id", how="left").drop(columns="join_id")
