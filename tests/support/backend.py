"""One database under test (SQLite or a PostgreSQL schema), and the cleanup of every engine a test made."""

from __future__ import annotations

import sqlalchemy as sa

_BACKENDS: list[Backend] = []


def dispose_backends() -> None:
    """Close the pooled connections of every backend a test made, whether or not it got to its own
    ``dispose()``: a test that failed half-way otherwise left them for the garbage collector, whose
    ResourceWarning then failed whichever later test was running (warnings are errors here)."""
    while _BACKENDS:
        _BACKENDS.pop().dispose()


class Backend:
    """One database under test: its URL and where a test's tables go."""

    def __init__(self, name: str, url: str, schema: str | None) -> None:
        self.name = name
        self.url = url
        self.schema = schema
        self._engine: sa.Engine | None = None
        _BACKENDS.append(self)

    def engine(self) -> sa.Engine:
        """One engine per test, disposed by the fixture."""
        if self._engine is None:
            self._engine = sa.create_engine(self.url)
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def table(self, name: str) -> str:
        """``name`` qualified with the test's schema where there is one."""
        return f"{self.schema}.{name}" if self.schema else name

    def settings(self, **overrides: object) -> dict[str, object]:
        """Settings overrides that point a run at this backend (and write no report file)."""
        base: dict[str, object] = {
            "database_url": self.url,
            "source_table": self.table("transactions"),
            "report_path": "",
        }
        if self.schema:
            base["output_schema"] = self.schema
        return base | overrides
