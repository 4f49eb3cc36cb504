"""The output tables change through Alembic migrations: a fresh schema gets every table at the latest
revision, and tables made by the first release upgrade in place, their rows kept."""

from __future__ import annotations

from datetime import date

import pandas as pd
import sqlalchemy as sa

from tasks.load.schema import migrate, schema_revision
from tasks.settings import load_settings
from tests.support.backend import Backend
from tests.support.first_release import create_first_release_tables
from tests.support.shop import AS_OF, load_synthetic, read, run_once

OUTPUT_TABLES = {"segment_runs", "segment_profiles", "segment_models", "customer_segments", "customer_segment_history"}


def revision(backend: Backend) -> tuple[str | None, str]:
    with backend.engine().connect() as conn:
        return schema_revision(conn, load_settings(**backend.settings()))


def test_migrate_creates_every_output_table_at_the_latest_revision_and_then_does_nothing(backend: Backend) -> None:
    load_synthetic(backend)
    settings = load_settings(**backend.settings())

    before, after = migrate(settings)
    again = migrate(settings)

    inspector = sa.inspect(backend.engine())
    assert set(inspector.get_table_names(schema=backend.schema)) >= OUTPUT_TABLES
    assert "segment_transitions" in inspector.get_view_names(schema=backend.schema)
    current, head = revision(backend)
    assert before is None and after == current == head
    assert again == (head, head)


def test_tables_of_the_first_release_upgrade_in_place_and_keep_their_rows(backend: Backend) -> None:
    load_synthetic(backend)
    create_first_release_tables(backend.engine(), backend.schema)
    with backend.engine().begin() as conn:  # a run the first release recorded, and one customer of it
        conn.execute(
            sa.text(
                f"insert into {backend.table('segment_runs')} (run_id, as_of, started_at, status, customers) "
                "values ('old-run', :as_of, :started, 'succeeded', 1)"
            ),
            {"as_of": date(2024, 2, 1), "started": pd.Timestamp("2024-02-01 02:00", tz="UTC").to_pydatetime()},
        )
        conn.execute(
            sa.text(
                f"insert into {backend.table('customer_segments')} (customer_id, segment_id, segment_name, frequency, "
                "monetary, as_of, run_id, model_version, scored_at) "
                "values ('C000001', 1, 'Champions', 3, 120.5, :as_of, 'old-run', '1', :started)"
            ),
            {"as_of": date(2024, 2, 1), "started": pd.Timestamp("2024-02-01 02:00", tz="UTC").to_pydatetime()},
        )

    run_id = run_once(backend)

    runs = read(backend, "segment_runs").set_index("run_id")
    assert runs.loc["old-run", "status"] == "succeeded" and runs.loc["old-run", "customers"] == 1
    assert runs.loc[run_id, "status"] == "succeeded" and runs.loc[run_id, "segment_changes"] is not None
    columns = {c["name"]: c for c in sa.inspect(backend.engine()).get_columns("customer_segments", backend.schema)}
    assert columns["frequency"]["nullable"] and columns["monetary"]["nullable"]  # attributes alone leave them empty
    assert "attribute_means" in {
        c["name"] for c in sa.inspect(backend.engine()).get_columns("segment_profiles", backend.schema)
    }
    assert (read(backend, "customer_segments")["run_id"] == run_id).all()
    current, head = revision(backend)
    assert current == head


def test_the_open_rows_index_of_an_earlier_release_is_replaced_by_one_holding_the_segment(
    postgres_url: str, pg_schema: str
) -> None:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=100)
    create_first_release_tables(backend.engine(), pg_schema)
    history = f"{pg_schema}.customer_segment_history"
    with backend.engine().begin() as conn:  # the history as a later pre-migration release left it
        conn.exec_driver_sql(
            f"create table {history} (customer_id text not null, segment_id integer not null, "
            "segment_name text not null, valid_from date not null, valid_to date, run_id text not null, "
            "primary key (customer_id, valid_from))"
        )
        conn.exec_driver_sql(
            f"create index customer_segment_history_open_idx on {history} (customer_id) where valid_to is null"
        )

    run_once(backend, as_of=AS_OF)

    with backend.engine().connect() as conn:
        indexes = dict(
            conn.execute(
                sa.text("select indexname, indexdef from pg_indexes where schemaname = :s and tablename = :t"),
                {"s": pg_schema, "t": "customer_segment_history"},
            ).all()
        )
    assert "customer_segment_history_open_idx" not in indexes
    assert indexes["customer_segment_history_open_rows_idx"].endswith(
        "USING btree (customer_id) INCLUDE (segment_id) WHERE (valid_to IS NULL)"
    )
