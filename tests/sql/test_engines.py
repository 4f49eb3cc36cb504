"""The transactions read where they live: DuckDB and Spark (``local[2]``, in this process) on Parquet and
CSV files, and on a DuckDB database, beside PostgreSQL and SQLite: the same features as the independent
computation to the cent, the same row counts, incremental nights, and one-line errors. Spark's queries
are the slow ones here (seconds each on two cores), so each Spark case is one test."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.errors import DatabaseUnavailableError, SourceError
from tasks.extract.features import extract_customer_features
from tasks.settings import load_settings
from tasks.synthetic import generate_transactions
from tests.sql.test_customer_features import assert_features_equal, features_by_customer
from tests.support.backend import Backend
from tests.support.reference import reference_features
from tests.support.shop import AS_OF, run_on, write_transactions

DAY = timedelta(days=1)
MIDNIGHT = datetime.combine(AS_OF, time(0))
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def spark() -> str:
    """Spark in this process (``local[2]``). The optional extra is installed as the README says when this
    environment lacks it, so that the one test command runs these tests on a fresh machine too."""
    if importlib.util.find_spec("pyspark") is None:
        uv = shutil.which("uv")
        if uv is None:
            pytest.fail("the Spark tests need the spark extra: run `uv sync --extra spark` (uv not found)")
        subprocess.run([uv, "sync", "--inexact", "--extra", "spark"], cwd=PROJECT, check=True)
        importlib.invalidate_caches()
    return "local[2]"


def shop_rows(seed: int = 11) -> pd.DataFrame:
    rows = generate_transactions(400, AS_OF, seed=seed)
    assert (rows["amount"].dropna() < 0).any() and rows["customer_id"].isna().any()  # refunds, guests
    rows["amount"] = pd.to_numeric(rows["amount"])
    return rows


def write_parquet_folder(rows: pd.DataFrame, folder: Path, parts: int = 3) -> Path:
    """``rows`` as a folder of Parquet files, as Spark or a lakehouse export writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(rows) // parts)
    for part in range(parts):
        rows.iloc[part * size : (part + 1) * size].to_parquet(folder / f"part-{part:05d}.parquet", index=False)
    (folder / "_SUCCESS").write_text("")
    return folder


def outputs_in_sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'segments.db'}"


def features_of(source_url: str, source_table: str, database_url: str, **overrides: Any) -> dict[str, tuple]:
    settings = load_settings(
        database_url=database_url, source_url=source_url, source_table=source_table, report_path="", **overrides
    )
    return features_by_customer(extract_customer_features(settings, AS_OF).features)


@pytest.mark.parametrize(("lookback_days", "by_order"), [(None, True), (120, True), (None, False)])
def test_duckdb_on_a_parquet_folder_gives_the_definitions(
    tmp_path: Path, lookback_days: int | None, by_order: bool
) -> None:
    rows = shop_rows()
    folder = write_parquet_folder(rows, tmp_path / "transactions")

    got = features_of(
        "duckdb://",
        str(folder),
        outputs_in_sqlite(tmp_path),
        lookback_days=lookback_days,
        order_id_column="order_id" if by_order else "",
    )

    expected = reference_features(rows, AS_OF, lookback_days=lookback_days, by_order=by_order)
    assert len(expected) > 200
    assert_features_equal(got, expected)


