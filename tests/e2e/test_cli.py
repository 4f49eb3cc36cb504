"""The installed ``segments`` command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.backend import Backend
from tests.support.fixtures import create_transactions_table

pytestmark = pytest.mark.e2e
SEGMENTS = str(Path(sys.executable).parent / "segments")


def segments(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("SEGMENTS_") and key not in unset
    }
    environment |= {"PREFECT_HOME": str(cwd / ".prefect"), "COLUMNS": "200"} | (env or {})
    return subprocess.run(
        [SEGMENTS, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_demo_runs_the_whole_pipeline_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    # as a new user runs it: without the telemetry settings the test session sets for itself
    quiet = ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "PREFECT_API_URL")
    result = segments("demo", "--customers", "800", cwd=tmp_path, unset=quiet)

    assert result.returncode == 0, result.stderr[-3000:]
    # a quiet terminal: the progress and the summary, none of Prefect's log lines (nor an ERROR line
    # of the temporary server's telemetry, offline)
    output = result.stdout + result.stderr
    assert "| INFO" not in output and "| ERROR" not in output and "| WARNING" not in output, output
    assert "Extract:" in result.stderr and "Model:" in result.stderr  # the progress
    database = tmp_path / "segments_demo.db"
    assert "Segments as of" in result.stdout and str(database) in result.stdout
    assert "Try next:" in result.stdout and "segments score --customer-id C000042" in result.stdout
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        customers = conn.execute(sa.text("select count(*), count(distinct customer_id) from customer_segments")).one()
        segment_names = conn.scalars(sa.text("select distinct segment_name from customer_segments")).all()
        run = conn.execute(sa.text("select status, rows_rejected, n_clusters, flow_run_id from segment_runs")).one()
    engine.dispose()
    # without PREFECT_API_URL no Prefect server was started: none has a database, no flow run was made
    assert not list((tmp_path / ".prefect").glob("*.db")) and run.flow_run_id is None
    assert customers[0] == customers[1] == 800
    for name in segment_names:
        assert name in result.stdout  # the printed summary names every segment
    assert run.status == "succeeded" and run.rows_rejected > 0 and run.n_clusters >= 2
    # every run writes the self-contained HTML report where the summary says
    report = tmp_path / "segments_report.html"
    assert f"Report: {report}" in result.stdout
    html = report.read_text()
    for chart in ("elbow", "silhouette", "sizes", "heatmap", "scatter"):
        assert f'data-chart="{chart}"' in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch: images are embedded


def test_after_the_demo_every_next_command_works_as_the_readme_shows_it(tmp_path: Path) -> None:
    demo = segments("demo", "--customers", "300", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (tmp_path / ".env").read_text().startswith("# Written by `segments demo`")

    report = segments("report", "--output", "report.html", cwd=tmp_path)
    export = segments("export", "--format", "csv", "--output", "segments.csv", cwd=tmp_path)
    score = segments("score", "--customer-id", "C000042", "--json", cwd=tmp_path)
    compare = segments("compare", cwd=tmp_path)
    rerun = segments("run", cwd=tmp_path)

    for result in (report, export, score, compare, rerun):
        assert result.returncode == 0, result.stderr[-3000:]
    assert 'data-chart="sizes"' in (tmp_path / "report.html").read_text()
    first = (tmp_path / "segments.csv").read_text().splitlines()[:2]
    header, row = first[0].split(","), first[1].split(",")
    assert "." not in row[header.index("recency_days")] and "." not in row[header.index("r_score")]
    assert '"segment_id"' in score.stdout
    assert "agglomerative_ward" in compare.stdout
    assert "Segments as of" in rerun.stdout
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'segments_demo.db'}")
    with engine.connect() as conn:  # the second run was on the demo's data and orders, as the first
        runs = conn.execute(sa.text("select status, settings from segment_runs order by started_at")).all()
    engine.dispose()
    assert [run.status for run in runs] == ["superseded", "succeeded"]
    assert all('"order_id_column": "order_id"' in run.settings for run in runs)


def test_a_users_own_env_file_is_left_as_it_is_and_the_demo_says_what_to_set(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SEGMENTS_OUTPUT_SCHEMA=analytics\n")

    demo = segments("demo", "--customers", "100", cwd=tmp_path)

    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (tmp_path / ".env").read_text() == "SEGMENTS_OUTPUT_SCHEMA=analytics\n"
    assert "Your .env was left as it is" in demo.stdout and "SEGMENTS_ORDER_ID_COLUMN=order_id" in demo.stdout


def test_a_data_gate_stops_a_run_in_one_line_without_a_traceback_and_writes_nothing(tmp_path: Path) -> None:
    assert segments("demo", "--customers", "200", cwd=tmp_path).returncode == 0
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'segments_demo.db'}")
    with engine.begin() as conn:  # a load that lost its amounts: a third of the rows now have none
        conn.exec_driver_sql(
            "insert into transactions (customer_id, order_id, occurred_at, amount) "
            "select customer_id, 'broken-' || order_id, occurred_at, null from transactions where amount > 0 limit 2000"
        )
        before = conn.execute(sa.text("select run_id, count(*) from customer_segments group by run_id")).all()
    engine.dispose()

    stopped = segments("run", cwd=tmp_path)

    assert stopped.returncode == 1
    lines = stopped.stderr.strip().splitlines()
    assert lines[-1].startswith("error: data gate:") and "SEGMENTS_MAX_REJECTED_SHARE_RISE" in lines[-1]
    assert "Traceback" not in stopped.stdout + stopped.stderr and "| ERROR" not in stopped.stderr
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'segments_demo.db'}")
    with engine.connect() as conn:
        after = conn.execute(sa.text("select run_id, count(*) from customer_segments group by run_id")).all()
    engine.dispose()
    assert after == before


def test_a_report_that_fails_after_the_write_leaves_the_run_succeeded_and_exits_non_zero(tmp_path: Path) -> None:
    assert segments("demo", "--customers", "200", cwd=tmp_path).returncode == 0
    (tmp_path / "not-a-folder").write_text("a file where the report's folder should be")

    result = segments("run", cwd=tmp_path, env={"SEGMENTS_REPORT_PATH": str(tmp_path / "not-a-folder" / "r.html")})

    assert result.returncode == 1
    assert "Segments as of" in result.stdout  # the outputs were written: their summary is shown
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run ") and "wrote its outputs" in last and "report failed" in last, last
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'segments_demo.db'}")
    with engine.connect() as conn:
        run = conn.execute(
            sa.text("select run_id, status, report_error from segment_runs order by started_at desc")
        ).first()
        live = conn.execute(sa.text("select distinct run_id from customer_segments")).scalars().all()
    engine.dispose()
    assert run is not None and run.status == "succeeded" and "not-a-folder" in run.report_error
    assert live == [run.run_id]  # BI tools, `segments report` and the data gates read this run


def test_the_run_summary_reads_whole_at_80_columns(tmp_path: Path) -> None:
    result = segments("demo", "--customers", "600", cwd=tmp_path, env={"COLUMNS": "80"})

    assert result.returncode == 0, result.stderr[-3000:]
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'segments_demo.db'}")
    with engine.connect() as conn:
        profiles = conn.execute(sa.text("select segment_name, mean_monetary from segment_profiles")).all()
    engine.dispose()
    # the table is drawn to 80 columns; sentences are left for the terminal to wrap at word breaks
    output = result.stdout.splitlines()
    header = next(index for index, line in enumerate(output) if line.split()[:2] == ["id", "segment"])
    legend = next(index for index, line in enumerate(output) if line.startswith("purity:"))
    lines = output[header:legend]
    assert max(len(line) for line in lines) <= 80 and "…" not in result.stdout
    table = " ".join(" ".join(line.split()) for line in lines)  # names may wrap onto two lines
    for name, spend in profiles:
        assert all(word in table for word in name.split()), name
        assert f"{spend:,.2f}" in result.stdout  # money whole, on one line


@pytest.fixture
def shop_env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    create_transactions_table(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("create table empty_sales (customer_id text, occurred_at timestamp, amount numeric)")
        conn.exec_driver_sql("create table text_sales (customer_id text, occurred_at timestamp, amount text)")
    engine.dispose()
    return {"SEGMENTS_DATABASE_URL": url}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SEGMENTS_SOURCE_TABLE": "sales"}, "source table or view 'sales' not found"),
        ({"SEGMENTS_AMOUNT_COLUMN": "total"}, "column 'total' not found in 'transactions'"),
        ({"SEGMENTS_SOURCE_TABLE": "text_sales"}, "not a number; set SEGMENTS_AMOUNT_COLUMN"),
        ({"SEGMENTS_SOURCE_TABLE": "empty_sales"}, "source 'empty_sales' has no rows"),
        ({"SEGMENTS_K_MAX": "50"}, "invalid setting SEGMENTS_K_MAX"),
        ({"SEGMENTS_SOURCE_TABLE": "x;drop table transactions"}, "SEGMENTS_SOURCE_TABLE"),
        (
            {"SEGMENTS_DATABASE_URL": "postgresql+psycopg://shop:s3cret@127.0.0.1:1/shop"},
            "cannot connect to postgresql+psycopg://shop:***@127.0.0.1:1/shop",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_line(
    tmp_path: Path, shop_env: dict[str, str], env: dict[str, str], expected: str
) -> None:
    result = segments("run", "--as-of", "2024-03-01", cwd=tmp_path, env=shop_env | env, timeout=120)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "s3cret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    engine = sa.create_engine(shop_env["SEGMENTS_DATABASE_URL"])
    assert not sa.inspect(engine).has_table("customer_segments")  # nothing written
    engine.dispose()


def test_run_options_are_validated_by_the_cli(tmp_path: Path) -> None:
    result = segments("run", "--n-clusters", "1", cwd=tmp_path, timeout=120)

    assert result.returncode == 2
    assert "--n-clusters" in result.stderr


def postgres_env(postgres_url: str, schema: str) -> dict[str, str]:
    """SEGMENTS_* pointing the command at a synthetic shop in ``schema``."""
    return {
        "SEGMENTS_DATABASE_URL": postgres_url,
        "SEGMENTS_SOURCE_TABLE": f"{schema}.transactions",
        "SEGMENTS_OUTPUT_SCHEMA": schema,
        "SEGMENTS_ORDER_ID_COLUMN": "order_id",
    }


def test_run_writes_segments_for_a_configured_postgres_source(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    backend = Backend("postgresql", postgres_url, pg_schema)
    from tests.support.shop import load_synthetic

    load_synthetic(backend, customers=300)
    env = postgres_env(postgres_url, pg_schema)

    result = segments("run", "--as-of", "2024-03-01", "--n-clusters", "4", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    with backend.engine().connect() as conn:
        segments_written = conn.execute(
            sa.text(f"select count(distinct segment_id) from {pg_schema}.customer_segments where segment_id > 0")
        ).scalar_one()
    backend.dispose()
    assert segments_written == 4


def test_run_reads_a_parquet_export_through_duckdb_into_postgres(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    from tasks.synthetic import generate_transactions
    from tests.support.shop import AS_OF

    rows = generate_transactions(300, AS_OF, seed=4)
    rows["amount"] = rows["amount"].astype(float)
    (tmp_path / "export").mkdir()
    rows.iloc[:2000].to_parquet(tmp_path / "export" / "part-0.parquet", index=False)
    rows.iloc[2000:].to_parquet(tmp_path / "export" / "part-1.parquet", index=False)
    env = {
        "SEGMENTS_DATABASE_URL": postgres_url,
        "SEGMENTS_OUTPUT_SCHEMA": pg_schema,
        "SEGMENTS_SOURCE_URL": "duckdb://",
        "SEGMENTS_SOURCE_TABLE": "./export",
        "SEGMENTS_ORDER_ID_COLUMN": "order_id",
    }

    result = segments("run", "--as-of", "2024-03-01", "--n-clusters", "4", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        customers = conn.execute(sa.text(f"select count(*) from {pg_schema}.customer_segments")).scalar_one()
        source = conn.execute(sa.text(f"select settings->>'source' from {pg_schema}.segment_runs")).scalar_one()
    engine.dispose()
    usable = rows[(rows["occurred_at"] < "2024-03-01") & rows["amount"].notna()]
    assert customers == usable["customer_id"].dropna().nunique()
    assert source == "duckdb://"


def test_index_create_repairs_an_index_a_failed_build_left_and_one_build_runs_at_a_time(
    tmp_path: Path, postgres_url: str, pg_schema: str
) -> None:
    from tasks.extract.covering_index import covering_index_lock_key
    from tasks.locking import advisory_lock
    from tasks.settings import load_settings
    from tests.support.covering_index import index_state, leave_an_invalid_covering_index
    from tests.support.shop import load_synthetic

    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=100)
    settings = load_settings(**backend.settings(order_id_column="order_id"))
    leave_an_invalid_covering_index(backend, settings)
    env = postgres_env(postgres_url, pg_schema)

    with advisory_lock(settings, covering_index_lock_key(settings), lambda who: AssertionError(who)):
        busy = segments("index", "--create", cwd=tmp_path, env=env)
    repaired = segments("index", "--create", cwd=tmp_path, env=env)

    assert busy.returncode == 1 and "another `segments index --create` is building the index" in busy.stderr
    assert repaired.returncode == 0, repaired.stderr[-3000:]
    assert "built it again: an earlier build failed or was interrupted and left it invalid" in repaired.stdout
    state = index_state(backend, settings)
    assert state is not None and state[1]  # valid now
    backend.dispose()


def test_score_one_customer_with_the_stored_model(tmp_path: Path, postgres_url: str, pg_schema: str) -> None:
    from tests.support.shop import load_synthetic, run_once

    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=300)
    env = postgres_env(postgres_url, pg_schema)
    before = segments("score", "--customer-id", "C000042", "--as-of", "2024-03-01", cwd=tmp_path, env=env)
    assert before.returncode == 1 and "no stored model yet" in before.stderr
    run_once(backend)
    with backend.engine().connect() as conn:
        expected = conn.execute(
            sa.text(
                f"select segment_id, segment_name, frequency from {pg_schema}.customer_segments "
                "where customer_id = 'C000042'"
            )
        ).one()

    result = segments("score", "--customer-id", "C000042", "--as-of", "2024-03-01", "--json", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stderr
    import json

    scored = json.loads(result.stdout)
    assert (scored["segment_id"], scored["segment_name"]) == (expected.segment_id, expected.segment_name)
    assert scored["features"]["frequency"] == expected.frequency
    unknown = segments("score", "--customer-id", "nobody", "--as-of", "2024-03-01", cwd=tmp_path, env=env)
    assert unknown.returncode == 1 and "customer 'nobody' has no usable rows" in unknown.stderr
    backend.dispose()


def test_mall_customers_from_csv_to_segments_report_and_parquet(tmp_path: Path) -> None:
    from tasks.synthetic import generate_mall_customers

    generate_mall_customers(200, seed=3).to_csv(tmp_path / "Mall_Customers.csv", index=False)
    env = {"SEGMENTS_DATABASE_URL": f"sqlite:///{tmp_path / 'mall.db'}"}
    attributes_only = env | {
        "SEGMENTS_SOURCE_TABLE": "",
        "SEGMENTS_CUSTOMER_TABLE": "mall_customers",
        "SEGMENTS_FEATURES": "annual_income_k,spending_score_1_100",
    }

    loaded = segments("load-csv", "Mall_Customers.csv", "--table", "mall_customers", cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "'Annual Income (k$)' -> annual_income_k" in loaded.stdout
    ran = segments("run", "--as-of", "2026-01-01", cwd=tmp_path, env=attributes_only)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "K=5: the most segments of 4..8 that are all stable" in ran.stdout
    assert "mean annual_income_k" in ran.stdout  # the summary shows the attributes, not empty RFM means
    reported = segments("report", "--output", "mall.html", cwd=tmp_path, env=attributes_only)
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert 'data-chart="scatter"' in (tmp_path / "mall.html").read_text()
    exported = segments("export", "--format", "parquet", "--output", "mall.parquet", cwd=tmp_path, env=attributes_only)
    assert exported.returncode == 0, exported.stderr[-3000:]

    import pyarrow.parquet as pq

    frame = pq.read_table(tmp_path / "mall.parquet").to_pandas()
    assert len(frame) == 200 and frame["segment_id"].nunique() == 5
    # the customer table's other columns are joined, as in the notebooks' segmented CSV
    assert {"gender", "age", "annual_income_k", "spending_score_1_100"} <= set(frame.columns)


def test_report_and_export_before_any_run_exit_with_one_line(tmp_path: Path) -> None:
    env = {"SEGMENTS_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    for args in (("report",), ("export", "--output", "x.csv")):
        result = segments(*args, cwd=tmp_path, env=env)
        assert result.returncode == 1
        assert result.stderr.strip().count("\n") == 0 and "segments run" in result.stderr


def test_migrate_upgrades_the_first_releases_tables_then_says_they_are_up_to_date(tmp_path: Path) -> None:
    from tests.support.first_release import create_first_release_tables

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    create_transactions_table(engine)
    create_first_release_tables(engine, None)
    engine.dispose()

    upgraded = segments("migrate", cwd=tmp_path, env={"SEGMENTS_DATABASE_URL": url})
    again = segments("migrate", cwd=tmp_path, env={"SEGMENTS_DATABASE_URL": url})

    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    assert "Upgraded the output tables from revision (none) to" in upgraded.stdout
    assert again.returncode == 0 and "up to date" in again.stdout
    engine = sa.create_engine(url)
    assert {"segment_models", "customer_segment_history"} <= set(sa.inspect(engine).get_table_names())
    engine.dispose()
