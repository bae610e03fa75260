"""Pure parts of ``caravan deploy``: settings resolution, plan summaries, the flow."""

from __future__ import annotations

from typing import Any

import pytest

from caravan.nomad.deploy import (
    DeployResult,
    KeptCount,
    NomadApiError,
    NomadSettings,
    deploy,
    is_change,
    keep_counts,
    resolve_nomad_settings,
    summarize_plan,
)
from caravan.spec import NomadSpec

FILES = {"/run/flag-token": "flag-tok\n", "/run/spec-token": "spec-tok", "/run/empty": " \n"}


def _read(path: str) -> str:
    if path not in FILES:
        raise FileNotFoundError(2, "No such file or directory")
    return FILES[path]


@pytest.mark.parametrize(
    ("spec", "env", "flags", "expected"),
    [(NomadSpec(), {}, {}, ("http://127.0.0.1:4646", None, "default")),
     (NomadSpec(), {"NOMAD_ADDR": "https://nomad:4646/", "NOMAD_NAMESPACE": "llm"}, {},
      ("https://nomad:4646", None, "llm")),
     (NomadSpec(), {"NOMAD_ADDR": "http://env:4646"}, {"address": "http://flag:4646"},
      ("http://flag:4646", None, "default")),
     (NomadSpec(token_file="/run/spec-token"), {}, {}, ("http://127.0.0.1:4646", "spec-tok",
                                                        "default")),
     (NomadSpec(token_file="/run/spec-token"), {"NOMAD_TOKEN": "env-tok"}, {},
      ("http://127.0.0.1:4646", "env-tok", "default")),
     (NomadSpec(), {"NOMAD_TOKEN": "env-tok"}, {"token_file": "/run/flag-token"},
      ("http://127.0.0.1:4646", "flag-tok", "default"))],
    ids=["defaults", "env", "flag-beats-env", "spec-token-file", "env-token-beats-spec",
         "flag-token-file-beats-env"],
)
def test_settings_precedence(spec: NomadSpec, env: dict[str, str], flags: dict[str, str],
                             expected: tuple[str, str | None, str]) -> None:
    s = resolve_nomad_settings(spec, env, _read, **flags)
    assert (s.address, s.token, s.namespace) == expected


def test_tls_files_come_from_env_then_spec() -> None:
    spec = NomadSpec(ca_file="/spec/ca.pem", client_cert="/spec/c.pem", client_key="/spec/k.pem")
    s = resolve_nomad_settings(spec, {"NOMAD_CACERT": "/env/ca.pem"}, _read)
    assert (s.ca_file, s.client_cert, s.client_key) == ("/env/ca.pem", "/spec/c.pem", "/spec/k.pem")


@pytest.mark.parametrize(
    ("flags", "message"),
    [({"address": "nomad:4646"}, "nomad address 'nomad:4646': expected http(s)://HOST:PORT"),
     ({"token_file": "/run/missing"}, "token file '/run/missing': cannot read it"),
     ({"token_file": "/run/empty"}, "token file '/run/empty': is empty")],
    ids=["no-scheme", "missing-token-file", "empty-token-file"],
)
def test_bad_settings_are_named(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_nomad_settings(NomadSpec(), {}, _read, **flags)


def test_token_is_not_in_repr() -> None:
    s = NomadSettings(address="http://x:4646", namespace="default", token="s3cret")
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)


ADDED = {"Diff": {"Type": "Added", "TaskGroups": [{"Name": "triton", "Type": "Added",
                                                   "Fields": []}]},
         "Annotations": {"DesiredTGUpdates": {"triton": {"Place": 2}}}}
EDITED = {"Diff": {"Type": "Edited", "Fields": [],
                   "TaskGroups": [{"Name": "triton", "Type": "Edited", "Fields": [
                       {"Type": "Edited", "Name": "Count", "Old": "1", "New": "3"}]}]},
          "Annotations": {"DesiredTGUpdates": {"triton": {"Place": 2, "Ignore": 1}}},
          "FailedTGAllocs": {"triton": {"DimensionExhausted": {"devices": 2}}},
          "Warnings": "GPU devices are scarce"}
UNCHANGED = {"Diff": {"Type": "None", "TaskGroups": []},
             "Annotations": {"DesiredTGUpdates": {"triton": {"Ignore": 2}}}}


