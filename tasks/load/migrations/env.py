"""Alembic's environment for the output tables: run on the connection the job hands over
(``config.attributes["connection"]``), with the version table in the output schema, so that every
output schema of a database has its own version."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table_schema=context.config.attributes["output_schema"])
with context.begin_transaction():
    context.run_migrations()
