"""Page faults of a freed block's memory made again, to tell whether freed memory is reused."""

from __future__ import annotations

import resource

import numpy as np

BLOCK_BYTES = 2**20
PAGES_PER_BLOCK = BLOCK_BYTES // 4096


def cycle_faults(cycles: int = 100) -> int:
    """Minor page faults of this thread while a 1 MB block is made (every page written) and freed
    ``cycles`` times: about ``cycles * PAGES_PER_BLOCK`` when each block is a fresh mapping, a few
    hundred when the heap reuses the freed block."""
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(cycles):
        block = np.ones(BLOCK_BYTES // 8)
        del block
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
