"""Files the job writes for people (the report, exports): through a temporary file in the same folder,
renamed when complete, so that a reader never sees half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temporary_file_beside(path: Path) -> Path:
    """An empty temporary file in ``path``'s folder (created if missing), to be renamed over ``path``
    once complete, with the permissions the user's umask gives new files (not mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return Path(temporary)


def write_file_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so a reader never sees
    half a file."""
    temporary = temporary_file_beside(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
