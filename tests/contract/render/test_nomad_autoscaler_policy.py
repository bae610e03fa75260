"""The rendered ``scaling { policy {} }`` is one the stock Nomad Autoscaler can run.

The job is registered in the Nomad fake (Nomad stores the policy as given) and read back
the way nomad-autoscaler's Nomad policy source reads it; then nomad-autoscaler's own
rules, ported from hashicorp/nomad-autoscaler (``policy/nomad/validate.go``
``validatePolicy``/``validateCheck``, ``policy/nomad/parser.go`` ``parseChecks``/
``parseStrategy``: strategy config values become ``fmt.Sprintf("%v")`` strings,
``plugins/builtin/strategy/target-value``), check it and run its target-value math
against Caravan's own strategy on the same numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import nomad
import pytest
from tests.fakes.nomad import FakeNomad

from caravan.autoscaler.strategies import run_strategy
from caravan.nomad.job_json import job_request
from caravan.nomad.triton_job import triton_job
from caravan.spec import load_spec
from caravan.spec.autoscaling import policy_for
from caravan.spec.strategy_params import parse_strategy

SPEC = load_spec("examples/platform.yaml")
MODEL = SPEC.models[0]
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+s)?$")


@pytest.fixture
def stored_policy() -> Iterator[dict[str, Any]]:
    with FakeNomad() as fake:
        client = nomad.Nomad(address=fake.address, timeout=5)
        client.jobs.register_job(job_request(triton_job(SPEC, MODEL)))
        job = client.job.get_job(f"triton-{MODEL.name}")
    yield job["TaskGroups"][0]["Scaling"]


def _blocks(value: Any) -> dict[str, dict[str, Any]]:
    """``parseBlocks``: a list of ``{label: [body]}`` -> label -> body."""
    out: dict[str, dict[str, Any]] = {}
    for item in value or []:
        for label, bodies in item.items():
            out[label] = bodies[0]
    return out


def validate(scaling: dict[str, Any]) -> list[str]:
    """nomad-autoscaler's ``validatePolicy`` + ``validateHorizontalPolicy``."""
    errs = []
    p = scaling.get("Policy") or {}
    if not p:
        errs.append("empty policy")
    if not 0 <= scaling["Min"] <= scaling["Max"]:
        errs.append("scaling.min/max")
    for key in ("evaluation_interval", "cooldown", "cooldown_on_scale_up"):
        if key in p and not GO_DURATION.match(p[key]):
            errs.append(f"scaling.policy.{key}")
    if p.get("on_check_error") not in (None, "", "fail", "ignore"):
        errs.append("scaling.policy.on_check_error")
    checks = _blocks(p.get("check"))
    if not checks:
        errs.append("scaling.policy.check: at least one")
    for name, c in checks.items():
        path = f"scaling.policy.check[{name}]"
        if not isinstance(c.get("source"), str) or not isinstance(c.get("query"), str) \
                or not c["query"]:
            errs.append(f"{path}.source/query")
        if not GO_DURATION.match(c.get("query_window", "")):
            errs.append(f"{path}.query_window")
        if c.get("on_error") not in (None, "fail", "ignore"):
            errs.append(f"{path}.on_error")
        if len(_blocks(c.get("strategy"))) != 1:
            errs.append(f"{path}.strategy: exactly one")
    return errs


def _go_v(v: Any) -> str:
    return str(v) if not isinstance(v, float) or not v.is_integer() else str(int(v))


def test_the_stored_policy_validates_and_parses_like_nomad_autoscaler(
        stored_policy: dict[str, Any]) -> None:
    assert validate(stored_policy) == []
    assert stored_policy["Enabled"] is False  # nomad.autoscaler: caravan (the default)
    policy = stored_policy["Policy"]
    caravan = policy_for(MODEL)
    assert caravan is not None
    assert (policy["evaluation_interval"], policy["cooldown"], policy["cooldown_on_scale_up"]) == (
        "10s", "1m", "30s")
    (name, check), = _blocks(policy["check"]).items()
    assert name == "demand" and check["source"] == "prometheus"
    assert check["query"].startswith("(" + caravan.render(caravan.checks[0]) + ") / clamp_min(")
    (strategy, config), = _blocks(check["strategy"]).items()
    assert strategy == "target-value"
    assert {k: _go_v(v) for k, v in config.items()} == {"target": "16", "threshold": "0.1"}


def _target_value(count: int, value: float, target: float, threshold: float) -> int:
    """nomad-autoscaler target-value (``calculateDirection`` + ``ceil(count * factor)``)."""
    factor = value / target
    if 1 - threshold <= factor <= 1 + threshold:
        return count
    return math.ceil(count * factor)


@pytest.mark.parametrize(("replicas", "demand"), [(2, 60.0), (4, 20.0), (3, 100.0), (2, 33.0)],
                         ids=["up", "down", "up-big", "inside-band"])
def test_both_autoscalers_ask_the_same_count(replicas: int, demand: float) -> None:
    """Caravan's requests-per-replica on the demand, and target-value on the rendered
    per-replica query (demand / healthy replicas), land on the same count."""
    per_replica = demand / replicas
    stock = _target_value(replicas, per_replica, 16, 0.1)
    strategy = parse_strategy({"name": "requests-per-replica",
                               "params": {"target": 16, "tolerance": 0.1, "burst_samples": 1}})
    ours = run_strategy(strategy, [demand], replicas)
    assert stock == (replicas if ours is None else ours)


def test_nomad_autoscaler_mode_enables_the_policy_and_drops_caravans_autoscaler() -> None:
    from caravan.nomad.platform_jobs import control_plane_job
    from caravan.spec import parse_spec

    data = {"models": [{"name": "a", "engine": {"model": "m"}, "replicas": {"max": 3},
                        "autoscaling": {}}],
            "nomad": {"autoscaler": "nomad-autoscaler"}}
    spec = parse_spec(data)
    scaling = job_request(triton_job(spec, spec.models[0]))["Job"]["TaskGroups"][0]["Scaling"]
    assert scaling["Enabled"] is True and validate(scaling) == []
    assert [g.name for g in control_plane_job(spec).groups] == ["xds"]
