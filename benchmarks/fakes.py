"""The test fakes (``tests/fakes/``) for benchmark scripts.

``load_fake("consul")`` returns the module ``tests.fakes.consul`` without putting the
repository on ``sys.path``: ``tests`` is registered as a package whose path is the
repository's ``tests`` directory, so a fake's imports of its own modules and of its
siblings (``tests.fakes.nomad...``) resolve there. Benchmarks run as scripts, so this
directory is ``sys.path[0]`` and ``from fakes import load_fake`` resolves here.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"


def load_fake(name: str) -> ModuleType:
    """``tests/fakes/<name>`` as module ``tests.fakes.<name>`` (loaded once per process)."""
    if "tests" not in sys.modules:
        package = ModuleType("tests")
        package.__path__ = [str(TESTS_DIR)]
        sys.modules["tests"] = package
    return importlib.import_module(f"tests.fakes.{name}")
