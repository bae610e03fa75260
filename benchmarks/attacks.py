"""Attack table: every attack of issue 17 (and the ones that held), what is promised,
what this run measured.

    .venv/bin/python benchmarks/attacks.py              # run the attack tests, write both
    .venv/bin/python benchmarks/attacks.py --doc-only   # re-render the doc from the JSON
    .venv/bin/python benchmarks/attacks.py --only TEXT  # re-run the rows whose attack has TEXT

Each attack names the tests that perform it (``tests/...::test_name``; they run in
``make test`` too: real Envoy, real tritonserver, a real ``caravan xds`` process, all on
127.0.0.1, a few minutes in all). They run here once with pytest (JUnit XML), so no test
code is imported; a row's outcome is its tests' (``measured`` states what a pass
shows, e.g. "0 of 12 spoofed headers reached the replica"). A few figures are measured
here directly (the YAML alias bomb). Rows whose tests do not exist yet say ``pending``
and name the owner.

Writes benchmarks/results/attacks.json and the section of docs/security.md between
``<!-- attacks:begin -->`` and ``<!-- attacks:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "attacks.json"
DOC = ROOT / "docs" / "security.md"
BEGIN, END = "<!-- attacks:begin -->", "<!-- attacks:end -->"
SEC, XDS, RENDER = "tests/integration/security", "tests/integration/xds", "tests/unit/render"
LOCAL = "tests/integration/local"


@dataclass(frozen=True)
class Attack:
    """One attack: ``item`` is the issue's label (H1..H4, M5..M10, L, held)."""

    item: str
    attack: str
    promise: str
    tests: tuple[str, ...]
    measured: str  # what the tests show when they pass
    owner: str = "secure"