@pytest.mark.parametrize(
    ("plan", "lines"),
    [(ADDED, ["job j: added", "  group triton: place 2"]),
     (EDITED, ["job j: edited", "  group triton: place 2, unchanged 1", "    ~ Count: 1 -> 3",
               "  ! group triton: placement would fail (devices: 2)",
               "  ! warnings: GPU devices are scarce"]),
     (UNCHANGED, ["job j: no changes", "  group triton: unchanged 2"])],
    ids=["added", "edited-with-failures", "unchanged"],
)
def test_plan_summary(plan: dict[str, Any], lines: list[str]) -> None:
    assert summarize_plan("j", plan) == lines


class RecordingJobs:
    """A JobsApi double: canned plans per job id, optional errors, records registers."""

    def __init__(self, plans: dict[str, dict[str, Any]], fail: dict[str, str] | None = None,
                 fail_register: dict[str, str] | None = None,
                 conflict: str | None = None) -> None:
        self.plans, self.fail, self.fail_register = plans, fail or {}, fail_register or {}
        self.conflict = conflict
        self.registered: list[str] = []
        self.bodies: list[dict[str, Any]] = []

    def current(self, job_id: str) -> dict[str, Any] | None:
        return None

    def plan(self, request: dict[str, Any]) -> dict[str, Any]:
        jid = request["Job"]["ID"]
        if jid in self.fail:
            raise NomadApiError(jid, 400, self.fail[jid])
        return self.plans[jid]

    def register(self, request: dict[str, Any]) -> dict[str, Any]:
        jid = request["Job"]["ID"]
        self.bodies.append(request)
        if jid == self.conflict:
            raise NomadApiError(jid, 500, "Enforcing job modify index 7: job exists with "
                                          "conflicting job modify index: 9")
        if jid in self.fail_register:
            raise NomadApiError(jid, 400, self.fail_register[jid])
        self.registered.append(jid)
        return {"EvalID": f"eval-{jid}"}


REQS = [{"Job": {"ID": "a"}}, {"Job": {"ID": "b"}}, {"Job": {"ID": "c"}}]
PLANS = {"a": ADDED, "b": UNCHANGED, "c": EDITED}


@pytest.mark.parametrize(
    ("dry_run", "answer", "fail", "expected_registered", "expected"),
    [(True, True, None, [], DeployResult(("a", "b", "c"))),
     (False, True, None, ["a", "c"], DeployResult(("a", "b", "c"), ("a", "c"))),
     (False, False, None, [], DeployResult(("a", "b", "c"), aborted=True)),
     (False, True, {"b": "1 error occurred:\n\t* Missing job ID\n"}, [],
      DeployResult(("a", "c"), errors=(
          "job 'b': Nomad refused it (HTTP 400): 1 error occurred:\n\t* Missing job ID",)))],
    ids=["dry-run-registers-nothing", "confirmed-registers-changed-only", "declined",
         "plan-400-registers-nothing"],
)
def test_deploy_flow(dry_run: bool, answer: bool, fail: dict[str, str] | None,
                     expected_registered: list[str], expected: DeployResult) -> None:
    api = RecordingJobs(PLANS, fail)
    asked: list[str] = []
    out: list[str] = []

    def confirm(q: str) -> bool:
        asked.append(q)
        return answer

    result = deploy(REQS, api, dry_run=dry_run, confirm=confirm, echo=out.append)
    assert result == expected
    assert api.registered == expected_registered
    assert bool(asked) == (not dry_run and fail is None)
    assert "job a: added" in out


def test_register_error_names_the_job_and_keeps_going() -> None:
    api = RecordingJobs(PLANS, fail_register={"a": "job is invalid"})
    out: list[str] = []
    result = deploy(REQS, api, dry_run=False, confirm=lambda q: True, echo=out.append)
    assert api.registered == ["c"]
    assert result.errors == ("job 'a': Nomad refused it (HTTP 400): job is invalid",)
    assert "error: job 'a': Nomad refused it (HTTP 400): job is invalid" in out


def test_index_conflict_stops_the_deploy_and_says_run_again() -> None:
    plans = {"a": EDITED, "b": ADDED, "c": EDITED}
    api = RecordingJobs(plans, conflict="b")
    out: list[str] = []
    result = deploy(REQS, api, dry_run=False, confirm=lambda q: True, echo=out.append)
    assert api.registered == ["a"] and not result.ok
    assert result.errors == ("job 'b': the job changed since the plan; run deploy again "
                             "(not registered: b, c)",)


def test_every_register_enforces_the_plan_index() -> None:
    plans = {"a": {**EDITED, "JobModifyIndex": 41}, "b": UNCHANGED, "c": ADDED}
    api = RecordingJobs(plans)
    deploy(REQS, api, dry_run=False, confirm=lambda q: True, echo=lambda _l: None)
    assert [(b["EnforceIndex"], b["JobModifyIndex"]) for b in api.bodies] == [(True, 41),
                                                                             (True, 0)]


