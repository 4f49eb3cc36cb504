"""The output tables as the first release (git 58dbe52) created them, to test upgrades from them: its
two DDL templates, kept verbatim beside this file, rendered as that release rendered them."""

from __future__ import annotations

from pathlib import Path

import jinja2
import sqlalchemy as sa

from tasks.database import split_statements

HERE = Path(__file__).parent
TYPES = {
    "postgresql": {
        "timestamp_type": "timestamptz",
        "json_type": "jsonb",
        "float_type": "double precision",
        "money_type": "numeric",
        "small_integer_type": "smallint",
    },
    "sqlite": {
        "timestamp_type": "timestamp",
        "json_type": "text",
        "float_type": "real",
        "money_type": "real",
        "small_integer_type": "integer",
    },
}


def create_first_release_tables(engine: sa.Engine, schema: str | None, customer_id_type: str = "text") -> None:
    """Create segment_runs, segment_profiles and customer_segments in ``schema`` as the first release did."""
    prefix = f'"{schema}".' if schema else ""
    names = {
        "schema": None,
        "segment_runs": f"{prefix}segment_runs",
        "segment_profiles": f"{prefix}segment_profiles",
        "customer_segments": f"{prefix}customer_segments",
        "customer_id_type": customer_id_type,
    }
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), trim_blocks=True, lstrip_blocks=True)
    with engine.begin() as conn:
        for template in ("output_tables.sql", "customer_segments_table.sql"):
            script = environment.get_template(template).render(**names, **TYPES[engine.dialect.name])
            for statement in split_statements(script):
                conn.exec_driver_sql(statement)