def test_every_engine_counts_the_same_rows(tmp_path: Path, spark: str, postgres_url: str, pg_schema: str) -> None:
    rows = shop_rows(seed=12)
    folder = write_parquet_folder(rows, tmp_path / "transactions")
    database = tmp_path / "shop.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute("create table transactions as select * from read_parquet(?)", [str(folder / "*.parquet")])
    postgres = Backend("postgresql", postgres_url, pg_schema)
    write_transactions(postgres, rows)
    sqlite = Backend("sqlite", f"sqlite:///{tmp_path / 'shop.db'}", None)
    write_transactions(sqlite, rows)

    def counts(source_url: str | None, source_table: str) -> tuple[dict[str, Any], dict[str, tuple]]:
        settings = load_settings(
            database_url=outputs_in_sqlite(tmp_path),
            source_url=source_url,
            source_table=source_table,
            order_id_column="order_id",
            lookback_days=120,
            report_path="",
        )
        result = extract_customer_features(settings, AS_OF)
        return result.counts.as_dict(), features_by_customer(result.features)

    reference = counts(postgres_url, postgres.table("transactions"))
    assert reference[0]["guest_rows"] > 0 and reference[0]["rows_rejected"] > 0
    assert reference[0]["rows_before_window"] > 0
    assert_features_equal(reference[1], reference_features(rows, AS_OF, lookback_days=120))
    # Spark by a table of its catalog (here a view the session knows); by path in the tests below
    from tasks.extract.engines import spark_session

    spark_session(spark, "SEGMENTS_SOURCE_URL").read.parquet(str(folder)).createOrReplaceTempView("shop_orders")
    for source_url, table in [
        (f"sqlite:///{tmp_path / 'shop.db'}", "transactions"),
        (f"duckdb:///{database}", "transactions"),
        ("duckdb://", str(folder)),
        (spark, "shop_orders"),
    ]:
        found = counts(source_url, table)
        assert found[0] == reference[0], source_url
        assert_features_equal(found[1], reference[1])


def test_a_messy_csv_export_is_read_by_spark_with_bad_values_rejected(tmp_path: Path, spark: str) -> None:
    rows = shop_rows(seed=13)
    text = rows.assign(
        occurred_at=rows["occurred_at"].dt.strftime("%Y-%m-%d %H:%M:%S"), amount=rows["amount"].map("{:.2f}".format)
    )
    text.loc[text.index[:3], "amount"] = "n/a"  # a value a spreadsheet wrote where a number was missing
    text.loc[text.index[3:5], "occurred_at"] = "yesterday"
    path = tmp_path / "export.csv"
    text.to_csv(path, index=False)
    settings = load_settings(
        database_url=outputs_in_sqlite(tmp_path),
        source_url=spark,
        source_table=str(path),
        order_id_column="order_id",
        report_path="",
    )

    result = extract_customer_features(settings, AS_OF)

    with_id = rows.iloc[:5]["customer_id"].notna()
    assert result.counts.rejected_by_reason["non_numeric_amount"] >= int(with_id.iloc[:3].sum())
    assert result.counts.rejected_by_reason["null_occurred_at"] >= int(with_id.iloc[3:5].sum())
    expected = reference_features(rows.drop(index=rows.index[:5]), AS_OF)
    assert_features_equal(features_by_customer(result.features), expected)

    # DuckDB reads a clean export the same; a value that does not fit its column stops it in one line
    clean = tmp_path / "clean.csv"
    rows.to_csv(clean, index=False)
    got = features_of("duckdb://", str(clean), outputs_in_sqlite(tmp_path), order_id_column="order_id")
    assert_features_equal(got, reference_features(rows, AS_OF))
    with pytest.raises(SourceError, match=r"DuckDB could not read .*; check SEGMENTS_SOURCE_TABLE") as error:
        features_of("duckdb://", str(path), outputs_in_sqlite(tmp_path), order_id_column="order_id")
    assert "\n" not in str(error.value)


# --- incremental nights ----------------------------------------------------------------------------
def night_batch(history: pd.DataFrame) -> pd.DataFrame:
    """A late refund of an old order, a row backfilled with an old date, and a new customer."""
    known = history.dropna(subset=["customer_id", "amount"])
    known = known[known["occurred_at"] < MIDNIGHT - 30 * DAY]
    orders = known.groupby("customer_id")["order_id"].nunique()
    refunded, backfilled = orders[orders >= 3].index[:2]
    old_order = known[known["customer_id"] == refunded].sort_values("occurred_at")["order_id"].iloc[0]
    return pd.DataFrame(
        [
            {"customer_id": refunded, "order_id": old_order, "occurred_at": MIDNIGHT + timedelta(hours=2)},
            {"customer_id": backfilled, "order_id": "O-BF1", "occurred_at": MIDNIGHT - 60 * DAY},
            {"customer_id": "C900001", "order_id": "O-N1", "occurred_at": MIDNIGHT + timedelta(hours=3)},
        ]
    ).assign(amount=[-10.01, 55.55, 20.0])


