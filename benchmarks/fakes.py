"""The test fakes (``tests/fakes/*.py``) for benchmark scripts, loaded by file.

``load_fake("consul")`` returns the module ``tests.fakes.consul`` without putting the
repository on ``sys.path``; a fake that imports a sibling (``nomad`` imports
``tests.fakes.nomad_jobs``) needs that sibling loaded first. Benchmarks run as scripts,
so this directory is ``sys.path[0]`` and ``from fakes import load_fake`` resolves here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FAKES_DIR = Path(__file__).resolve().parents[1] / "tests" / "fakes"


def load_fake(name: str) -> ModuleType:
    """``tests/fakes/<name>.py`` as module ``tests.fakes.<name>`` (loaded once per process)."""
    full = f"tests.fakes.{name}"
    if full not in sys.modules:
        spec = importlib.util.spec_from_file_location(full, FAKES_DIR / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[full]
