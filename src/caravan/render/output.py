"""Writing rendered files into an output directory (``caravan render --out``).

``write_tree(out, files)``:

* every file is written atomically (a temporary file in the same directory, then
  ``os.replace``), so a reader (``nomad job run jobs/*.hcl``) never sees half a file;
* nothing is written, created or removed outside ``out``: a directory on the way that is
  a symlink resolving outside ``out`` is refused, and a file that is a symlink is
  replaced by the new file, never written through;
* files an earlier render wrote (listed in ``MANIFEST``) that this spec no longer
  renders (a removed model's job and model repository) are removed, and reported;
  other files under ``jobs/`` and ``triton_models/`` that Caravan did not write are
  reported and left in place;
* any failure is an ``OutputError`` naming the path and the reason, never a traceback.

Not thread-safe (one render per directory at a time).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from caravan.errors import ConfigError

MANIFEST = ".caravan-render.json"  # relative paths the last render wrote
PER_MODEL_DIRS = ("jobs", "triton_models")  # where a removed model's files would linger


class OutputError(ConfigError):
    """The output directory cannot take the rendered files; the message says why."""


@dataclass(frozen=True)
class WriteReport:
    """What ``write_tree`` did: relative paths, sorted."""

    written: tuple[str, ...]
    removed: tuple[str, ...]  # written by an earlier render, no longer rendered
    stray: tuple[str, ...]  # under PER_MODEL_DIRS, not written by caravan: left in place

    def lines(self, out: Path) -> list[str]:
        """A human summary, one line per fact."""
        lines = [f"wrote {len(self.written)} file(s) under {out}"]
        lines += [f"removed {p} (rendered before, no longer in the spec)" for p in self.removed]
        lines += [f"left {p}: not written by caravan render (remove it if its model is gone)"
                  for p in self.stray]
        return lines


def write_tree(out: Path, files: dict[str, str]) -> WriteReport:
    """Write ``files`` (relative POSIX path -> text) under ``out`` (see the module doc).
    Raises OutputError."""
    try:
        root = _root(out)
        previous = _manifest(root)
        for rel, text in sorted(files.items()):
            _write(root, rel, text)
        removed = [rel for rel in sorted(previous - files.keys()) if _remove(root, rel)]
        stray = _stray(root, set(files) | previous)
        _write(root, MANIFEST, json.dumps(sorted(files), indent=1) + "\n")
    except OSError as exc:
        where = exc.filename or out
        raise OutputError(f"--out {out}: {where}: {exc.strerror or exc}") from None
    return WriteReport(tuple(sorted(files)), tuple(removed), tuple(stray))


def _root(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve(strict=True)


def _manifest(root: Path) -> set[str]:
    path = root / MANIFEST
    if not path.is_file() or path.is_symlink():
        return set()
    try:
        names = json.loads(path.read_text())
    except ValueError:
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _target(root: Path, rel: str) -> Path:
    """``root / rel`` after checking that every directory on the way stays inside root."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise OutputError(f"{rel!r}: not a relative path inside the output directory")
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink() and not current.resolve().is_relative_to(root):
            raise OutputError(f"--out {root}: {current} is a symlink to {current.resolve()}, "
                              "outside the output directory; refused")
        if current.exists() and not current.is_dir():
            raise OutputError(f"--out {root}: {current} is not a directory")
    return current / parts[-1]


def _write(root: Path, rel: str, text: str) -> None:
    target = _target(root, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)  # replaces a symlink itself, never its target
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _remove(root: Path, rel: str) -> bool:
    """Remove a previously rendered file (and directories it leaves empty). True if gone."""
    try:
        target = _target(root, rel)
    except OutputError:
        return False
    if not (target.is_symlink() or target.is_file()):
        return False
    target.unlink()
    parent = target.parent
    while parent != root and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    return True


def _stray(root: Path, known: set[str]) -> list[str]:
    stray = []
    for top in PER_MODEL_DIRS:
        base = root / top
        if not base.is_dir() or base.is_symlink():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not path.name.startswith(".") and rel not in known:
                stray.append(rel)
    return stray
