"""Atomic file replacement: write a temp file beside the target, fsync, rename.

A reader sees the old file or the new one, never a half-written one, and a failed
write (ENOSPC, EIO, a read-only directory) leaves the old file untouched: the temp
file is removed and the OSError raised. Used for every state file a reader polls
(the local replica registry, Prometheus' file_sd targets).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically; create its directory.
    Raises OSError (the old file, if any, is unchanged)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
