"""Commands that only read or score (export, score, load-csv, index, grants) start without the libraries
that fit models and draw charts: scikit-learn, SciPy, kneed and matplotlib cost them a second of imports
before any work, and Prefect several seconds more. Fitting imports them where it needs them; the model and
lifecycle tests exercise those paths."""

from __future__ import annotations

import subprocess
import sys

import pytest

# what the CLI imports for export, load-csv, score, index, grants and migrate
READ_AND_SCORE_MODULES = (
    "cli.app",
    "tasks.report.export",
    "tasks.on_demand",
    "tasks.extract.load_file",
    "tasks.extract.covering_index",
    "tasks.load.grants",
    "tasks.load.schema",
)
HEAVY_LIBRARIES = ("sklearn", "scipy", "kneed", "matplotlib", "prefect")


@pytest.mark.parametrize("module", READ_AND_SCORE_MODULES)
def test_reading_and_scoring_modules_do_not_import_fitting_charting_or_prefect(module: str) -> None:
    probe = f"import sys, {module}\nprint(','.join(name for name in {HEAVY_LIBRARIES!r} if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "", f"importing {module} loads {result.stdout.strip()}"
