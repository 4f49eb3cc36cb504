"""Test session set-up: an isolated Prefect home, a PostgreSQL database of the session's own, and
hermetic settings for every test.

PostgreSQL comes from ``TEST_DATABASE_URL`` (any database on a server where the user may CREATE
DATABASE), else from testcontainers where a Docker engine runs, else the tests that need it fail with a
message that says how to provide one. The session creates its own database and drops it at the end.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import pytest

# Prefect reads these when it is first imported: set them before any test module imports it.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="segments-tests-prefect-")
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.support.backend import Backend, dispose_backends

NO_POSTGRES_MESSAGE = (
    "These tests need PostgreSQL. Set TEST_DATABASE_URL to a server where the user may create "
    "databases, e.g. TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres "
    "(`bash .ci/run` starts the local server and sets it), or run a Docker engine so testcontainers "
    "can start one."
)


@pytest.fixture(autouse=True)
def hermetic_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No SEGMENTS_* variable or .env file of the caller's leaks into a test, and no test's open
    connection into the next one."""
    for name in list(os.environ):
        if name.startswith("SEGMENTS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    dispose_backends()


def _server_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    try:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver="psycopg")
        container.start()
    except Exception as error:  # noqa: BLE001 - no Docker engine is the common case; say what to do
        pytest.fail(f"{NO_POSTGRES_MESSAGE} (testcontainers: {type(error).__name__}: {error})", pytrace=False)
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a database created for this test session and dropped after it."""
    for server_url in _server_url():
        server = make_url(server_url)
        if server.get_backend_name() != "postgresql":
            pytest.fail(f"TEST_DATABASE_URL must be a PostgreSQL URL. {NO_POSTGRES_MESSAGE}", pytrace=False)
        server = server.set(drivername="postgresql+psycopg")
        name = f"segments_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except sa.exc.OperationalError as error:
            admin.dispose()
            pytest.fail(
                f"cannot create a test database on {server.render_as_string()}: {error.orig}. {NO_POSTGRES_MESSAGE}",
                pytrace=False,
            )
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh schema in the session database for one test (its source and outputs go there)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        dispose_backends()  # none of the test's sessions may hold a lock on the schema's tables
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "segments.db"
        chosen = Backend("sqlite", f"sqlite:///{path}", None)
    else:
        url = request.getfixturevalue("postgres_url")
        chosen = Backend("postgresql", url, request.getfixturevalue("pg_schema"))
    yield chosen
    chosen.dispose()