ATTACKS = (
    Attack("H1", "`POST /quitquitquit`, `/logging?level=debug`, `/config_dump` on Envoy's admin "
           "from the node IP (rendered Nomad job)",
           "admin on 127.0.0.1 only; Prometheus and Consul use a listener serving "
           "`GET /stats/prometheus` and `GET /ready` only",
           (f"{SEC}/test_security_envoy_admin.py::test_stats_listener_serves_stats_and_ready_only",
            f"{RENDER}/test_render_envoy_job_admin.py::test_admin_is_loopback_only_and_not_a_nomad_port_or_service"),
           "real Envoy answers 404/400 to every admin call through the stats port and keeps running"),
    Attack("H2", "raw ADS client downloads every API key from the listener",
           "client auth requires xDS mTLS with a client CA; `client_sans` pins Envoy",
           (f"{SEC}/test_security_xds_pinning.py::test_only_pinned_client_identities_get_the_config",
            f"{SEC}/test_security_envoy.py::test_xds_over_mtls",
            "tests/unit/xds/test_xds_security.py::test_spec_security_errors"),
           "no client certificate, another CA or an unpinned SAN: no config; validation "
           "refuses client auth without `xds_tls.client_ca_file`"),
    Attack("H3", "one `ModelStreamInfer` stream carrying 200 requests past a 0.2 req/s key limit",
           "a key limited to R req/s gets at most burst + R x t inferences, on one stream or many",
           (f"{SEC}/test_security_inference_limit.py",
            f"{SEC}/test_security_jwt.py::test_one_stream_of_many_requests_is_held_to_the_subject_burst"),
           "real Envoy (2 workers) + tritonserver, 5 burst at 2 req/s: 200 requests on one stream get at most "
           "burst + R x t answers and end RESOURCE_EXHAUSTED; 12 streams over 2 workers share "
           "one bucket; a well-behaved client is served throughout (flood figures: "
           "`benchmarks/inference_limit.py`)", owner="ratelimit"),
    Attack("H4", "call a replica's gRPC port directly, skipping Envoy's auth and limits",
           "with API keys or JWT, replicas require Envoy's client certificate (mTLS) unless "
           "the spec opts out with a reason",
           ("tests/contract/render/test_triton_job_real_tritonserver.py::test_inference_without_envoys_certificate_is_refused",
            "tests/unit/test_spec_hygiene.py::test_client_auth_requires_replicas_that_accept_only_envoy"),
           "real tritonserver 2.51 (the job's flags): plaintext, no certificate or a "
           "certificate from another CA -> UNAVAILABLE; validation names each model"),
    Attack("M5", "EDS request naming 300,000 clusters; a stream that never reads",
           "at most 1024 names per request; a non-reading stream is cut off; RSS bounded",
           (f"{XDS}/test_xds_abuse.py::test_request_naming_too_many_resources_is_cut_off_at_once",
            f"{XDS}/test_xds_abuse.py::test_client_that_does_not_read_is_cut_off_not_buffered",
            f"{XDS}/test_xds_abuse_process.py::test_control_plane_process_stays_responsive_and_bounded"),
           "RESOURCE_EXHAUSTED at once; the `caravan xds` process under all attacks at once "
           "answers /healthz with p95 < 250 ms, RSS within the job's 512 MB, log < 1 MB"),
    Attack("M6", "50 MB of log from unknown type_urls and NACK texts; fake NACKs fire `CaravanXdsNack`",
           "client text clipped to 256 characters, 5 lines per 10 s per kind; NACKs counted only "
           "from verified Envoys",
           (f"{XDS}/test_xds_abuse.py::test_nack_from_an_unverified_stream_is_not_alerted_and_its_text_is_clipped",
            f"{XDS}/test_xds_abuse.py::test_unknown_type_flood_logs_a_few_clipped_lines"),
           "a few clipped lines; the unverified NACK goes to the unverified counter"),
    Attack("M7", "SIGSTOPped replica holds open streams 301 s; gray replica never ejected",
           "streams end within 10 s retryably; gray replica ejected within 10 s",
           ("tests/e2e/faults/test_faults_hung.py::test_sigstopped_replica_streams_end_within_10s_and_it_comes_back",
            "tests/e2e/faults/test_faults_hung.py::test_gray_replica_ejected_within_10s_requests_before_first_token_retried",
            "tests/unit/xds/test_xds_resilience.py"),
           "real Envoy + tritonserver: started streams on a SIGSTOPped replica end ~3 s after the "
           "stop (INTERNAL RST_STREAM: their responses had started), the others are retried "
           "elsewhere (0 failed), it serves again after SIGCONT; a gray replica is ejected ~5 s "
           "after it hangs, requests caught on it retried elsewhere (0 failed)",
           owner="hung"),
    Attack("M8", "two `caravan up` in one directory corrupt each other",
           "a second `caravan up` refuses, naming the first one's PID",
           ("tests/e2e/local/test_up_cli.py::test_second_up_refuses_and_sigkilled_up_leaves_no_child",
            f"{LOCAL}/test_local_resilience.py::test_second_stack_on_the_same_directory_refuses_with_the_first_pid",
            "tests/unit/local/test_statelock.py"),
           "a second `caravan up` exits 1 naming the first's PID before writing or starting "
           "anything; the first's registry is unchanged and it keeps serving; a lock left by a "
           "SIGKILLed holder is taken over"),
    Attack("M9", "a full disk kills the replica-watch thread for good",
           "the registry writer reports and recovers",
           (f"{LOCAL}/test_local_resilience.py::test_full_disk_keeps_last_registry_and_recovers",
            "tests/unit/local/test_statefile.py"),
           "real stack, writes failing with ENOSPC (injected) and the watch thread hit by 2 "
           "unexpected errors: the last good registry stays, failures counted and logged once, "
           "the thread lives; once space returns the new replica is registered and served by "
           "Envoy"),
    Attack("M10", "`POST /-/quit` on Prometheus from any interface; Grafana admin/admin",
           "Prometheus without the lifecycle API, on the internal network; Grafana refuses to "
           "start without an admin password from Nomad Variables",
           (f"{RENDER}/test_render_port_table.py::test_monitoring_listens_on_the_internal_address_without_prometheus_lifecycle",
            f"{RENDER}/test_render_port_table.py::test_grafana_refuses_to_start_without_an_admin_password",
            f"{RENDER}/test_render_port_table.py::test_every_port_has_a_row_on_its_network",
            f"{RENDER}/test_render_port_table.py::test_only_envoys_ingress_is_on_the_default_network"),
           "no `--web.enable-lifecycle`; the start script exits 78 without a password or "
           "with `admin`; only Envoy's ingress on Nomad's default network"),
    Attack("L", "`/debug/snapshot`, `/debug/clients` from the node IP",
           "loopback clients only (403)",
           ("tests/unit/xds/test_xds_admin.py::test_debug_endpoints_refuse_non_loopback_clients",),
           "403 for a non-loopback peer"),
    Attack("L", "JWT in `?access_token=` (ends up in access logs)",
           "tokens only from `Authorization: Bearer`",
           (f"{SEC}/test_security_jwt.py::test_token_in_query_string_is_not_accepted",),
           "a valid token in the query: UNAUTHENTICATED"),
    Attack("L", "client-sent `x-forwarded-for`, `x-request-id`, `x-envoy-*`, `x-caravan-*` "
           "reach replicas",
           "replaced by Envoy's own",
           (f"{SEC}/test_security_headers.py::test_spoofed_forwarding_and_identity_headers_do_not_reach_the_replica",
            f"{SEC}/test_security_headers.py::test_every_request_gets_a_fresh_request_id"),
           "real Envoy: 0 of 12 spoofed headers reached the replica; x-forwarded-for is the "
           "peer; a fresh x-request-id per request"),
    Attack("L", "584-byte YAML alias bomb: `caravan validate` 25 s, 1.8 GB",
           "aliases bounded (100,000 expanded nodes); recursive aliases refused",
           ("tests/unit/test_spec_hygiene.py::test_billion_laughs_is_refused_before_anything_is_built",
            "tests/unit/test_spec_hygiene.py::test_a_recursive_alias_is_refused"),
           "refused with `<yaml>: aliases expand the document to more than 100000 nodes`"),
    Attack("L", "`{{ env ... }}` / `{{ key ... }}` in a spec string run by consul-template",
           "every spec string escaped in every `template`",
           (f"{RENDER}/test_render_template_escaping.py::test_spec_strings_add_no_template_action",
            f"{RENDER}/test_render_template_escaping.py::test_hostile_text_reaches_the_file_verbatim"),
           "0 actions added by hostile strings in any template of any job; text verbatim"),
    Attack("L", "`caravan render --out` through a symlink; stale jobs of removed models; traceback",
           "atomic writes confined to the directory; removed models' files removed and named; "
           "a clear error",
           (f"{RENDER}/test_render_output.py",),
           "symlinked directory refused, symlinked file replaced not followed, stale files "
           "removed and listed, exit 2 with a message"),
    Attack("L", "API keys rest on `api_key_auth`, work-in-progress and outside Envoy's threat model",
           "documented (docs/security.md, What the API-key path rests on); JWT or listener mTLS "
           "as the supported alternatives", (), "documented, filter not replaced"),
    Attack("L", "no connection cap or overload manager: idle connections pile up",
           "at most `envoy.max_connections` downstream connections (overload manager); the "
           "stats listener exempt",
           (f"{SEC}/test_security_connection_cap.py::test_connections_past_the_cap_are_closed_and_service_resumes",
            f"{RENDER}/test_render_connection_cap.py::test_the_stats_listener_is_exempt_so_monitoring_survives_a_flood"),
           "real Envoy, cap 3: 3 idle connections take it, the next is closed on accept "
           "(UNAVAILABLE, `downstream_global_cx_overflow`), served again once they close"),
    Attack("L", "no `request_timeout` or `max_stream_duration`: a slow sender holds a stream 500 s",
           "a stream ends after `routing.max_stream_duration_s` however busy it is (a client's "
           "longer `grpc-timeout` does not lift it); request headers slower than "
           "`envoy.request_headers_timeout_s` get 408 and the connection closed",
           (f"{SEC}/test_security_stream_duration.py::test_a_trickling_client_is_cut_at_the_stream_duration",
            f"{SEC}/test_security_stream_duration.py::test_a_long_answer_is_cut_at_the_stream_duration",
            f"{SEC}/test_security_stream_duration.py::test_slow_headers_get_408_and_the_connection_closes"),
           "real Envoy + tritonserver, limit 1 s, idle timeout 0.8 s: a client sending a request "
           "every 0.2 s and a 250-token answer (30 s client deadline) both end within 1-2 s "
           "(INTERNAL reset or DEADLINE_EXCEEDED); headers trickled for 1 s get 408",
           owner="finish17"),
    Attack("L", "`caravan up` misses a dead Envoy or Prometheus; SIGKILL orphans its children; "
           "no start with API keys or JWT",
           "deaths noticed; children die with the supervisor; every security setting starts",
           (f"{LOCAL}/test_local_resilience.py::test_killed_infrastructure_is_restarted",
            "tests/e2e/local/test_up_cli.py::test_second_up_refuses_and_sigkilled_up_leaves_no_child",
            f"{LOCAL}/test_local_secured.py::test_secured_spec_starts_and_stays_secured",
            "tests/unit/local/test_process_parent_death.py", "tests/unit/local/test_infra.py"),
           "a SIGKILLed Envoy or Prometheus is restarted and the stack serves again (3 restarts "
           "in 5 min, then `caravan up` exits 1 naming it); every child of a SIGKILLed "
           "`caravan up` exits (PR_SET_PDEATHSIG); API keys + listener mTLS + xDS mTLS + "
           "replica mTLS, and JWT, start on a local PKI and refuse requests without credentials"),
    Attack("held", "bad, expired, `alg: none`, algorithm-confusion, duplicate and spoofed credentials",
           "UNAUTHENTICATED, never served",
           (f"{SEC}/test_security_envoy.py::test_api_keys",
            f"{SEC}/test_security_envoy.py::test_spoofed_client_header_does_not_bypass_auth",
            f"{SEC}/test_security_jwt.py::test_invalid_tokens_are_unauthenticated",
            f"{SEC}/test_security_jwt.py::test_missing_token_is_unauthenticated"),
           "every bypass refused on the real Envoy"),
    Attack("held", "spoofed identity headers to move rate-limit buckets",
           "buckets follow the verified identity",
           (f"{SEC}/test_security_jwt.py::test_spoofed_subject_header_does_not_escape_the_limit",),
           "a spoofed `x-caravan-subject` lands in the token's own bucket"),
    Attack("held", "`caravan up` stop under load leaves processes behind",
           "nothing left after stop",
           ("tests/integration/local/test_local_stack.py::test_stop_leaves_no_process",),
           "no process of the stack remains"),
)


