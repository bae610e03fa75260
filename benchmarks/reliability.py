"""Reliability report: every fault scenario at full duration, every bad-input and
security test, what each promises and what was measured.

    .venv/bin/python benchmarks/reliability.py [--outage-s 30] [--cp-down-s 3] [--skip-tests]
    .venv/bin/python benchmarks/reliability.py --doc-only   # re-render the doc from the JSON
    .venv/bin/python benchmarks/reliability.py --scenarios replica_sigstop gray_failure
                                    # re-run only these scenarios, keep the other rows

(a) Fault scenarios (tests/e2e/faults), run with pytest so no test code is imported
    here: each on its own stack on 127.0.0.1 (real ``tritonserver`` replicas with the
    simulated vLLM engine, real control plane, real Envoy; short stream=false requests
    over ModelStreamInfer through Envoy): control plane SIGKILL + restart (down
    ``--cp-down-s`` seconds), Consul down for ``--outage-s`` seconds (30 by default;
    ``make test`` runs it for 5 s), replica SIGKILL (requests before and after their
    first response), scale-in with draining, an Envoy-rejected push, a dead engine
    in ``caravan up``'s stack, a SIGSTOPped replica with streams open, and a gray
    replica (health checks pass, inference hangs). ``CARAVAN_FAULT_RESULTS`` makes the tests write each
    ``FaultOutcome`` (requests sent and failed, a recovery time, the promise, every
    broken promise) as JSON, read back here.
(b) Bad-input (tests/unit/fuzz, tests/integration/fuzz) and security
    (tests/integration/security) tests, run with pytest (JUnit XML); the promise of
    each test is its docstring's first sentence.

Writes benchmarks/results/reliability.json and regenerates docs/reliability.md.
Every load loop is bounded in count and time; the run takes about 3-4 minutes.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FAULTS_DIR = "tests/e2e/faults"
RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"
DOC = ROOT / "docs" / "reliability.md"
CONSUL_OUTAGES = ROOT / "benchmarks" / "results" / "consul_outages.json"
CONSUL_CONNECTIONS = ROOT / "benchmarks" / "results" / "consul_connections.json"
TEST_DIRS = {"bad input": ["tests/unit/fuzz", "tests/integration/fuzz"],
             "security": ["tests/integration/security"]}
# scenario function (the JSON file each writes) -> the tests that check it
SCENARIOS = {
    "control_plane_restart": ["test_control_plane_kill_restart_zero_failures"],
    "consul_outage": ["test_consul_outage_zero_failures_and_fast_convergence"],
    "replica_kill": ["test_replica_sigkill_zero_failed_short_requests",
                     "test_replica_sigkill_before_first_response_is_retried_elsewhere",
                     "test_replica_sigkill_after_first_response_is_reset_at_once"],
    "scale_in_drain": ["test_scale_in_with_draining_zero_failures"],
    "rejected_push": ["test_rejected_push_keeps_last_good_config"],
    "dead_engine": ["test_dead_engine_leaves_traffic_within_10s"],
    "replica_sigstop": ["test_sigstopped_replica_streams_end_within_10s_and_it_comes_back"],
    "gray_failure": ["test_gray_replica_ejected_within_10s_requests_before_first_token_retried"],
}


# ----------------------------------------------------------------------------- faults


def run_faults(outage_s: float, cp_down_s: float, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Run tests/e2e/faults once with full durations (``only``: just those scenarios'
    tests); one row per scenario run."""
    scenarios = {k: v for k, v in SCENARIOS.items() if only is None or k in only}
    select = ["-k", " or ".join(t for tests in scenarios.values() for t in tests)] if only else []
    with tempfile.TemporaryDirectory(prefix="reliability-faults-") as tmp:
        outcomes, xml = Path(tmp) / "outcomes", Path(tmp) / "junit.xml"
        env = {**os.environ, "CARAVAN_FAULT_OUTAGE_S": f"{outage_s:g}",
               "CARAVAN_FAULT_CP_DOWN_S": f"{cp_down_s:g}", "CARAVAN_FAULT_RESULTS": str(outcomes)}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={xml}", *select, FAULTS_DIR], cwd=ROOT, env=env, timeout=1500,
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        verdicts = {case.get("name", ""): (_outcome(case), _failure(case))
                    for case in (ET.parse(xml).getroot().iter("testcase") if xml.exists() else [])}
        out = []
        for name, tests in scenarios.items():
            path = outcomes / f"{name}.json"
            if path.exists():
                res = json.loads(path.read_text())
            else:  # a scenario that cannot run is a finding too
                res = {"scenario": name, "promise": "", "sent": 0, "failed": 0, "recovery_s": None,
                       "recovery": "", "details": {}, "elapsed_s": None,
                       "violations": [f"scenario error: {verdicts.get(tests[0], ('', 'not run'))[1]}"]}
            res["tests"] = {}
            for t in tests:
                verdict, why = verdicts.get(t, ("not run", ""))
                res["tests"][t] = verdict
                if verdict != "passed" and path.exists():
                    res["violations"].append(f"{t} {verdict}: {why}")
            print(f"{res['scenario']}: sent={res['sent']} failed={res['failed']} "
                  f"recovery_s={res['recovery_s']} violations={len(res['violations'])}", flush=True)
            out.append(res)
        return out


