"""`segments load-csv`: a CSV, TSV or Parquet file into a table of the configured database, to try
one's own data. Column names are made SQL-friendly snake_case."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow.parquet as pq

from tasks.database import connection_errors, make_engine
from tasks.errors import ConfigurationError, SourceError
from tasks.settings import SegmentSettings, split_table_name

LOAD_CHUNK_ROWS = 50_000


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
