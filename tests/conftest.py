"""Fixtures shared by every test directory: owned process launchers and fast replica
options. Processes are started through ``caravan.local.launch`` (the same starters
``caravan up`` and the benchmarks use) and stopped by PID when the fixture's scope ends.

* ``launcher``: a ``Launcher`` for one test (state under ``tmp_path``).
* ``module_launcher``: a ``Launcher`` shared by one test module, so a module starts its
  replicas (real ``tritonserver``, ~2-4 s each) once for all its tests that do not
  disturb them.
* ``fast_replica``: ``ReplicaOptions`` for tests: simulated time 100x faster, every
  token its own response (no coalescing).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from caravan.local.launch import Launcher
from caravan.triton.launcher import ReplicaOptions

FAST_REPLICA = ReplicaOptions(time_scale=0.01, stream_interval_ms=0, exit_timeout_s=10)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    with Launcher(tmp_path / "procs") as launch:
        yield launch


@pytest.fixture(scope="module")
def module_launcher(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    name = request.module.__name__.rsplit(".", 1)[-1]
    with Launcher(tmp_path_factory.mktemp(name)) as launch:
        yield launch


@pytest.fixture(scope="session")
def fast_replica() -> ReplicaOptions:
    return FAST_REPLICA


_DIRECTORY_MARKS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by its directory (tests/integration/**: integration, tests/e2e/**:
    e2e), so ``-m "not integration and not e2e"`` is the fast filter whatever a module
    declares itself."""
    root = Path(__file__).resolve().parent
    for item in items:
        parts = item.path.resolve().relative_to(root).parts
        mark = _DIRECTORY_MARKS.get(parts[0]) if parts else None
        if mark is not None:
            item.add_marker(mark)