def _failure(case: ET.Element) -> str:
    for tag in ("failure", "error"):
        el = case.find(tag)
        if el is not None:
            return (el.get("message") or "")[:300]
    return ""


# ----------------------------------------------------------------------------- tests


def docstrings(path: Path) -> dict[str, str]:
    """{test function name: first sentence of its docstring (or of the module's)}."""
    tree = ast.parse(path.read_text())
    module_doc = (ast.get_docstring(tree) or "").split(". ")[0].replace("\n", " ")
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            doc = ast.get_docstring(node)
            out[node.name] = (doc.split(". ")[0].replace("\n", " ") if doc
                              else node.name.removeprefix("test_").replace("_", " "))
            out.setdefault("__module__", module_doc)
    return out


def run_tests(kind: str, dirs: list[str]) -> list[dict[str, Any]]:
    present = [d for d in dirs if (ROOT / d).is_dir()]
    if not present:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--continue-on-collection-errors", f"--junitxml={xml}", *present],
                       cwd=ROOT, timeout=900, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cases = ET.parse(xml).getroot().iter("testcase") if xml.exists() else []
        rows = []
        for case in cases:
            file = ROOT / (case.get("classname", "").replace(".", "/") + ".py")
            name = case.get("name", "")
            docs = docstrings(file) if file.exists() else {}
            base = name.split("[")[0]
            rows.append({"kind": kind, "test": f"{file.name}::{name}",
                         "promise": docs.get(base, base),
                         "outcome": _outcome(case), "duration_s": float(case.get("time", 0))})
        return rows


def _outcome(case: ET.Element) -> str:
    for tag, name in (("failure", "FAILED"), ("error", "ERROR")):
        if case.find(tag) is not None:
            return name
    skipped = case.find("skipped")
    if skipped is not None:
        return "XFAIL (known bug)" if skipped.get("type") == "pytest.xfail" else "skipped"
    return "passed"


# ----------------------------------------------------------------------------- report


