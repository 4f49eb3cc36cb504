"""The job's allocator settings: freed frames go back to the system (tasks/memory.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Frees a 16 MB block (glibc then raises its mmap threshold to 16 MB), allocates 25 blocks of 4 MB and
# frees all but the last, and prints how much resident memory the freed blocks still hold.
SCRIPT = """
import sys
import numpy as np
from tasks.memory import return_freed_memory

def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "configured":
    assert return_freed_memory()
big = np.ones(16 * 2**20 // 8)
del big
before = resident_mb()
blocks = [np.ones(4 * 2**20 // 8) for _ in range(25)]
del blocks[:-1]
print(resident_mb() - before)
"""


def held_after_free(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(result.stdout.strip())


def test_freed_frames_go_back_to_the_system_once_configured() -> None:
    default, configured = held_after_free("default"), held_after_free("configured")

    assert default > 80  # glibc's moving threshold: the 96 MB freed stay in the heap
    assert configured < 10  # each block was its own mapping, returned when freed


def test_arrow_allocates_from_the_system_allocator() -> None:
    import pyarrow as pa

    from tasks.memory import return_freed_memory

    return_freed_memory()

    assert pa.default_memory_pool().backend_name == "system"
