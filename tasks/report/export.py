"""`segments export`: the current segments with their features (and, when SEGMENTS_CUSTOMER_TABLE is
set, every column of the customer table: the notebooks' "segmented CSV"), as CSV or Parquet."""

from __future__ import annotations

import decimal
import os
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.database import make_engine
from tasks.extract.attributes import read_customer_attributes
from tasks.report.files import temporary_file_beside
from tasks.report.read import iter_current_segments
from tasks.settings import IDENTIFIER_PATTERN, SegmentSettings, split_table_name

ExportFormat = Literal["csv", "parquet"]


#: Columns of customer_segments that hold whole numbers (empty for some customers) and money.
WHOLE_NUMBERS = (
    *("segment_id", "previous_segment_id", "recency_days", "frequency", "tenure_days"),
    *("r_score", "f_score", "m_score"),
)
MONEY = ("monetary", "avg_order_value")


def _plain_types(frame: pd.DataFrame) -> pd.DataFrame:
    """Whole numbers as integers (38, not 38.0, though some are empty), money rounded to the cent, and
    every chunk with the same Arrow and CSV types."""
    for column in frame.columns:
        if frame[column].dtype == object and frame[column].map(lambda value: isinstance(value, decimal.Decimal)).any():
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in WHOLE_NUMBERS:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column]).round().astype("Int64")
    for column in MONEY:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column]).astype("float64").round(2)
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
