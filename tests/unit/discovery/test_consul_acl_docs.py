"""docs/security.md quotes, verbatim, the Consul ACL policies the code renders (the ones the
contract tests run against the Consul fake)."""

from __future__ import annotations

import re
from pathlib import Path

from caravan.discovery.consul_acl import control_plane_policy
from caravan.observability.prometheus import consul_acl_policy
from caravan.spec import load_spec

ROOT = Path(__file__).resolve().parents[3]


def hcl_blocks() -> list[str]:
    text = (ROOT / "docs" / "security.md").read_text()
    return [b.strip() + "\n" for b in re.findall(r"```hcl\n(.*?)```", text, re.S)]


def test_docs_quote_the_control_plane_policy() -> None:
    assert control_plane_policy("triton-") in hcl_blocks()


def test_docs_quote_the_prometheus_policy() -> None:
    spec = load_spec(ROOT / "examples" / "platform.yaml")
    assert consul_acl_policy(spec) in hcl_blocks()