def markdown(faults: list[dict[str, Any]], tests: list[dict[str, Any]], meta: dict[str, Any]
             ) -> str:
    lines = [
        "# Reliability: faults survived, bad input refused",
        "",
        "Regenerated by `.venv/bin/python benchmarks/reliability.py` (raw data: "
        "`benchmarks/results/reliability.json`). Measured on "
        f"{meta['machine']} at {meta['when']}; one run, so times are indicative."
        + "".join(f" Re-measured at {r['when']} (`--scenarios {' '.join(r['scenarios'])}`): "
                  "those rows." for r in meta.get("reruns", [])),
        "",
        "## Fault scenarios (real tritonserver replicas, control plane and Envoy; "
        "stream=false requests over ModelStreamInfer through Envoy)",
        "",
        "Replicas are the real `tritonserver` 2.51 with Caravan's simulated vLLM engine. "
        "`make test` runs the same scenarios in `tests/e2e/faults/test_faults.py`, with the "
        "Consul outage shortened to 5 s (`CARAVAN_FAULT_OUTAGE_S`) and the control plane "
        "down 1 s (`CARAVAN_FAULT_CP_DOWN_S`).",
        "",
        "| fault | promise | requests sent | failed | recovery | outcome |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for f in faults:
        rec = "-" if f["recovery_s"] is None else f"{f['recovery_s']} s ({f['recovery']})"
        outcome = "kept" if not f["violations"] else "NOT MET: " + "; ".join(
            v if len(v) <= 140 else v[:137] + "..." for v in f["violations"])
        lines.append(f"| {f['scenario']} | {f['promise']} | {f['sent']} | {f['failed']} | "
                     f"{rec} | {outcome.replace('|', '/')} |")
    lines += ["", "### What the replica faults measured", ""] + [f"- {n}" for n in fault_notes(faults)]
    lines += consul_outage_section(CONSUL_OUTAGES)
    lines += consul_connections_section(CONSUL_CONNECTIONS)
    for kind in ("bad input", "security"):
        rows = [t for t in tests if t["kind"] == kind]
        lines += ["", f"## {kind.capitalize()} tests", ""]
        if not rows:
            lines.append("(none found)")
            continue
        lines += ["| test | promise | outcome |", "| --- | --- | --- |"]
        lines += [f"| `{t['test']}` | {t['promise'].replace('|', '/')} | {t['outcome']} |"
                  for t in rows]
    lines += ["", "## Known gaps", ""] + [f"- {g}" for g in meta["known_gaps"]] + [""]
    return "\n".join(lines)


def consul_outage_section(path: Path) -> list[str]:
    """The Consul outage rows measured by benchmarks/consul_outages.py (its JSON), when present."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    lines = ["", "## Consul outages (benchmarks/consul_outages.py)", "",
             "Measured by `.venv/bin/python benchmarks/consul_outages.py` (raw data: "
             "`benchmarks/results/consul_outages.json`, started "
             f"{data['meta']['started']}): the Consul fake fails as Consul does (tests/fakes/"
             "consul.py), the control plane, Envoy and replicas (real tritonserver) are real, "
             "ACLs on with the documented control-plane policy, under load.", "",
             "| outage | requests | failed | what the control plane saw | recovery | target met |",
             "| --- | ---: | ---: | --- | --- | --- |"]
    for sc in data["scenarios"]:
        lines.append(f"| {sc['scenario']} | {sc['requests']} | {sc['failed']} | {_consul_saw(sc)} | "
                     f"{_consul_recovery(sc)} | {'yes' if sc['met'] else 'NO'} |")
    return lines


def _consul_saw(sc: dict[str, Any]) -> str:
    if "failed_queries_by_kind" in sc:
        kinds = ", ".join(f"{int(n)} {k}" for k, n in sc["failed_queries_by_kind"].items())
        return f"{kinds} queries; stayed ready; {sc['envoy_hosts_during']} replicas kept in Envoy"
    return (f"ACL filtering counted {sc['swap_to_error_counted_s']} s after the change (bound "
            f"{sc['bound_s']:g} s); {sc['replicas_kept_in_envoy']} replicas kept")


def _consul_recovery(sc: dict[str, Any]) -> str:
    if "return_to_new_replica_in_envoy_s" in sc:
        return f"Consul back -> new replica in Envoy {sc['return_to_new_replica_in_envoy_s']} s"
    return f"fixed -> discovery up {sc['policy_fixed_to_discovery_up_s']} s"


def consul_connections_section(path: Path) -> list[str]:
    """Connections and request rates measured by benchmarks/consul_connections.py."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    meta = data["meta"]
    lines = ["", "## Connections to Consul (benchmarks/consul_connections.py)", "",
             "Measured by `.venv/bin/python benchmarks/consul_connections.py` (raw data: "
             f"`benchmarks/results/consul_connections.json`, started {meta['started']}): "
             "Caravan's Consul discovery against the Consul fake over real HTTP, "
             f"`consul.wait_s` {meta['consul_wait_s']:g} s, two replicas per model, "
             f"{meta['window_s']:g} s windows. Discovery holds three datacenter-wide blocking "
             "queries and reads changed models one at a time on one more connection "
             "(docs/operator-nomad.md); before, one blocking query per model held one "
             "connection per model.", "",
             "| models | scenario | connections held (max) | watch requests/s | "
             "model reads/s |", "| ---: | --- | ---: | ---: | ---: |"]
    labels = {"quiet": "quiet", "check_churn_elsewhere_10_per_s": "another service's check "
              "changes 10 times/s", "instance_churn_elsewhere_2_per_s": "another service's "
              "instance is re-registered 2 times/s"}
    for row in data["rows"]:
        for key, label in labels.items():
            w = row[key]
            lines.append(f"| {row['models']} | {label} | {w['max_connections']} | "
                         f"{w['watch_requests_per_s']:g} | {w['model_reads_per_s']:g} |")
    return lines


def fault_notes(faults: list[dict[str, Any]]) -> list[str]:
    """One line per measured fact of the replica-kill and dead-engine scenarios."""
    notes = []
    for f in faults:
        d = f["details"]
        if f["scenario"].startswith("replica SIGKILL") and d.get("probes"):
            notes += _kill_notes(f)
        elif f["scenario"].startswith(("replica SIGSTOP", "gray replica")) and d.get("envoy"):
            notes.append(_hung_note(f))
        elif f["scenario"].startswith("replica's engine dies") and d.get("victim"):
            kinds = "; ".join(f"{n} x {m}" for m, n in d["failure_messages"].items())
            notes.append(
                "Dead engine (2 replicas under `caravan up`'s supervisor): the replica left Envoy's "
                f"cluster {d['death_to_out_of_envoy_s']} s after its engine died; the last request "
                f"that reached it was sent {f['recovery_s']} s after the death; {d['failed_after_death']} "
                f"of the {d['requests_after_death']} requests in flight at the death or sent after it failed, all on "
                f"that replica ({kinds}); the {d['requests_after_last_on_victim']} requests sent "
                "after the last one all went to the other replica, until the supervisor's in-place "
                f"restart had it serving again {d.get('death_to_back_in_envoy_s', '?')} s "
                "after the death. The failures are in-stream errors "
                "(the stream was answered, so Envoy cannot retry them); how many depends on the load "
                "and on when the supervisor's 1 s ModelReady check runs.")
    return notes


def _hung_note(f: dict[str, Any]) -> str:
    """The SIGSTOP or gray-replica scenario in one line (spec default timeouts)."""
    d, e = f["details"], f["details"]["envoy"]
    if f["scenario"].startswith("gray"):
        return (f"Gray replica (2 replicas, the spec's default 5 s per-try timeout): Envoy ejected it "
                f"{f['recovery_s']} s after it hung (health flags `{d['flags_when_ejected']}`: its "
                f"health checks kept passing); {d['caught_and_retried']} requests caught on it, none "
                f"with a response yet, were retried after their per-try timeout and completed on "
                f"{', '.join(d['caught_served_by'])} ({e['per_try_timeouts']} per-try timeouts, "
                f"{e['ejections']} ejection); {f['failed']} of {f['sent']} requests failed; "
                f"{d['served_by_victim_after_hang']} answered by it after the hang.")
    started = [p for p in d["probes"] if p["stream"]]
    ends = Counter(f"{p['outcome']} \"{p['message']}\"" for p in started)
    return (f"Replica SIGSTOP (2 replicas): the {len(started)} streams on it that had their first "
            f"response ended {', '.join(f'{t:g}' for t in d['stream_ends_s'])} s after the stop, "
            + "; ".join(f"{n} {what}" for what, n in ends.items())
            + f"; Envoy marked it unhealthy after {d['unhealthy_s']} s ({e['health_check_failures']} "
            f"failed checks, {e['keepalive_timeouts']} HTTP/2 keepalive timeouts, "
            f"{e['closed_with_active_requests']} connection closed with requests on it); requests "
            f"with no response yet were retried on the other replica ({e['retries']} retries; "
            f"{f['failed']} of {f['sent']} requests failed). After SIGCONT it was healthy in Envoy "
            f"{d['sigcont_to_healthy_s']} s later and served {d['sigcont_to_served_s']} s later "
            "(it had also been ejected for 5 s, and a passing health check no longer ends an ejection).")


def _kill_notes(f: dict[str, Any]) -> list[str]:
    d = f["details"]
    victim = d["victim"]
    after = [p for p in d["probes"] if p["stream"] and p["first_replica"] == victim]
    before = [p for p in d["probes"] if not p["stream"]]
    others = [p for p in d["probes"] if p["stream"] and p["first_replica"] != victim]
    reached = d.get("served_by_after_kill", {}).get(victim, 0)
    ended = Counter(f"{p['outcome']} \"{p['message']}\"" for p in after)
    moved = sum(p["outcome"] == "OK" and p["replica"] not in ("", victim) for p in before)
    return [
        f"Replica SIGKILL after a stream's first response: of {len(after)} streams on the victim "
        f"(~{min((p['chunks'] for p in after), default=0)} responses received each), "
        + "; ".join(f"{n} ended {what}" for what, n in ended.items())
        + ". Envoy had forwarded response headers, so it could only reset the client's stream "
          f"(no retry, no duplicated text). {sum(p['outcome'] == 'OK' for p in others)} of "
          f"{len(others)} streams on the other replicas completed.",
        f"Replica SIGKILL before a request's first response: {moved} of {len(before)} stream=false "
        "requests caught on the victim with no response yet completed OK, answered by another "
        f"replica (Envoy replayed them; {d['envoy_retries']} retries counted). Short requests: "
        f"{f['failed']} of {f['sent']} failed; {d['requests_after_kill']} ended after the kill, "
        f"{reached} of them served by the victim.",
    ]


KNOWN_GAPS = [
    "Streams in flight on a SIGKILLed (or SIGSTOPped) replica that already had a response fail "
    "at once (a frozen one within its health checks' ~3 s), but "
    "the client sees INTERNAL \"Stream removed (RST_STREAM)\", not UNAVAILABLE: Envoy has sent "
    "response headers by then, so it can only reset the client's HTTP/2 stream "
    "(`upstream_reset_after_response_started`), and gRPC maps RST_STREAM(INTERNAL_ERROR) to "
    "INTERNAL. Clients should treat both as retryable transport failures and retry the whole "
    "request (the text received so far is not repeated).",
    "A replica whose engine dies but whose process lives fails every request that reaches it "
    "in-stream (\"Model is unavailable due to unhealthy vLLM engine\", then \"has no available "
    "versions\") until the model-ready check removes it from discovery (locally the "
    "supervisor's 1 s ModelReady check; on Nomad the job's model-ready script check and "
    "Consul). Envoy cannot retry these: the stream was answered.",
    "Bytes tritonserver cannot parse as a ModelStreamInfer message get no answer at all: the "
    "stream ends OK with no response and no error (Triton 2.51 drops the message). A client "
    "must treat a stream that ends without a final response as failed (`caravan bench` does: "
    "UNEXPECTED_RESPONSES).",
    "tritonserver has no request size limit (its gRPC receive limit is INT32_MAX); the only "
    "limit is Envoy's, from the spec's `security.max_request_bytes`. Straight at a replica, "
    "an over-long prompt is refused by the model, in-stream.",
    "Replica SIGKILL: a short (stream=false) request whose single answer is on the wire at "
    "the instant of the kill cannot be retried by Envoy (its response headers are out): it "
    "ends INTERNAL RST_STREAM. The recorded run saw none; one CI run of the same test saw 1 "
    "of 949. A reset after the final answer arrived counts as answered (the client has the "
    "whole answer). The promise says so since 2026-12-01.",
    "Envoy starts a per-try timeout only once it has the whole request, i.e. when the client "
    "half-closes its ModelStreamInfer stream (caravan bench, the fault load and "
    "`caravan.local.launch.stream_request` do). A client that keeps its stream open "
    "(tritonclient's `start_stream`) and lands on a gray replica is not retried: the stream "
    "ends after `routing.stream_idle_timeout_s` with UNAVAILABLE \"stream timeout\" (measured "
    "on Envoy 1.40; 408/UNKNOWN without Caravan's local-reply mapping), and it does not count "
    "towards ejecting the replica.",
    "A stream=false request answers only at its end, so the per-try timeout bounds its whole "
    "generation: one that takes longer than `routing.per_try_timeout_s` (5 s by default) is cut, "
    "retried on another replica and counted against the first. Models serving long stream=false "
    "generations need a larger `per_try_timeout_s` (and `stream_idle_timeout_s`).",
    "A model with one replica is never ejected (`max_ejection_percent` 50 keeps at least one); "
    "a gray single replica answers every request UNAVAILABLE after the per-try and idle timeouts.",
]
def rerun(only: list[str], outage_s: float, cp_down_s: float) -> None:
    """Re-measure ``only`` and merge their rows into the last results JSON (a row with the
    same scenario text is replaced, a new one appended, in ``SCENARIOS`` order)."""
    data = json.loads(RESULTS.read_text())
    new = {r["scenario"]: r for r in run_faults(outage_s, cp_down_s, only)}
    rows = [new.pop(r["scenario"], r) for r in data["faults"]] + list(new.values())
    order = {k: i for i, k in enumerate(SCENARIOS)}
    rows.sort(key=lambda r: min((order[k] for k, tests in SCENARIOS.items()
                                 if set(tests) & set(r.get("tests", {}))), default=len(order)))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data["meta"].setdefault("reruns", []).append({"scenarios": only, "when": when})
    data["meta"]["known_gaps"] = KNOWN_GAPS
    data["faults"] = rows
    RESULTS.write_text(json.dumps(data, indent=1, default=str))
    DOC.write_text(markdown(data["faults"], data["tests"], data["meta"]))
    print(f"wrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outage-s", type=float, default=30.0, help="Consul outage, seconds")
    ap.add_argument("--cp-down-s", type=float, default=3.0, help="control plane down, seconds")
    ap.add_argument("--skip-tests", action="store_true", help="faults only")
    ap.add_argument("--doc-only", action="store_true",
                    help="regenerate docs/reliability.md from the last results JSON")
    ap.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS),
                    help="re-run only these fault scenarios; the other rows come from the last JSON")
    args = ap.parse_args()
    if args.scenarios:
        rerun(args.scenarios, args.outage_s, args.cp_down_s)
        return
    if args.doc_only:
        data = json.loads(RESULTS.read_text())
        data["meta"]["known_gaps"] = KNOWN_GAPS
        RESULTS.write_text(json.dumps(data, indent=1, default=str))
        DOC.write_text(markdown(data["faults"], data["tests"], data["meta"]))
        return
    faults = run_faults(args.outage_s, args.cp_down_s)
    tests: list[dict[str, Any]] = []
    if not args.skip_tests:
        for kind, dirs in TEST_DIRS.items():
            tests += run_tests(kind, dirs)
    meta = {"machine": f"{platform.machine()} {platform.system()}, Python "
                       f"{platform.python_version()}",
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "outage_s": args.outage_s, "cp_down_s": args.cp_down_s, "known_gaps": KNOWN_GAPS}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "faults": faults, "tests": tests}, indent=1,
                                  default=str))
    DOC.write_text(markdown(faults, tests, meta))
    print(f"wrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")
    for t in tests:
        print(f"{t['kind']:9} {t['outcome']:18} {t['test']}")


if __name__ == "__main__":
    main()
