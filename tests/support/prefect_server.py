"""A real ``prefect server start`` for the end-to-end tests, and the commands that talk to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def wait_for(read, done, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """Call ``read`` every second until ``done`` holds of what it returned; return that."""
    deadline = time.monotonic() + timeout
    while True:
        found = read()
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen in {timeout} s: {found}")
        time.sleep(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process we started and everything it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def start_prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """Start `prefect server start` on a free local port with its home in ``home``, with the server's
    own default services (the scheduler among them); yield the environment that points at it."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SEGMENTS_", "PREFECT_"))}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    log_path = home / "server.log"
    log = log_path.open("wb")
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        print(f"\n[figure] prefect server started in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        yield env
    finally:
        stop(server)
        log.close()


def prefect_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `prefect` command from the repository root and check that it succeeded."""
    result = subprocess.run(
        [str(BIN / "prefect"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, f"prefect {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def assert_the_run_form_explains_every_parameter(schema: dict[str, object]) -> None:
    """Every parameter of the run form has a label of its own (not its Python name) and a one-line help."""
    properties = schema["properties"]
    assert isinstance(properties, dict) and properties
    for name, field in properties.items():
        title, description = field.get("title", ""), field.get("description", "")
        assert title and title != name, f"{name}: no title of its own ({title!r})"
        assert description and "\n" not in description, f"{name}: no one-line description ({description!r})"
