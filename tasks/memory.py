"""Allocator settings that let the job give memory back to the system between its steps.

Measured at 877k customers (10M transactions), the job's resident memory after the extract was
~220 MB above its imports although the features frame holds ~60 MB: freed buffers stayed with the
allocators. Two settings return them:

- Arrow's default pool (mimalloc) keeps freed buffers for reuse; the system allocator hands them back
  to glibc, which returns them.
- glibc raises its mmap threshold as large blocks are freed (up to 32 MB), after which frames of a few
  MB land on the heap and are not returned; a fixed 128 kB threshold keeps them in their own mappings,
  unmapped when freed.

Together: 533 -> 439 MB after the extract, peak 785 -> 734 MB at 877k customers. Both are process-wide
and idempotent; elsewhere than glibc the second is skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024


@functools.cache
def return_freed_memory() -> bool:
    """Apply both settings once per process; returns whether glibc's threshold could be set."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    library = ctypes.util.find_library("c")
    if not library:
        return False
    libc = ctypes.CDLL(library)
    if not hasattr(libc, "mallopt"):  # not glibc (e.g. macOS)
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
