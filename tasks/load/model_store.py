"""The model store (``segment_models``): every fitted model as plain JSON numbers, read back as data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql

from tasks.database import connection_errors, make_engine
from tasks.load.schema import OutputTables, output_tables
from tasks.model.lifecycle import StoredModel
from tasks.model.transform import MODEL_FORMAT_VERSION
from tasks.settings import SegmentSettings

MODEL_COLUMNS = {
    "model_version": sa.Integer,
    "created_at": sa.DateTime(timezone=True),
    "training_run_id": sa.Text,
    "trained_as_of": sa.Date,
    "format_version": sa.Integer,
    "n_clusters": sa.Integer,
    "features": sa.Text,
    "model": sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
}


def insert_model(conn: Connection, tables: OutputTables, stored: StoredModel) -> None:
    """Add a newly fitted model to the store (inside the run's write transaction)."""
    models = tables.table("segment_models", MODEL_COLUMNS)
    conn.execute(
        models.insert().values(
            model_version=stored.version,
            created_at=datetime.now(UTC),
            training_run_id=stored.training_run_id,
            trained_as_of=stored.trained_as_of,
            format_version=MODEL_FORMAT_VERSION,
            n_clusters=stored.model.n_clusters,
            features=",".join(stored.model.features),
            model=stored.to_dict(),
        )
    )


def read_model(conn: Connection, tables: OutputTables, version: int | None = None) -> StoredModel | None:
    """Model ``version`` (the newest when ``None``) rebuilt from its stored numbers; ``None`` when there
    is none. A row that cannot be read (unknown format, wrong shapes) raises :class:`ModelError`."""
    if not sa.inspect(conn).has_table("segment_models", schema=tables.schema_name):
        return None
    models = tables.table("segment_models", MODEL_COLUMNS)
    query = sa.select(models.c.model)
    query = (
        query.order_by(models.c.model_version.desc())
        if version is None
        else query.where(models.c.model_version == version)
    )
    data: Any = conn.execute(query.limit(1)).scalar()
    if data is None:
        return None
    return StoredModel.from_dict(json.loads(data) if isinstance(data, str) else data)


def load_latest_model(settings: SegmentSettings) -> StoredModel | None:
    """The newest stored model, or ``None`` before the first fit."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.connect() as conn:
            return read_model(conn, output_tables(conn, settings))
    finally:
        engine.dispose()