def measure_alias_bomb() -> dict[str, Any]:
    """Time and peak Python memory of ``load_spec`` refusing a 9^9 alias bomb."""
    sys.path.insert(0, str(ROOT / "src"))
    from caravan.spec import SpecError, load_spec

    text = "\n".join([f'l0: &l0 [{", ".join(["lol"] * 9)}]']
                     + [f'l{i}: &l{i} [{", ".join([f"*l{i - 1}"] * 9)}]' for i in range(1, 9)]
                     + ["models: *l8", ""])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bomb.yaml"
        path.write_text(text)
        tracemalloc.start()
        start = time.perf_counter()
        try:
            load_spec(path)
            refused = False
        except SpecError:
            refused = True
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"bytes": len(text), "refused": refused, "seconds": round(seconds, 4),
            "peak_mib": round(peak / 2**20, 2)}


def run_tests(node_ids: list[str], faults: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Run the tests once; {node id as listed: [{name, outcome, seconds, message}]}. The
    fault scenarios among them (tests/e2e/faults) write their outcomes, which land in
    ``faults`` ({scenario: sent, failed, recovery_s, violations})."""
    present = [n for n in node_ids if (ROOT / n.split("::")[0]).exists()]
    if not present:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        xml, outcomes = Path(tmp) / "junit.xml", Path(tmp) / "faults"
        env = {**os.environ, "CARAVAN_FAULT_RESULTS": str(outcomes)}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-p", "no:randomly", "--continue-on-collection-errors",
                        f"--junitxml={xml}", *present], cwd=ROOT, env=env,
                       timeout=1200, check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        cases = list(ET.parse(xml).getroot().iter("testcase")) if xml.exists() else []
        for path in sorted(outcomes.glob("*.json")) if outcomes.is_dir() else []:
            res = json.loads(path.read_text())
            faults[path.stem] = {k: res.get(k) for k in ("scenario", "sent", "failed",
                                                          "recovery_s", "recovery", "violations")}
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in present}
    for case in cases:
        file = case.get("classname", "").replace(".", "/") + ".py"
        name = case.get("name", "")
        for node in present:
            path, _, test = node.partition("::")
            if path == file and (not test or name.split("[")[0] == test):
                out[node].append({"name": name, "outcome": _outcome(case),
                                  "seconds": float(case.get("time", 0)),
                                  "message": _message(case)})
    return out


def _outcome(case: ET.Element) -> str:
    for tag in ("failure", "error"):
        if case.find(tag) is not None:
            return "FAILED"
    return "skipped" if case.find("skipped") is not None else "passed"


def _message(case: ET.Element) -> str:
    for tag in ("failure", "error"):
        el = case.find(tag)
        if el is not None:
            return (el.get("message") or "")[:200]
    return ""


def verdict(attack: Attack, results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The row's outcome from its tests: held, FAILED, pending or documented."""
    cases = [c for node in attack.tests for c in results.get(node, [])]
    passed = sum(c["outcome"] == "passed" for c in cases)
    seconds = round(sum(c["seconds"] for c in cases), 1)
    if not attack.tests:
        state = "pending" if not attack.measured else "documented"
        outcome = f"pending ({attack.owner})" if state == "pending" else attack.measured
    elif not cases:
        state, outcome = "pending", f"pending ({attack.owner}): tests not run"
    elif passed == len(cases):
        state, outcome = "held", f"{attack.measured} ({passed} tests, {seconds} s)"
    else:
        failed = [c for c in cases if c["outcome"] != "passed"]
        state = "FAILED"
        outcome = f"FAILED {len(failed)} of {len(cases)}: {failed[0]['name']}: {failed[0]['message']}"
    return {**asdict(attack), "state": state, "outcome": outcome, "cases": cases}


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    bomb = meta.get("alias_bomb", {})
    lines = [
        BEGIN,
        f"Regenerated by `benchmarks/attacks.py` on {meta['when']} ({meta['machine']}); "
        "every row's tests run in `make test` as well. Items as in issue 17 (H high, M "
        "medium, L low; held: attacks that already failed before).",
        "",
        "| item | attack | promised | measured (this run) | shown by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        tests = "<br>".join(f"`{t.split('::')[-1]}`" for t in r["tests"]) or "-"
        lines.append(f"| {r['item']} | {r['attack']} | {r['promise']} | {r['outcome']} | {tests} |")
    if bomb:
        lines += ["", f"Alias bomb measured here: {bomb['bytes']} bytes, refused={bomb['refused']} "
                  f"in {bomb['seconds'] * 1000:.1f} ms, peak Python allocation "
                  f"{bomb['peak_mib']} MiB (before: 25 s and 1.8 GB, issue 17)."]
    for f in meta.get("faults", {}).values():
        rec = "-" if f["recovery_s"] is None else f"{f['recovery_s']:.2f} s"
        lines += ["", f"Fault run, {f['scenario']}: {f['failed']} of {f['sent']} requests failed; "
                  f"{f['recovery']}: {rec}; broken promises: {len(f['violations'] or [])}."]
    counts = {s: sum(r["state"] == s for r in rows) for s in ("held", "FAILED", "pending", "documented")}
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items()) + ".", END]
    return "\n".join(lines)


