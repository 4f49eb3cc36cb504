"""Customer attributes: columns of a customer table (age, income, gender, ...) to cluster on, beside
the transaction features or alone.

Numeric columns are clustered as numbers (a missing value takes the training median); every other
column (text, boolean) is categorical and one-hot encoded by the model, a missing value being a level
of its own. The table is read once per run, only the id and the chosen columns.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Engine, inspect
from sqlalchemy import types as sqltypes
from sqlalchemy.exc import NoSuchTableError

from tasks.database import connection_errors, make_engine
from tasks.errors import EmptySourceError, SourceError
from tasks.extract.result import REJECTION_REASONS, ExtractResult, RowCounts
from tasks.extract.source import integer_ids, is_number_type
from tasks.settings import SegmentSettings, env_var, split_table_name

FETCH_CHUNK_ROWS = 100_000


def inspect_customer_table(engine: Engine, settings: SegmentSettings) -> dict[str, Any]:
    """The customer table's id column and chosen attribute columns with their SQL types.

    Raises :class:`SourceError` naming the table, the missing column and the setting to change.
    """
    assert settings.customer_table
    schema, table = split_table_name(settings.customer_table)
    with connection_errors(settings.database_url.get_secret_value()):
        try:
            columns = {column["name"]: column["type"] for column in inspect(engine).get_columns(table, schema=schema)}
        except NoSuchTableError:
            raise SourceError(
                f"customer table {settings.customer_table!r} not found in {settings.masked_database_url()}; "
                f"set {env_var('customer_table')} (or load one with `segments load-csv`)"
            ) from None
    wanted = [(settings.customer_id_column, "customer_id_column")] + [
        (name, "features") for name in settings.attribute_features
    ]
    for column, field in wanted:
        if column not in columns:
            near = difflib.get_close_matches(column, list(columns), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SourceError(
                f"column {column!r} not found in customer table {settings.customer_table!r}{hint}; set "
                f"{env_var(field)} (columns there: {', '.join(sorted(columns))})"
            )
    return {column: columns[column] for column, _ in wanted}


def read_customer_attributes(settings: SegmentSettings) -> tuple[pd.DataFrame, int, bool]:
    """The customer table's id and attribute columns, one row per customer.

    Returns the frame (numeric attributes as float64, the others as text), the number of rows read
    (null ids included), and whether ids are integers. Rows without an id are left out; an id that
    appears twice is an error, since an attribute must have one value per customer.
    """
    assert settings.customer_table
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        types = inspect_customer_table(engine, settings)
        schema, table = split_table_name(settings.customer_table)
        source = sa.table(table, *(sa.column(name) for name in types), schema=schema)
        chunks = []
        with connection_errors(url), engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=FETCH_CHUNK_ROWS).execute(
                sa.select(*source.c)
            )
            for partition in result.partitions(FETCH_CHUNK_ROWS):
                chunks.append(pd.DataFrame(partition, columns=list(types)))
    finally:
        engine.dispose()
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=list(types))
    rows_read = len(frame)
    id_column = settings.customer_id_column
    frame = frame.loc[frame[id_column].notna()].rename(columns={id_column: "customer_id"})
    id_is_integer = is_number_type(types[id_column])
    ids = frame["customer_id"]
    frame["customer_id"] = integer_ids(ids, settings.customer_table) if id_is_integer else ids.astype("string")
    duplicated = int(frame["customer_id"].duplicated().sum())
    if duplicated:
        examples = frame.loc[frame["customer_id"].duplicated(), "customer_id"].head(3).tolist()
        raise SourceError(
            f"customer table {settings.customer_table!r} has {duplicated} repeated id(s) in "
            f"{id_column!r} (e.g. {', '.join(map(str, examples))}); it needs one row per customer"
        )
    for name in settings.attribute_features:
        if isinstance(types[name], sqltypes.Integer):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
        elif is_number_type(types[name]):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        else:
            frame[name] = frame[name].astype("string")
    return frame.sort_values("customer_id", kind="stable").reset_index(drop=True), rows_read, id_is_integer


def join_attributes(extract: ExtractResult, settings: SegmentSettings) -> ExtractResult:
    """The transaction features with the customer table's attributes joined on the customer id.

    Customers without a row in the customer table keep missing attributes (filled by the model);
    customers without transactions are not added, since they have no purchase features.
    """
    attributes, _, _ = read_customer_attributes(settings)
    features = extract.features
    if extract.customer_id_is_integer != pd.api.types.is_integer_dtype(attributes["customer_id"]):
        # one side holds integer ids, the other text: compare them as text
        features = features.assign(join_id=features["customer_id"].astype("string"))
        attributes = attributes.assign(join_id=attributes["customer_id"].astype("string"))
        joined = features.merge(attributes.drop(columns="customer_id"), on="join_id", how="left").drop(
            columns="join_id"
        )
    else:
        joined = features.merge(attributes, on="customer_id", how="left")
    return dataclasses.replace(extract, features=joined)


def extract_attributes_only(settings: SegmentSettings, as_of: Any) -> ExtractResult:
    """The customer table as the run's input, when there are no transactions: one row per customer
    with an id, its attributes, and counts (rows read, rows without an id rejected)."""
    attributes, rows_read, id_is_integer = read_customer_attributes(settings)
    if attributes.empty:
        raise EmptySourceError(f"customer table {settings.customer_table!r} has no rows with an id; nothing to segment")
    counts = RowCounts(
        rows_scanned=rows_read,
        rows_in_window=len(attributes),
        rows_before_window=0,
        rejected_by_reason=dict.fromkeys(REJECTION_REASONS, 0),
        guest_rows=rows_read - len(attributes),  # rows without a customer id
    )
    return ExtractResult(features=attributes, counts=counts, as_of=as_of, customer_id_is_integer=id_is_integer)


def check_customer_table(settings: SegmentSettings) -> None:
    """Preflight of the customer table (exists, has the chosen columns), for the CLI."""
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        inspect_customer_table(engine, settings)
    finally:
        engine.dispose()
