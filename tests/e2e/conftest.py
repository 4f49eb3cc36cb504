"""A real Prefect server for the end-to-end tests of a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.prefect_server import start_prefect_server


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `prefect server start` on a free local port; yields the environment that points at it."""
    yield from start_prefect_server(tmp_path_factory.mktemp("prefect-server"))
