"""benchmarks/attacks.py's catalogue names tests that exist, and docs/security.md's attack
table is the one rendered from benchmarks/results/attacks.json (issue 17, Deliver 7)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _attacks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("attacks", ROOT / "benchmarks" / "attacks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("attacks", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_named_test_exists() -> None:
    for attack in _attacks().ATTACKS:
        for node in attack.tests:
            path, _, name = node.partition("::")
            text = (ROOT / path).read_text()
            assert not name or re.search(rf"^(async )?def {name}\(", text, re.M), node


def test_the_doc_section_is_rendered_from_the_results() -> None:
    attacks = _attacks()
    data = json.loads((ROOT / "benchmarks" / "results" / "attacks.json").read_text())
    assert [r["attack"] for r in data["rows"]] == [a.attack for a in attacks.ATTACKS], (
        "catalogue changed: run benchmarks/attacks.py")
    assert attacks.markdown(data["rows"], data["meta"]) in (ROOT / "docs" / "security.md").read_text()