def _group(name: str, count: int, scaling: tuple[int, int] | None) -> dict[str, Any]:
    g: dict[str, Any] = {"Name": name, "Count": count}
    if scaling is not None:
        g["Scaling"] = {"Min": scaling[0], "Max": scaling[1], "Enabled": True}
    return g


@pytest.mark.parametrize(
    ("groups", "stored", "counts", "kept", "preserve"),
    [([_group("t", 2, (1, 4))], None, [2], (), False),
     ([_group("t", 2, (1, 4))], {"t": 4}, [4], (KeptCount("t", 4, 2),), True),
     ([_group("t", 2, (1, 4))], {"t": 2}, [2], (), True),
     ([_group("t", 2, (1, 3))], {"t": 4}, [3], (KeptCount("t", 3, 2),), False),
     ([_group("t", 2, (1, 4)), _group("x", 3, None)], {"t": 4, "x": 2}, [4, 3],
      (KeptCount("t", 4, 2),), False),
     ([_group("x", 3, None)], {"x": 2}, [3], (), False)],
    ids=["new-job", "autoscaled-kept", "same-count", "clamped-to-new-max",
         "unscaled-count-changes", "unscaled-only"],
)
def test_keep_counts(groups: list[dict[str, Any]], stored: dict[str, int] | None,
                     counts: list[int], kept: tuple[KeptCount, ...], preserve: bool) -> None:
    current = None if stored is None else {
        "TaskGroups": [{"Name": n, "Count": c} for n, c in stored.items()]}
    req, got_kept, got_preserve = keep_counts({"Job": {"ID": "j", "TaskGroups": groups}},
                                              current)
    assert [g["Count"] for g in req["Job"]["TaskGroups"]] == counts
    assert (got_kept, got_preserve) == (kept, preserve)


def _edited(*fields: tuple[str, str, str], tasks: list[dict[str, Any]] | None = None,
            ) -> dict[str, Any]:
    group = {"Name": "triton", "Type": "Edited",
             "Fields": [{"Type": "Edited", "Name": n, "Old": o, "New": v} for n, o, v in fields],
             "Objects": None, "Tasks": tasks or []}
    return {"Diff": {"Type": "Edited", "Fields": None, "Objects": None, "TaskGroups": [group]}}


IMAGE_TASK = {"Name": "tritonserver", "Type": "Edited", "Fields": None, "Objects": [
    {"Type": "Edited", "Name": "Config", "Objects": None, "Fields": [
        {"Type": "Edited", "Name": "image", "Old": "triton:1", "New": "triton:2"},
        {"Type": "None", "Name": "command", "Old": "tritonserver", "New": "tritonserver"}]}]}


@pytest.mark.parametrize(
    ("plan", "scaled", "changed"),
    [(_edited(("Count", "4", "2")), frozenset({"triton"}), False),
     (_edited(("Count", "4", "2")), frozenset(), True),
     (_edited(("Count", "4", "2"), tasks=[IMAGE_TASK]), frozenset({"triton"}), True),
     (UNCHANGED, frozenset({"triton"}), False), (ADDED, frozenset({"triton"}), True)],
    ids=["count-only-on-scaled-group", "count-on-unscaled-group", "image-nested-in-task",
         "none", "added"],
)
def test_count_only_difference_on_a_scaled_group_is_no_change(
        plan: dict[str, Any], scaled: frozenset[str], changed: bool) -> None:
    assert is_change(plan, scaled) is changed


def test_summary_shows_task_fields_nested_in_the_group() -> None:
    lines = summarize_plan("j", _edited(tasks=[IMAGE_TASK]))
    assert "    ~ task tritonserver: Config.image: triton:1 -> triton:2" in lines
    assert not any("command" in line for line in lines)


@pytest.mark.parametrize(
    ("address", "ca", "verify"),
    [("https://nomad:4646", "/ca.pem", "/ca.pem"), ("https://nomad:4646", None, True),
     ("http://127.0.0.1:4646", "/ca.pem", False)],
    ids=["https-with-ca", "https-system-roots", "plain-http"],
)
def test_the_client_always_verifies_https(address: str, ca: str | None,
                                          verify: bool | str) -> None:
    from caravan.nomad.client import nomad_client

    client = nomad_client(NomadSettings(address=address, namespace="default", ca_file=ca,
                                        client_cert="/c.pem", client_key="/k.pem"))
    assert client.verify == verify
    assert client.cert == ("/c.pem", "/k.pem")