@pytest.fixture(params=["duckdb", "spark"])
def files_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    yield "duckdb://" if request.param == "duckdb" else request.getfixturevalue("spark")


def test_an_incremental_night_on_files_gives_the_full_aggregations_features(
    tmp_path: Path, files_engine: str, postgres_url: str, pg_schema: str
) -> None:
    history = generate_transactions(300, AS_OF, seed=21)
    history["amount"] = pd.to_numeric(history["amount"])
    history = history.assign(loaded_seq=range(1, len(history) + 1))
    folder = write_parquet_folder(history, tmp_path / "transactions")
    settings = load_settings(
        database_url=postgres_url,
        output_schema=pg_schema,
        source_url=files_engine,
        source_table=str(folder),
        order_id_column="order_id",
        changed_at_column="loaded_seq",
        n_clusters=4,
        report_path="",
    )
    first = run_on(settings, AS_OF)
    assert first.extract.state is not None and first.extract.state.mode == "full"

    batch = night_batch(history)
    batch = batch.assign(loaded_seq=range(len(history) + 1, len(history) + 1 + len(batch)))
    batch.to_parquet(folder / "part-night-1.parquet", index=False)
    night = run_on(settings, AS_OF + DAY)

    state = night.extract.state
    assert state is not None and state.mode == "incremental"
    assert state.watermark == str(len(history) + len(batch))
    assert state.customers_recomputed < 30  # the night's customers, not all 300
    everything = pd.concat([history, batch], ignore_index=True)
    expected = reference_features(everything, AS_OF + DAY)
    assert_features_equal(features_by_customer(night.extract.features), expected)
    # and what a BI tool reads afterwards says the same, to the cent
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        written = pd.read_sql(sa.text(f'select customer_id, monetary from "{pg_schema}".customer_segments'), conn)
    engine.dispose()
    for customer, monetary in zip(written["customer_id"], written["monetary"], strict=True):
        assert round(float(monetary), 2) == round(expected[str(customer)][2], 2), customer


# --- errors ----------------------------------------------------------------------------------------
def test_a_missing_path_or_column_stops_with_one_line_naming_the_setting(tmp_path: Path, spark: str) -> None:
    folder = write_parquet_folder(shop_rows(), tmp_path / "transactions")
    for source_url in ("duckdb://", spark):
        with pytest.raises(SourceError, match=r"not found .*; set SEGMENTS_SOURCE_TABLE") as missing:
            features_of(source_url, str(tmp_path / "nowhere"), outputs_in_sqlite(tmp_path))
        assert "\n" not in str(missing.value)
        with pytest.raises(SourceError, match=r"'spend' not found .*; set SEGMENTS_AMOUNT_COLUMN") as column:
            features_of(source_url, str(folder), outputs_in_sqlite(tmp_path), amount_column="spend")
        assert "\n" not in str(column.value)


def test_an_unreachable_spark_names_the_setting_and_never_its_token(tmp_path: Path, spark: str) -> None:
    token = "s3cr3t-token-value"
    with pytest.raises(DatabaseUnavailableError) as error:
        features_of(f"sc://127.0.0.1:9/;token={token}", "transactions", outputs_in_sqlite(tmp_path))
    message = str(error.value)
    assert "SEGMENTS_SOURCE_URL" in message and "\n" not in message
    assert token not in message


def test_spark_not_installed_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.extract import engines

    engines.spark_session.cache_clear()
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # as on a machine without the extra
    try:
        with pytest.raises(SourceError, match=r"SEGMENTS_SOURCE_URL asks for Spark.*uv sync --extra spark"):
            features_of("local[1]", "transactions", outputs_in_sqlite(tmp_path))
    finally:
        engines.spark_session.cache_clear()


def test_files_need_an_engine_that_reads_them() -> None:
    from tasks.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"SEGMENTS_SOURCE_TABLE: .*only DuckDB or Spark read"):
        load_settings(source_table="exports/transactions.parquet")
