"""The job's allocator settings: freed frames go back to the system (tasks/memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.memory import PAGES_PER_BLOCK

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


# Inside and outside freed_memory_reused: the page faults of making and freeing a 1 MB block 100 times,
# and the resident memory that 64 blocks of 1 MB, all freed, still hold inside the block and after it.
REUSE_SCRIPT = """
import json

import numpy as np

from tasks.memory import freed_memory_reused, return_freed_memory
from tests.support.memory import cycle_faults

def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

assert return_freed_memory()
figures = {"outside": cycle_faults()}
with freed_memory_reused():
    figures["inside"] = cycle_faults()
    start = resident_mb()
    blocks = [np.ones(2**20 // 8) for _ in range(64)]
    del blocks
    figures["held_inside"] = resident_mb() - start
figures["held_after"] = resident_mb() - start
figures["after"] = cycle_faults()
try:
    with freed_memory_reused():
        raise RuntimeError
except RuntimeError:
    figures["after_error"] = cycle_faults()
print(json.dumps(figures))
"""


def test_a_step_reuses_the_memory_it_frees_and_returns_it_at_its_end() -> None:
    result = subprocess.run([sys.executable, "-c", REUSE_SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout)

    pages_per_block = PAGES_PER_BLOCK
    # outside: every block is a fresh mapping, each of its pages faulted in (zeroed) again
    assert figures["outside"] >= 90 * pages_per_block, figures
    # inside: the freed block's pages are reused by the next one
    assert figures["inside"] < 10 * pages_per_block, figures
    assert figures["held_inside"] > 48, figures  # the heap keeps freed blocks while the step runs...
    assert figures["held_after"] < 8, figures  # ...and gives them back when it ends
    # the job's settings apply again afterwards, after an error too
    assert figures["after"] >= 90 * pages_per_block, figures
    assert figures["after_error"] >= 90 * pages_per_block, figures


# A program that embeds the steps without the job's settings: the block changes nothing of its own.
UNCONFIGURED_SCRIPT = """
import numpy as np
import pyarrow as pa

from tasks.memory import freed_memory_reused

backend = pa.default_memory_pool().backend_name
with freed_memory_reused():
    block = np.ones(2**20 // 8)
    del block
print(backend, pa.default_memory_pool().backend_name)
"""


def test_a_step_leaves_the_allocators_of_a_program_without_the_jobs_settings_alone() -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNCONFIGURED_SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    )
    before, after = result.stdout.split()

    assert before != "system"  # Arrow's own pool (mimalloc or jemalloc)...
    assert after == before  # ...still in place: the job's settings were not applied by the step
