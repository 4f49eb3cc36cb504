"""The segment-customers flow through Prefect, writing to PostgreSQL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from flows.segment_customers import segment_customers
from tasks.errors import SourceError
from tasks.model.naming import NO_NET_PURCHASES_NAME
from tests.support.backend import Backend
from tests.support.shop import AS_OF, load_synthetic

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def shop(postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """A PostgreSQL schema with synthetic transactions, and the environment pointing the flow at it."""
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=600, seed=21)
    monkeypatch.setenv("SEGMENTS_DATABASE_URL", postgres_url)
    monkeypatch.setenv("SEGMENTS_SOURCE_TABLE", f"{pg_schema}.transactions")
    monkeypatch.setenv("SEGMENTS_OUTPUT_SCHEMA", pg_schema)
    monkeypatch.setenv("SEGMENTS_ORDER_ID_COLUMN", "order_id")
    yield backend
    backend.dispose()


def query(backend: Backend, sql: str) -> pd.DataFrame:
    with backend.engine().connect() as conn:
        return pd.read_sql(sa.text(sql.format(schema=backend.schema)), conn)


def test_the_flow_segments_customers_into_postgres(shop: Backend) -> None:
    summary = segment_customers(as_of=AS_OF, k_max=8)

    assignments = query(shop, "select * from {schema}.customer_segments")
    # what BI tools rely on, stated the way dbt tests state it
    assert assignments["customer_id"].notna().all() and assignments["customer_id"].is_unique
    assert assignments["segment_id"].notna().all() and assignments["segment_name"].notna().all()
    profiles = query(shop, "select * from {schema}.segment_profiles")
    assert set(assignments["segment_name"]) <= set(profiles["segment_name"])
    assert profiles["customers"].sum() == len(assignments) == summary["customers"]
    assert 2 <= summary["n_clusters"] <= 8
    assert (assignments["frequency"] == 0).sum() == (assignments["segment_name"] == NO_NET_PURCHASES_NAME).sum()

    run = query(shop, "select * from {schema}.segment_runs").iloc[0]
    assert run["status"] == "succeeded" and str(run["run_id"]) == summary["run_id"]
    assert run["elbow"]["knee"] is not None and len(run["elbow"]["inertias"]) == 8
    assert run["model_action"] == "fit" and run["model_version"] == "1"
    model = query(shop, "select * from {schema}.segment_models").iloc[0]
    assert model["training_run_id"] == summary["run_id"]
    assert model["model"]["model"]["features"] == ["recency_days", "frequency", "monetary"]
    assert len(model["model"]["segment_ids"]) == summary["n_clusters"]

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(run["flow_run_id"]))
    assert flow_run.state is not None and flow_run.state.is_completed()
    assert flow_run.parameters["k_max"] == 8

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    by_key = {artifact.key: artifact for artifact in artifacts}
    assert set(by_key) == {"segment-profiles", "segment-run-summary", "segment-report"}
    report_markdown = str(by_key["segment-report"].data)
    for title in ("Elbow curve", "Silhouette by K", "Segment sizes", "Feature means per segment"):
        assert f"![{title}](data:image/png;base64," in report_markdown
    html = Path(summary["report_path"]).read_text()
    assert summary["run_id"] in html and html.count('<img class="chart"') == report_markdown.count("![")
    summary_markdown = str(by_key["segment-run-summary"].data)
    assert f"Customer segments as of {AS_OF.isoformat()}" in summary_markdown
    assert "| guest checkouts (no customer id;" in summary_markdown and "## Choosing K" in summary_markdown
    chosen_rows = [line for line in summary_markdown.splitlines() if "**chosen**" in line]
    assert len(chosen_rows) == 1 and chosen_rows[0].startswith(f"| {summary['n_clusters']} |")
    assert "postgres@127.0.0.1" in summary_markdown  # where the outputs are, without credentials
    table = by_key["segment-profiles"].data
    assert len(json.loads(table) if isinstance(table, str) else table) == len(profiles)


def test_a_failing_run_is_recorded_and_keeps_the_previous_segments(
    shop: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment_customers(as_of=AS_OF)
    before = query(shop, "select * from {schema}.customer_segments order by customer_id")

    monkeypatch.setenv("SEGMENTS_AMOUNT_COLUMN", "amount_usd")
    with pytest.raises(SourceError, match="amount_usd"):
        segment_customers(as_of=AS_OF)

    after = query(shop, "select * from {schema}.customer_segments order by customer_id")
    pd.testing.assert_frame_equal(after, before)
    runs = query(shop, "select status, error from {schema}.segment_runs order by started_at")
    assert runs["status"].tolist() == ["succeeded", "failed"]
    assert "SEGMENTS_AMOUNT_COLUMN" in runs["error"].iloc[1]


def test_a_dry_run_writes_nothing_but_its_report(shop: Backend) -> None:
    summary = segment_customers(as_of=AS_OF, dry_run=True, compare_algorithms=True)

    assert summary["dry_run"] and summary["customers"] > 500
    assert [row["algorithm"] for row in summary["algorithm_comparison"]][-1] == "dbscan"
    html = Path(summary["report_path"]).read_text()
    assert "(dry run: nothing written)" in html and 'id="comparison"' in html
    tables = query(shop, "select table_name from information_schema.tables where table_schema = '{schema}'")
    assert set(tables["table_name"]) == {"transactions"}


def test_parameters_have_bounds_the_ui_can_render_and_the_flow_enforces() -> None:
    schema = segment_customers.parameters.model_dump()["properties"]

    n_clusters = schema["n_clusters"]["anyOf"][0]
    assert (n_clusters["minimum"], n_clusters["maximum"]) == (2, 30)
    policy = schema["model_policy"]["anyOf"][0]
    assert policy.get("enum", [policy.get("const")]) == ["auto", "reuse", "refit"]
    with pytest.raises(Exception, match="n_clusters"):
        segment_customers(n_clusters=1)


def test_source_mapping_and_a_secret_database_url_come_from_parameters(postgres_url: str, pg_schema: str) -> None:
    """A UI user can point a run at another table and database; the URL stays in a Secret block."""
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=200, seed=4)
    with backend.engine().begin() as conn:
        conn.exec_driver_sql(f"alter table {pg_schema}.transactions rename column amount to line_total")
    password_url = sa.engine.make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    Secret(value=password_url).save("shop-database-url", overwrite=True)

    summary = segment_customers(
        as_of=AS_OF,
        database_url_secret="shop-database-url",
        source_table=f"{pg_schema}.transactions",
        amount_column="line_total",
        order_id_column="order_id",
        output_schema=pg_schema,
    )

    written = query(backend, "select count(*) as n from {schema}.customer_segments")["n"].iloc[0]
    assert written == summary["customers"] == 200
    run = query(backend, "select flow_run_id, settings::text as settings from {schema}.segment_runs").iloc[0]
    assert "s3cret-pw" not in run["settings"] and "line_total" in run["settings"]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(run["flow_run_id"]))
    assert flow_run.parameters["database_url_secret"] == "shop-database-url"
    assert "s3cret-pw" not in str(flow_run.parameters)
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs reach the API in batches; send what is queued
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
        artifacts = client.read_artifacts()
    messages = "\n".join(log.message for log in logs)
    assert "postgres:***@127.0.0.1" in messages  # the run says where it reads, with the password masked
    assert "s3cret-pw" not in messages
    assert all("s3cret-pw" not in str(artifact.data) for artifact in artifacts)
    backend.dispose()


def test_a_source_apart_from_the_outputs_comes_from_a_secret_block(
    postgres_url: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parquet files read through DuckDB, the source URL named by a Secret block like the database's."""
    from prefect.blocks.system import Secret

    monkeypatch.setenv("SEGMENTS_DATABASE_URL", postgres_url)
    monkeypatch.setenv("SEGMENTS_REPORT_PATH", "")

    from tasks.synthetic import generate_transactions

    rows = generate_transactions(120, AS_OF, seed=8)
    rows["amount"] = rows["amount"].astype(float)
    (tmp_path / "lake").mkdir()
    rows.to_parquet(tmp_path / "lake" / "part-0.parquet", index=False)
    Secret(value="duckdb://").save("lake-source-url", overwrite=True)

    summary = segment_customers(
        as_of=AS_OF,
        source_url_secret="lake-source-url",
        source_table=str(tmp_path / "lake"),
        order_id_column="order_id",
        n_clusters=3,
        output_schema=pg_schema,
    )

    backend = Backend("postgresql", postgres_url, pg_schema)
    usable = rows[(rows["occurred_at"] < pd.Timestamp(AS_OF)) & rows["amount"].notna()]
    written = query(backend, "select count(*) as n from {schema}.customer_segments")["n"].iloc[0]
    assert written == summary["customers"] == usable["customer_id"].dropna().nunique()
    backend.dispose()
    with pytest.raises(Exception, match="source_url_secret"):
        segment_customers.validate_parameters({"source_url_secret": ""})


def test_names_in_parameters_are_validated_before_the_run() -> None:
    schema = segment_customers.parameters.model_dump()["properties"]
    assert "pattern" in schema["amount_column"]["anyOf"][0]

    with pytest.raises(Exception, match="amount_column"):
        segment_customers(amount_column="amount; drop table transactions")
