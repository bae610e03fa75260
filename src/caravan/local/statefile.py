"""A state file kept at the latest content despite write errors (``RetryingWriter``).

The local supervisor rewrites the replica registry and Prometheus' targets on every
replica change. When a write fails (a full disk: ENOSPC; EIO; a read-only mount) the
file keeps its last good content (writes are atomic, ``caravan.atomic_file``), the
failure is counted and logged once per outage (not once per attempt), and the newest
content stays pending: ``retry()`` (called by the supervisor's watch loop every tick)
writes it as soon as the disk accepts it again, and logs the recovery.

The writer is injected (``WriteText``), so tests use a disk that fails N times.
Thread-safe: one lock per writer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from caravan.atomic_file import atomic_write_text

log = logging.getLogger(__name__)

WriteText = Callable[[Path, str], None]
"""Replace a file with text; raises OSError on failure (leaving the old file intact)."""


class RetryingWriter:
    """Keeps ``path`` at the latest text given to ``publish``.

    ``failures``: failed write attempts since creation; ``pending``: the newest text
    is not on disk yet; ``last_error``: the most recent OSError text (None once a write
    succeeds)."""

    def __init__(self, path: Path, write: WriteText = atomic_write_text) -> None:
        self.path = path
        self._write = write
        self._lock = threading.Lock()
        self._wanted: str | None = None
        self._outage = 0  # failed attempts in the current outage
        self.failures = 0
        self.last_error: str | None = None

    @property
    def pending(self) -> bool:
        with self._lock:
            return self._wanted is not None

    def publish(self, text: str) -> bool:
        """Make ``text`` the wanted content and try to write it. True when on disk;
        False when the write failed (it stays pending). Never raises OSError."""
        with self._lock:
            self._wanted = text
            return self._flush()

    def retry(self) -> bool:
        """Write the pending content, if any. True when nothing is pending afterwards."""
        with self._lock:
            return self._wanted is None or self._flush()

    def _flush(self) -> bool:
        assert self._wanted is not None
        try:
            self._write(self.path, self._wanted)
        except OSError as exc:
            self._failed(exc)
            return False
        if self._outage:
            log.warning("state file %s written again after %d failed attempts", self.path, self._outage,
                        extra={"path": str(self.path), "failed_attempts": self._outage})
        self._wanted, self._outage, self.last_error = None, 0, None
        return True

    def _failed(self, exc: OSError) -> None:
        self.failures += 1
        self._outage += 1
        self.last_error = f"{exc.strerror or exc} (errno {exc.errno})"
        if self._outage == 1:
            log.error("cannot write state file %s (%s); keeping its last good content, retrying",
                      self.path, self.last_error, extra={"path": str(self.path), "error": self.last_error})