def write_doc(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + markdown(rows, meta) + tail)


def rerun_rows(text: str) -> None:
    """Run the tests of the rows whose attack contains ``text`` and replace those rows in
    the results JSON (the others, and the run's meta, stay; ``meta["reruns"]`` records
    which rows were re-run when), then re-render the doc."""
    data = json.loads(RESULTS.read_text())
    old = {r["attack"]: r for r in data["rows"]}
    chosen = [a for a in ATTACKS if text in a.attack]
    if not chosen:
        raise SystemExit(f"--only {text!r}: no attack contains it")
    results = run_tests(sorted({t for a in chosen for t in a.tests}), {})
    fresh = {a.attack: verdict(a, results) for a in chosen}
    rows = [fresh.get(a.attack) or old.get(a.attack) or verdict(a, {}) for a in ATTACKS]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data["meta"].setdefault("reruns", []).extend({"attack": a, "when": when} for a in fresh)
    RESULTS.write_text(json.dumps({"meta": data["meta"], "rows": rows}, indent=1))
    write_doc(rows, data["meta"])
    for r in fresh.values():
        print(f"{r['item']:5} {r['state']:10} {r['outcome']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--doc-only", action="store_true",
                    help="regenerate the doc section from the last results JSON")
    ap.add_argument("--only", metavar="TEXT",
                    help="re-run only the rows whose attack contains TEXT; keep the others "
                    "from the last results JSON")
    args = ap.parse_args()
    if args.doc_only:
        data = json.loads(RESULTS.read_text())
        write_doc(data["rows"], data["meta"])
        return
    if args.only:
        rerun_rows(args.only)
        return
    faults: dict[str, Any] = {}
    results = run_tests(sorted({t for a in ATTACKS for t in a.tests}), faults)
    rows = [verdict(a, results) for a in ATTACKS]
    meta = {"machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "alias_bomb": measure_alias_bomb(), "faults": faults}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_doc(rows, meta)
    print(f"wrote {RESULTS.relative_to(ROOT)} and the attack table in {DOC.relative_to(ROOT)}")
    for r in rows:
        print(f"{r['item']:5} {r['state']:10} {r['attack'][:70]}")


if __name__ == "__main__":
    main()
