"""Replica fixtures for the Triton conformance suite (docs/triton-contract.md).

``replica``: one real tritonserver 2.51 with Caravan's model, shared by the conformance
modules of this directory (package scope) and by tests that do not disturb it (time
scale 0.05: a simulated 13 ms decode step takes 0.65 ms; streamed chunks every 10 ms).
``start_replica``: a context-manager factory for destructive tests (fault, SIGTERM,
SIGKILL), each replica under its own directory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from triton_conformance import Replica, running_replica

from caravan.triton.launcher import ReplicaOptions

SHARED_OPTIONS = ReplicaOptions(time_scale=0.05, stream_interval_ms=10.0, exit_timeout_s=10)


@pytest.fixture(scope="package")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    with running_replica(tmp_path_factory.mktemp("replica"), SHARED_OPTIONS) as r:
        yield r


@pytest.fixture
def start_replica(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[Replica]]:
    counter = iter(range(100))

    def start(options: ReplicaOptions, **kwargs: Any) -> contextlib.AbstractContextManager[Replica]:
        return running_replica(tmp_path / f"replica-{next(counter)}", options, **kwargs)

    return start
