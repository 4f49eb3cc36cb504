"""The flow's run form in the Prefect UI: each parameter's label, one-line help and validation."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tasks.settings import IDENTIFIER_PATTERN

# Names as the UI form and the server validate them (the same pattern the settings enforce).
COLUMN_NAME = {"pattern": IDENTIFIER_PATTERN.pattern, "max_length": 63}
_TABLE_PATTERN = r"^(?:[A-Za-z_][A-Za-z0-9_$]{0,62}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}$"
TABLE_NAME = {"pattern": _TABLE_PATTERN, "max_length": 127}
# A table, or (DuckDB, Spark) a path of files: one with a slash or a glob, or a file name with its suffix.
TABLE_OR_PATH = {
    "pattern": _TABLE_PATTERN + r"|^[^\x00-\x1f]*[/*][^\x00-\x1f]*$|^[^\x00-\x1f]+\.(?:parquet|csv|tsv|csv\.gz)$",
    "max_length": 1024,
}


def form_field(title: str, description: str, **constraints: Any) -> Any:
    """A parameter's label and one-line help in the UI's run form, with its validation bounds. Prefect
    sets a parameter's schema title and description itself; `json_schema_extra` is applied after it."""
    return Field(json_schema_extra={"title": title, "description": description}, **constraints)


def column_parameter(role: str, variable: str) -> Any:
    return form_field(
        f"{role} column", f"Column of the source holding the {role.lower()}. Empty: {variable}.", **COLUMN_NAME
    )
