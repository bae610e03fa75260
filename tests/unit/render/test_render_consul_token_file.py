"""The control plane's Consul token on Nomad is a file swapped in place, not an environment
variable behind a restart (issue 14): the job's templates evaluated for sample Nomad
Variables before and after a token rotation.

``evaluate`` runs the few consul-template actions these templates use (``nomadVarList``,
``nomadVar``, ``range .Tuples``, ``if eq/ne``, ``toJSON``) over a dict of variables and
fails on any other action, so a new action has to be taught here on purpose.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from caravan.nomad import nomad_templates
from caravan.nomad.jobmodel import Task, Template
from caravan.nomad.platform_jobs import CARAVAN_UID, CONTROL_PLANE_JOB, control_plane_job
from caravan.spec import load_spec

SPEC = load_spec("examples/platform.yaml")
VAR = f"nomad/jobs/{CONTROL_PLANE_JOB}"
Vars = dict[str, dict[str, str]]


def _parse(tokens: list[str]) -> tuple[list[Any], str]:
    """Nodes up to the next ``else`` or ``end`` (consumed; returned as the stop): str
    (text), ("do", expr), (block, expr, body, else_body)."""
    out: list[Any] = []
    while tokens:
        tok = tokens.pop(0)
        expr = tok[2:-2].strip() if tok.startswith("{{") else None
        if expr is None:
            out.append(tok)
        elif expr in ("end", "else"):
            return out, expr
        elif expr.split(" ", 1)[0] in ("range", "with", "if"):
            body, stop = _parse(tokens)
            other, stop = _parse(tokens) if stop == "else" else ([], stop)
            assert stop == "end", expr
            head, rest = expr.split(" ", 1)
            out.append((head, rest, body, other))
        else:
            out.append(("do", expr))
    return out, ""


def _value(expr: str, dot: dict[str, Any]) -> Any:
    if m := re.fullmatch(r"\.(\w+)( \| toJSON)?", expr):
        value = dot[m.group(1)]
        return json.dumps(value) if m.group(2) else value
    raise AssertionError(f"unhandled template action: {expr}")


def _run(nodes: list[Any], dot: dict[str, Any], nvars: Vars) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "do":
            out.append(str(_value(node[1], dot)))
        else:
            out.append(_block(node, dot, nvars))
    return "".join(out)


def _block(node: tuple[str, str, list[Any], list[Any]], dot: dict[str, Any], nvars: Vars) -> str:
    kind, expr, body, other = node
    if kind == "range" and (m := re.fullmatch(r'nomadVarList "([^"]+)"', expr)):
        return "".join(_run(body, {"Path": p}, nvars) for p in sorted(nvars) if p.startswith(m.group(1)))
    if kind == "with" and expr == "nomadVar .Path":
        items = nvars.get(dot["Path"])
        tuples = [{"K": k, "V": v} for k, v in sorted((items or {}).items())]
        return _run(body, {"Tuples": tuples}, nvars) if items is not None else ""
    if kind == "range" and expr == ".Tuples":
        return "".join(_run(body, t, nvars) for t in dot["Tuples"])
    if kind == "if" and (m := re.fullmatch(r'(eq|ne) \.(\w+) "([^"]*)"', expr)):
        same = dot[m.group(2)] == m.group(3)
        return _run(body if same == (m.group(1) == "eq") else other, dot, nvars)
    raise AssertionError(f"unhandled template block: {kind} {expr}")


def evaluate(text: str, nvars: Vars) -> str:
    nodes, stop = _parse(re.split(r"(\{\{.*?\}\})", text))
    assert stop == "", f"unbalanced {stop}"
    return _run(nodes, {}, nvars)


def _templates(task: Task) -> tuple[Template, Template]:
    env = next(t for t in task.templates if t.destination == "secrets/caravan.env")
    token = next(t for t in task.templates if t.destination == nomad_templates.CONSUL_TOKEN_PATH)
    return env, token


TASKS = [t for g in control_plane_job(SPEC).groups for t in g.tasks]


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_a_token_rotation_rewrites_the_file_and_leaves_the_environment(task: Task) -> None:
    env, token = _templates(task)
    assert env.env and env.change_mode == "restart"
    assert (token.change_mode, token.perms, token.uid, token.env) == ("noop", "0400", CARAVAN_UID, False)
    before = {VAR: {"CONSUL_HTTP_TOKEN": "token-1", "NOMAD_TOKEN": "nomad-1"}}
    after = {VAR: {"CONSUL_HTTP_TOKEN": "token-2", "NOMAD_TOKEN": "nomad-1"}}
    assert evaluate(env.data, before).split() == [
        f'CONSUL_HTTP_TOKEN_FILE="/{nomad_templates.CONSUL_TOKEN_PATH}"', 'NOMAD_TOKEN="nomad-1"']
    assert evaluate(env.data, after) == evaluate(env.data, before), "a rotation would restart the task"
    assert (evaluate(token.data, before), evaluate(token.data, after)) == ("token-1", "token-2")


def test_without_a_consul_token_no_token_file_is_named() -> None:
    """Consul without ACLs: no variable, or one without the token; the control plane is
    not pointed at an empty file (it would refuse to start)."""
    env, token = _templates(TASKS[0])
    for nvars in ({}, {VAR: {"NOMAD_TOKEN": "n"}}):
        assert "CONSUL_HTTP_TOKEN" not in evaluate(env.data, nvars)
        assert evaluate(token.data, nvars) == ""


def test_the_evaluator_reads_the_other_jobs_secrets_the_same_way() -> None:
    """Without ``token_file`` (model and monitoring jobs) every item stays in the env."""
    text = nomad_templates.secrets_env("triton-a")
    assert evaluate(text, {"nomad/jobs/triton-a": {"CONSUL_HTTP_TOKEN": "t"}}).split() == [
        'CONSUL_HTTP_TOKEN="t"']
