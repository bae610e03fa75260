"""RetryingWriter: a full disk keeps the last good file, is counted and logged once,
and the newest content lands once the disk accepts writes again."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from caravan.atomic_file import atomic_write_text
from caravan.local.statefile import RetryingWriter


class FlakyDisk:
    """Writes really (atomically) after failing ``failures`` times with ``err``."""

    def __init__(self, failures: int, err: int = errno.ENOSPC) -> None:
        self.failures, self.err, self.calls = failures, err, 0

    def __call__(self, path: Path, text: str) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError(self.err, "No space left on device")
        atomic_write_text(path, text)


def test_full_disk_keeps_last_good_file_then_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "registry.json"
    disk = FlakyDisk(0)
    w = RetryingWriter(path, disk)
    assert w.publish("one")
    disk.failures = 3
    with caplog.at_level(logging.WARNING, logger="caravan.local.statefile"):
        assert not w.publish("two")
        assert not w.publish("three")  # newer content replaces the pending one
        assert not w.retry()
        assert path.read_text() == "one" and w.pending
        assert w.failures == 3 and w.last_error is not None and "errno 28" in w.last_error
        assert w.retry()
    assert path.read_text() == "three" and not w.pending and w.last_error is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per outage, not once per attempt
    assert any("written again" in r.getMessage() for r in caplog.records)
    assert w.retry() and disk.calls == 5  # nothing pending: no write


def test_failed_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "t.json"
    atomic_write_text(target, "good")
    with pytest.raises(TypeError):
        atomic_write_text(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]
