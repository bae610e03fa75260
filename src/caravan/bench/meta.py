"""Run metadata stored with every result: git revision, host, versions, load shape.

``run_meta`` does I/O (runs ``git rev-parse``, reads package versions); everything it
returns is a string so results stay plain JSON. Missing facts become ``""``.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from caravan.bench.loop import loop_name


def git_revision(cwd: Path | None = None) -> str:
    """``HEAD``'s commit (with ``-dirty`` when the tree has changes), or ``""``."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=cwd, capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def run_meta(**fields: str) -> dict[str, str]:
    """Standard metadata merged with ``fields`` (url, model, spec, load shape...)."""
    base = {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_rev": git_revision(Path(__file__).parent),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": str(len(os.sched_getaffinity(0))),
        "python": sys.version.split()[0],
        "tritonclient": _version("tritonclient"),
        "grpcio": _version("grpcio"),
        "event_loop": loop_name(),
        "caravan": _version("caravan"),
    }
    return {**base, **fields}
