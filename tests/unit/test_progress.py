"""Step progress: listeners hear each step start and finish with its rate, or fail."""

from __future__ import annotations

import pytest

from tasks import progress


def test_listeners_hear_each_step_with_its_rate_and_failures() -> None:
    heard: list[tuple[str, str, str]] = []
    with progress.listening(lambda *event: heard.append(event)):
        with progress.step("extract") as current:
            current.finish(2_000_000, "rows")
        with pytest.raises(RuntimeError), progress.step("write"):
            raise RuntimeError("disk full")
    with progress.step("model"):  # no listener any more: nothing heard
        pass

    assert [(name, event) for name, event, _ in heard] == [
        ("extract", "start"),
        ("extract", "done"),
        ("write", "start"),
        ("write", "failed"),
    ]
    assert heard[1][2].startswith("2,000,000 rows in ") and heard[1][2].endswith(" rows/s)")
    assert heard[3][2].startswith("after ")
