"""Which Prefect server `segments run` reports to: PREFECT_API_URL from the environment, else the one of
the active Prefect profile, else none (the run starts no server). Each case in a fresh interpreter, as
Prefect reads its settings once per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = "from cli.app import prefect_api_url; print(prefect_api_url())"


def api_url(home: Path, **env: str) -> str:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    environment |= {"PREFECT_HOME": str(home)} | env
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, check=True, timeout=120
    )
    return result.stdout.strip()


def test_without_a_url_anywhere_there_is_no_server(tmp_path: Path) -> None:
    assert api_url(tmp_path) == "None"


def test_the_environment_names_the_server(tmp_path: Path) -> None:
    assert api_url(tmp_path, PREFECT_API_URL="http://127.0.0.1:4999/api") == "http://127.0.0.1:4999/api"


def test_a_url_set_in_the_active_profile_names_the_server(tmp_path: Path) -> None:
    # what `prefect config set PREFECT_API_URL=...` writes
    (tmp_path / "profiles.toml").write_text(
        'active = "work"\n\n[profiles.work]\nPREFECT_API_URL = "http://127.0.0.1:4998/api"\n'
    )
    assert api_url(tmp_path) == "http://127.0.0.1:4998/api"
